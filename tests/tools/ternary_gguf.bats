#!/usr/bin/env bats
# as-pack -f gguf --gguf-ternary tq1_0|tq2_0: ternary codes of as-gptq --ternary written as
# llama.cpp's TQ1_0 / TQ2_0 blocks (gguf_pack.c, docs/ternary.md), on synthetic 2-layer llama
# models with 256-divisible rows and stories260K's tokenizer (ternary_gguf.py):
#  - the gguf package (ggml's reference dequantizer in numpy) reads every TQ tensor back to the
#    fakequant checkpoint's weights bit for bit (q/k rows in llama.cpp's RoPE order);
#  - llama-perplexity on our TQ file within 1e-3 relative of as-eval on the same file (llama.cpp
#    rounds activations to 8 bits inside its TQ dot products), and within 1e-4 after
#    llama-quantize turned our blocks into F32 (llama.cpp's own dequantization);
#  - rows that do not fill 256-blocks are kept as floats and reported; bad scales are refused.
# llama.cpp is built by make deps (bench/llamacpp-build.sh); without it these tests fail.
bats_require_minimum_version 1.5.0
load helpers
set -o pipefail

setup_file() {
    export ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
    export LB=${LLAMACPP_DIR:-$ROOT/build/llama.cpp}/build/bin W=$BATS_FILE_TMPDIR
    export OMP_WAIT_POLICY=passive # llama.cpp's spinning threads starve a shared machine
    import_model
    python3 "$BATS_TEST_DIRNAME/ternary_gguf.py" model "$W/syn" "$M" 512
    as-cat "$W/syn" | as-gptq -m rtn --ternary tq2_0 >"$W/q"
    as-pack -m "$W/syn" -o "$W/fq" -f fakequant "$W/q" 2>/dev/null
    head -c 20000 "$WIKI" >"$W/w20k.txt"
}

need_llama() {
    local t
    for t in llama-perplexity llama-quantize; do
        if [ ! -x "$LB/$t" ]; then
            echo "$LB/$t does not exist (make deps builds llama.cpp)" >&2
            return 1
        fi
    done
}

# llama-perplexity's final estimate. Its log lines come from a background logging thread that a
# loaded machine sometimes leaves behind at exit (the last lines, "Final estimate" among them, are
# then missing): a run without them is repeated, up to 3 runs.
lppl() {
    local rc try
    for try in 1 2 3; do
        rc=0
        "$LB/llama-perplexity" -m "$1" -f "$W/w20k.txt" -c 128 --chunks 8 -t 2 >"$W/lppl.log" 2>&1 || rc=$?
        grep -q "Final estimate" "$W/lppl.log" && break
        { echo "llama-perplexity run $try: exit $rc, no final estimate" && tail -c 300 "$W/lppl.log"; } >&2
    done
    sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$W/lppl.log"
}
ours() { as-eval -m "$1" -f "$W/w20k.txt" --ctx 128 --chunks 8 --json | jq -r .ppl; }
close() {
    echo "llama.cpp $1 vs ours $2 (tolerance $3 relative)"
    awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && b != "" && d <= t * b) }'
}

@test "ternary gguf: TQ1_0 / TQ2_0 tensors read by the gguf package equal the fakequant weights bit for bit" {
    for t in tq1_0 tq2_0; do
        run --separate-stderr as-pack -m "$W/syn" -f gguf --gguf-ternary "$t" -o "$W/$t.gguf" "$W/q"
        echo "$stderr"
        [ "$status" -eq 0 ]
        grep -qx "as-pack: wrote $W/$t.gguf (gguf, [0-9]* bytes): 14 linears quantized, 14 as blocks, 0 as floats, verified" <<<"$stderr"
        run python3 "$BATS_TEST_DIRNAME/ternary_gguf.py" compare "$W/$t.gguf" "$W/fq" "${t^^}"
        echo "$output"
        [ "$status" -eq 0 ]
        [ "$output" = "${t^^}: 14 linears as ${t^^}, 0 as F32, equal to the fakequant weights" ]
    done
}

@test "ternary gguf: llama-perplexity on our TQ1_0 / TQ2_0 files within 1e-3 of as-eval (1e-4 after llama.cpp dequantizes them to F32)" {
    need_llama
    local t
    for t in tq1_0 tq2_0; do
        [ -f "$W/$t.gguf" ] || as-pack -m "$W/syn" -f gguf --gguf-ternary "$t" -o "$W/$t.gguf" "$W/q" 2>/dev/null
        close "$(lppl "$W/$t.gguf")" "$(ours "$W/$t.gguf")" 1e-3
        "$LB/llama-quantize" --allow-requantize "$W/$t.gguf" "$W/$t-f32.gguf" F32 >"$W/lq.log" 2>&1
        close "$(lppl "$W/$t-f32.gguf")" "$(ours "$W/$t.gguf")" 1e-4
    done
    # it can tell: the unquantized model (the checkpoint's weights) differs by far more
    as-pack -m "$W/syn" -f gguf --gguf-fallback original -o "$W/dense.gguf" "$W/q" 2>/dev/null
    run close "$(lppl "$W/dense.gguf")" "$(ours "$W/tq2_0.gguf")" 1e-3
    [ "$status" -eq 1 ]
}

@test "ternary gguf: rows of 384 weights (not whole 256-blocks) kept as F32 and reported" {
    python3 "$BATS_TEST_DIRNAME/ternary_gguf.py" model "$W/syn384" "$M" 384
    as-cat "$W/syn384" | as-gptq -m rtn --ternary tq1_0 >"$W/q384"
    run --separate-stderr as-pack -m "$W/syn384" -f gguf --gguf-ternary tq1_0 -o "$W/f384.gguf" "$W/q384"
    echo "$stderr"
    [ "$status" -eq 0 ]
    grep -qx "as-pack: note: tensor model.layers.1.mlp.down_proj.weight: rows of 384 weights do not fill TQ1_0's 256-weight blocks; written as F32 (dequantized quantizer output)" <<<"$stderr"
    [ "$(grep -c "do not fill TQ1_0's 256-weight blocks" <<<"$stderr")" -eq 2 ]
    grep -qx "as-pack: wrote $W/f384.gguf (gguf, [0-9]* bytes): 14 linears quantized, 12 as blocks, 2 as floats, verified" <<<"$stderr"
    run python3 -c 'import sys, gguf; print(" ".join(f"{t.name}:{t.tensor_type.name}" for t in gguf.GGUFReader(sys.argv[1]).tensors if t.name.startswith("blk.1.") and "norm" not in t.name))' "$W/f384.gguf"
    echo "$output"
    [ "$output" = "blk.1.attn_q.weight:TQ1_0 blk.1.attn_k.weight:TQ1_0 blk.1.attn_v.weight:TQ1_0 blk.1.attn_output.weight:TQ1_0 blk.1.ffn_gate.weight:TQ1_0 blk.1.ffn_up.weight:TQ1_0 blk.1.ffn_down.weight:F32" ]
}

@test "ternary gguf: bad input: a scale not exact in f16, a zero scale, a bad --gguf-ternary: one line, nothing written" {
    load assert_refused
    python3 "$BATS_TEST_DIRNAME/stream_oracle.py" set "$W/q" "$W/q.f16" model.layers.1.self_attn.k_proj.scale 3 0.1
    run --separate-stderr as-pack -m "$W/syn" -f gguf --gguf-ternary tq1_0 -o "$W/bad.gguf" "$W/q.f16"
    refused "as-pack: tensor model.layers.1.self_attn.k_proj.weight: scale 3 = 0.100000001 is not exact in f16 (TQ1_0 stores f16 scales)"
    [ ! -e "$W/bad.gguf" ]
    [ -z "$(ls -A "$W" | grep '^bad')" ] # no temporary file left either
    python3 "$BATS_TEST_DIRNAME/stream_oracle.py" set "$W/q" "$W/q.zero" model.layers.0.mlp.up_proj.scale 0 0
    run --separate-stderr as-pack -m "$W/syn" -f gguf --gguf-ternary tq2_0 -o "$W/bad.gguf" "$W/q.zero"
    refused "as-pack: tensor model.layers.0.mlp.up_proj.weight: scale 0 is 0 (must be finite and > 0)"
    [ ! -e "$W/bad.gguf" ]
    [ -z "$(ls -A "$W" | grep '^bad')" ]
    run --separate-stderr as-pack -m "$W/syn" -f gguf --gguf-ternary i2_s -o "$W/bad.gguf" "$W/q"
    refused "as-pack: --gguf-ternary 'i2_s': expected tq1_0 or tq2_0"
    [ ! -e "$W/bad.gguf" ]
}
