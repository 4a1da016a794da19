#!/usr/bin/env bash
# SmolLM2-135M-Instruct in its real consumers (docs/consumers.md): the data-free as-lepto schemes
# (FP8 dynamic, INT8 W8A8, MXFP4) and RTN W4 g128 compressed-tensors, each packed by as-pack and
# loaded by transformers 5.24 + compressed-tensors 0.20 (tests/consumers/formats.py), perplexity
# against as-eval (--score all, windows of 512, the first 8,000 bytes of wiki.test.raw): with the
# checkpoint's activation scheme and weights only. Too slow for CI on 2 cores (the llama.cpp
# side of SmolLM2 is in tests/tools/consumer_llamacpp.bats). Table on stdout and in
# bench/results/consumers-smollm2.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BINDIR:-bin}
PY=.venv-consumer/bin/python3
[ -x "$PY" ] || { echo "consumers-smollm2.sh: $PY missing (make deps)" >&2; exit 1; }
W=$(mktemp -d "${TMPDIR:-/tmp}/consumers-smollm2.XXXXXX")
trap 'rm -rf "$W"' EXIT
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
head -c 8000 "$AS_DATA/text/wikitext-2-raw/wiki.test.raw" >"$W/text.txt"
"$BIN/as-import" "$(pipelines/smollm2-gguf)" "$W/smol" >/dev/null 2>&1
specs=()
for s in fp8-dynamic int8-dynamic mxfp4; do
    "$BIN/as-lepto" -m "$W/smol" -s $s >"$W/$s.astr"
    "$BIN/as-pack" -m "$W/smol" -f ct-fp -o "$W/$s" "$W/$s.astr" 2>/dev/null
    specs+=("ct:$s:$W/$s")
done
"$BIN/as-cat" "$W/smol" | "$BIN/as-gptq" -m rtn -b 4 -g 128 2>/dev/null |
    "$BIN/as-pack" -m "$W/smol" -f compressed-tensors -o "$W/w4" 2>/dev/null
specs+=("ct:w4:$W/w4")
start=$(date +%s)
"$PY" tests/consumers/formats.py "$W/report.json" "$W/text.txt" 512 "$W/smol" "${specs[@]}" >"$W/log" 2>&1 ||
    { tail -20 "$W/log" >&2; exit 1; }
secs=$(($(date +%s) - start))
{
    echo "# SmolLM2-135M-Instruct, transformers 5.24 + compressed-tensors 0.20 vs as-eval ($(date -u +%F), consumer ${secs}s)"
    printf '%-13s %-12s %-14s %-14s %-9s\n' format mode consumer as-eval relative
    for s in fp8-dynamic int8-dynamic mxfp4 w4; do
        for m in act w; do
            a=$(jq -r ".[\"$s\"].$([ $m = act ] && echo ppl || echo ppl_w) // .[\"$s\"].error" "$W/report.json")
            b=$("$BIN/as-eval" -m "$W/$s" -f "$W/text.txt" --ctx 512 --score all --json \
                $([ $m = w ] && echo --act-quant none) | jq -r .ppl)
            r=$(awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; printf "%.1e", d / b }')
            printf '%-13s %-12s %-14s %-14s %-9s\n' "$s" "$([ $m = act ] && echo activations || echo weights)" "$a" "$b" "$r"
        done
    done
} | tee bench/results/consumers-smollm2.txt
