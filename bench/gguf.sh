#!/usr/bin/env bash
# GGUF quality table (issue 9 protocol): stories260K, calibration 128 windows of 256 tokens from
# the Austen novels, evaluation on the first 100,000 bytes of wiki.test.raw at ctx 256 with KLD
# against the fp32 model. Each GGUF is measured twice: as written (the 172-wide down projections,
# which fit no 32-wide block, stored as F32 W_hat, i.e. still quantized) and with those
# projections kept at the original F32 weights (llama.cpp's treatment, for its reference points).
# Rows use pipelines/gguf-q4.mk defaults (SEARCH=1; FLOAT_MIN=1 for q4_1) unless they say otherwise.
#   BIN (as-* programs, default bin/), AS_DATA, WORK (scratch, default a temp dir)
# Writes bench/results/gguf.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}; BIN=$(cd "$BIN" && pwd)
DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
WORK=${WORK:-$(mktemp -d)}
M=$DATA/models/stories260K
TEXT=$DATA/text/wikitext-2-raw/wiki.test.raw
mkdir -p "$WORK" bench/results
[ -d "$WORK/base" ] || "$BIN/as-import" -t "$M/tok512.bin" "$M/stories260K.bin" "$WORK/base"
run() { # NAME TYPE METHOD [extra make vars]
    local name=$1 type=$2 method=$3; shift 3
    make -s -f pipelines/gguf-q4.mk BIN="$BIN" MODEL="$WORK/base" DATA="$DATA/text/austen" \
        OUT="$WORK/$name" TYPE=$type METHOD=$method "$@" model >/dev/null 2>&1
    "$BIN/as-pack" -m "$WORK/base" -f gguf -o "$WORK/$name/f32down.gguf" --gguf-fallback original \
        < "$WORK/$name/quant.stream" 2>/dev/null
    for f in model f32down; do
        "$BIN/as-eval" -m "$WORK/$name/$f.gguf" -b "$WORK/base" -f "$TEXT" --bytes 100000 \
            --ctx 256 --json > "$WORK/$name/$f.json"
        jq -r --arg n "$name" --arg f "$f" --arg sz "$(stat -c %s "$WORK/$name/$f.gguf")" \
            '"\($n)\t\(if $f == "model" then "W_hat F32" else "orig F32" end)\t\(.ppl * 1000 | round / 1000)\t\(.kld.mean * 10000 | round / 10000)\t\(.same_top * 1000 | round / 10)%\t\($sz)"' \
            "$WORK/$name/$f.json"
    done
}
{
    echo "# GGUF quality, stories260K, wiki.test.raw first 100000 bytes, ctx 256, KLD vs fp32"
    echo "# $(date -u +%F) $(uname -m); down_proj: 'W_hat F32' = as written, 'orig F32' = llama.cpp's treatment"
    printf 'config\tdown_proj\tPPL\tmean KLD\ttop-1\tbytes\n'
    run q8_0-rtn q8_0 rtn
    run q4_0-rtn q4_0 rtn
    run q4_0-gptq q4_0 gptq
    run q4_0-gptq-act q4_0 gptq ACT_ORDER=1
    run q4_1-rtn-intzero q4_1 rtn FLOAT_MIN=0
    run q4_1-rtn-fmin q4_1 rtn
    run q4_1-gptq-intzero q4_1 gptq FLOAT_MIN=0
    run q4_1-gptq-fmin q4_1 gptq
    run q4_1-gptq-fmin-act q4_1 gptq ACT_ORDER=1
    run q4_1-gptaq-intzero q4_1 gptaq FLOAT_MIN=0
    run q4_1-gptaq-fmin q4_1 gptaq
    run q4_1-awq q4_1 awq
    base=$("$BIN/as-eval" -m "$WORK/base" -f "$TEXT" --bytes 100000 --ctx 256 --json | jq .ppl)
    echo "# fp32 PPL $base"
} | tee bench/results/gguf.txt
