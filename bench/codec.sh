#!/usr/bin/env bash
# Throughput of the dtype codecs (bench/bench_codec.c); writes bench/results/codec.txt.
#   BUILD        build directory holding bench/bench_codec (default build/rel)
#   AS_BENCH_MB  input array size in MiB (default 256)
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
mkdir -p bench/results
{
    echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    "$BUILD/bench/bench_codec"
} | tee bench/results/codec.txt
