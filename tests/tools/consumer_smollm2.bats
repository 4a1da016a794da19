#!/usr/bin/env bats
# Real consumers on the real model, SmolLM2-135M-Instruct (docs/consumers.md has the table): every
# format as-pack writes, each checkpoint as written, loaded once by its consumer in one Python
# process (tests/consumers/formats.py: transformers 5.24 + compressed-tensors 0.20, optimum +
# gptqmodel 7.7) or by llama.cpp, and its perplexity compared with as-eval's on the same text.
# Cheap on purpose (CI time): RTN / data-free scales (as-lepto; static input scales from 4 x 128
# calibration tokens), one window of 128 tokens (as-eval --score all convention: 127 scored
# positions), SmolLM2 imported once per file. Weights only = the consumer's input QDQ switched off
# against as-eval --act-quant none (exact: 1e-5); with the activation scheme the tolerance is the
# measured chaos of rounding flips on one window (below, docs/consumers.md). Without .venv-consumer or llama.cpp every test
# skips "optional:", which AS_REQUIRE_CONSUMER=1 (make check) turns into a failure. Not run under
# SAN/VALGRIND (tests/run): it instruments Python and llama.cpp, not our C.

load helpers
set -o pipefail

setup_file() {
    export ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
    export W=$BATS_FILE_TMPDIR R=$BATS_FILE_TMPDIR/report.json
    local build=${BUILD:-build/rel}
    [[ $build == /* ]] || build="$ROOT/$build"
    export TV="$build/tests/test_gguf_vocab"
    export LB=${LLAMACPP_DIR:-$ROOT/build/llama.cpp}/build/bin
    export OMP_WAIT_POLICY=passive # llama.cpp's spinning threads starve a shared machine
    export CONSUMER_SKIP="" CONSUMER_MISSING=""
    local PY=$ROOT/.venv-consumer/bin/python3 t
    for t in "$PY" "$LB/llama-perplexity" "$LB/llama-tokenize" "$LB/llama-quantize"; do
        [ -x "$t" ] && continue
        if [ "${AS_REQUIRE_CONSUMER:-0}" = 1 ]; then
            export CONSUMER_MISSING="AS_REQUIRE_CONSUMER=1 but $t does not exist (make deps)"
        else
            export CONSUMER_SKIP="optional: $t absent (make deps installs it; AS_REQUIRE_CONSUMER=1 makes this a failure)"
        fi
        return 0
    done
    export S=$W/smol
    as-import "$($ROOT/pipelines/smollm2-gguf)" "$S" >/dev/null 2>&1
    # 157 tokens: one window of 128 (SmolLM2 adds no BOS)
    head -c 600 "$WIKI" >"$W/text.txt"
    as-calib -m "$S" -d "$AUSTEN" -n 4 -l 128 >"$W/calib.astr" 2>/dev/null
    local s
    for s in fp8-static fp8-dynamic int8-dynamic nvfp4 mxfp4 fp8-block; do
        as-lepto -m "$S" -s $s "$W/calib.astr" >"$W/$s.astr"
    done
    as-lepto -m "$S" -s w4a8-fp8 --group 32 "$W/calib.astr" >"$W/w4a8.astr"
    rm -f "$W/calib.astr" # 400 MB of Hessians
    for s in fp8-static fp8-dynamic int8-dynamic nvfp4 mxfp4 w4a8; do
        as-pack -m "$S" -f ct-fp -o "$W/$s" "$W/$s.astr" 2>/dev/null
    done
    as-pack -m "$S" -f fp8 -o "$W/ds" "$W/fp8-block.astr" 2>/dev/null
    # W4 g32 symmetric RTN: one stream for compressed-tensors, GPTQ v1, AWQ GEMM and GGUF Q4_0
    as-cat "$S" | as-gptq -m rtn -b 4 -g 32 >"$W/rtn.astr" 2>/dev/null
    as-pack -m "$S" -f compressed-tensors -o "$W/ct" <"$W/rtn.astr" 2>/dev/null
    as-pack -m "$S" -f gptq -o "$W/gptq" <"$W/rtn.astr" 2>/dev/null
    as-pack -m "$S" -f awq -o "$W/awq" <"$W/rtn.astr" 2>/dev/null
    as-pack -m "$S" -f gguf -o "$W/q4_0.gguf" <"$W/rtn.astr" 2>/dev/null
    rm -f "$W"/*.astr
    # llama.cpp: its own dequantization of our blocks (F32), and two windows of 512
    "$LB/llama-quantize" --allow-requantize "$W/q4_0.gguf" "$W/q4_0-f32.gguf" F32 >"$W/lq.log" 2>&1
    head -c 100000 "$WIKI" >"$W/w100k.txt"
    # varied text: leading space, digits, non-ASCII numerals, a decomposed e, CRLF, tabs, chat
    # tokens, code, CJK, emoji; then Austen and wiki
    printf ' Hello world, 1234567 \xc3\xbcn\xc3\xafcode \xc2\xbd \xc2\xb2 \xd9\xa3 e\xcc\x81\r\n  two  spaces\ttab\n<|im_start|>user\nHi<|im_end|>\ndef f(x):\n    return x**2  # \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82\n' >"$W/v.txt"
    head -c 10000 "$AUSTEN/emma.txt" >>"$W/v.txt"
    head -c 10000 "$WIKI" >>"$W/v.txt"
    local d
    for d in smol fp8-static fp8-dynamic int8-dynamic nvfp4 mxfp4 w4a8 ct gptq awq; do
        as-eval -m "$W/$d" -f "$W/text.txt" --ctx 128 --score all --json >"$W/$d.eval"
    done
    for d in fp8-static fp8-dynamic int8-dynamic nvfp4 mxfp4 w4a8; do
        as-eval -m "$W/$d" -f "$W/text.txt" --ctx 128 --score all --json --act-quant none >"$W/$d.evalw"
    done
    "$PY" "$ROOT/tests/consumers/formats.py" "$R" "$W/text.txt" 128 "$S" "dense:smol:$S" \
        "ct:fp8-static:$W/fp8-static" "ct:fp8-dynamic:$W/fp8-dynamic" \
        "ct:int8-dynamic:$W/int8-dynamic" "ct:w4a8:$W/w4a8" "ct:nvfp4:$W/nvfp4:nobf16" \
        "ct:mxfp4:$W/mxfp4:nobf16" "ct:ct:$W/ct" "gptq:gptq:$W/gptq" "awq:awq:$W/awq:noload" \
        "ds:ds:$W/ds" >"$W/consumer.log" 2>&1 || true
    rm -f "$S/model.safetensors" # 540 MB, not needed any more
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
# far A B TOL: the two differ by more than TOL relative (a comparison at TOL can tell them apart)
far() {
    run close "$1" "$2" "$3"
    [ "$status" -eq 1 ]
}

@test "SmolLM2 dense: transformers = as-eval within 1e-5; 127 positions scored" {
    need
    [ "$(jq -r .scored "$W/smol.eval")" -eq 127 ]
    [ "$(rep smol .kinds.Linear)" -eq 211 ]
    close "$(rep smol .ppl)" "$(ours smol.eval)" 1e-5
}

# With activation quantization one window of SmolLM2 is chaotic: jittering every quantized linear's
# input by 1e-7 relative (the size of a summation-order difference) moves the consumer's FP8-static
# perplexity by up to 1.8% (measured, docs/consumers.md), so these comparisons are loose (1e-1);
# the exact semantics of the activation schemes are checked on stories260K (consumer_formats.bats,
# 1,778 positions, 5e-3), and here the weights, exactly.
@test "SmolLM2 FP8 static / dynamic, INT8 W8A8, W4A8: compressed-tensors weights only within 1e-5, with activations within 1e-1" {
    need
    for s in fp8-static fp8-dynamic int8-dynamic w4a8; do
        [ "$(rep $s '.kinds.Linear')" -eq 211 ]
        [ "$(rep $s '.missing_keys | length')" -eq 0 ]
        [ "$(rep $s '.unexpected_keys | length')" -eq 0 ]
        close "$(rep $s .ppl_w)" "$(ours $s.evalw)" 1e-5
        close "$(rep $s .ppl)" "$(ours $s.eval)" 1e-1
    done
}

@test "SmolLM2 NVFP4: weights only within 1e-5, with dynamic FP4 activation blocks within 1.5e-1" {
    need
    close "$(rep nvfp4 .ppl_w)" "$(ours nvfp4.evalw)" 1e-5
    # measured 5.9e-2: 4-bit activations are the most chaotic
    close "$(rep nvfp4 .ppl)" "$(ours nvfp4.eval)" 1.5e-1
    # the FP4 activation blocks are applied by both: they move perplexity by far more
    far "$(rep nvfp4 .ppl)" "$(rep nvfp4 .ppl_w)" 1e-1
    far "$(ours nvfp4.eval)" "$(ours nvfp4.evalw)" 1e-1
}

@test "SmolLM2 MXFP4: weights only within 1e-5 (activation exponents differ by rule: docs)" {
    need
    close "$(rep mxfp4 .ppl_w)" "$(ours mxfp4.evalw)" 1e-5
    # compressed-tensors rounds the block absmax up from 1.75 * 2^e before the exponent (OCP MX:
    # floor(log2 amax)); recorded, not compared (pinned on stories260K)
    echo "with activations: consumer $(rep mxfp4 .ppl), as-eval $(ours mxfp4.eval)"
}

@test "SmolLM2 W4 g32 compressed-tensors pack-quantized: transformers = as-eval within 1e-5" {
    need
    [ "$(rep ct '.kinds.Linear')" -eq 211 ]
    close "$(rep ct .ppl)" "$(ours ct.eval)" 1e-5
    far "$(rep ct .ppl)" "$(ours smol.eval)" 1e-2 # 4 bits moves it far more
}

@test "SmolLM2 GPTQ v1 W4 g32: transformers' torch kernel (f32 scales) within 1e-5, as loaded and GPTQModel.load within 1e-2" {
    need
    [ "$(rep gptq .kinds.TorchLinear)" -eq 210 ]
    [ "$(rep gptq .scales_widened)" -eq 210 ]
    close "$(rep gptq .ppl)" "$(ours gptq.eval)" 1e-5
    # the kernel transformers picks depends on the CPU (TorchCpuAvx512Linear with AVX512): any,
    # as long as all 210 linears are quantized ones
    [ "$(rep gptq '.kinds_auto | to_entries | map(select(.key != "Linear").value) | add')" -eq 210 ]
    close "$(rep gptq .ppl_auto)" "$(ours gptq.eval)" 1e-2
    [ -z "$(rep gptq .gptqmodel_error)" ]
    close "$(rep gptq .ppl_gptqmodel)" "$(ours gptq.eval)" 1e-2
    # fp16 scales (GPTQ) against f32 ones (compressed-tensors): as-eval tells them apart
    far "$(ours gptq.eval)" "$(ours ct.eval)" 1e-5
}

@test "SmolLM2 AWQ GEMM g32: transformers (gptqmodel's AWQ CPU kernel, fp16) within 1e-2 of as-eval" {
    need
    [ "$(rep awq '.kinds | to_entries | map(select(.key != "Linear").value) | add')" -eq 210 ]
    close "$(rep awq .ppl)" "$(ours awq.eval)" 1e-2
    far "$(rep awq .ppl)" "$(ours smol.eval)" 1e-1
}

@test "SmolLM2 DeepSeek FP8 block: transformers 5.24 refuses its ragged block grids (576 = 4.5 x 128; docs)" {
    need
    [ -s "$R" ]
    jq -r .ds.error "$R"
    jq -r .ds.error "$R" | grep -q "We encountered some issues during automatic conversion of the weights"
    grep -q "Weight shape (576, 1536) not divisible by scale grid (5, 12)" "$W/consumer.log"
}

# lppl GGUF TEXT CTX CHUNKS [ARGS...]: llama-perplexity's log in $W/lppl.log, its final estimate
# on stdout. llama.cpp 0c1e57098 logs through a worker thread never flushed at exit
# (ggml-org/llama.cpp#22142): a run whose log lost the final lines is repeated, at most 3 times
# (as consumer_llamacpp.bats).
lppl() {
    local m=$1 f=$2 c=$3 n=$4 rc try
    shift 4
    for try in 1 2 3; do
        rc=0
        "$LB/llama-perplexity" -m "$m" -f "$f" -c "$c" --chunks "$n" -t 2 "$@" >"$W/lppl.log" 2>&1 || rc=$?
        [ $rc -ne 0 ] && break
        grep -q "Final estimate\|Mean    KLD" "$W/lppl.log" && break
        echo "llama-perplexity $m: no final estimate in its log (try $try)" >&2
    done
    grep -q "Final estimate\|Mean    KLD" "$W/lppl.log" || { echo "llama-perplexity $m: status $rc" >&2; tail -3 "$W/lppl.log" >&2; }
    sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p; s/^Mean PPL(Q) *: *\([0-9.]*\).*/\1/p' "$W/lppl.log"
}
eval512() { as-eval -m "$1" -f "$W/w100k.txt" --ctx 512 --chunks 2 --json | jq -r .ppl; }

@test "SmolLM2 GGUF Q4_0 (as-pack): llama.cpp's F32 dequantization of our blocks = as-eval within 1e-4" {
    need
    # every linear is a Q4_0 tensor (the gguf package reads the file)
    [ "$(python3 -c 'import gguf, sys; print(sum(t.tensor_type.name == "Q4_0" for t in gguf.GGUFReader(sys.argv[1]).tensors))' "$W/q4_0.gguf")" -eq 210 ]
    close "$(lppl "$W/q4_0-f32.gguf" "$W/w100k.txt" 512 2)" "$(eval512 "$W/q4_0.gguf")" 1e-4
}

@test "SmolLM2 GGUF Q4_0 as is: llama-perplexity (8-bit activation blocks inside its Q4_0 dot products) within 2e-2 of as-eval; KLD to its F32 run below 5e-3" {
    need
    local ours q f32 kld
    ours=$(eval512 "$W/q4_0.gguf")
    f32=$(lppl "$W/q4_0-f32.gguf" "$W/w100k.txt" 512 2 --kl-divergence-base "$W/f32.kld")
    q=$(lppl "$W/q4_0.gguf" "$W/w100k.txt" 512 2 --kl-divergence-base "$W/f32.kld" --kl-divergence)
    close "$q" "$ours" 2e-2
    # the difference is llama.cpp's kernels, not our reading of the blocks: the F32 run agrees
    # with us 100 times more closely (above) and the quantized run is measurably away from it
    far "$q" "$f32" 1e-3
    kld=$(sed -n 's/^Mean    KLD: *\([0-9.]*\).*/\1/p' "$W/lppl.log")
    echo "mean KLD llama.cpp Q4_0 vs its F32 dequantization: $kld"
    awk -v k="$kld" 'BEGIN { exit !(k != "" && k > 0 && k < 5e-3) }'
}

@test "SmolLM2 GGUF Q4_0 (as-pack): llama-tokenize gives our tokenizer's ids on varied text" {
    need
    "$LB/llama-tokenize" -m "$W/q4_0.gguf" -f "$W/v.txt" --ids --log-disable 2>/dev/null | tr -d '[],' |
        tr ' ' '\n' | grep -v '^$' >"$W/l.ids"
    "$TV" encode "$W/q4_0.gguf" "$W/v.txt" --special >"$W/c.ids"
    echo "llama.cpp $(wc -l <"$W/l.ids") ids, ours $(wc -l <"$W/c.ids")"
    [ "$(wc -l <"$W/c.ids")" -gt 1000 ]
    cmp "$W/l.ids" "$W/c.ids"
}
