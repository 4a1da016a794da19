#!/usr/bin/env bash
# SmolLM2-135M SEQ 2-bit QAT distilled from the fp32 model (KL only, the lowest-KLD loss on
# stories260K, docs/qat.md), as one long run cut into slices: every invocation continues the
# run from its state for SLICE optimizer steps (the schedule is that of the whole --steps),
# exports the checkpoint at the step reached (as-qat --export) and appends a row to $OUT:
# step, tokens seen, KLD / PPL / top-1 against the teacher on held-out Austen (Persuasion).
# The same command continues later: `nice -n 10 bench/qat-smollm2.sh` (kill it any time: at
# most --save-every steps are lost). The first invocation also writes the row before training
# (the same quantizer at its initial scales).
set -euo pipefail
cd "$(dirname "$0")/.."
BINDIR=${BINDIR:-bin}
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
WORK=${WORK:-/tmp/as-qat-smollm2}
SLICE=${SLICE:-10}
STEPS=${STEPS:-2000}
THREADS=${THREADS:-2}
EVAL_BYTES=${EVAL_BYTES:-30000}
OUT=${OUT:-bench/results/qat-smollm2.txt}
export PATH="$(cd "$BINDIR" && pwd):$PATH" AS_PROGRESS=0
mkdir -p "$WORK" "$(dirname "$OUT")"
M=${MODEL:-$WORK/model}
[ -d "$M" ] || as-import "$(pipelines/smollm2-gguf)" "$M" >/dev/null
HELD=$AS_DATA/text/austen/persuasion.txt
RUN=(-m "$M" -t "$M" -d "$AS_DATA/text/austen/emma.txt" --scheme seq2 --w-ce 0 --steps "$STEPS"
    --seq 256 --batch 8 --lr 1e-4 --sched cosine --warmup 0.05 --clip 1 --threads "$THREADS"
    --state "$WORK/run.state" --save-every 5 --log "$WORK/run.jsonl")

row() { # row NAME DIR STEP TOKENS
    local j
    j=$(as-eval -m "$2" -b "$M" -f "$HELD" --bytes "$EVAL_BYTES" --ctx 256 --json)
    printf '| %-10s | %5s | %8s | %7.4f | %8.3f | %5.3f | %s |\n' "$1" "$3" "$4" \
        "$(jq '.kld.mean' <<<"$j")" "$(jq '.ppl' <<<"$j")" "$(jq '.same_top' <<<"$j")" \
        "$(date -u +%Y-%m-%dT%H:%MZ)" | tee -a "$OUT"
}
if [ ! -s "$OUT" ]; then
    {
        echo "# SmolLM2-135M seq2 KL-only QAT, --steps $STEPS (8 x 256 tokens a step), lr 1e-4 cosine"
        echo "# KLD vs the fp32 teacher on Persuasion (first $EVAL_BYTES B, ctx 256)"
        echo "| row        | step  | tokens   | KLD     | PPL      | top-1 | when |"
        echo "|---|---|---|---|---|---|---|"
    } >>"$OUT"
    [ -d "$WORK/ptq" ] || as-qat -m "$M" -d "$HELD" --scheme seq2 --steps 1 --lr 0 --seq 256 \
        --batch 1 --threads "$THREADS" -o "$WORK/ptq"
    row "PTQ" "$WORK/ptq" 0 0
fi
as-qat "${RUN[@]}" --resume --stop-after "$SLICE"
rm -rf "$WORK/ckpt"
as-qat "${RUN[@]}" --resume --export -o "$WORK/ckpt"
last=$(tail -1 "$WORK/run.jsonl")
row "QAT" "$WORK/ckpt" "$(jq .step <<<"$last")" "$(jq .tokens <<<"$last")"
