#!/usr/bin/env bash
# Importance-weighted scale search (lib/common/quant_search.c) on the GGUF protocol of
# bench/gguf.sh: round-to-nearest at group 32 with the searched scale per group, importance =
# diagonal of each layer group's Hessian from as-calib (llama.cpp's importance matrix), packed to
# Q4_0 / Q4_1 GGUF and evaluated (down projections as written and at original F32, as gguf.sh).
#   BIN (as-* programs, default bin/), BUILD (for build/.../bench/bench_quant_search), AS_DATA,
#   WORK (scratch, default a temp dir). Writes bench/results/quant_search.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}; BIN=$(cd "$BIN" && pwd)
BUILD=${BUILD:-build/rel}
QS=$BUILD/bench/bench_quant_search
DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
WORK=${WORK:-$(mktemp -d)}
M=$DATA/models/stories260K
TEXT=$DATA/text/wikitext-2-raw/wiki.test.raw
mkdir -p "$WORK" bench/results
[ -d "$WORK/base" ] || "$BIN/as-import" -t "$M/tok512.bin" "$M/stories260K.bin" "$WORK/base"
[ -s "$WORK/calib.stream" ] || "$BIN/as-calib" -m "$WORK/base" -d "$DATA/text/austen" -n 128 -l 256 \
    > "$WORK/calib.stream"
row() { # NAME BITS SYM SIGNED
    local name=$1
    local ratio
    ratio=$("$QS" "$WORK/base" "$2" "$3" "$4" < "$WORK/calib.stream" 2>&1 >"$WORK/$name.stream" |
        sed -n 's/.*plain fit: //p')
    "$BIN/as-pack" -m "$WORK/base" -f gguf -o "$WORK/$name.gguf" < "$WORK/$name.stream" 2>/dev/null
    "$BIN/as-pack" -m "$WORK/base" -f gguf -o "$WORK/$name-o.gguf" --gguf-fallback original \
        < "$WORK/$name.stream" 2>/dev/null
    for f in "$name" "$name-o"; do
        "$BIN/as-eval" -m "$WORK/$f.gguf" -b "$WORK/base" -f "$TEXT" --bytes 100000 --ctx 256 \
            --json | jq -r --arg n "$name" --arg r "$ratio" --arg f "$f" \
            --arg sz "$(stat -c %s "$WORK/$f.gguf")" \
            '"\($n)\t\(if ($f | endswith("-o")) then "orig F32" else "W_hat F32" end)\t\($r)\t\(.ppl * 1000 | round / 1000)\t\(.kld.mean * 10000 | round / 10000)\t\(.same_top * 1000 | round / 10)%\t\($sz)"'
    done
}
{
    echo "# RTN + quant_search (h = diag H), stories260K, wiki.test.raw 100000 bytes, ctx 256"
    echo "# E ratio: importance-weighted error of the searched fit / the plain GPTQ-convention fit"
    printf 'config\tdown_proj\tE ratio\tPPL\tmean KLD\ttop-1\tbytes\n'
    row q4_0-rtn-search 4 1 0
    row q4_0-rtn-search-signed 4 1 1
    row q4_1-rtn-search 4 0 0
} | tee bench/results/quant_search.txt
