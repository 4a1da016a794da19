#!/usr/bin/env bash
# as-calib speed and memory (issue 3): a synthetic Llama-shaped checkpoint with real sizes
# (hidden 2048, intermediate 5632, 4 layers, 16 heads, bf16, written by bench_gen), calibrated on
# the Austen novels with 512-token windows. Peak resident memory must not grow with the number of
# calibration tokens. Also: perplexity of stories260K on the first 100 KB of wiki.test.raw at
# ctx 512 (value and time). Writes bench/results/calib.txt.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
BINDIR=${BINDIR:-bin}
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/as-bench-calib.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
m=$AS_DATA/models/stories260K
"$BINDIR/as-import" -t "$m/tok512.bin" "$m/stories260K.bin" "$tmp/stories260K"
"$BUILD/bench/bench_gen" prefill "$tmp/synth" 16 > /dev/null   # writes the checkpoint once
cp "$tmp/stories260K/tokenizer.json" "$tmp/stories260K/tokenizer_config.json" "$tmp/synth/"
# FLOPs per token: forward 2·(linear params) + attention 4·T·hidden/2 (causal) ;
# statistics: one SYRK of K² per token for each group input (4 groups, K = 2048,2048,2048,5632).
H=2048; I=5632; L=4; T=512
fwd=$(( 2 * L * (4*H*H + 3*H*I) + L * 2 * T * H ))
syrk=$(( L * (3*H*H + I*I) ))
mkdir -p bench/results
{
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
printf '%-28s %10s %10s %12s %10s\n' "as-calib (synthetic 2048/5632/4L)" tokens seconds "GFLOP/s" "peak RSS"
for n in 32 128 256; do
    /usr/bin/time -f "%e %M" -o "$tmp/time" "$BINDIR/as-calib" -m "$tmp/synth" -d "$AS_DATA/text/austen" \
        -n $n -l $T --no-weights > /dev/null 2> "$tmp/log"
    read -r sec kb < "$tmp/time"
    tok=$(( n * T ))
    gf=$(awk -v t=$tok -v f=$fwd -v s=$syrk -v sec=$sec 'BEGIN{printf "%.1f", t*(f+s)/sec/1e9}')
    printf '%-28s %10d %10.2f %12s %8d MB\n' "  $n x $T" $tok "$sec" "$gf" $(( kb / 1024 ))
done
"$BUILD/bench/bench_gen" prefill "$tmp/synth" 512 | grep -i sgemm || true
s0=$(date +%s.%N)
ppl=$("$BINDIR/as-eval" -m "$tmp/stories260K" -f "$AS_DATA/text/wikitext-2-raw/wiki.test.raw" --bytes 100000 --ctx 512 --json)
s1=$(date +%s.%N)
echo "$ppl" | jq -r --arg t "$(awk -v a=$s0 -v b=$s1 'BEGIN{printf "%.2f", b-a}')" \
  '"stories260K PPL, 100 KB wiki.test.raw, ctx 512: \(.ppl*10000|round/10000) ± \(.ppl_err*1000|round/1000) (\(.scored) tokens scored) in \($t) s"'
} | tee bench/results/calib.txt
