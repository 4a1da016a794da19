#!/usr/bin/env bats
# Real consumer of GGUF files: Hugging Face transformers' own GGUF loader
# (`from_pretrained(DIR, gguf_file=NAME)`, which dequantizes with the gguf package and un-permutes
# llama's q/k itself) against as-import's output from the same file (lib/common/gguf_import.c):
#  - every tensor of model.safetensors equals transformers' state_dict bit for bit in f32, names
#    1:1 (SmolLM2-135M's Q4_1/Q8_0 GGUF; tiny llama / qwen2 / qwen3 GGUFs, gguf_model_oracle.py);
#  - token ids: transformers' GGUF tokenizer, AutoTokenizer on our tokenizer.json and our C
#    tokenizer (test_gguf_vocab encode) on varied text, 20 KB of Austen and of wiki (CRLF) and
#    decomposed (non-NFC) text; SmolLM2's vocabulary also retagged gpt-2 / llama-bpe / qwen2;
#  - perplexity: transformers on the imported directory equals as-eval's within 1e-5 relative,
#    and transformers on the GGUF gives the same logits as on our directory.
# tests/tools/consumer_gguf.py does the transformers side in one process; docs/consumers.md.
# Python: .venv-consumer (tests/requirements-consumer.txt, `make deps`; `make check` requires it).
# Without that venv every test skips "optional: ...", unless AS_REQUIRE_CONSUMER=1, which makes
# its absence a failure. Once the venv exists, anything missing (a package, the C tokenizer
# driver, the SmolLM2 GGUF) or a consumer crash is a failure, never a skip.

bats_require_minimum_version 1.5.0

# a failure anywhere in a pipeline fails the test, not only its last command
set -o pipefail

setup_file() {
    ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
    local build=${BUILD:-build/rel}
    [[ $build == /* ]] || build="$ROOT/$build"
    export TV="$build/tests/test_gguf_vocab"
    export DATA=${AS_DATA:-$ROOT/../shared/data}
    export CG="$BATS_TEST_DIRNAME/consumer_gguf.py"
    export W="$BATS_FILE_TMPDIR" R="$BATS_FILE_TMPDIR/report.json"
    export CONSUMER_SKIP="" CONSUMER_MISSING=""
    export PY=$ROOT/.venv-consumer/bin/python3
    export AS_PROGRESS=0
    if [ ! -x "$PY" ]; then
        if [ "${AS_REQUIRE_CONSUMER:-0}" = 1 ]; then
            export CONSUMER_MISSING="AS_REQUIRE_CONSUMER=1 but $PY does not exist (make deps)"
        else
            export CONSUMER_SKIP="optional: .venv-consumer absent (make deps installs transformers + torch + gguf, ~3 GB; AS_REQUIRE_CONSUMER=1 makes this a failure)"
        fi
        return 0
    fi
    local missing
    missing=$("$PY" -c "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))" \
        torch transformers gguf safetensors tokenizers 2>&1) || missing="(python failed: $missing)"
    if [ -n "$missing" ]; then
        export CONSUMER_MISSING="$PY lacks $missing (pip install -r tests/requirements-consumer.txt)"
        return 0
    fi
    if [ ! -x "$TV" ]; then
        export CONSUMER_MISSING="$TV not built (make tests)"
        return 0
    fi
    export SMOL
    SMOL=$("$ROOT/pipelines/smollm2-gguf") || {
        export CONSUMER_MISSING="SmolLM2 GGUF not found (make deps, or AS_SMOLLM2_GGUF)"
        return 0
    }

    as-import "$SMOL" "$W/smol"
    local specs=("model:smol:$SMOL:$W/smol") a p
    for a in llama qwen2 qwen3; do
        python3 "$BATS_TEST_DIRNAME/gguf_model_oracle.py" tiny "$W/$a.gguf" "$a"
        as-import "$W/$a.gguf" "$W/$a"
        specs+=("model:$a:$W/$a.gguf:$W/$a")
    done
    # SmolLM2's vocabulary under other pre-tokenizer names transformers has regexes for
    # (their own folder: the retagged "qwen2" must not replace the tiny qwen2 model)
    mkdir "$W/retag"
    python3 "$BATS_TEST_DIRNAME/gguf_tok_oracle.py" retag "$SMOL" "$W/retag" gpt-2 llama-bpe qwen2
    for p in gpt-2 llama-bpe qwen2; do
        mkdir "$W/v-$p"
        "$TV" write "$W/retag/$p.gguf" "$W/v-$p"
        specs+=("tok:v-$p:$W/retag/$p.gguf:$W/v-$p")
    done
    # varied.txt (digits, code, Unicode, CRLF, spaces, tabs, chat tokens), 20 KB of Austen and of
    # wiki.test.raw (starts with a space, CRLF lines); nfc.txt: decomposed (non-NFC) letters
    python3 "$BATS_TEST_DIRNAME/gguf_tok_oracle.py" texts "$W" \
        "$DATA/text/austen/pride_and_prejudice.txt" "$DATA/text/wikitext-2-raw/wiki.test.raw"
    printf 'Cafe\xcc\x81 A\xcc\x8angstro\xcc\x88m \xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab 12345\n' >"$W/nfc.txt"
    export TEXTS="varied austen wiki nfc"
    for a in smol llama qwen2 qwen3; do
        as-eval -m "$W/$a" -f "$W/wiki.txt" --ctx 128 --chunks 2 --json >"$W/$a.eval"
    done
    "$PY" "$CG" check "$R" "$W" 128 2 "$W/wiki.txt" \
        "$W/varied.txt,$W/austen.txt,$W/wiki.txt,$W/nfc.txt" "${specs[@]}" \
        >"$W/consumer.log" 2>&1 || true # a crash shows in every test (rep)
}

# the opt-in skip (no venv, not required), or a failure naming what is missing
need() {
    if [ -n "$CONSUMER_SKIP" ]; then
        skip "$CONSUMER_SKIP"
    fi
    if [ -n "$CONSUMER_MISSING" ]; then
        echo "$CONSUMER_MISSING" >&2
        return 1
    fi
}

# rep NAME JQPATH: value from the consumer's report, failing on a recorded error
rep() {
    local err
    [ -s "$R" ] || { echo "consumer wrote no report:" >&2; tail -20 "$W/consumer.log" >&2; return 1; }
    err=$(jq -r --arg k "$1" '.[$k].error // empty' "$R")
    [ -z "$err" ] || { echo "consumer: $err" >&2; tail -20 "$W/consumer.log" >&2; return 1; }
    jq -r --arg k "$1" ".[\$k]$2" "$R"
}
# |A - B| <= TOL * |B|, printing both
close() {
    echo "transformers $1 vs as-eval $2 (tolerance $3 relative)"
    awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; exit !(a != "" && d <= t * m) }'
}
# c_ids GGUF NAME [--special]: our C tokenizer's ids for every text, to $W/NAME.c[-s].TEXT
c_ids() {
    local t s=${3:+-s}
    for t in $TEXTS; do
        "$TV" encode "$1" "$W/$t.txt" $3 >"$W/$2.c$s.$t"
    done
}

@test "SmolLM2 GGUF: transformers' loader and as-import give the same 272 tensors, bit for bit in f32" {
    need
    rep smol .weights.problems
    [ "$(rep smol '.weights.problems | length')" -eq 0 ]
    [ "$(rep smol .weights.equal)" -eq 272 ]
    [ "$(rep smol .weights.total)" -eq 272 ]
}

@test "tiny llama, qwen2 (biases), qwen3 (q/k norms) GGUFs: every tensor bit for bit" {
    need
    for a in llama qwen2 qwen3; do
        rep $a .weights.problems
        [ "$(rep $a '.weights.problems | length')" -eq 0 ]
        [ "$(rep $a .weights.equal)" = "$(rep $a .weights.total)" ]
    done
    [ "$(rep llama .weights.equal)" -eq 20 ]
    [ "$(rep qwen2 .weights.equal)" -eq 27 ]
    [ "$(rep qwen3 .weights.equal)" -eq 25 ]
    # transformers ignores qwen3.attention.key_length (Qwen3Config's head_dim 128 stays): the
    # consumer passes hidden / heads, llama.cpp's rule (docs/consumers.md)
    [ "$(rep qwen3 .head_dim_passed)" -eq 16 ]
}

@test "SmolLM2 token ids: our tokenizer.json (AutoTokenizer) = C tokenizer = transformers' GGUF tokenizer with SmolLM2's Digits step" {
    need
    c_ids "$SMOL" smol
    c_ids "$SMOL" smol --special
    for t in $TEXTS; do
        [ "$(wc -l <"$W/smol.c.$t")" -gt 20 ]
        cmp "$W/smol.c.$t" "$W/smol.dir.$t"
        cmp "$W/smol.c.$t" "$W/smol.gguf-digits.$t"
        # no BOS (tokenizer.ggml.add_bos_token false): with special tokens, the same ids everywhere
        cmp "$W/smol.c.$t" "$W/smol.c-s.$t"
        cmp "$W/smol.c.$t" "$W/smol.dir-s.$t"
        cmp "$W/smol.gguf.$t" "$W/smol.gguf-s.$t"
    done
    [ "$(rep smol .tokens.gguf_add_bos)" = false ]
    [ "$(rep smol .tokens.dir_add_bos)" = false ]
    # transformers' GGUF tokenizer as it comes: a plain GPT-2 ByteLevel for pre "smollm", without
    # the Digits(individual_digits) step of SmolLM2's tokenizer.json and llama.cpp's "\p{N}". It
    # agrees with us wherever no space precedes a non-ASCII numeric (SmolLM2 has no merge of a
    # space with an ASCII digit), and differs exactly there, on " ½ ² ٣" of varied.txt.
    for t in austen wiki nfc; do
        cmp "$W/smol.c.$t" "$W/smol.gguf.$t"
    done
    run -0 rep smol '.tokens.texts.varied.diff | map(.ours + ["|"] + .gguf) | tostring'
    echo "$output"
    [ "$output" = '[["Ġ","Â½","Ġ","Â²","Ġ","Ù","|","ĠÂ","½","ĠÂ","²","ĠÙ"]]' ]
}

@test "SmolLM2 vocabulary as gpt-2, llama-bpe, qwen2: transformers' GGUF tokenizer = C tokenizer = our tokenizer.json" {
    need
    for p in gpt-2 llama-bpe qwen2; do
        c_ids "$W/retag/$p.gguf" "v-$p"
        for t in $TEXTS; do
            echo "$p $t"
            [ "$(wc -l <"$W/v-$p.c.$t")" -gt 20 ]
            cmp "$W/v-$p.c.$t" "$W/v-$p.gguf.$t"
            # the tokenizer.json written from a GGUF follows llama.cpp: no NFC normalizer even
            # for qwen2 (Qwen2's own has one), so decomposed text splits alike everywhere
            cmp "$W/v-$p.c.$t" "$W/v-$p.dir.$t"
        done
    done
    [ "$(rep v-qwen2 .tokens.dir_normalizer)" = "None" ]
}

@test "perplexity: transformers on the imported directory = as-eval within 1e-5; on the GGUF, identical logits" {
    need
    for a in smol llama qwen2 qwen3; do
        [ "$(rep $a .ppl.tokens)" = "$(jq -r .tokens "$W/$a.eval")" ]
        [ "$(rep $a .ppl.scored)" = "$(jq -r .scored "$W/$a.eval")" ]
        [ "$(rep $a .ppl.scored)" -eq 126 ]
        close "$(rep $a .ppl.ppl)" "$(jq -r .ppl "$W/$a.eval")" 1e-5
        [ "$(rep $a .ppl.max_abs_logit_diff)" = 0 ]
        [ "$(rep $a .ppl.ppl_gguf)" = "$(rep $a .ppl.ppl)" ]
    done
}

@test "the checks bite: one ulp in one tensor, a 1% norm change, a tokenizer.json without Digits" {
    need
    # one value of a llama k_proj (rows un-permuted by both sides) moved by one ulp
    cp -r "$W/llama" "$W/llama-ulp"
    python3 -c 'import sys, numpy as np; from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1]); k = "model.layers.1.self_attn.k_proj.weight"
t[k].view(np.uint32)[3, 5] += 1; save_file(t, sys.argv[1])' "$W/llama-ulp/model.safetensors"
    run "$PY" "$CG" weights "$W/llama.gguf" "$W/llama-ulp"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"$W/llama-ulp/model.safetensors: model.layers.1.self_attn.k_proj.weight: 1 of 2048 values differ, first at flat index 197: "* ]]
    # the untouched directory passes the same command
    run -0 "$PY" "$CG" weights "$W/llama.gguf" "$W/llama"
    [ "${lines[-1]}" = "20 tensors equal bit for bit" ]
    # the final norm x1.01: as-eval's perplexity leaves the tolerance of the test above
    cp -r "$W/llama" "$W/llama-norm"
    python3 -c 'import sys; from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1]); t["model.norm.weight"] *= 1.01; save_file(t, sys.argv[1])' \
        "$W/llama-norm/model.safetensors"
    run -0 as-eval -m "$W/llama-norm" -f "$W/wiki.txt" --ctx 128 --chunks 2 --json
    run close "$(rep llama .ppl.ppl)" "$(jq -r .ppl <<<"$output")" 1e-5
    [ "$status" -eq 1 ]
    # SmolLM2's tokenizer.json without its Digits step: AutoTokenizer no longer gives the C ids
    mkdir "$W/smol-nodigits"
    cp "$W/smol/tokenizer_config.json" "$W/smol/config.json" "$W/smol-nodigits/"
    jq '.pre_tokenizer = .pre_tokenizer.pretokenizers[1]' "$W/smol/tokenizer.json" >"$W/smol-nodigits/tokenizer.json"
    "$PY" "$CG" tokens "$W/smol-nodigits" "$W/nodigits" "$W/varied.txt" "$W/wiki.txt"
    "$TV" encode "$SMOL" "$W/varied.txt" >"$W/c-bite.varied"
    "$TV" encode "$SMOL" "$W/wiki.txt" >"$W/c-bite.wiki"
    cmp "$W/c-bite.wiki" "$W/nodigits.wiki"
    run cmp "$W/c-bite.varied" "$W/nodigits.varied"
    [ "$status" -eq 1 ]
}
