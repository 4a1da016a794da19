#!/usr/bin/env bash
# Prefill cost of token pruning on long prompts (issue 21, docs/token-pruning.md): as-eval
# --prune-tokens on SmolLM2-135M-Instruct, WikiText-2 windows of CTX tokens whose first half is the
# prompt, pruned before layer LAYER at keep 50 / 25 / 10 %. Per (method, keep): prompt tokens kept,
# the theoretical FLOP reduction of the prefill and the measured speedup against the unpruned
# prefill of the same prompt in the same run (selection cost included), and the second half's PPL
# and KLD against the unpruned model. Results in bench/results/prune-eval.{md,jsonl}.
#   CTX=2048 CHUNKS=1 LAYER=2 METHODS=random,fastv,idpruner KEEPS=0.5,0.25,0.1 SMOL=DIR bench/prune_eval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${BINDIR:-bin}}
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
CTX=${CTX:-2048}
CHUNKS=${CHUNKS:-1}
LAYER=${LAYER:-2}
METHODS=${METHODS:-random,fastv,idpruner}
KEEPS=${KEEPS:-0.5,0.25,0.1}
OUT=bench/results
TMP=${TMPDIR:-/tmp}/as-bench-prune-eval.$$
mkdir -p "$TMP" "$OUT"
trap 'rm -rf "$TMP"' EXIT
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} AS_PROGRESS=0
SMOL=${SMOL:-}
if [ -z "$SMOL" ]; then
    SMOL=$TMP/smol
    "$BIN/as-import" "$(pipelines/smollm2-gguf)" "$SMOL" >/dev/null
fi
: >"$OUT/prune-eval.jsonl"
for m in ${METHODS//,/ }; do
    for k in ${KEEPS//,/ }; do
        "$BIN/as-eval" -m "$SMOL" -f "$AS_DATA/text/wikitext-2-raw/wiki.test.raw" --ctx "$CTX" \
            --chunks "$CHUNKS" --prune-tokens "$m:$k:$LAYER" --json >>"$OUT/prune-eval.jsonl"
    done
done
{
    echo "# as-eval --prune-tokens on SmolLM2-135M-Instruct: $CHUNKS WikiText-2 window(s) of $CTX tokens, prompt = first half, pruned before layer $LAYER"
    echo "# $(date -u +%F) $(git rev-parse --short HEAD) $(nproc) cpus, OpenBLAS threads $OPENBLAS_NUM_THREADS"
    echo
    echo "| method | keep | prompt tokens kept | FLOP reduction | measured prefill speedup | unpruned / pruned prefill (s) | PPL (unpruned $(jq -s -r '.[0].ppl * 100 | round / 100' "$OUT/prune-eval.jsonl")) | KLD vs unpruned |"
    echo "|---|---|---|---|---|---|---|---|"
    jq -r '.prune | (.spec | split(":")) as $s | "| \($s[0]) | \($s[1]) | \(.kept_tokens)/\(.prompt_tokens) | \(.flops_reduction * 100 | round / 100)x | \(.prefill_speedup * 100 | round / 100)x | \(.prefill_full_s * 100 | round / 100) / \(.prefill_pruned_s * 100 | round / 100) | \(.ppl * 100 | round / 100) | \(.kld_mean * 1000 | round / 1000) |"' \
        "$OUT/prune-eval.jsonl"
} | tee "$OUT/prune-eval.md"
