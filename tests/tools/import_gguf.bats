#!/usr/bin/env bats
# as-import GGUF -> Hugging Face checkpoint (lib/common/gguf_import.c), against independent
# expectations:
#  - every tensor of model.safetensors equals the gguf package's numpy dequantization of the GGUF,
#    llama's q/k rows un-permuted as the inverse of llama.cpp's converter, bit for bit (f32) or
#    rounded as stored (bf16, f16) (tests/tools/gguf_import_oracle.py);
#  - config.json fields equal the GGUF metadata read by the gguf package;
#  - the real SmolLM2-135M-Instruct GGUF: the tokenizer.json written, loaded by the `tokenizers`
#    library, cuts the first 100,000 bytes of wiki.test.raw into 25,043 tokens and as-eval too
#    (llama.cpp's count: ../shared/data/README.md); tokenizer_config.json keeps the chat template
#    byte for byte and says no BOS (tokenizer.ggml.add_bos_token false);
#  - tiny llama / qwen2 / qwen3 GGUFs written by the gguf package (gguf_model_oracle.py) with
#    Q8_0 / Q5_0 / Q5_1 / Q4_0 / Q4_1 / F32 tensors;
#  - bad files: one line naming the file and the problem, status 1, no output directory and no
#    staging directory left behind.
bats_require_minimum_version 1.5.0

setup_file() {
    export W=$BATS_FILE_TMPDIR
    export IMP=$BATS_TEST_DIRNAME/gguf_import_oracle.py
    export MK=$BATS_TEST_DIRNAME/gguf_model_oracle.py
    export SMOL
    SMOL=$("$BATS_TEST_DIRNAME/../../pipelines/smollm2-gguf")
    export AS_PROGRESS=0
    as-import "$SMOL" "$W/smol"
}

# no_output DIR: neither DIR nor a staging directory of it exists
no_output() {
    [ ! -e "$1" ]
    run -0 find "$(dirname "$1")" -maxdepth 1 -name "$(basename "$1")*"
    [ -z "$output" ]
}

@test "SmolLM2 GGUF: every tensor equals gguf's numpy dequantization, q/k un-permuted, bit for bit" {
    run python3 "$IMP" weights "$SMOL" "$W/smol"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$output" = "272 tensors equal bit for bit" ]
}

@test "SmolLM2 GGUF: config.json carries the GGUF's sizes, context, rope theta, eps, tied embeddings, bos/eos" {
    run python3 "$IMP" config "$SMOL" "$W/smol"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(jq -r .max_position_embeddings "$W/smol/config.json")" = 8192 ]
    [ "$(jq -r .tie_word_embeddings "$W/smol/config.json")" = true ]
    [ "$(jq -r .rope_theta "$W/smol/config.json")" = 100000 ]
    [ "$(jq -r .num_key_value_heads "$W/smol/config.json")" = 3 ]
}

@test "SmolLM2 GGUF: tokenizer.json gives llama.cpp's 25,043 tokens on 100 KB of wiki, in tokenizers and as-eval" {
    head -c 100000 "$AS_DATA/text/wikitext-2-raw/wiki.test.raw" >"$W/wiki100k.txt"
    run -0 python3 -c 'import sys; from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1])
print(len(t.encode(open(sys.argv[2], encoding="utf-8", newline="").read(), add_special_tokens=False).ids))' \
        "$W/smol/tokenizer.json" "$W/wiki100k.txt"
    [ "$output" = 25043 ]
    run -0 as-eval -m "$W/smol" -f "$W/wiki100k.txt" --ctx 512 --chunks 1 --json
    [ "$(jq -r .tokens <<<"$output")" = 25043 ]
}

@test "SmolLM2 GGUF: tokenizer_config.json keeps the chat template verbatim and the no-BOS rule" {
    run -0 python3 -c 'import sys, gguf
r = gguf.GGUFReader(sys.argv[1])
sys.stdout.write(r.fields["tokenizer.chat_template"].contents())' "$SMOL"
    printf '%s' "$output" >"$W/template.gguf"
    jq -j .chat_template "$W/smol/tokenizer_config.json" >"$W/template.json"
    cmp "$W/template.gguf" "$W/template.json"
    [ "$(jq -r .add_bos_token "$W/smol/tokenizer_config.json")" = false ]
    [ "$(jq -r .bos_token "$W/smol/tokenizer_config.json")" = "<|im_start|>" ]
    [ "$(jq -r .eos_token "$W/smol/tokenizer_config.json")" = "<|im_end|>" ]
}

@test "SmolLM2 GGUF: the imported directory and the GGUF evaluate alike (same tokens, same PPL)" {
    head -c 6000 "$AS_DATA/text/wikitext-2-raw/wiki.test.raw" >"$W/wiki6k.txt"
    run -0 as-eval -m "$W/smol" -f "$W/wiki6k.txt" --ctx 512 --chunks 2 --json
    a=$(jq -r '"\(.tokens) \(.ppl)"' <<<"$output")
    run -0 as-eval -m "$SMOL" -f "$W/wiki6k.txt" --ctx 512 --chunks 2 --json
    b=$(jq -r '"\(.tokens) \(.ppl)"' <<<"$output")
    echo "dir: $a gguf: $b"
    [ "$a" = "$b" ]
}

@test "--dtype bf16 and f16: every tensor equals the oracle's rounding of the dequantized GGUF" {
    as-import --dtype bf16 "$SMOL" "$W/smol-bf16"
    run python3 "$IMP" weights "$SMOL" "$W/smol-bf16"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["torch_dtype"])' "$W/smol-bf16/config.json")" = bfloat16 ]
    python3 "$MK" tiny "$W/t.gguf" llama
    as-import --dtype f16 "$W/t.gguf" "$W/t-f16"
    run python3 "$IMP" weights "$W/t.gguf" "$W/t-f16"
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "tiny llama, qwen2 (biases) and qwen3 (q/k norms) GGUFs: tensors and config equal the oracle" {
    for arch in llama qwen2 qwen3; do
        python3 "$MK" tiny "$W/$arch.gguf" "$arch"
        as-import "$W/$arch.gguf" "$W/$arch"
        run python3 "$IMP" weights "$W/$arch.gguf" "$W/$arch"
        echo "$arch: $output"
        [ "$status" -eq 0 ]
        run python3 "$IMP" config "$W/$arch.gguf" "$W/$arch"
        echo "$arch: $output"
        [ "$status" -eq 0 ]
        [ "$(jq -r .model_type "$W/$arch/config.json")" = "$arch" ]
    done
    [ "$(jq -r .attention_bias "$W/qwen2/config.json")" = true ]
    [ "$(jq -r '.architectures[0]' "$W/qwen3/config.json")" = Qwen3ForCausalLM ]
    # the imported checkpoints run: a forward pass over a short text gives a finite perplexity
    head -c 3000 "$AS_DATA/text/austen/emma.txt" >"$W/emma.txt"
    for arch in llama qwen2 qwen3; do
        run -0 as-eval -m "$W/$arch" -f "$W/emma.txt" --ctx 64 --chunks 2 --json
        jq -e '.ppl > 1 and .ppl < 1e6' <<<"$output"
    done
}

@test "bad GGUFs: one line naming the file and the problem, status 1, nothing written" {
    cases=(
        "arch|general.architecture \"gpt2\" is not supported (llama, qwen2, qwen3)"
        "type|tensor blk.1.attn_v.weight: unsupported ggml type 20 (IQ4_NL)"
        "rope_freqs|tensor rope_freqs (llama3 RoPE frequency factors) is not supported"
        "no_vocab|tokenizer.ggml.model \"(missing)\" is not supported (llama, gpt2)"
    )
    for c in "${cases[@]}"; do
        v=${c%%|*} msg=${c#*|}
        python3 "$MK" tiny "$W/bad-$v.gguf" llama "$v"
        run -1 --separate-stderr as-import "$W/bad-$v.gguf" "$W/out-$v"
        echo "$v: $stderr"
        [ "$stderr" = "as-import: file $W/bad-$v.gguf: $msg" ]
        [ -z "$output" ]
        no_output "$W/out-$v"
    done
    python3 "$MK" tiny "$W/bad-trunc.gguf" llama truncate
    run -1 --separate-stderr as-import "$W/bad-trunc.gguf" "$W/out-trunc"
    echo "$stderr"
    [[ "$stderr" == "as-import: file $W/bad-trunc.gguf: truncated: tensor "*" beyond the end of the file ("*" bytes)" ]]
    [ "${#stderr_lines[@]}" -eq 1 ]
    no_output "$W/out-trunc"
}

@test "as-import usage errors: --dtype other than f32/bf16/f16, --tokenizer with a GGUF; nothing written" {
    run -1 --separate-stderr as-import --dtype q4 "$SMOL" "$W/u1"
    [ "$stderr" = "as-import: --dtype q4: expected f32, bf16 or f16" ]
    no_output "$W/u1"
    run -1 --separate-stderr as-import -t /dev/null "$SMOL" "$W/u2"
    [ "$stderr" = "as-import: $SMOL: --tokenizer is for llama2.c checkpoints (a GGUF carries its own)" ]
    no_output "$W/u2"
}

@test "SmolLM2 round trip: as-pack writes the imported model back to GGUF with pre \"smollm\" and no BOS; it tokenizes alike" {
    as-cat "$W/smol" | as-gptq -m rtn -b 8 -g 32 --sym >"$W/q8.stream"
    as-pack -m "$W/smol" -f gguf -o "$W/q8.gguf" <"$W/q8.stream"
    run -0 python3 -c 'import sys, gguf
r = gguf.GGUFReader(sys.argv[1])
print(r.fields["tokenizer.ggml.pre"].contents(), r.fields["tokenizer.ggml.add_bos_token"].contents())' "$W/q8.gguf"
    [ "$output" = "smollm False" ]
    head -c 100000 "$AS_DATA/text/wikitext-2-raw/wiki.test.raw" >"$W/wiki100k.txt"
    run -0 as-eval -m "$W/q8.gguf" -f "$W/wiki100k.txt" --ctx 512 --chunks 1 --json
    [ "$(jq -r .tokens <<<"$output")" = 25043 ]
}

@test "SmolLM2: as-eval on the imported directory gives llama.cpp's perplexity (2 windows of 512, no BOS)" {
    # llama.cpp 0c1e57098, `llama-perplexity -m SmolLM2-F32.gguf -f wiki100k.txt -c 512 -t 2`
    # (bench/smollm2-llamacpp-anchor.sh; the F32 GGUF dequantized from the shipped Q4_1 by
    # llama-quantize --allow-requantize) prints [1]12.5619 [2]21.2807 ... [48]22.7652; as-eval's
    # 48-window value is 22.7658 (docs/quality.md). Summation order differs (llama.cpp's ggml
    # kernels, our OpenBLAS): agreement to 1e-4 relative, 2.7x the difference measured.
    head -c 100000 "$AS_DATA/text/wikitext-2-raw/wiki.test.raw" >"$W/wiki100k.txt"
    run -0 as-eval -m "$W/smol" -f "$W/wiki100k.txt" --ctx 512 --chunks 2 --json
    echo "$output"
    jq -e '.windows == 2 and .scored == 510' <<<"$output"
    jq -e '(.ppl / 21.2807 - 1) | fabs < 1e-4' <<<"$output"
}

@test "as-calib on a 12-layer import: every weight record follows its own layer's statistics; as-awq takes the stream" {
    # A checkpoint's tensors sit in byte order (layers 0, 1, 10, 11, 2, ...); as-calib once looked
    # weights up there and emitted layer 12's weights after layer 2's statistics.
    GGUF_TINY_LAYERS=12 python3 "$MK" tiny "$W/deep.gguf" llama
    as-import "$W/deep.gguf" "$W/deep"
    as-calib -m "$W/deep" -d "$AS_DATA/text/austen" -n 2 -l 32 --keep-seqs 1 > "$W/deep.astr"
    run -0 bash -c "as-ls '$W/deep.astr' | jq -rs '[foreach .[] as \$r (-9; if \$r.role == \"hessian\" then \$r.layer else . end;
        if \$r.role == \"weight\" then [\$r.layer, .] else empty end)] | (length | tostring) + \" \" + ([.[] | select(.[0] != .[1])] | length | tostring)'"
    [ "$output" = "84 0" ] # 12 layers x 7 linears, none out of place
    as-awq -m "$W/deep" -b 4 -g 32 < "$W/deep.astr" > "$W/deep.q"
    run -0 bash -c "as-ls '$W/deep.q' | jq -r 'select(.role == \"qweight\" or .role == \"weight\") | .layer' | sort -n | uniq | wc -l"
    [ "$output" -eq 12 ]
}
