#!/usr/bin/env bash
# Cost of a speculative verification pass (issue 19) and of one-token decoding on SmolLM2:
# bench_gen verify (a rowwise target pass of 1..8 rows at the same position, median of 41, in
# ms and in one-token decode steps) and bench_smollm2's tg128 (tokens/s, and the xxh64 of the
# last logits), at 1 and 2 threads, REPS rounds. With BASE=DIR (a build directory of another
# commit, e.g. `git worktree add /tmp/base REV && make -C /tmp/base BUILD=build/rel
# build/rel/bench/bench_gen build/rel/bench/bench_smollm2`; copy this commit's bench_gen.c there
# first if REV predates its verify mode) both builds run alternately in the same rounds, so they
# see the same machine; equal logits hashes mean the same sums. Writes
# bench/results/verify-cost.txt.
#   BUILD (build/rel), BASE (none), REPS (2), WORK (build/smollm2: the imported model)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
BASE=${BASE:-}
REPS=${REPS:-2}
WORK=${WORK:-build/smollm2}
M=$WORK/model
if [ ! -d "$M" ]; then
    mkdir -p "$WORK"
    "${BINDIR:-bin}/as-import" "$(pipelines/smollm2-gguf)" "$M" >/dev/null
fi
builds=("$BUILD")
[ -n "$BASE" ] && builds=("$BASE" "$BUILD")
out=bench/results/verify-cost.txt
{
    echo "# verification cost on SmolLM2-135M-Instruct (f32), $(date -u +%Y-%m-%dT%H:%MZ), $(uname -m) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
    echo "# rows r: ms of one rowwise target pass of r rows / the same in one-token decode steps (r = 1)"
    for ((rep = 1; rep <= REPS; rep++)); do
        for th in 1 2; do
            for b in "${builds[@]}"; do
                v=$("$b/bench/bench_gen" verify "$M" "$th" | tail -n +2 |
                    awk '{printf " %s:%.1f/%.2f", $2, $3, $4}')
                tg=$("$b/bench/bench_smollm2" "$M" "$th" 16 128 3 | awk '$1 == "tg" {printf "%.1f", $3} $1 == "logits" {h = $3} END {printf " %s", h}')
                echo "round $rep threads $th build $b | tg128 tok/s, logits xxh64: $tg | rows$v"
            done
        done
    done
} | tee "$out"
