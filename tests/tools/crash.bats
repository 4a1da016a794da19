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
