#!/usr/bin/env bash
# Tensor stream throughput on a synthetic ~2 GiB checkpoint with 300 tensors (bench_stream_gen):
#   baseline   cat FILE | cat > /dev/null                      (what a pipe can carry)
#   inline     as-cat --inline CKPT | as-cat > /dev/null       (payload bytes through the pipe,
#              hashed by the writer, read and verified by the reader); target >= 0.70 x baseline
#   by-ref     as-cat CKPT | as-cat > /dev/null                (headers only); target >= 10x inline
#   as-ls      as-ls CKPT > /dev/null, median of 11 runs       target < 50 ms
# Each timing is the median of RUNS runs (default 5, the three pipelines interleaved) with the file
# in the page cache.
# Env: BUILD, BINDIR (as make passes them), BENCH_DIR (where the checkpoint goes; default
# /dev/shm when it has room, else $TMPDIR or /tmp), RUNS. Writes bench/results/stream.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
BINDIR=${BINDIR:-bin}
RUNS=${RUNS:-5}
GEN=$BUILD/bench/bench_stream_gen
for p in "$BINDIR/as-cat" "$BINDIR/as-ls" "$GEN"; do
    [ -x "$p" ] || { echo "stream.sh: $p not built (make BUILD=$BUILD BINDIR=$BINDIR)" >&2; exit 1; }
done
CAT=$(cd "$BINDIR" && pwd)/as-cat
LS=$(cd "$BINDIR" && pwd)/as-ls

need_kb=$((5 * 1024 * 1024)) # checkpoint + slack
avail_kb() { df -Pk "$1" 2>/dev/null | awk 'NR == 2 { print $4 }'; }
if [ -z "${BENCH_DIR:-}" ]; then
    BENCH_DIR=${TMPDIR:-/tmp}
    if [ -d /dev/shm ] && [ "$(avail_kb /dev/shm)" -gt "$need_kb" ]; then BENCH_DIR=/dev/shm; fi
fi
[ "$(avail_kb "$BENCH_DIR")" -gt "$need_kb" ] || { echo "stream.sh: less than 5 GiB free in $BENCH_DIR" >&2; exit 1; }
WORK=$(mktemp -d "$BENCH_DIR/as-bench-stream.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CKPT=$WORK/model.safetensors
"$GEN" "$CKPT" >/dev/null
BYTES=$(stat -c %s "$CKPT")
cat "$CKPT" >/dev/null # page cache

now() { date +%s%N; }
run_ns() { # time one shell command (ns)
    local t0 t1
    t0=$(now)
    bash -c "$1"
    t1=$(now)
    echo $((t1 - t0))
}
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
mbps() { awk -v b="$BYTES" -v ns="$1" 'BEGIN { printf "%.0f", b / 1e6 / (ns / 1e9) }'; }
ms() { awk -v ns="$1" 'BEGIN { printf "%.1f", ns / 1e6 }'; }

# the commands must succeed: a failed pipeline would time nothing
"$CAT" --inline "$CKPT" | "$CAT" | "$LS" --summary >/dev/null

# Baseline, inline and by-reference runs alternate, so that load from other processes on the
# machine hits them alike; each figure is a median.
base=() inl=() ref=() lst=()
for ((i = 0; i < RUNS; i++)); do
    base+=($(run_ns "cat '$CKPT' | cat > /dev/null"))
    inl+=($(run_ns "'$CAT' --inline '$CKPT' | '$CAT' > /dev/null"))
    ref+=($(run_ns "'$CAT' '$CKPT' | '$CAT' > /dev/null"))
done
for ((i = 0; i < 11; i++)); do lst+=($(run_ns "'$LS' '$CKPT' > /dev/null")); done
t_base=$(median "${base[@]}")
t_inl=$(median "${inl[@]}")
t_ref=$(median "${ref[@]}")
t_ls=$(median "${lst[@]}")

ratio=$(awk -v a="$t_base" -v b="$t_inl" 'BEGIN { printf "%.2f", a / b }')
speedup=$(awk -v a="$t_inl" -v b="$t_ref" 'BEGIN { printf "%.0f", a / b }')
pass() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = op == ">=" ? v >= t : v < t; print ok ? "ok" : "MISSED" }'; }

mkdir -p bench/results
{
    echo "# tensor stream benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m))"
    echo "# checkpoint: 300 tensors, $BYTES bytes, in $BENCH_DIR (page cache); median of $RUNS interleaved runs"
    echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '%-44s %10s %10s %8s %s\n' "case" "time_ms" "MB/s" "ratio" "target"
    printf '%-44s %10s %10s %8s %s\n' "cat FILE | cat > /dev/null" "$(ms "$t_base")" "$(mbps "$t_base")" "1.00" ""
    printf '%-44s %10s %10s %8s %s\n' "as-cat --inline CKPT | as-cat > /dev/null" "$(ms "$t_inl")" "$(mbps "$t_inl")" "$ratio" \
        ">= 0.70 of cat: $(pass "$ratio" 0.70 '>=')"
    printf '%-44s %10s %10s %8s %s\n' "as-cat CKPT | as-cat > /dev/null (by ref)" "$(ms "$t_ref")" "-" "${speedup}x" \
        ">= 10x inline: $(pass "$speedup" 10 '>=')"
    printf '%-44s %10s %10s %8s %s\n' "as-ls CKPT (median of 11)" "$(ms "$t_ls")" "-" "-" \
        "< 50 ms: $(pass "$(ms "$t_ls")" 50 '<')"
} | tee bench/results/stream.txt
