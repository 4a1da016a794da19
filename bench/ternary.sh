#!/usr/bin/env bash
# Ternary / 2-bit packed kernels against the bf16 baseline and llama.cpp (docs/ternary.md), one run:
#  - memory read bandwidth, 1 and 2 threads (bench_ternary bw)
#  - GEMV per format on 0.7B-shaped layers (1536x1536, 4096x1536, 1536x4096) and SmolLM2-135M's
#    (576x576, 192x576, 1536x576, 576x1536): time, GB/s of packed weights, GMAC/s, % of bandwidth;
#    SHERRY-LUT / TQ1_0-LUT (kernel_lut.h) beside their formats, also against the format's bytes
#    and SEQ2-R2 (SEQ2 through the two-row pass its four-row pass replaced) beside SEQ2
#  - decode tokens/s of the linears of a synthetic 0.7B-shaped model, 1 and 2 threads, model MB;
#    then RATIO_REPS (3) whole decode runs per thread count: SHERRY and SHERRY-LUT over I2_S
#  - llama.cpp's own TQ1_0 / TQ2_0 / Q4_0 (llama-bench tg, -p 0) on a synthetic 0.7B-shaped GGUF of
#    the same shapes (bench/ternary_llama_model.py, SmolLM2's tokenizer), file sizes
#  - the engine's decode (as-gen) of SmolLM2-135M packed SHERRY / SEQ2, kernels against the
#    dequantized path, 1 and 2 threads (bench/ternary_engine.sh)
# The machine is shared: our numbers are per-thread CPU time (the busiest thread), llama-bench's
# are wall time (its own report) and CPU time (tokens x threads / CPU seconds of the process, from
# /usr/bin/time, warm-up and load included); the load average is printed with each part.
# Writes OUT (bench/results/ternary.txt). TOKENS (4) per decode run, LLREPS (2) llama-bench
# repetitions. KERNELS_ONLY=1: memory, GEMV, decode and the ratio runs alone (no llama.cpp, no
# engine), e.g. KERNELS_ONLY=1 OUT=bench/results/ternary-lut.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
BINDIR=${BINDIR:-bin}
WORK=${WORK:-build/ternary}
TOKENS=${TOKENS:-4}
LLREPS=${LLREPS:-2}
KERNELS_ONLY=${KERNELS_ONLY:-0}
OUT=${OUT:-bench/results/ternary.txt}
B=$BUILD/bench/bench_ternary
[ -x "$B" ] || { echo "ternary.sh: $B missing (make all)" >&2; exit 1; }
mkdir -p "$WORK" bench/results
load() { cut -d' ' -f1-3 /proc/loadavg; }

kernels() {
    echo "## memory (load $(load))"
    "$B" bw 1
    "$B" bw 2
    echo
    echo "## GEMV, 1 thread (load $(load))"
    "$B" gemv 1536x1536 4096x1536 1536x4096 576x576 192x576 1536x576 576x1536
    echo
    for th in 1 2; do
        echo "## decode, $th thread(s) (load $(load))"
        "$B" decode "$th" "$TOKENS"
        echo
    done
    # SHERRY (and its LUT copy) / I2_S, the issue's ratio target: whole decode runs alternating 1
    # and 2 threads, RATIO_REPS (3) times
    echo "## decode ratio SHERRY / I2_S and SHERRY-LUT / I2_S, ${RATIO_REPS:-3} alternating runs"
    for rep in $(seq "${RATIO_REPS:-3}"); do
        for th in 1 2; do
            echo "rep $rep threads $th load $(cut -d' ' -f1 /proc/loadavg): $("$B" decode "$th" "$TOKENS" |
                awk '$1 == "I2_S" { i = $4 } $1 == "SHERRY" { s = $4 } $1 == "SHERRY-LUT" { l = $4 }
                     END { printf "I2_S %.1f SHERRY %.1f ratio %.3f SHERRY-LUT %.1f ratio %.3f", i, s, s / i, l, l / i }')"
        done
    done
    echo
}

if [ "$KERNELS_ONLY" = 1 ]; then
    {
        echo "# bench/ternary.sh KERNELS_ONLY $(date -u +%FT%TZ) $(git rev-parse --short HEAD), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
        kernels
    } | tee "$OUT"
    exit 0
fi

LLBIN=$(bash bench/llamacpp-build.sh | sed -n 's/^llama.cpp binaries: //p')
[ -n "$LLBIN" ] || { echo "ternary.sh: llama.cpp build failed" >&2; exit 1; }
GGUF=${AS_SMOLLM2_GGUF:-$(pipelines/smollm2-gguf)}
PY=${PY:-.venv/bin/python3}

# llama.cpp compatibility: a 2-layer model of the same widths quantized by llama.cpp to TQ1_0 and
# TQ2_0, imported by as-import (ggml_types.c's TQ rows), perplexity by both on 2 windows of 512
if [ ! -f "$WORK/compat/TQ2_0.gguf" ]; then
    mkdir -p "$WORK/compat"
    "$PY" bench/ternary_llama_model.py "$GGUF" "$WORK/compat/f16.gguf" 2
    for t in TQ1_0 TQ2_0; do
        "$LLBIN/llama-quantize" "$WORK/compat/f16.gguf" "$WORK/compat/$t.gguf" "$t" 2 >"$WORK/compat/q-$t.log" 2>&1
    done
fi

if [ ! -f "$WORK/Q4_0.gguf" ]; then
    [ -f "$WORK/f16.gguf" ] || "$PY" bench/ternary_llama_model.py "$GGUF" "$WORK/f16.gguf"
    for t in TQ1_0 TQ2_0 Q4_0; do
        [ -f "$WORK/$t.gguf" ] || {
            "$LLBIN/llama-quantize" "$WORK/f16.gguf" "$WORK/$t.gguf.tmp" "$t" 2 >"$WORK/quantize-$t.log" 2>&1
            mv "$WORK/$t.gguf.tmp" "$WORK/$t.gguf"
        }
    done
fi

{
    echo "# bench/ternary.sh $(date -u +%FT%TZ) $(git rev-parse --short HEAD), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
    echo "## llama.cpp compatibility: llama-perplexity vs as-eval of the as-import'ed GGUF, 2 x 512 tokens of wiki.test.raw"
    head -c 100000 "${AS_DATA:-../shared/data}/text/wikitext-2-raw/wiki.test.raw" >"$WORK/compat/wiki100k.txt"
    for t in TQ1_0 TQ2_0; do
        rm -rf "$WORK/compat/hf-$t"
        "$BINDIR/as-import" "$WORK/compat/$t.gguf" "$WORK/compat/hf-$t" 2>/dev/null
        ours=$("$BINDIR/as-eval" -m "$WORK/compat/hf-$t" -f "$WORK/compat/wiki100k.txt" --ctx 512 --chunks 2 --json | jq -r .ppl)
        theirs=$(OMP_WAIT_POLICY=passive "$LLBIN/llama-perplexity" -m "$WORK/compat/$t.gguf" -f "$WORK/compat/wiki100k.txt" \
            -c 512 -t 2 --chunks 2 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
        awk -v t="$t" -v a="$ours" -v b="$theirs" 'BEGIN { printf "%s: as-eval %.4f, llama-perplexity %.4f, relative %.2e\n", t, a, b, a / b - 1 }'
    done
    echo "## as-pack -f gguf --gguf-ternary: our TQ files of the same model (F16 imported, RTN ternary codes), llama-perplexity vs as-eval"
    [ -d "$WORK/compat/hf-f16" ] || "$BINDIR/as-import" "$WORK/compat/f16.gguf" "$WORK/compat/hf-f16" 2>/dev/null
    "$BINDIR/as-cat" "$WORK/compat/hf-f16" | "$BINDIR/as-gptq" -m rtn --ternary tq2_0 2>/dev/null >"$WORK/compat/tern.astr"
    for t in tq1_0 tq2_0; do
        "$BINDIR/as-pack" -m "$WORK/compat/hf-f16" -f gguf --gguf-ternary "$t" -o "$WORK/compat/ours-$t.gguf" "$WORK/compat/tern.astr" 2>/dev/null
        ours=$("$BINDIR/as-eval" -m "$WORK/compat/ours-$t.gguf" -f "$WORK/compat/wiki100k.txt" --ctx 512 --chunks 2 --json | jq -r .ppl)
        theirs=$(OMP_WAIT_POLICY=passive "$LLBIN/llama-perplexity" -m "$WORK/compat/ours-$t.gguf" -f "$WORK/compat/wiki100k.txt" \
            -c 512 -t 2 --chunks 2 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
        awk -v t="$t" -v a="$ours" -v b="$theirs" 'BEGIN { printf "%s (as-pack): as-eval %.4f, llama-perplexity %.4f, relative %.2e\n", t, a, b, a / b - 1 }'
    done
    rm -f "$WORK/compat/tern.astr" "$WORK/compat/ours-"*.gguf
    echo
    kernels
    echo "## llama.cpp llama-bench tg$((16)) -p 0, synthetic 0.7B-shaped GGUF (load $(load))"
    printf '%-7s %9s %8s %12s %12s\n' type MB threads "tok/s wall" "tok/s cpu"
    for th in 1 2; do
        for t in TQ1_0 TQ2_0 Q4_0; do
            f=$WORK/$t.gguf
            tf=$(mktemp)
            OMP_WAIT_POLICY=passive /usr/bin/time -f '%U %S' -o "$tf" "$LLBIN/llama-bench" -m "$f" -p 0 \
                -n 16 -r "$LLREPS" -t "$th" -o json 2>/dev/null >"$tf.json"
            wall=$(jq -r '.[0].avg_ts' "$tf.json")
            cpu=$(awk -v n=$((16 * LLREPS + 1)) -v th="$th" '{ printf "%.2f", n * th / ($1 + $2) }' "$tf")
            printf '%-7s %9.1f %8d %12.2f %12s\n' "$t" "$(($(stat -c %s "$f") / 100000))e-1" "$th" "$wall" "$cpu"
            rm -f "$tf" "$tf.json"
        done
    done
    echo
    BINDIR=$BINDIR WORK=$WORK bash bench/ternary_engine.sh # the engine's packed path, 1 and 2 threads
} | tee "$OUT"
