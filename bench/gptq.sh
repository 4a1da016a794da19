#!/usr/bin/env bash
# GPTQ layer-step benchmark: runs $BUILD/bench/bench_gptq (built by `make`), prints its table and
# writes it to bench/results/gptq.txt with the machine and date. Extra arguments go to the program
# (--quick: one 4096x4096 layer; --columnwise-rows R: rows for the column-by-column timing).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
bin="$BUILD/bench/bench_gptq"
[ -x "$bin" ] || { echo "gptq.sh: $bin not built (run make)" >&2; exit 1; }
mkdir -p bench/results
out=bench/results/gptq.txt
{
    echo "# bench_gptq $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "# load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$bin" "$@"
} | tee "$out.tmp"
mv "$out.tmp" "$out"
