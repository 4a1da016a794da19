#!/usr/bin/env bats
# Crash safety of outputs (issue 7): SIGKILL at random points never leaves a partial checkpoint
# that looks whole, a later run cleans up what the killed one left, and a full disk gives one clear
# error and removes the temporary output.

load helpers

setup_file() {
    import_model
    as-cat "$M" | as-gptq -m rtn -b 4 -g 32 > "$BATS_FILE_TMPDIR/q.astr"
    as-pack -m "$M" -f gptq -o "$BATS_FILE_TMPDIR/ref" < "$BATS_FILE_TMPDIR/q.astr" 2>/dev/null
}

# as-pack fed the stream in two halves 50 ms apart, killed with SIGKILL after a random 40-80 ms:
# as-pack itself needs ~10 ms once the input is complete, so the kills land all through its
# reading, packing, writing, verifying and renaming. Echoes 1 if the kill hit a running as-pack.
pack_and_kill() {
    local half=$(( $(stat -c %s "$BATS_FILE_TMPDIR/q.astr") / 2 ))
    { head -c $half "$BATS_FILE_TMPDIR/q.astr"; sleep 0.05; tail -c +$((half + 1)) "$BATS_FILE_TMPDIR/q.astr"; } |
        as-pack -m "$M" -f gptq -o "$1" 2>/dev/null &
    local pid=$!
    sleep "0.0$((40 + RANDOM % 40))"
    local hit=0
    kill -9 $pid 2>/dev/null && hit=1
    wait $pid 2>/dev/null || true
    echo $hit
}

# The checkpoint at $1 is absent, or byte-identical to the uninterrupted run's.
absent_or_complete() {
    [ ! -e "$1" ] && return 0
    for f in model.safetensors config.json quantize_config.json tokenizer.json; do
        cmp -s "$1/$f" "$BATS_FILE_TMPDIR/ref/$f" || { echo "$1/$f differs or is missing"; return 1; }
    done
}

@test "as-pack killed (SIGKILL) at 100 random points: output absent or complete, never partial" {
    out=$BATS_TEST_TMPDIR/out
    hits=0
    for i in $(seq 100); do
        hits=$((hits + $(pack_and_kill "$out")))
        absent_or_complete "$out"
        # start from no output again now and then (a replaced output is checked as well)
        [ $((i % 10)) -eq 0 ] && rm -rf "$out"
    done
    echo "# $hits of 100 kills hit a running as-pack" >&3
    # a completed run afterwards: the output is whole and the killed runs' staging is gone
    as-pack -m "$M" -f gptq -o "$out" < "$BATS_FILE_TMPDIR/q.astr" 2>/dev/null
    absent_or_complete "$out"
    [ -f "$out/model.safetensors" ]
    run bash -c "ls -d '$out'.tmp.* 2>/dev/null | wc -l"
    [ "$output" -eq 0 ]
}

@test "a killed as-pack never damages the previous complete output" {
    out=$BATS_TEST_TMPDIR/keep
    cp -r "$BATS_FILE_TMPDIR/ref" "$out"
    for i in $(seq 20); do
        pack_and_kill "$out" > /dev/null
        [ -d "$out" ]
        absent_or_complete "$out"
    done
}

@test "full disk: one clear error naming the file, no output and no temporary left" {
    d=$BATS_TEST_TMPDIR/small
    mkdir -p "$d"
    if ! mount -t tmpfs -o size=300k tmpfs "$d" 2>/dev/null; then
        skip "cannot mount a small tmpfs here (needs root)"
    fi
    run -1 --separate-stderr as-pack -m "$M" -f gptq -o "$d/out" < "$BATS_FILE_TMPDIR/q.astr"
    last=$(printf '%s\n' "$stderr" | tail -1)
    umount_rc=0
    leftovers=$(ls -A "$d" | wc -l)
    umount "$d" || umount_rc=$?
    [[ "$last" == *"model.safetensors"* && "$last" == *"No space left on device"* ]]
    [ "$leftovers" -eq 0 ]
    [ "$umount_rc" -eq 0 ]
}

# Concurrent writers of one output (issue 7): the output is locked (flock on OUT.lock) while it is
# written; util-linux flock(1) takes the same lock, so a script can hold an output too.
@test "an output being written by another run: as-pack fails at once naming it; AS_LOCK_WAIT=1 waits" {
    command -v flock >/dev/null || skip "flock(1) (util-linux) is not installed"
    out=$BATS_TEST_TMPDIR/locked
    flock "$out.lock" sleep 3 &
    holder=$!
    sleep 0.5
    run -1 --separate-stderr as-pack -m "$M" -f gptq -o "$out" < "$BATS_FILE_TMPDIR/q.astr"
    [ "$(printf '%s\n' "$stderr" | wc -l)" -eq 1 ]
    [[ "$stderr" == *"output $out: being written by another run"* ]]
    [ ! -e "$out" ]
    # the same for a single-file output (GGUF, verified under another name before the rename)
    flock "$out.gguf.lock" sleep 3 &
    sleep 0.3
    run -1 --separate-stderr as-pack -m "$M" -f gguf -o "$out.gguf" < "$BATS_FILE_TMPDIR/q.astr"
    [[ "$stderr" == *"output $out.gguf: being written by another run"* ]]
    [ ! -e "$out.gguf" ] && [ -z "$(ls "$BATS_TEST_TMPDIR" | grep verify)" ]
    # waiting instead: starts when the holder lets go, and leaves no lock file behind
    start=$(date +%s%N)
    AS_LOCK_WAIT=1 as-pack -m "$M" -f gptq -o "$out" < "$BATS_FILE_TMPDIR/q.astr" 2>/dev/null
    waited_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    wait $holder
    [ "$waited_ms" -ge 1000 ]
    absent_or_complete "$out" && [ -e "$out" ]
    wait
    [ ! -e "$out.lock" ]
}

@test "two as-pack runs racing for one output: each succeeds or fails clearly, the output is whole" {
    out=$BATS_TEST_TMPDIR/race
    half=$(( $(stat -c %s "$BATS_FILE_TMPDIR/q.astr") / 2 ))
    for i in $(seq 10); do
        for r in a b; do
            { head -c $half "$BATS_FILE_TMPDIR/q.astr"; sleep 0.0$((RANDOM % 5)); tail -c +$((half + 1)) "$BATS_FILE_TMPDIR/q.astr"; } |
                as-pack -m "$M" -f gptq -o "$out" 2>"$BATS_TEST_TMPDIR/$r.err" &
        done
        wait %1 && ra=0 || ra=$?
        wait %2 && rb=0 || rb=$?
        # a run that failed says why in one line; one that ran wrote the output
        [ $ra -eq 0 ] || [ "$(cat "$BATS_TEST_TMPDIR/a.err")" = "$(grep 'being written by another run' "$BATS_TEST_TMPDIR/a.err")" ]
        [ $rb -eq 0 ] || [ "$(cat "$BATS_TEST_TMPDIR/b.err")" = "$(grep 'being written by another run' "$BATS_TEST_TMPDIR/b.err")" ]
        [ $ra -eq 0 ] || [ $rb -eq 0 ]
        absent_or_complete "$out" && [ -e "$out" ]
    done
    [ -z "$(ls -A "$BATS_TEST_TMPDIR" | grep -E 'race\.(tmp|lock|old)')" ]
}

# The whole GPTQ recipe (calibrate -> 5 per-layer as-gptq -> gather -> as-pack), killed with its
# whole process group at 100 random points spread over an uninterrupted run's duration, each run
# resuming what the killed one left: after every kill each output that exists is byte-identical
# to the uninterrupted run's (never a partial file under a final name), and a last run completes
# the same checkpoint.
@test "whole recipe killed (SIGKILL, process group) at 100 random points: every output absent or complete" {
    local ref=$BATS_TEST_TMPDIR/ref out=$BATS_TEST_TMPDIR/rec
    local mk=(make -s -f "$BATS_TEST_DIRNAME/../../pipelines/w4a16-gptq.mk" MODEL="$M"
              DATA="$AS_DATA/text/austen" GROUP=32 SAMPLES=16 SEQLEN=128 BIN="$(dirname "$(command -v as-pack)")")
    local t0=$(date +%s%N)
    "${mk[@]}" OUT="$ref" >/dev/null 2>&1
    local span_ms=$(( ($(date +%s%N) - t0) / 1000000 + 50 ))
    local f rel kills=0 completed=0
    for i in $(seq 100); do
        setsid "${mk[@]}" OUT="$out" >/dev/null 2>&1 &
        local pid=$!
        sleep "$(printf '0.%03d' $((RANDOM % span_ms)))" 2>/dev/null ||
            sleep "$((RANDOM % span_ms / 1000)).$(printf '%03d' $((RANDOM % 1000)))"
        if kill -9 -- -"$pid" 2>/dev/null; then kills=$((kills + 1)); fi
        wait "$pid" 2>/dev/null && completed=$((completed + 1)) || true
        # streams under their final names are complete and verify (they name files by path
        # and mtime, so they are not byte-comparable across runs); the checkpoint is identical
        for f in "$out"/calib.stream "$out"/quant.stream "$out"/layers/quant.*.stream; do
            [ -e "$f" ] || continue
            as-cat -V "$f" >/dev/null 2>"$BATS_TEST_TMPDIR/err" ||
                { echo "after kill $i: ${f#"$out"/} is not a complete stream: $(cat "$BATS_TEST_TMPDIR/err")"; return 1; }
        done
        for f in "$out"/checkpoint/*; do
            [ -e "$f" ] || continue
            rel=${f#"$out"/}
            cmp -s "$f" "$ref/$rel" || { echo "after kill $i: $rel differs from the complete run"; return 1; }
        done
        [ ! -e "$out/checkpoint" ] || [ "$(ls "$out/checkpoint" | wc -l)" -eq "$(ls "$ref/checkpoint" | wc -l)" ]
        # a finished run: start again from nothing so the kills keep landing in every step
        [ -e "$out/checkpoint" ] && [ ! -e "$out/checkpoint.tmp" ] && rm -rf "$out"
    done
    echo "# $kills of 100 kills hit a running recipe ($completed runs completed, span ${span_ms} ms)" >&3
    "${mk[@]}" OUT="$out" >/dev/null 2>&1
    diff -r "$out/checkpoint" "$ref/checkpoint"
    [ -z "$(find "$out" -name '*.tmp*' -o -name '*.lock')" ]
}
