#!/usr/bin/env bash
# Engine speed (bench/bench_gen.c); writes bench/results/engine.txt.
#  - decode: greedy generation on stories260K (imported with as-import), 1 OpenBLAS thread;
#    tokens/s by wall clock and by CPU time (wall clock drops when other jobs share the cores).
#  - prefill: 512 tokens through a synthetic Llama-shaped checkpoint (hidden 2048, intermediate
#    5632, 4 layers, 16 heads, bf16, vocab 32000; written to a temporary directory), GFLOP/s
#    against the OpenBLAS sgemm rate on the same shapes measured in the same run.
#   BUILD, BINDIR  build directory (bench/bench_gen) and program directory (as-import)
#   AS_DATA        shared data (stories260K)
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
BINDIR=${BINDIR:-bin}
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/as-bench-engine.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
m=$AS_DATA/models/stories260K
"$BINDIR/as-import" -t "$m/tok512.bin" "$m/stories260K.bin" "$tmp/stories260K"
mkdir -p bench/results
{
    echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
    printf '%-34s %10s %12s %10s\n' "measure" "tokens" "value" "target"
    "$BUILD/bench/bench_gen" gen "$tmp/stories260K" 256
    "$BUILD/bench/bench_gen" prefill "$tmp/synth" 512
} | tee bench/results/engine.txt
