#!/usr/bin/env bash
# QAT quality on stories260K (docs/qat.md): for each scheme, the quantizer before training (PTQ:
# the same fake quantizer at its initial scales, learning rate 0) and after as-qat with CE+KL,
# KL only and CE only; the fp32 student trained with the same loss as a control. Training on
# Austen (Pride and Prejudice), evaluation with as-eval against the teacher on the held-out
# protocol text (wikitext-2 test, first EVAL_BYTES, ctx 256): KLD, PPL, top-1 agreement.
# The anchor recipe: batch 8 x 256 tokens, AdamW lr 1e-3, 5% warmup + cosine, clip 1.0;
# STEPS=1200 is the anchor's 2.5M tokens (default 300 here: ~0.6M tokens, minutes per row).
# Resumable: each row's state and output stay in $WORK; rerun to continue or reuse.
# Also a speed row per sequence length (--speed: tokens/s, GFLOP/s vs sgemm peak, peak RSS).
set -euo pipefail
cd "$(dirname "$0")/.."
BINDIR=${BINDIR:-bin}
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
STEPS=${STEPS:-300}
EVAL_BYTES=${EVAL_BYTES:-100000}
SCHEMES=${SCHEMES:-seq2 absmean tequila sherry}
WORK=${WORK:-/tmp/as-qat-bench}
THREADS=${THREADS:-1}
export PATH="$(cd "$BINDIR" && pwd):$PATH" AS_PROGRESS=0
mkdir -p "$WORK" bench/results
M=$WORK/stories260K
[ -d "$M" ] || as-import -t "$AS_DATA/models/stories260K/tok512.bin" \
    "$AS_DATA/models/stories260K/stories260K.bin" "$M"
TXT=$AS_DATA/text/austen/pride_and_prejudice.txt
WIKI=$AS_DATA/text/wikitext-2-raw/wiki.test.raw
RECIPE=(--seq 256 --batch 8 --lr 1e-3 --sched cosine --warmup 0.05 --clip 1 --threads "$THREADS")

row() { # row NAME SCHEME-ARGS... : train (resumable), evaluate, print a table row
    local name=$1 out=$WORK/$1
    shift
    [ -d "$out" ] || as-qat -m "$M" -d "$TXT" "$@" --state "$out.state" --resume \
        --log "$out.jsonl" -o "$out"
    local j
    j=$(as-eval -m "$out" -b "$M" -f "$WIKI" --bytes "$EVAL_BYTES" --ctx 256 --json)
    printf '| %-26s | %7s | %7.4f | %8.3f | %6.3f |\n' "$name" \
        "$(jq -r 'select(.step) | .tokens' "$out.jsonl" 2>/dev/null | tail -1)" \
        "$(jq '.kld.mean' <<<"$j")" "$(jq '.ppl' <<<"$j")" "$(jq '.same_top' <<<"$j")"
}

out=bench/results/qat.txt
{
    echo "# as-qat on stories260K, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), STEPS=$STEPS"
    echo "| row                        | tokens  | KLD     | PPL      | top-1  |"
    echo "|---|---|---|---|---|"
    j=$(as-eval -m "$M" -f "$WIKI" --bytes "$EVAL_BYTES" --ctx 256 --json)
    printf '| %-26s | %7s | %7.4f | %8.3f | %6.3f |\n' "teacher (fp32)" - 0 "$(jq '.ppl' <<<"$j")" 1
    row "fp32 control CE+KL" --scheme none -t "$M" --steps "$STEPS" "${RECIPE[@]}"
    for s in $SCHEMES; do
        row "$s PTQ (before)" --scheme "$s" -t "$M" --steps 1 --lr 0 --seq 256 --batch 1
        row "$s CE+KL" --scheme "$s" -t "$M" --steps "$STEPS" "${RECIPE[@]}"
        row "$s KL only" --scheme "$s" -t "$M" --w-ce 0 --steps "$STEPS" "${RECIPE[@]}"
        row "$s CE only" --scheme "$s" --steps "$STEPS" "${RECIPE[@]}"
    done
    [[ " $SCHEMES " == *" sherry "* ]] &&
        row "sherry+Arenas CE+KL" --scheme sherry --arenas 1 -t "$M" --steps "$STEPS" "${RECIPE[@]}"
    echo
    echo "# speed (seq2, CE+KL, $THREADS thread(s)): matmul GFLOP/s against the sgemm peak of the same run"
    for T in 64 128 256 512; do
        as-qat -m "$M" -t "$M" -d "$TXT" --scheme seq2 --steps 8 --seq $T --batch 4 --threads "$THREADS" --speed
    done
} | tee "$out.tmp"
mv "$out.tmp" "$out"
