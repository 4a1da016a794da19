#!/usr/bin/env bash
# FP8 / NVFP4 encoding throughput vs a plain copy, and LeptoQuant search time per decoder layer
# (bench/bench_fpquant.c); writes bench/results/lepto.txt.
#   BUILD              build directory holding bench/bench_fpquant (default build/rel)
#   AS_BENCH_REPS      repetitions, best kept (default 3)
#   AS_BENCH_SEQS, AS_BENCH_SEQLEN, AS_BENCH_HIDDEN   LeptoQuant sample (default 128 x 512, 256)
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
mkdir -p bench/results
{
    echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
    "$BUILD/bench/bench_fpquant"
} | tee bench/results/lepto.txt.tmp
mv bench/results/lepto.txt.tmp bench/results/lepto.txt
