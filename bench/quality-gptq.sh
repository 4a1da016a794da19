#!/usr/bin/env bash
# The GPTQ quality protocol (issue 4, docs/quality.md): stories260K, calibration 128 x 256 tokens
# from the Austen novels, evaluation on the first 100 KB of wiki.test.raw with ctx 256, every
# linear quantized, evaluated through the fakequant checkpoint (the quantizer's exact output).
# Prints a table and writes bench/results/quality-gptq.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BINDIR:-bin}; BIN=$(cd "$BIN" && pwd)
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
W=${WORK:-$(mktemp -d)}
trap '[ -z "${WORK:-}" ] && rm -rf "$W"' EXIT
TEXT=$AS_DATA/text/wikitext-2-raw/wiki.test.raw
"$BIN/as-import" -t "$AS_DATA/models/stories260K/tok512.bin" "$AS_DATA/models/stories260K/stories260K.bin" "$W/model"
CAL="-m $W/model -d $AS_DATA/text/austen -n 128 -l 256 --seed 0"
"$BIN/as-calib" $CAL > "$W/calib.stream" 2>/dev/null

evaluate() { # dir -> "ppl kld top1"
    "$BIN/as-eval" -m "$1" -b "$W/model" -f "$TEXT" --bytes 100000 --ctx 256 --json |
        jq -r '"\(.ppl) \(.kld.mean) \(.same_top)"'
}
out=bench/results/quality-gptq.md
mkdir -p bench/results
{
echo "| config | method | PPL | mean KLD | top-1 |"
echo "|---|---|---|---|---|"
} > "$out.tmp"
base=$("$BIN/as-eval" -m "$W/model" -f "$TEXT" --bytes 100000 --ctx 256 --json | jq -r .ppl)
printf '| fp32 | - | %.4f | 0 | 100%% |\n' "$base" >> "$out.tmp"
for cfg in "8 -1 W8-per-channel" "4 -1 W4-per-channel" "4 32 W4-g32" "3 32 W3-g32" "2 32 W2-g32"; do
    set -- $cfg; b=$1; g=$2; name=$3
    for method in rtn gptq gptq-act seq seq-act gptaq; do
        d="$W/$name-$method"
        case $method in
        rtn) "$BIN/as-gptq" -m rtn -b $b -g $g < "$W/calib.stream" > "$d.stream" ;;
        gptq) "$BIN/as-gptq" -b $b -g $g < "$W/calib.stream" > "$d.stream" ;;
        gptq-act) "$BIN/as-gptq" -b $b -g $g --act-order < "$W/calib.stream" > "$d.stream" ;;
        seq) "$BIN/as-calib" $CAL --sequential "$BIN/as-gptq -b $b -g $g" > "$d.stream" 2>/dev/null ;;
        seq-act) "$BIN/as-calib" $CAL --sequential "$BIN/as-gptq -b $b -g $g --act-order" > "$d.stream" 2>/dev/null ;;
        gptaq) "$BIN/as-calib" $CAL --gptaq --sequential "$BIN/as-gptq -m gptaq -b $b -g $g" > "$d.stream" 2>/dev/null ;;
        esac
        "$BIN/as-pack" -m "$W/model" -f fakequant -o "$d" < "$d.stream" 2>/dev/null
        read -r ppl kld top <<< "$(evaluate "$d")"
        printf '| %s | %s | %.4f | %.5f | %.2f%% |\n' "$name" "$method" "$ppl" "$kld" \
            "$(awk -v t="$top" 'BEGIN{print t * 100}')" | tee -a "$out.tmp"
        rm -rf "$d" "$d.stream"
    done
done
mv "$out.tmp" "$out"
echo "methods: rtn = round to nearest; gptq = GPTQ from full-precision statistics; -act = act-order;"
echo "seq = true-sequential (inputs through the already-quantized layers); gptaq = GPTAQ (sequential)."
echo "table written to $out"
