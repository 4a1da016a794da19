#!/usr/bin/env bats
# Real consumers of the other as-pack formats on stories260K (docs/consumers.md has the table):
# transformers 5.24 + compressed-tensors 0.20 load the ct-fp outputs (FP8 static / dynamic,
# INT8 W8A8, NVFP4, MXFP4, W4A8, FP8 KV cache), transformers + gptqmodel the AWQ GEMM output,
# transformers' FP8 loader the DeepSeek layout. Each checkpoint as written; the consumer's
# perplexity (as-eval --score all convention, tests/consumers/formats.py, one Python process) is
# compared with as-eval's: weights only within 1e-6 (the consumer's QDQ of inputs switched off,
# as-eval --act-quant none), with the activation scheme within the format's tolerance.
# Python: .venv-consumer (tests/requirements-consumer.txt, installed by `make deps`); without it
# every test skips "optional:", which AS_REQUIRE_CONSUMER=1 (make check) turns into a failure.

load helpers
set -o pipefail

setup_file() {
    ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
    export W=$BATS_FILE_TMPDIR R=$BATS_FILE_TMPDIR/report.json
    export CONSUMER_SKIP="" CONSUMER_MISSING=""
    local PY=$ROOT/.venv-consumer/bin/python3
    if [ ! -x "$PY" ]; then
        if [ "${AS_REQUIRE_CONSUMER:-0}" = 1 ]; then
            export CONSUMER_MISSING="AS_REQUIRE_CONSUMER=1 but $PY does not exist (make deps)"
        else
            export CONSUMER_SKIP="optional: .venv-consumer absent (make deps installs it; AS_REQUIRE_CONSUMER=1 makes this a failure)"
        fi
        return 0
    fi
    import_model
    as-calib -m "$M" -d "$AUSTEN" -n 16 -l 128 --keep-seqs 4 --kv-stats >"$W/calib.astr" 2>/dev/null
    head -c 3000 "$WIKI" >"$W/text.txt"
    local s specs=()
    for s in fp8-static fp8-dynamic int8-dynamic nvfp4 mxfp4; do
        as-lepto -m "$M" -s $s "$W/calib.astr" >"$W/$s.astr"
    done
    as-lepto -m "$M" -s w4a8-fp8 --group 32 "$W/calib.astr" >"$W/w4a8.astr"
    as-lepto -m "$M" -s fp8-static --kv-cache fp8 "$W/calib.astr" >"$W/fp8kv.astr"
    as-lepto -m "$M" -s fp8-block "$W/calib.astr" >"$W/fp8-block.astr"
    for s in fp8-static fp8-dynamic int8-dynamic nvfp4 mxfp4 w4a8 fp8kv; do
        as-pack -m "$M" -f ct-fp -o "$W/$s" "$W/$s.astr" 2>/dev/null
        specs+=("ct:$s:$W/$s")
    done
    as-pack -m "$M" -f fp8 -o "$W/ds" "$W/fp8-block.astr" 2>/dev/null
    as-pack -m "$M" -f fakequant-fp -o "$W/ds-fq" "$W/fp8-block.astr" 2>/dev/null
    as-awq -m "$M" -b 4 -g 32 -e quantized <"$W/calib.astr" >"$W/awq32.astr" 2>/dev/null
    as-awq -m "$M" -b 4 -g 128 -e quantized <"$W/calib.astr" >"$W/awq128.astr" 2>/dev/null
    as-pack -m "$M" -f awq -o "$W/awq32" <"$W/awq32.astr" 2>/dev/null
    as-pack -m "$M" -f awq -o "$W/awq128" <"$W/awq128.astr" 2>"$W/awq128.err"
    as-pack -m "$M" -f fakequant -o "$W/awq32-fq" <"$W/awq32.astr" 2>/dev/null
    # the two fixes, undone in copies: the tests show the consumer needs them
    cp -r "$W/nvfp4" "$W/nvfp4-nosd"
    jq 'del(.quantization_config.config_groups.group_0.weights.scale_dtype, .quantization_config.config_groups.group_0.input_activations.scale_dtype)' "$W/nvfp4/config.json" >"$W/nvfp4-nosd/config.json"
    cp -r "$W/awq32" "$W/awq32-nodyn"
    jq 'del(.quantization_config.dynamic)' "$W/awq32/config.json" >"$W/awq32-nodyn/config.json"
    local d
    for d in fp8-static fp8-dynamic int8-dynamic nvfp4 mxfp4 w4a8 fp8kv ds awq32 awq32-fq awq128; do
        as-eval -m "$W/$d" -f "$W/text.txt" --ctx 128 --score all --json >"$W/$d.eval"
        as-eval -m "$W/$d" -f "$W/text.txt" --ctx 128 --score all --json --act-quant none >"$W/$d.evalw"
    done
    as-eval -m "$W/fp8kv" -f "$W/text.txt" --ctx 128 --score all --json --kv-cache none >"$W/fp8kv.evalnokv"
    "$PY" "$ROOT/tests/consumers/formats.py" "$R" "$W/text.txt" 128 "$M" "${specs[@]}" \
        "ct:nvfp4-nosd:$W/nvfp4-nosd" "awq:awq32:$W/awq32" "awq:awq32-nodyn:$W/awq32-nodyn" \
        "dense:awq128:$W/awq128" "ds:ds:$W/ds:$W/ds-fq" >"$W/consumer.log" 2>&1 || true
}

need() {
    if [ -n "$CONSUMER_SKIP" ]; then
        skip "$CONSUMER_SKIP"
    fi
    if [ -n "$CONSUMER_MISSING" ]; then
        echo "$CONSUMER_MISSING" >&2
        return 1
    fi
}

# rep NAME JQ: a value of the consumer's report, failing on a recorded error
rep() {
    local err
    [ -s "$R" ] || { echo "consumer wrote no report:" >&2; tail -20 "$W/consumer.log" >&2; return 1; }
    err=$(jq -r --arg k "$1" '.[$k].error // empty' "$R")
    [ -z "$err" ] || { echo "consumer ($1): $err" >&2; return 1; }
    jq -r --arg k "$1" ".[\$k]$2" "$R"
}
ours() { jq -r .ppl "$W/$1"; }
# close A B TOL: |A - B| <= TOL |B|
close() {
    echo "consumer $1 vs ours $2 (tolerance $3 relative)"
    awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; exit !(a != "" && b != "" && d <= t * m) }'
}

@test "FP8 static / dynamic, INT8 W8A8, W4A8: compressed-tensors loads them; weights-only perplexity = as-eval within 1e-6, with activations within 5e-3" {
    need
    for s in fp8-static fp8-dynamic int8-dynamic w4a8; do
        [ "$(rep $s '.kinds.Linear')" -eq 36 ]
        close "$(rep $s .ppl_w)" "$(ours $s.evalw)" 1e-6
        # per-token FP8/INT8 rounding flips (the consumer computes x / s, ours the same rule in
        # another order; INT8 also absmax/127.5 vs /127): measured 2e-5 .. 4e-3
        close "$(rep $s .ppl)" "$(ours $s.eval)" 5e-3
        # the activation scheme is really applied: it moves perplexity by more than 1e-3
        run close "$(rep $s .ppl)" "$(rep $s .ppl_w)" 1e-3
        [ "$status" -eq 1 ]
    done
}

@test "NVFP4: scale_dtype written; consumer within 1e-6 weights-only, 1e-3 with activations; without scale_dtype it is not" {
    need
    jq -e '.quantization_config.config_groups.group_0 | .weights.scale_dtype == "torch.float8_e4m3fn" and .input_activations.scale_dtype == "torch.float8_e4m3fn"' "$W/nvfp4/config.json"
    close "$(rep nvfp4 .ppl_w)" "$(ours nvfp4.evalw)" 1e-6
    close "$(rep nvfp4 .ppl)" "$(ours nvfp4.eval)" 1e-3
    # without scale_dtype compressed-tensors leaves the dynamic block scales unrounded (1.4e-2)
    run close "$(rep nvfp4-nosd .ppl)" "$(ours nvfp4.eval)" 1e-3
    [ "$status" -eq 1 ]
}

@test "NVFP4 / MXFP4 as written in an f32 model: compressed-tensors decompresses to bf16 (f32 fails); bf16 within 5e-2" {
    need
    for s in nvfp4 mxfp4; do
        [ "$(rep $s .f32_error)" = "expected m1 and m2 to have the same dtype, but got: float != c10::BFloat16" ]
    done
    close "$(rep nvfp4 .ppl_bf16)" "$(ours nvfp4.eval)" 5e-2
    awk -v p="$(rep mxfp4 .ppl_bf16)" 'BEGIN { exit !(p > 1 && p < 1e3) }' # runs; its act rule: below
}

@test "MXFP4: scale_dtype uint8 written; weights-only perplexity = as-eval within 1e-6 (activation exponents differ: docs)" {
    need
    jq -e '.quantization_config.config_groups.group_0 | .weights.scale_dtype == "torch.uint8" and .input_activations.scale_dtype == "torch.uint8"' "$W/mxfp4/config.json"
    close "$(rep mxfp4 .ppl_w)" "$(ours mxfp4.evalw)" 1e-6
    # compressed-tensors rounds the block absmax up from 1.75 * 2^e before taking the exponent
    # (OCP MX: floor(log2 amax)): another activation quantizer, a documented difference
    run close "$(rep mxfp4 .ppl)" "$(ours mxfp4.eval)" 1e-2
    [ "$status" -eq 1 ]
}

@test "FP8 KV cache: transformers drops k_scale / v_scale (10 unexpected keys) and computes the static W8A8 model" {
    need
    [ "$(rep fp8kv '.unexpected_keys | length')" -eq 10 ]
    [ "$(rep fp8kv '.unexpected_keys[0]')" = model.layers.0.self_attn.k_scale ]
    close "$(rep fp8kv .ppl)" "$(ours fp8kv.evalnokv)" 5e-3
    close "$(rep fp8kv .ppl)" "$(rep fp8-static .ppl)" 1e-12
}

@test "AWQ GEMM g32: transformers within 1e-3 of as-eval; GPTQModel.load reads it through 'dynamic' (fails without)" {
    need
    [ "$(rep awq32 .kinds.TorchCpuAvx512AwqLinear)" -eq 20 ]
    close "$(rep awq32 .ppl)" "$(ours awq32.eval)" 1e-3
    close "$(rep awq32 .ppl)" "$(ours awq32-fq.eval)" 1e-3
    run close "$(rep awq32 .ppl)" "$(ours fp8-static.evalw)" 1e-2 # 4 bits moves it far more
    [ "$status" -eq 1 ]
    [ -z "$(rep awq32 .gptqmodel_error)" ]
    [ "$(rep awq32 .kinds_gptqmodel.Linear)" -eq 16 ]
    close "$(rep awq32 .ppl_gptqmodel)" "$(ours awq32.eval)" 1e-2
    # the same checkpoint without gptqmodel's "dynamic" exclusions: gptqmodel fails to run it
    [ -n "$(rep awq32-nodyn .gptqmodel_error)" ]
}

@test "AWQ with no packable linear (group 128): written dense with a notice; transformers = as-eval within 1e-6" {
    need
    grep -qx "as-pack: no linear fits the AWQ GEMM layout: wrote $W/awq128 as a dense checkpoint (the quantizer's weights, no quantization_config)" "$W/awq128.err"
    jq -e 'has("quantization_config") | not' "$W/awq128/config.json"
    [ "$(rep awq128 .kinds.Linear)" -eq 36 ]
    close "$(rep awq128 .ppl)" "$(ours awq128.eval)" 1e-6
}

@test "DeepSeek FP8: transformers dequantizes every whole-grid linear bit for bit (ragged grids wrong: docs)" {
    need
    [ "$(rep ds '.exact | length')" -eq 20 ]
    [ "$(rep ds '.exact | map(select(test("self_attn"))) | length')" -eq 20 ]
    # the 15 MLP linears (172 = 128 + 44) have a ragged block grid, which transformers 5.24 reads
    # as blocks of 86: recorded so that a consumer fix shows up here
    [ "$(rep ds ' | .wrong == .ragged')" = true ]
    [ "$(rep ds '.wrong | length')" -eq 15 ]
}
