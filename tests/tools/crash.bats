#!/usr/bin/env bats
# Crash safety of outputs (issue 7): SIGKILL at random points never leaves a partial checkpoint
# that looks whole, a later run cleans up what the killed one left, and a full disk gives one clear
# error and removes the temporary output.

load helpers

setup_file() {
    import_model
    # calibration text for the recipe test: 30 KB (tokenizing all of Austen would make
    # calibration 90% of the run, and the later steps would get almost no kills)
    head -c 30000 "$AUSTEN/emma.txt" >"$BATS_FILE_TMPDIR/cal.txt"
    as-cat "$M" | as-gptq -m rtn -b 4 -g 32 > "$BATS_FILE_TMPDIR/q.astr"
    as-pack -m "$M" -f gptq -o "$BATS_FILE_TMPDIR/ref" < "$BATS_FILE_TMPDIR/q.astr" 2>/dev/null
}

# as-pack fed the stream in two halves 50 ms apart, killed with SIGKILL after a random 40-80 ms:
# as-pack itself needs ~10 ms once the input is complete, so the kills land all through its
# reading, packing, writing, verifying and renaming. Echoes 1 if the kill hit a running as-pack.
pack_and_kill() {
    local half=$(( $(stat -c %s "$BATS_FILE_TMPDIR/q.astr") / 2 ))
    # The second half of the stream arrives 300 ms late (run N of every 5: at once), and the kill
    # comes 20-79 ms after the start: in the delayed runs as-pack is certainly still running (in
    # start-up, packing the first half, or waiting for the rest) whatever the machine's speed; in
    # the others the kill may also land while it writes the end, or after it finished.
    local gap=0.3
    if [ "$2" -eq 0 ]; then gap=0; fi
    { head -c $half "$BATS_FILE_TMPDIR/q.astr"; sleep $gap; tail -c +$((half + 1)) "$BATS_FILE_TMPDIR/q.astr"; } |
        as-pack -m "$M" -f gptq -o "$1" 2>/dev/null &
    local pid=$!
    sleep "0.0$((20 + RANDOM % 60))"
    local hit=0
    kill -9 $pid 2>/dev/null && hit=1
    wait $pid 2>/dev/null || true
    echo $hit
}

# The checkpoint at $1 is absent, or byte-identical to the uninterrupted run's.
absent_or_complete() {
    if [ ! -e "$1" ]; then
        return 0
    fi
    complete "$1"
}

# The checkpoint at $1 exists and is byte-identical to the uninterrupted run's.
complete() {
    local f
    for f in model.safetensors config.json quantize_config.json tokenizer.json; do
        if ! cmp -s "$1/$f" "$BATS_FILE_TMPDIR/ref/$f"; then
            echo "$1/$f differs or is missing" >&2
            return 1
        fi
    done
}

# lost_race STATUS ERRFILE OUT: a run that lost the race for OUT failed with status 1 and exactly
# the one line naming OUT.
lost_race() {
    if [ "$1" -ne 1 ]; then
        echo "status $1 (expected 0, or 1 for a lost race): $(cat "$2")" >&2
        return 1
    fi
    if [ "$(wc -l <"$2")" -ne 1 ]; then
        echo "expected one line: $(cat "$2")" >&2
        return 1
    fi
    [[ "$(cat "$2")" == "as-pack: output $3: being written by another run"* ]]
}

@test "as-pack killed (SIGKILL) at 100 random points: output absent or complete, never partial" {
    out=$BATS_TEST_TMPDIR/out
    hits=0
    for i in $(seq 100); do
        hits=$((hits + $(pack_and_kill "$out" $((i % 5)))))
        absent_or_complete "$out"
        # start from no output again now and then (a replaced output is checked as well)
        if [ $((i % 10)) -eq 0 ]; then
            rm -rf "$out"
        fi
    done
    echo "# $hits of 100 kills hit a running as-pack" >&3
    # the 80 delayed runs are all hits (a kill that finds as-pack gone would test nothing)
    [ "$hits" -ge 80 ]
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
    [ "${#stderr_lines[@]}" -eq 1 ]
    [[ "$last" == "as-pack: "*"$d/out"*"model.safetensors"*": No space left on device"* ]]
    [ "$leftovers" -eq 0 ]
    [ "$umount_rc" -eq 0 ]
}

# Concurrent writers of one output (issue 7): the output is locked (flock on OUT.lock) while it is
# written; util-linux flock(1) takes the same lock, so a script can hold an output too.
@test "an output being written by another run: as-pack fails at once naming it; AS_LOCK_WAIT=1 waits" {
    # util-linux is installed by `make deps`: without flock(1) this test fails, never skips
    command -v flock
    # outputs in a directory of their own (bats keeps its files in BATS_TEST_TMPDIR)
    mkdir "$BATS_TEST_TMPDIR/o"
    out=$BATS_TEST_TMPDIR/o/locked
    flock "$out.lock" sleep 3 &
    holder=$!
    sleep 0.5
    run -1 --separate-stderr as-pack -m "$M" -f gptq -o "$out" < "$BATS_FILE_TMPDIR/q.astr"
    [ "$(printf '%s\n' "$stderr" | wc -l)" -eq 1 ]
    [[ "$stderr" == "as-pack: output $out: being written by another run"* ]]
    [ ! -e "$out" ]
    # the same for a single-file output (GGUF, verified under another name before the rename)
    flock "$out.gguf.lock" sleep 3 &
    sleep 0.3
    run -1 --separate-stderr as-pack -m "$M" -f gguf -o "$out.gguf" < "$BATS_FILE_TMPDIR/q.astr"
    # (notes on layers written as floats come first: GGUF plans its tensors before it opens
    # the output); the one error line is the last
    [ "$(grep -v -c '^as-pack: note: ' <<<"$stderr")" -eq 1 ]
    [[ "${stderr_lines[-1]}" == "as-pack: output $out.gguf: being written by another run"* ]]
    [ ! -e "$out.gguf" ]
    # nothing but the two lock files: no output, no staging or verification copy
    [ "$(ls -A "$BATS_TEST_TMPDIR/o" | tr '\n' ' ')" = "locked.gguf.lock locked.lock " ]
    # waiting instead: starts when the holder lets go, and leaves no lock file behind
    start=$(date +%s%N)
    AS_LOCK_WAIT=1 as-pack -m "$M" -f gptq -o "$out" < "$BATS_FILE_TMPDIR/q.astr" 2>/dev/null
    waited_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    wait $holder
    [ "$waited_ms" -ge 1000 ]
    complete "$out"
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
        ra=0
        wait %1 || ra=$?
        rb=0
        wait %2 || rb=$?
        # a run that failed says why in one line; one that ran wrote the output
        if [ "$ra" -ne 0 ]; then
            lost_race "$ra" "$BATS_TEST_TMPDIR/a.err" "$out"
        fi
        if [ "$rb" -ne 0 ]; then
            lost_race "$rb" "$BATS_TEST_TMPDIR/b.err" "$out"
        fi
        # at least one of them won
        [ $((ra * rb)) -eq 0 ]
        complete "$out"
    done
    [ -z "$(ls -A "$BATS_TEST_TMPDIR" | grep -E 'race\.(tmp|lock|old)')" ]
}

# step_of PGID: the step a stopped recipe was in, from the command lines of its group's live
# processes (the recipe's shell lines name the program): pack (as-pack), quant (as-gptq: a layer
# job), calib (as-calib), done (nothing left but the finished make, a zombie), or other (make
# reading the recipe, mkdir, gathering the layers, renaming).
step_of() {
    local procs
    procs=$(ps -e -o pgid=,stat=,args= | awk -v g="$1" '$1 == g && $2 !~ /^Z/')
    case $procs in
        '') echo done ;;
        *as-pack*) echo pack ;;
        *as-gptq*) echo quant ;;
        *as-calib*) echo calib ;;
        *) echo other ;;
    esac
}

# ms_since T0_NS FILE: milliseconds from T0_NS (date +%s%N) to FILE's modification time.
ms_since() {
    local m
    m=$(stat -c %.9Y "$2")
    echo $(( (${m/./} - $1) / 1000000 ))
}

# kill_recipe_at MS LEFT (inside the recipe test; uses its out, ref, mk, i, steps): start the
# recipe on $out, stop and kill its process group MS ms later, record the step it was in, and
# check that every output present is complete.
kill_recipe_at() {
    local ms=$1 left=$2 pid f rel
    setsid "${mk[@]}" OUT="$out" >/dev/null 2>&1 &
    pid=$!
    sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
    kill -STOP -- -"$pid" 2>/dev/null || true
    step=$(step_of "$pid")
    steps+="$step "
    echo "kill $i: at $ms of $left ms, $step"
    kill -KILL -- -"$pid" 2>/dev/null || true
    { wait "$pid"; } 2>/dev/null || true
    # streams under their final names are complete and verify (they name files by path
    # and mtime, so they are not byte-comparable across runs); the checkpoint is identical
    for f in "$out"/calib.stream "$out"/quant.stream "$out"/layers/quant.*.stream; do
        if [ ! -e "$f" ]; then
            continue
        fi
        if ! as-cat -V "$f" >/dev/null 2>"$BATS_TEST_TMPDIR/err"; then
            echo "after kill $i ($step): ${f#"$out"/} is not a complete stream: $(cat "$BATS_TEST_TMPDIR/err")"
            return 1
        fi
    done
    if [ -e "$out/checkpoint" ]; then
        for f in "$ref"/checkpoint/*; do
            rel=${f#"$ref"/}
            if ! cmp -s "$f" "$out/$rel"; then
                echo "after kill $i ($step): $rel differs from the complete run or is missing"
                return 1
            fi
        done
        [ "$(ls -A "$out/checkpoint" | wc -l)" -eq "$(ls -A "$ref/checkpoint" | wc -l)" ]
    fi
}

# The whole GPTQ recipe (calibrate -> 5 per-layer as-gptq -> gather -> as-pack), killed with its
# whole process group at 100 random points. Each run resumes what the killed one left, up to two
# resumptions in a row; then (or after a finished run) the next run starts from nothing, so that
# many runs cover the whole recipe and no step's state is retried forever. Kill times are drawn
# uniformly over what is left of the run: uninterrupted runs are timed first, with the moment
# each output appeared, and a run that resumes after outputs A..B is killed at a uniform time in
# [0, 1.4 x (its start-up + the reference run's time after B's output)]; the 40% beyond lets
# runs complete. The group is stopped (SIGSTOP) before the kill, so the step it was in is read
# exactly. After every kill each output that exists is complete: streams verify, checkpoint
# files are byte-identical to the uninterrupted run's (never a partial file under a final name),
# and a last run completes the same checkpoint. The kills must have landed in every step: at
# least 6 in calibration, 6 in quantization, 5 in packing, and at least 4 runs must have
# completed (seen on 2 cores at load 16: 14-22, 18-23, 15-23 and 16-30; about 50 s).
@test "whole recipe killed (SIGKILL, process group) at 100 random points: every output absent or complete" {
    local ref=$BATS_TEST_TMPDIR/ref out=$BATS_TEST_TMPDIR/rec
    local mk=(make -s -f "$BATS_TEST_DIRNAME/../../pipelines/w4a16-gptq.mk" MODEL="$M"
              DATA="$BATS_FILE_TMPDIR/cal.txt" GROUP=32 SAMPLES=40 SEQLEN=64 BIN="$(dirname "$(command -v as-pack)")")
    # the reference: the fastest of three uninterrupted runs (one run on a busy machine can take
    # twice as long, and then most kills would come after the end); all three give the same bytes
    local t0 ms r best=0 span_ms setup_ms fast=()
    for r in 1 2 3; do
        t0=$(date +%s%N)
        "${mk[@]}" OUT="$ref.$r" >/dev/null 2>&1
        ms=$(( ($(date +%s%N) - t0) / 1000000 ))
        diff -r "$ref.1/checkpoint" "$ref.$r/checkpoint"
        if [ "$best" = 0 ] || [ "$ms" -lt "$span_ms" ]; then
            best=$r
            span_ms=$ms
            fast=("$t0" "$ref.$r")
        fi
    done
    ln -s "$ref.1" "$ref"
    setup_ms=$(ms_since "${fast[0]}" "${fast[1]}/.dir")
    # the outputs a resumed run skips, in the order the recipe makes them, and when they appeared
    local outputs=(calib.stream layers/quant.{0..4}.stream quant.stream) at=() k
    for k in "${outputs[@]}"; do
        at+=("$(ms_since "${fast[0]}" "${fast[1]}/$k")")
    done
    local f rel i pid left resumed=0 step steps=" " n_calib n_quant n_pack n_done n_other
    echo "reference run: start-up $setup_ms ms, outputs at ${at[*]} ms, $span_ms ms in all"
    for i in $(seq 100); do
        # time already done: the latest reference time of the outputs present
        left=$setup_ms
        for k in "${!outputs[@]}"; do
            if [ -e "$out/${outputs[k]}" ] && [ "${at[k]}" -gt "$left" ]; then
                left=${at[k]}
            fi
        done
        if [ "$left" -gt "$setup_ms" ]; then
            resumed=$((resumed + 1))
        else
            resumed=0
        fi
        left=$((setup_ms + span_ms - left))
        ms=$(( (RANDOM * 32768 + RANDOM) % (left * 140 / 100) ))
        kill_recipe_at "$ms" "$left"
        # a finished run, or the second resumption in a row: start again from nothing
        if [ -e "$out/checkpoint" ] || [ "$resumed" -ge 2 ]; then
            rm -rf "$out"
            resumed=0
        fi
    done
    # Top-up: on a fast machine a short step (packing takes ~10 ms of a 124 ms run) may get
    # fewer uniform kills than asked; then fresh runs are killed at uniform times inside that
    # step's window of the reference timeline until it has them (at most 150 more kills).
    local extra=0 lo hi
    while [ "$extra" -lt 150 ]; do
        n_calib=$(grep -o ' calib' <<<"$steps" | wc -l)
        n_quant=$(grep -o ' quant' <<<"$steps" | wc -l)
        n_pack=$(grep -o ' pack' <<<"$steps" | wc -l)
        if [ "$n_calib" -lt 6 ]; then
            lo=$setup_ms hi=${at[0]}
        elif [ "$n_quant" -lt 6 ]; then
            lo=${at[0]} hi=${at[5]}
        elif [ "$n_pack" -lt 5 ]; then
            lo=${at[6]} hi=$span_ms
        else
            break
        fi
        rm -rf "$out"
        extra=$((extra + 1))
        i=$((100 + extra))
        kill_recipe_at $((lo + RANDOM % (hi - lo + 1))) "$span_ms"
    done
    n_calib=$(grep -o ' calib' <<<"$steps" | wc -l)
    n_quant=$(grep -o ' quant' <<<"$steps" | wc -l)
    n_pack=$(grep -o ' pack' <<<"$steps" | wc -l)
    n_done=$(grep -o ' done' <<<"$steps" | wc -l)
    n_other=$(grep -o ' other' <<<"$steps" | wc -l)
    echo "# span ${span_ms} ms; kills: calib $n_calib, quant $n_quant, pack $n_pack, other $n_other; completed $n_done; $extra top-up kills" >&3
    [ $((n_calib + n_quant + n_pack + n_other + n_done)) -eq $((100 + extra)) ]
    [ "$n_calib" -ge 6 ]
    [ "$n_quant" -ge 6 ]
    [ "$n_pack" -ge 5 ]
    [ "$n_done" -ge 4 ]
    "${mk[@]}" OUT="$out" >/dev/null 2>&1
    diff -r "$out/checkpoint" "$ref/checkpoint"
    [ -z "$(find "$out" -name '*.tmp*' -o -name '*.lock')" ]
}
