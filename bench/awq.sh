#!/usr/bin/env bash
# AWQ benchmarks (issue 5, docs/awq.md); writes bench/results/awq.txt.
#  quality: the GPTQ quality protocol: stories260K (as-import), calibration as-calib -d austen
#           -n 128 -l 256 (--keep-seqs KEEP, default 32, for AWQ's losses), evaluation on the first
#           100000 bytes of wiki.test.raw with ctx 256 and -b BASE; W4 g32 and W3 g32:
#           rtn-awq (AWQ's asymmetric rounding, s = 1), rtn (as-gptq -m rtn, GPTQ convention,
#           sym and asym), gptq (sym, asym), awq (as-awq -e quantized), awq+gptq (as-awq -e scaled
#           | as-gptq --asym); every checkpoint evaluated through fakequant (the exact output).
#  speed:   seconds per decoder layer of the search (bench/bench_awq.c) on the synthetic
#           realistic-size checkpoint (hidden 2048, intermediate 5632, bf16) with SEQS (default 4)
#           kept sequences of 512 tokens, LAYERS (default 1) layers.
#   usage: bench/awq.sh [quality|speed|all]      BUILD, BINDIR, AS_DATA as for the other benches
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
BUILD=${BUILD:-build/rel}
BIN=${BINDIR:-bin}; BIN=$(cd "$BIN" && pwd)
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
KEEP=${KEEP:-32}; SEQS=${SEQS:-4}; LAYERS=${LAYERS:-1}
W=$(mktemp -d "${TMPDIR:-/tmp}/as-bench-awq.XXXXXX")
trap 'rm -rf "$W"' EXIT
out=bench/results/awq.txt
mkdir -p bench/results
tmp=$W/results.txt
: > "$tmp"
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$tmp"

if [ "$what" = quality ] || [ "$what" = all ]; then
    TEXT=$AS_DATA/text/wikitext-2-raw/wiki.test.raw
    "$BIN/as-import" -t "$AS_DATA/models/stories260K/tok512.bin" "$AS_DATA/models/stories260K/stories260K.bin" "$W/model" 2>/dev/null
    "$BIN/as-calib" -m "$W/model" -d "$AS_DATA/text/austen" -n 128 -l 256 --seed 0 --keep-seqs "$KEEP" > "$W/calib.stream" 2>/dev/null
    evaluate() { # dir -> "ppl kld top1"
        "$BIN/as-eval" -m "$1" -b "$W/model" -f "$TEXT" --bytes 100000 --ctx 256 --json |
            jq -r '"\(.ppl) \(.kld.mean) \(.same_top)"'
    }
    base=$("$BIN/as-eval" -m "$W/model" -f "$TEXT" --bytes 100000 --ctx 256 --json | jq -r .ppl)
    {
        echo
        echo "quality: stories260K, austen 128 x 256 (AWQ losses on $KEEP kept windows), wiki.test.raw 100 KB, ctx 256"
        echo "| config | method | PPL | mean KLD | top-1 |"
        echo "|---|---|---|---|---|"
        printf '| fp32 | - | %.4f | 0 | 100%% |\n' "$base"
    } | tee -a "$tmp"
    for cfg in "4 32 W4-g32" "3 32 W3-g32"; do
        set -- $cfg; b=$1; g=$2; name=$3
        for method in rtn-awq rtn-sym rtn-asym gptq-sym gptq-asym awq awq-noclip awq+gptq; do
            d="$W/$name-$method"
            extra=()
            case $method in
            rtn-awq) "$BIN/as-awq" -m "$W/model" -b $b -g $g -e quantized --grid 1 --no-duo-scaling --no-clip < "$W/calib.stream" > "$d.stream" 2>/dev/null ;;
            rtn-sym) "$BIN/as-gptq" -m rtn -b $b -g $g --sym < "$W/calib.stream" > "$d.stream" ;;
            rtn-asym) "$BIN/as-gptq" -m rtn -b $b -g $g --asym < "$W/calib.stream" > "$d.stream" ;;
            gptq-sym) "$BIN/as-gptq" -b $b -g $g --sym < "$W/calib.stream" > "$d.stream" ;;
            gptq-asym) "$BIN/as-gptq" -b $b -g $g --asym < "$W/calib.stream" > "$d.stream" ;;
            awq) "$BIN/as-awq" -m "$W/model" -b $b -g $g -e quantized < "$W/calib.stream" > "$d.stream" 2>/dev/null ;;
            awq-noclip) "$BIN/as-awq" -m "$W/model" -b $b -g $g -e quantized --no-clip < "$W/calib.stream" > "$d.stream" 2>/dev/null ;;
            awq+gptq)
                "$BIN/as-awq" -m "$W/model" -b $b -g $g -e scaled < "$W/calib.stream" > "$d.scaled" 2>/dev/null
                "$BIN/as-gptq" -b $b -g $g --asym < "$d.scaled" > "$d.stream"
                # as-gptq keeps only the linears: the rescaled norms come from the scaled stream
                "$BIN/as-cat" -n 'layernorm|v_proj\.bias' "$d.scaled" > "$d.norms"
                extra=("$d.norms") ;;
            esac
            "$BIN/as-pack" -m "$W/model" -f fakequant -o "$d" "$d.stream" "${extra[@]}" 2>/dev/null
            read -r ppl kld top <<< "$(evaluate "$d")"
            printf '| %s | %s | %.4f | %.5f | %.2f%% |\n' "$name" "$method" "$ppl" "$kld" \
                "$(echo "$top * 100" | bc -l)" | tee -a "$tmp"
            rm -rf "$d" "$d".*
        done
    done
fi

if [ "$what" = speed ] || [ "$what" = all ]; then
    {
        echo
        echo "speed: AWQ search on the synthetic checkpoint (hidden 2048, intermediate 5632, 16 heads, bf16),"
        echo "$SEQS kept sequences x 512 tokens for the losses, 512 sampled rows for clipping, 20 ratios"
        printf '%-34s %10s %12s %10s\n' "measure" "tokens" "value" "target"
    } | tee -a "$tmp"
    "$BUILD/bench/bench_awq" "$W/synth" "$SEQS" 512 "$LAYERS" 128 2>/dev/null | tee -a "$tmp"
fi
cp "$tmp" "$out"
echo "written to $out"
