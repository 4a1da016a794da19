#!/usr/bin/env bash
# The quick demo (make demo-tiny): a full compression pipeline on the bundled stories260K model,
# with its quality report, in seconds. The README's main demo is pipelines/demo.sh (SmolLM2-135M).
#   1. as-import the llama2.c stories260K model into a Hugging Face checkpoint
#   2. W4A16 group-32 GPTQ (pipelines/w4a16-gptq.mk): as-calib on Jane Austen -> as-gptq per
#      layer -> as-pack (GPTQ v1 and compressed-tensors) -> as-eval on WikiText-2
#   3. the same with round-to-nearest, for comparison, and a quality table.
# Outputs go to OUT (default out/demo); rerunning resumes where a killed run stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$(pwd)/bin}
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
OUT=${OUT:-out/demo-tiny}
BITS=${BITS:-4}
GROUP=${GROUP:-32}
EVAL="EVAL_TEXT=$AS_DATA/text/wikitext-2-raw/wiki.test.raw EVAL_BYTES=100000 EVAL_CTX=256"
MODEL=$OUT/model
mkdir -p "$OUT"
if [ ! -f "$MODEL/config.json" ]; then
    "$BIN/as-import" -t "$AS_DATA/models/stories260K/tok512.bin" \
        "$AS_DATA/models/stories260K/stories260K.bin" "$MODEL"
fi
echo "== greedy generation from the imported model"
"$BIN/as-gen" -m "$MODEL" -p "Once upon a time" -n 64
echo
run() { # name, make variables...
    local name=$1; shift
    make --no-print-directory -s -f pipelines/w4a16-gptq.mk BIN="$BIN" MODEL="$MODEL" \
        DATA="$AS_DATA/text/austen" OUT="$OUT/$name" BITS="$BITS" GROUP="$GROUP" SEQLEN=256 \
        $EVAL "$@"
}
echo "== W${BITS}A16 g${GROUP}: RTN, GPTQ (GPTQ v1 checkpoint), GPTQ (compressed-tensors)"
run rtn METHOD=rtn FORMAT=gptq
run gptq FORMAT=gptq
run gptq-ct FORMAT=compressed-tensors
echo
printf '%-22s %10s %10s %10s %8s\n' method PPL "±" "KLD mean" "top-1"
base=$(jq -r '.base_ppl' "$OUT/gptq/eval.json")
printf '%-22s %10.4f %10s %10s %8s\n' "fp32 (stories260K)" "$base" "" "" ""
for name in rtn gptq gptq-ct; do
    jq -r --arg n "$name" '[$n, .ppl, .ppl_err, .kld.mean, (.same_top*100)] |
        @tsv' "$OUT/$name/eval.json" |
        awk -F'\t' '{printf "%-22s %10.4f %10.4f %10.5f %7.2f%%\n", $1, $2, $3, $4, $5}'
done
echo
echo "checkpoints: $OUT/gptq/checkpoint (GPTQ v1), $OUT/gptq-ct/checkpoint (compressed-tensors)"
echo "(down_proj, 172 inputs, is not divisible by group $GROUP: kept dequantized, see docs/formats.md)"
