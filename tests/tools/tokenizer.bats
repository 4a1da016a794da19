#!/usr/bin/env bats
# Tokenizer against independent Python oracles (tests/tools/tokenizer_oracle.py):
#  - SentencePiece-style: a tokenizer.json derived from llama2.c's tok512.bin must encode exactly
#    as llama2.c's encode() (scores, no merges) on real text; the 20 KB wikitext count must be the
#    12,349 tokens of shared/data/README.md.
#  - byte-level: BPEs trained by Hugging Face `tokenizers` (GPT-2, Llama-3, Qwen2 layouts) must
#    give the same ids and the same decoded text as `tokenizers` itself.
# python3 and the `tokenizers` package are installed by `make deps` (.venv): without them, or
# without the test_tokenizer binary, every test fails (a missing oracle is never a skip).

setup_file() {
    ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
    local build=${BUILD:-build/rel}
    [[ $build == /* ]] || build="$ROOT/$build"
    export TT="$build/tests/test_tokenizer"
    export DATA=${AS_DATA:-$ROOT/../shared/data}
    export TOK512="$DATA/models/stories260K/tok512.bin"
    export WIKI="$DATA/text/wikitext-2-raw/wiki.test.raw"
    export AUSTEN="$DATA/text/austen/pride_and_prejudice.txt"
    export ORACLE="$BATS_TEST_DIRNAME/tokenizer_oracle.py"
    export W="$BATS_FILE_TMPDIR"
    if [ ! -x "$TT" ]; then
        echo "$TT is not built (make BUILD=$build)" >&2
        return 1
    fi
    python3 -c 'import tokenizers'
    python3 "$ORACLE" spm-json "$TOK512" "$W/spm.json"
    python3 "$ORACLE" utf8-prefix "$WIKI" 20000 "$W/wiki.txt"
    python3 "$ORACLE" edge-text "$W/edge.txt"
    for style in gpt2 gpt2-prefix llama3 qwen2; do
        python3 "$ORACLE" bl-train "$style" "$DATA/text/austen/emma.txt" 300000 "$W/$style.json"
    done
}

# C ids vs llama2.c encode() on the first N bytes of a file.
spm_compare() {
    local file=$1 n=$2
    head -c "$n" "$file" >"$W/in.txt"
    python3 "$ORACLE" spm-encode "$TOK512" "$W/in.txt" "$n" >"$W/py.ids"
    "$TT" encode "$W/spm.json" "$W/in.txt" >"$W/c.ids"
    [ -s "$W/c.ids" ]
    cmp "$W/py.ids" "$W/c.ids"
}

@test "spm: llama2.c tok512 on 20 KB of wikitext equals llama2.c encode, 12,349 tokens with BOS" {
    spm_compare "$WIKI" 20000
    run "$TT" encode "$W/spm.json" "$W/in.txt" --bos
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 12349 ]
    [ "${lines[0]}" -eq 1 ]
}

@test "spm: llama2.c tok512 on 20 KB of Austen equals llama2.c encode" {
    spm_compare "$AUSTEN" 20000
}

@test "spm: merges as [a, b] pairs give the same ids as 'a b' strings" {
    python3 "$ORACLE" spm-json "$TOK512" "$W/spm_pairs.json" --pairs
    "$TT" encode "$W/spm.json" "$W/wiki.txt" >"$W/a.ids"
    "$TT" encode "$W/spm_pairs.json" "$W/wiki.txt" >"$W/b.ids"
    [ -s "$W/a.ids" ]
    cmp "$W/a.ids" "$W/b.ids"
}

@test "spm: decode(encode(text)) == text on wikitext and Unicode edge cases" {
    "$TT" roundtrip "$W/spm.json" "$W/wiki.txt"
    # edge.txt holds "<s>"-free text; byte fallback must bring back every emoji and CJK byte
    "$TT" roundtrip "$W/spm.json" "$W/edge.txt"
}

@test "spm: HF tokenizers agrees on the generated Llama-2 style tokenizer.json" {
    python3 "$ORACLE" hf-encode "$W/spm.json" "$W/wiki.txt" >"$W/hf.ids"
    "$TT" encode "$W/spm.json" "$W/wiki.txt" >"$W/c.ids"
    cmp "$W/hf.ids" "$W/c.ids"
}

# ids and decoded text vs HF tokenizers, on wikitext and on the Unicode edge cases
bl_compare() {
    local style=$1 f
    for f in wiki edge; do
        python3 "$ORACLE" hf-encode "$W/$style.json" "$W/$f.txt" >"$W/$style.$f.hf"
        "$TT" encode "$W/$style.json" "$W/$f.txt" >"$W/$style.$f.c"
        [ -s "$W/$style.$f.c" ]
        cmp "$W/$style.$f.hf" "$W/$style.$f.c"
        python3 "$ORACLE" hf-decode "$W/$style.json" "$W/$style.$f.hf" "$W/$style.$f.hfdec"
        "$TT" decode "$W/$style.json" "$W/$style.$f.c" >"$W/$style.$f.cdec"
        cmp "$W/$style.$f.hfdec" "$W/$style.$f.cdec"
    done
}

@test "bytelevel gpt2 (ByteLevel use_regex): ids and decode equal HF tokenizers" {
    bl_compare gpt2
    "$TT" roundtrip "$W/gpt2.json" "$W/wiki.txt"
}

@test "bytelevel gpt2 with add_prefix_space: ids and decode equal HF tokenizers" {
    bl_compare gpt2-prefix
}

@test "bytelevel llama3 (Split regex + ByteLevel, ignore_merges): ids and decode equal HF" {
    bl_compare llama3
    "$TT" roundtrip "$W/llama3.json" "$W/wiki.txt"
}

@test "bytelevel qwen2 (NFC + Split regex + ByteLevel): ids and decode equal HF" {
    bl_compare qwen2
}

@test "bad tokenizer files fail with one line naming the file" {
    run "$TT" encode "$W/missing.json" "$W/wiki.txt"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == *"$W/missing.json: cannot open"* ]]
    printf '{"model": {"type": "WordPiece", "vocab": {}}}' >"$W/wp.json"
    run "$TT" encode "$W/wp.json" "$W/wiki.txt"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == *"$W/wp.json: unsupported tokenizer model type 'WordPiece'"* ]]
}
