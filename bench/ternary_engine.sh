#!/usr/bin/env bash
# Engine decode of packed ternary / 2-bit checkpoints (docs/ternary.md): as-gen on SmolLM2-135M
# packed by as-pack -f sherry / seq2 (RTN codes; every linear packs), the packed int8 kernels
# (AS_TERNARY_KERNELS=1, rows split over the engine's thread pool) against the dequantized f32
# path, 1 and 2 threads (OPENBLAS_NUM_THREADS). Best of REPS (3) runs of TOKENS (64) tokens.
# On a shared machine wall time depends on the load: "tok/s cpu" is tokens x threads / CPU seconds
# of the process (/usr/bin/time; model load and prefill included), the load average is printed.
# Output on stdout (bench/ternary.sh appends it to bench/results/ternary.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
BINDIR=${BINDIR:-bin}
WORK=${WORK:-build/ternary}
TOKENS=${TOKENS:-64}
REPS=${REPS:-3}
SMOL=${SMOL:-$WORK/smol}
mkdir -p "$WORK"
if [ ! -f "$SMOL/model.safetensors" ]; then
    "$BINDIR/as-import" "${AS_SMOLLM2_GGUF:-$(pipelines/smollm2-gguf)}" "$SMOL" >/dev/null 2>&1
fi
for f in sherry seq2; do
    [ -d "$WORK/smol-$f" ] && continue
    "$BINDIR/as-cat" "$SMOL" | "$BINDIR/as-gptq" -m rtn --ternary "$f" 2>/dev/null |
        "$BINDIR/as-pack" -m "$SMOL" -o "$WORK/smol-$f" -f "$f" 2>/dev/null
done
echo "## engine decode: as-gen -n $TOKENS on SmolLM2-135M packed, best of $REPS (load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-7s %-12s %8s %11s %10s\n' format path threads "tok/s wall" "tok/s cpu"
for f in sherry seq2; do
    for k in 1 0; do
        for th in 1 2; do
            best_w=0 best_c=0
            for _ in $(seq "$REPS"); do
                tf=$(mktemp)
                AS_TERNARY_KERNELS=$k OPENBLAS_NUM_THREADS=$th /usr/bin/time -f '%U %S' -o "$tf" \
                    "$BINDIR/as-gen" -m "$WORK/smol-$f" -p "The" -n "$TOKENS" -v 2>"$tf.err" >/dev/null
                w=$(sed -n 's/.*(\([0-9.]*\) tokens\/s).*/\1/p' "$tf.err")
                c=$(awk -v n="$TOKENS" -v th="$th" '{ printf "%.1f", n * th / ($1 + $2) }' "$tf")
                best_w=$(awk -v a="$best_w" -v b="$w" 'BEGIN { print (b > a ? b : a) }')
                best_c=$(awk -v a="$best_c" -v b="$c" 'BEGIN { print (b > a ? b : a) }')
                rm -f "$tf" "$tf.err"
            done
            printf '%-7s %-12s %8d %11s %10s\n' "${f^^}" "$([ "$k" = 1 ] && echo kernels || echo dequant-f32)" "$th" "$best_w" "$best_c"
        done
    done
done
