#!/usr/bin/env bash
# Quality of the FP8 / INT8 / FP4 schemes with activation quantization simulated (docs/lepto.md):
# stories260K, 128 x 256 Austen calibration tokens, the first 100000 bytes of WikiText-2 test,
# ctx 256, KL divergence against the unquantized model. Writes bench/results/quality-lepto.md.
#   BIN   directory of the as-* programs (default bin)
#   KEEP  whole calibration windows kept for LeptoQuant (default 32)
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
KEEP=${KEEP:-32}
DATA=${AS_DATA:-../shared/data}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export AS_PROGRESS=0
"$BIN/as-import" -t "$DATA/models/stories260K/tok512.bin" "$DATA/models/stories260K/stories260K.bin" "$W/base"
head -c 100000 "$DATA/text/wikitext-2-raw/wiki.test.raw" >"$W/wiki.txt"
"$BIN/as-calib" -m "$W/base" -d "$DATA/text/austen" -n 128 -l 256 --keep-seqs "$KEEP" --kv-stats --no-weights >"$W/calib.astr" 2>/dev/null

row() { # NAME FORMAT EVAL_OPTS -- AS_LEPTO_ARGS...
    local name=$1 fmt=$2 eopts=$3
    shift 4
    "$BIN/as-lepto" -m "$W/base" "$@" --report "$W/r.jsonl" "$W/calib.astr" >"$W/q.astr"
    rm -rf "$W/ck"
    "$BIN/as-pack" -m "$W/base" -f "$fmt" -o "$W/ck" "$W/q.astr" 2>"$W/pack.log"
    local fb
    fb=$(grep -c 'kept as dequantized' "$W/pack.log" || true)
    # shellcheck disable=SC2086
    "$BIN/as-eval" -m "$W/ck" -b "$W/base" -f "$W/wiki.txt" --ctx 256 $eopts --json >"$W/e.json"
    jq -r --arg n "$name" --arg f "$fmt" --arg fb "$fb" \
        '"| \($n) | \($f)\(if $fb != "0" then " (\($fb) fallback)" else "" end) | \(.act_quant // ["none"] | join(", "))\(if .kv_cache then "; KV cache \(.kv_cache)" else "" end) | \(.ppl * 10000 | round / 10000) | \(.kld.mean * 1e6 | round / 1e6) | \(.same_top * 10000 | round / 100)% |"' "$W/e.json"
    if [ -s "$W/r.jsonl" ] && grep -q candidates "$W/r.jsonl"; then
        jq -s '{groups: length, improved: map(select(.reduction > 0)) | length,
                mean_reduction: (map(.reduction) | add / length), worst: (map(.reduction) | min)}' \
            "$W/r.jsonl" >"$W/lepto-summary.json"
    fi
}

{
    echo "# FP8 / INT8 / FP4 quality on stories260K ($(date -u +%Y-%m-%d))"
    echo
    echo "Calibration: 128 x 256 tokens of Austen (LeptoQuant: the first $KEEP windows kept whole)."
    echo "Evaluation: first 100000 bytes of wiki.test.raw, ctx 256, second half of each window scored."
    echo
    "$BIN/as-eval" -m "$W/base" -f "$W/wiki.txt" --ctx 256 --json |
        jq -r '"Base (f32) PPL \(.ppl * 10000 | round / 10000) over \(.scored) scored tokens."'
    echo
    echo "| scheme | checkpoint format | activations (simulated) | PPL | mean KLD | same top-1 |"
    echo "|---|---|---|---|---|---|"
    row "fp8-static absmax, weights only" float-quantized "--act-quant none" -- -s fp8-static
    row "fp8-static absmax (W8A8)" float-quantized "" -- -s fp8-static
    row "fp8-static absmax + FP8 KV cache (static k/v scales)" float-quantized "" -- -s fp8-static --kv-cache fp8
    row "fp8-static absmax weights + FP8 KV cache, inputs unquantized" float-quantized "--act-quant none" -- -s fp8-static --kv-cache fp8
    row "fp8-static LeptoQuant (W8A8)" float-quantized "" -- -s fp8-static --method lepto
    cp "$W/lepto-summary.json" "$W/lepto-static.json"
    row "fp8-static per-channel weights, LeptoQuant" float-quantized "" -- -s fp8-static --weights channel --method lepto
    row "fp8-dynamic" float-quantized "" -- -s fp8-dynamic
    row "fp8-block 128x128 (ragged: 64-wide model)" float-quantized "" -- -s fp8-block
    row "fp8-block, DeepSeek layout" fp8 "" -- -s fp8-block
    row "int8-dynamic" int-quantized "" -- -s int8-dynamic
    row "int8-dynamic + SmoothQuant a=0.5" int-quantized "" -- -s int8-dynamic --smooth 0.5
    row "nvfp4 (W4A4), all linears" fakequant-fp "" -- -s nvfp4
    row "nvfp4 packed (down_proj K=172 falls back)" nvfp4-pack-quantized "" -- -s nvfp4
    row "mxfp4 (W4A4), all linears" fakequant-fp "" -- -s mxfp4
    row "w4a8-fp8 g32 absmax, all linears" fakequant-fp "" -- -s w4a8-fp8 --group 32
    row "w4a8-fp8 g32 LeptoQuant, all linears" fakequant-fp "" -- -s w4a8-fp8 --group 32 --method lepto
    echo
    echo "LeptoQuant on its own objective (block-output MSE, fp8-static, per-tensor weights):"
    jq -r '"\(.groups) groups, \(.improved) improved over absmax, mean loss reduction \(.mean_reduction * 1000 | round / 10)%, worst \(.worst * 1000 | round / 10)% (never negative by construction)."' "$W/lepto-static.json"
} | tee bench/results/quality-lepto.md.tmp
mv bench/results/quality-lepto.md.tmp bench/results/quality-lepto.md
