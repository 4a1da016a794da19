#!/usr/bin/env bash
# Fuzz every target for SECONDS (default 60) each, one after the other (JOBS=2: two at a time),
# starting from the seeds in tests/fuzz/corpus/<target>/ (new inputs go to a scratch corpus, so
# the committed seeds stay small). Prints and writes tests/fuzz/results.txt: executions per
# target, final coverage, and CRASH with the reproducer path when a target failed (each run
# appends its table, so the file keeps the history).
#   tests/fuzz/run.sh [SECONDS]      FUZZ_BIN: directory of the fuzz_* binaries (build/fuzz)
#   TARGETS="fuzz_stream fuzz_config" tests/fuzz/run.sh 600
set -uo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:-60}
FUZZ_BIN=${FUZZ_BIN:-build/fuzz}
JOBS=${JOBS:-1}
WORK=${FUZZ_WORK:-build/fuzz-work}
TARGETS=${TARGETS:-$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')}
OUT=${FUZZ_RESULTS:-tests/fuzz/results.txt}
mkdir -p "$WORK"

fuzz_one() {
    local t=$1 dir=$WORK/$t
    mkdir -p "$dir/corpus" "$dir/artifacts"
    rm -f "$dir/artifacts"/* # findings of earlier runs are reported by those runs
    # -rss_limit_mb/-malloc_limit_mb: an allocation sized by the input beyond 2 GiB is a finding
    "$FUZZ_BIN/$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
        "$dir/corpus" "tests/fuzz/corpus/$t" >"$dir/log" 2>&1
    echo $? >"$dir/rc"
}

running=0
for t in $TARGETS; do
    [ -x "$FUZZ_BIN/$t" ] || { echo "missing $FUZZ_BIN/$t (make -C tests/fuzz)" >&2; exit 2; }
    fuzz_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait

status=0
{
    echo "# libFuzzer run: $(date -u +%Y-%m-%dT%H:%MZ), ${SECONDS_EACH}s per target, $(nproc) cores, $JOBS at a time"
    printf '%-18s %12s %10s %8s %8s  %s\n' target executions exec/s cov corpus result
    for t in $TARGETS; do
        log=$WORK/$t/log
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
        corp=$(ls "$WORK/$t/corpus" | wc -l)
        art=$(ls "$WORK/$t/artifacts" 2>/dev/null | grep -v '^slow-unit-' | head -1)
        slow=$(ls "$WORK/$t/artifacts" 2>/dev/null | grep '^slow-unit-' | head -1)
        if [ "$(cat "$WORK/$t/rc")" = 0 ] && [ -z "$art" ]; then
            res=ok
            # a unit slower than libFuzzer's report threshold: worth a look, not a failure
            [ -z "$slow" ] || res="ok (slow unit $WORK/$t/artifacts/$slow)"
        elif [[ "$art" == timeout-* ]]; then
            # re-run it alone: a timeout caused by an overloaded machine is not a finding
            if timeout 20 "$FUZZ_BIN/$t" -timeout=10 "$WORK/$t/artifacts/$art" >/dev/null 2>&1; then
                res="stopped: timeout under load, $art takes <10 s alone"
            else
                res="TIMEOUT $WORK/$t/artifacts/$art"
                status=1
            fi
        else
            res="CRASH $WORK/$t/artifacts/$art"
            status=1
        fi
        printf '%-18s %12s %10s %8s %8s  %s\n' "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "$corp" "$res"
    done
} | tee -a "$OUT"
exit $status
