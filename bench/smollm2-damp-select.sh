#!/usr/bin/env bash
# Chooses the GPTQ damping of the SmolLM2 GGUF Q4_0 row (act-order, static groups, signed scale
# search; docs/quality.md) on a validation text disjoint from the protocol's evaluation text:
# wiki.test.raw bytes 100,000-199,999 (the protocol scores bytes 0-99,999). Same calibration as
# bench/smollm2-quality.sh (reuses its WORK: calib.stream and the imported model). Prints one line
# per damping and the choice (lowest mean KLD against the base on the validation text); writes
# bench/results/smollm2-damp-select.txt. The quality table then reports the chosen damping's row.
#   WORK   the quality bench's work directory (default /tmp/as-bench-smollm2)
#   DAMPS  dampings to try (default "0.01 0.02 0.05 0.1")
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BINDIR:-bin}; BIN=$(cd "$BIN" && pwd)
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
W=${WORK:-/tmp/as-bench-smollm2}
DAMPS=${DAMPS:-0.01 0.02 0.05 0.1}
export AS_PROGRESS=0
for f in "$W/calib.stream" "$W/model/config.json"; do
    [ -s "$f" ] || { echo "smollm2-damp-select: $f missing: run bench/smollm2-quality.sh with WORK=$W first" >&2; exit 1; }
done
V=$W/damp-select
mkdir -p "$V"
head -c 200000 "$AS_DATA/text/wikitext-2-raw/wiki.test.raw" | tail -c 100000 > "$V/val.txt"
out=bench/results/smollm2-damp-select.txt
{
    echo "# GGUF Q4_0 GPTQ (act-order, static groups, signed scale search) damping, chosen on"
    echo "# wiki.test.raw bytes 100000-199999 (disjoint from the protocol's bytes 0-99999), ctx 512;"
    echo "# $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "| damp | val PPL | val mean KLD | val top-1 |"
    echo "|---|---|---|---|"
    for d in $DAMPS; do
        if [ ! -s "$V/row.$d" ]; then
            "$BIN/as-gptq" -b 4 -g 32 --sym --scale-search --signed-scale --act-order --static-groups \
                --damp "$d" < "$W/calib.stream" > "$V/q.stream"
            rm -f "$V/q.gguf" && "$BIN/as-pack" -m "$W/model" -f gguf -o "$V/q.gguf" < "$V/q.stream" 2>/dev/null
            "$BIN/as-eval" -m "$V/q.gguf" -b "$W/model" --base-logits "$V/base.logits" -f "$V/val.txt" \
                --ctx 512 --json |
                jq -r --arg d "$d" '"| \($d) | \(.ppl * 1000 | round / 1000) | \(.kld.mean * 100000 | round / 100000) | \(.same_top * 10000 | round / 100)% |"' > "$V/row.$d.tmp"
            mv "$V/row.$d.tmp" "$V/row.$d"
        fi
        cat "$V/row.$d"
    done
    best=$(for d in $DAMPS; do cat "$V/row.$d"; done | sort -t'|' -k4,4g | head -1 | cut -d'|' -f2 | tr -d ' ')
    echo
    echo "chosen damping (lowest validation KLD): $best"
} | tee "$out.tmp"
mv "$out.tmp" "$out"
rm -f "$V/q.stream" "$V/q.gguf"
