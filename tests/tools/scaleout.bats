#!/usr/bin/env bats
# Scale-out: per-layer fan-out of the W4A16 recipe (pipelines/w4a16-gptq.mk) on real engines
# started here on localhost -- Make -j, GNU parallel on local cores, GNU parallel over ssh to a
# private sshd (shared file system, and --transferfile/--return without one), a Slurm job array
# under a private slurmctld/slurmd/munged -- must give the same checkpoint bytes as one process
# (as-gptq over the whole statistics stream). Recipes killed with SIGKILL at several points
# resume to identical output without recomputing finished layers. Engines that cannot start here
# make their tests skip with the reason, never pass.

load scaleout_helpers

setup_file() {
    import_model
    export SSHD_DIR=$BATS_FILE_TMPDIR/sshd
    "$BATS_TEST_DIRNAME/sshd_setup.sh" start "$SSHD_DIR" 2>"$BATS_FILE_TMPDIR/sshd.skip" ||
        touch "$BATS_FILE_TMPDIR/no-sshd"
    # Reference 1: the recipe, uninterrupted, one job at a time.
    recipe_vars "$AS_BIN" "$BATS_FILE_TMPDIR/ref"
    make -s -f "$RECIPE" "${RECIPE_VARS[@]}" >/dev/null 2>&1
    # Reference 2: one process quantizes every layer of the same statistics.
    mkdir -p "$BATS_FILE_TMPDIR/single"
    local opts
    opts=$(make -s -f "$RECIPE" "${RECIPE_VARS[@]}" print-GPTQ_OPTS)
    # shellcheck disable=SC2086
    as-gptq $opts <"$BATS_FILE_TMPDIR/ref/calib.stream" |
        as-pack -m "$M" -f gptq -o "$BATS_FILE_TMPDIR/single/checkpoint" 2>/dev/null
}

teardown_file() {
    "$BATS_TEST_DIRNAME/sshd_setup.sh" stop "$BATS_FILE_TMPDIR/sshd"
}

need_sshd() {
    [ ! -e "$BATS_FILE_TMPDIR/no-sshd" ] || skip "$(cat "$BATS_FILE_TMPDIR/sshd.skip")"
}

ssh_cmd() { echo "ssh -F $SSHD_DIR/ssh_config"; }

@test "single process, make -j1 and make -j2 give the same checkpoint bytes" {
    local ref
    ref=$(sha_of "$BATS_FILE_TMPDIR/single")
    [ "$(sha_of "$BATS_FILE_TMPDIR/ref")" = "$ref" ]
    recipe_vars "$AS_BIN" "$BATS_TEST_TMPDIR/j2"
    make -s -j2 -f "$RECIPE" "${RECIPE_VARS[@]}" >/dev/null 2>&1
    [ "$(sha_of "$BATS_TEST_TMPDIR/j2")" = "$ref" ]
    # the per-layer outputs exist for every layer of the model (5) and nothing else
    [ "$(ls "$BATS_TEST_TMPDIR/j2/layers"/quant.*.stream | wc -l)" -eq 5 ]
}

@test "as-cat --split-layers: one complete stream per layer, the same records as --layer N" {
    local c=$BATS_FILE_TMPDIR/ref/calib.stream d=$BATS_TEST_TMPDIR/split l
    as-cat --split-layers "$d" "$c"
    [ "$(ls "$d")" = "$(printf 'layer.%d.astr\n' 0 1 2 3 4)" ]
    for l in 0 1 2 3 4; do
        # an independent selection of the same records: the filter path of as-cat
        as-cat --layer "$l" "$c" >"$BATS_TEST_TMPDIR/sel.$l"
        cmp "$d/layer.$l.astr" "$BATS_TEST_TMPDIR/sel.$l"
        as-ls --summary "$d/layer.$l.astr" | jq -e --argjson l "$l" '.layers == [$l, $l]'
    done
    # together they hold every record of the input, each once
    diff <(as-ls "$c" | jq -r .name | sort) <(as-ls "$d"/layer.*.astr | jq -r .name | sort)
    # a checkpoint: tensors outside the decoder layers (layer -1) go to global.astr
    as-cat --split-layers "$BATS_TEST_TMPDIR/ck" "$M"
    diff <(as-ls "$M" | jq -r 'select(.layer == -1) | .name' | sort) \
        <(as-ls "$BATS_TEST_TMPDIR/ck/global.astr" | jq -r .name | sort)
}

@test "as-cat --split-layers --inline: self-contained per-layer jobs quantize like the whole stream" {
    local c=$BATS_FILE_TMPDIR/ref/calib.stream d=$BATS_TEST_TMPDIR/jobs opts
    as-cat --inline --split-layers "$d" "$c"
    # no reference left: the job files can be copied to a machine without the model
    [ "$(as-ls "$d"/layer.*.astr | jq -r .payload.kind | sort -u)" = inline ]
    opts=$(make -s -f "$RECIPE" BIN="$AS_BIN" MODEL="$M" DATA=x GROUP=32 print-GPTQ_OPTS)
    # shellcheck disable=SC2086
    as-gptq $opts <"$d/layer.3.astr" >"$BATS_TEST_TMPDIR/q.inline"
    # same codes/scales/zeros (payload checksums) as the recipe's layer 3
    diff <(as-ls "$BATS_TEST_TMPDIR/q.inline" | jq -r '[.name, .payload.xxh3] | @tsv') \
        <(as-ls "$BATS_FILE_TMPDIR/ref/layers/quant.3.stream" | jq -r '[.name, .payload.xxh3] | @tsv')
}

@test "as-cat --split-layers: a failing input leaves no layer file and no temporary" {
    local c=$BATS_FILE_TMPDIR/ref/calib.stream d=$BATS_TEST_TMPDIR/split
    head -c 300000 "$c" >"$BATS_TEST_TMPDIR/cut.stream"
    run --separate-stderr as-cat --split-layers "$d" "$c" "$BATS_TEST_TMPDIR/cut.stream"
    [ "$status" -eq 1 ]
    assert_error "as-cat: stream $BATS_TEST_TMPDIR/cut.stream: " "truncated"
    [ -z "$output" ]
    # no layer file, no temporary: the directory is empty (or was never made)
    if [ -e "$d" ]; then
        [ -z "$(ls -A "$d")" ]
    fi
    # the target must be a directory: refused before anything is written
    touch "$BATS_TEST_TMPDIR/file"
    run --separate-stderr as-cat --split-layers "$BATS_TEST_TMPDIR/file" "$c"
    [ "$status" -eq 1 ]
    assert_error "as-cat: --split-layers $BATS_TEST_TMPDIR/file: " "not a directory"
    [ -z "$output" ]
    [ ! -s "$BATS_TEST_TMPDIR/file" ]
    [ -z "$(ls -A "$BATS_TEST_TMPDIR" | grep -v -x -e cut.stream -e file -e split -e 'separate-stderr-.*')" ]
}

@test "GNU parallel -j2 on the local cores gives the same checkpoint bytes" {
    recipe_vars "$AS_BIN" "$BATS_TEST_TMPDIR/par"
    run "$PARALLEL_SH" -j2 -- "${RECIPE_VARS[@]}"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [ "$(sha_of "$BATS_TEST_TMPDIR/par")" = "$(sha_of "$BATS_FILE_TMPDIR/single")" ]
    # a second run finds nothing to do
    run "$PARALLEL_SH" -j2 -- "${RECIPE_VARS[@]}"
    [ "$status" -eq 0 ]
    [[ "$output" == *"0 layer(s) to quantize"* ]]
}

@test "GNU parallel over ssh to 127.0.0.1, shared file system: same checkpoint bytes" {
    need_sshd
    recipe_vars "$AS_BIN" "$BATS_TEST_TMPDIR/ssh"
    run "$PARALLEL_SH" -j2 --ssh "$(ssh_cmd)" -S astest -- "${RECIPE_VARS[@]}"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [ "$(sha_of "$BATS_TEST_TMPDIR/ssh")" = "$(sha_of "$BATS_FILE_TMPDIR/single")" ]
}

@test "GNU parallel over ssh without shared file system: jobs shipped, run remotely, returned" {
    need_sshd
    command -v rsync >/dev/null || skip "rsync not installed (GNU parallel --transferfile needs it; Debian: rsync)"
    # The remote as-gptq records where it ran: in GNU parallel's remote workdir, not in OUT.
    local rbin=$BATS_TEST_TMPDIR/rbin out=$BATS_TEST_TMPDIR/nofs
    mkdir -p "$rbin"
    printf '#!/bin/sh\npwd >> %s/remote-cwd\nexec %s/as-gptq "$@"\n' "$BATS_TEST_TMPDIR" "$AS_BIN" \
        >"$rbin/as-gptq"
    chmod +x "$rbin/as-gptq"
    recipe_vars "$AS_BIN" "$out"
    run "$PARALLEL_SH" -j2 --no-shared-fs --remote-bin "$rbin" --ssh "$(ssh_cmd)" -S 2/astest \
        -- "${RECIPE_VARS[@]}"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [ "$(sha_of "$out")" = "$(sha_of "$BATS_FILE_TMPDIR/single")" ]
    [ "$(wc -l <"$BATS_TEST_TMPDIR/remote-cwd")" -eq 5 ]
    run grep -c "^$out" "$BATS_TEST_TMPDIR/remote-cwd"
    [ "$output" -eq 0 ]
    grep -q '/.parallel/tmp/' "$BATS_TEST_TMPDIR/remote-cwd"
    [ ! -e "$out/jobs" ]                            # job files removed after the run
    [ "$(ls "$out/layers"/report.*.jsonl | wc -l)" -eq 5 ] # reports returned too
}

@test "Slurm: calib -> job array per layer -> pack (afterok); a failed layer cancels pack" {
    local sd=$BATS_TEST_TMPDIR/slurm out=$BATS_TEST_TMPDIR/sl wbin=$BATS_TEST_TMPDIR/wbin rc
    run "$BATS_TEST_DIRNAME/slurm_setup.sh" start "$sd"
    [ "$status" -ne 77 ] || skip "$output"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    export SLURM_TEST_DIR=$sd
    . "$sd/env"
    # First submission: layer 3 fails (its as-gptq is made to exit 1).
    make_kill_wrappers "$wbin"
    rm "$wbin/as-gptq"
    printf '#!/bin/sh\ncase "$*" in *report.3.jsonl*) echo "layer 3 broken" >&2; exit 1 ;; esac\nexec %s/as-gptq "$@"\n' \
        "$AS_BIN" >"$wbin/as-gptq"
    chmod +x "$wbin/as-gptq"
    recipe_vars "$wbin" "$out"
    run timeout 120 "$SUBMIT_SH" --wait --cpus-calib 1 --cpus-layer 1 -- "${RECIPE_VARS[@]}"
    [ "$status" -ne 0 ]
    [[ "$output" == *"CANCELLED"* ]] || { echo "$output"; false; }
    [ ! -e "$out/checkpoint" ]
    [ "$(ls "$out"/layers/quant.*.stream | wc -l)" -eq 4 ]
    grep -q "layer 3 broken" "$out"/slurm/quant-*_3.out
    local before
    before=$(stamp "$out"/layers/quant.[0124].stream "$out/calib.stream")
    # Resubmission with the layer repaired: only layer 3 is computed, then pack.
    recipe_vars "$AS_BIN" "$out"
    run timeout 120 "$SUBMIT_SH" --wait --cpus-calib 1 --cpus-layer 1 -- "${RECIPE_VARS[@]}"
    [ "$status" -eq 0 ] || { echo "$output"; cat "$out"/slurm/*.out; false; }
    [ "$(sha_of "$out")" = "$(sha_of "$BATS_FILE_TMPDIR/single")" ]
    [ "$(stamp "$out"/layers/quant.[0124].stream "$out/calib.stream")" = "$before" ]
    # afterok: pack started after every array task ended (Slurm's own records)
    local arr pack
    arr=$(sed -n 's/^array //p' <<<"$output")
    pack=$(sed -n 's/^pack //p' <<<"$output")
    local last_end pack_start
    last_end=$(scontrol show job -o "$arr" | grep -o 'EndTime=[^ ]*' | cut -d= -f2 | sort | tail -n 1)
    pack_start=$(scontrol show job -o "$pack" | grep -o 'StartTime=[^ ]*' | cut -d= -f2)
    [ "$(scontrol show job -o "$arr" | grep -c 'JobState=COMPLETED')" -eq 5 ]
    [[ ! "$pack_start" < "$last_end" ]]
}

teardown() {
    if [ -n "${SLURM_TEST_DIR:-}" ]; then
        "$BATS_TEST_DIRNAME/slurm_setup.sh" stop "$SLURM_TEST_DIR"
    fi
}

@test "make recipe killed (SIGKILL) during calib, layer 2 and pack resumes to the same bytes" {
    local wbin=$BATS_TEST_TMPDIR/wbin out=$BATS_TEST_TMPDIR/k
    export AS_KILL_DIR=$BATS_TEST_TMPDIR/kill
    mkdir -p "$AS_KILL_DIR"
    make_kill_wrappers "$wbin"
    recipe_vars "$wbin" "$out"
    local mk=(make -f "$RECIPE" "${RECIPE_VARS[@]}")

    killed_run calib "${mk[@]}"
    [ ! -e "$out/calib.stream" ]
    [ -s "$out/calib.stream.tmp" ]

    killed_run gptq.2 "${mk[@]}"
    [ -e "$out/layers/quant.1.stream" ]
    [ ! -e "$out/layers/quant.2.stream" ]
    [ -s "$out/layers/quant.2.stream.tmp" ]
    local done01
    done01=$(stamp "$out"/layers/quant.[01].stream "$out/calib.stream")

    killed_run pack "${mk[@]}"
    [ -e "$out/quant.stream" ]
    [ ! -e "$out/checkpoint" ]
    [ "$(stamp "$out"/layers/quant.[01].stream "$out/calib.stream")" = "$done01" ]
    local all
    all=$(stamp "$out"/layers/quant.*.stream "$out/quant.stream")

    "${mk[@]}" >/dev/null 2>&1
    [ "$(sha_of "$out")" = "$(sha_of "$BATS_FILE_TMPDIR/single")" ]
    # nothing finished was recomputed
    [ "$(stamp "$out"/layers/quant.*.stream "$out/quant.stream")" = "$all" ]
    [ "$(stamp "$out"/layers/quant.[01].stream "$out/calib.stream")" = "$done01" ]
    # the same report as the uninterrupted run, minus the timings
    diff <(jq -c 'del(.seconds)' "$out/gptq-report.jsonl") \
        <(jq -c 'del(.seconds)' "$BATS_FILE_TMPDIR/ref/gptq-report.jsonl")
}

@test "GNU parallel run killed (SIGKILL) during layer 2 resumes to the same bytes" {
    local wbin=$BATS_TEST_TMPDIR/wbin out=$BATS_TEST_TMPDIR/pk
    export AS_KILL_DIR=$BATS_TEST_TMPDIR/kill
    mkdir -p "$AS_KILL_DIR"
    make_kill_wrappers "$wbin"
    recipe_vars "$wbin" "$out"
    killed_run gptq.2 "$PARALLEL_SH" -j1 -- "${RECIPE_VARS[@]}"
    [ ! -e "$out/layers/quant.2.stream" ]
    [ -e "$out/layers/quant.1.stream" ]
    local done01
    done01=$(stamp "$out"/layers/quant.[01].stream)
    run "$PARALLEL_SH" -j2 -- "${RECIPE_VARS[@]}"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [[ "$output" == *"3 layer(s) to quantize: 2 3 4"* ]]
    [ "$(sha_of "$out")" = "$(sha_of "$BATS_FILE_TMPDIR/single")" ]
    [ "$(stamp "$out"/layers/quant.[01].stream)" = "$done01" ]
}

@test "parallel.sh and submit.sh: bad usage is one line and status 2" {
    # run where the recipe's default OUT (out/w4a16-gptq) would appear: nothing may
    mkdir "$BATS_TEST_TMPDIR/cwd"
    cd "$BATS_TEST_TMPDIR/cwd"
    run --separate-stderr "$PARALLEL_SH" --no-shared-fs -- MODEL="$M"
    [ "$status" -eq 2 ]
    assert_error "parallel.sh: " "--no-shared-fs needs --sshlogin"
    [ -z "$output" ]
    run --separate-stderr "$PARALLEL_SH" -j2 -- notanassignment
    [ "$status" -eq 2 ]
    assert_error "parallel.sh: " "expected VAR=VALUE" "notanassignment"
    [ -z "$output" ]
    run --separate-stderr "$SUBMIT_SH" --bogus
    [ "$status" -eq 2 ]
    # the error line, then the usage
    [ "${stderr_lines[0]}" = "submit.sh: unknown option --bogus" ]
    [[ "${stderr_lines[1]}" == "usage: "*"submit.sh "* ]]
    [ -z "$output" ]
    run --separate-stderr "$SUBMIT_SH" -- notanassignment
    [ "$status" -eq 2 ]
    assert_error "submit.sh: expected VAR=VALUE, got 'notanassignment'"
    [ -z "$output" ]
    [ -z "$(ls -A)" ]
}
