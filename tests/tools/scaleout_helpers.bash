# Helpers of tests/tools/scaleout.bats (load with `load scaleout_helpers`).
#
# RECIPE_VARS: the recipe's variables for the bundled model (small calibration, group 32).
# sha_of OUT: sha256 of OUT/checkpoint/model.safetensors.
# stamp FILE...: inode and nanosecond mtime of each file (a recomputed layer changes both).
# make_kill_wrappers DIR: as-* programs in DIR that forward to $AS_BIN, except that a trigger file
#   $AS_KILL_DIR/POINT makes the named step SIGKILL the whole session part-way through:
#     calib     as-calib after 100 KB of statistics      gptq.N  as-gptq of layer N after 20 KB
#     pack      as-pack while it is reading its input
#   A trigger fires once (the wrapper removes it). The session is $AS_KILL_SID (killed_run sets it).
# killed_run POINT CMD...: run CMD in a new session with trigger POINT armed; succeeds when CMD
#   was killed by the trigger (non-zero exit and the trigger consumed).

load helpers

RECIPE=$BATS_TEST_DIRNAME/../../pipelines/w4a16-gptq.mk
PARALLEL_SH=$BATS_TEST_DIRNAME/../../pipelines/parallel.sh
SUBMIT_SH=$BATS_TEST_DIRNAME/../../pipelines/slurm/submit.sh

recipe_vars() { # BIN OUT
    RECIPE_VARS=(BIN="$1" MODEL="$M" DATA="$AUSTEN" SAMPLES=16 SEQLEN=64 GROUP=32 OUT="$2")
}

sha_of() { sha256sum "$1/checkpoint/model.safetensors" | cut -d' ' -f1; }

stamp() { stat -c '%n %i %y' "$@"; }

make_kill_wrappers() {
    local dir=$1 t
    mkdir -p "$dir"
    for t in "$AS_BIN"/as-*; do ln -sf "$t" "$dir/$(basename "$t")"; done
    rm -f "$dir/as-calib" "$dir/as-gptq" "$dir/as-pack"
    cat >"$dir/as-calib" <<EOF
#!/usr/bin/env bash
if [ -n "\${AS_KILL_DIR:-}" ] && rm "\$AS_KILL_DIR/calib" 2>/dev/null; then
    "$AS_BIN/as-calib" "\$@" | { head -c 100000; pkill -KILL -s "\$AS_KILL_SID"; sleep 30; }
fi
exec "$AS_BIN/as-calib" "\$@"
EOF
    cat >"$dir/as-gptq" <<EOF
#!/usr/bin/env bash
layer=
for a in "\$@"; do
    case "\$a" in */report.*.jsonl) layer=\${a##*/report.}; layer=\${layer%.jsonl} ;; esac
done
if [ -n "\${AS_KILL_DIR:-}" ] && [ -n "\$layer" ] && rm "\$AS_KILL_DIR/gptq.\$layer" 2>/dev/null; then
    "$AS_BIN/as-gptq" "\$@" | { head -c 20000; pkill -KILL -s "\$AS_KILL_SID"; sleep 30; }
fi
exec "$AS_BIN/as-gptq" "\$@"
EOF
    cat >"$dir/as-pack" <<EOF
#!/usr/bin/env bash
if [ -n "\${AS_KILL_DIR:-}" ] && rm "\$AS_KILL_DIR/pack" 2>/dev/null; then
    exec 3<&0 # an asynchronous command would get /dev/null as its standard input
    { head -c 100000 <&3; sleep 30; } | "$AS_BIN/as-pack" "\$@" &
    sleep 0.5
    pkill -KILL -s "\$AS_KILL_SID"
    sleep 30
fi
exec "$AS_BIN/as-pack" "\$@"
EOF
    chmod +x "$dir/as-calib" "$dir/as-gptq" "$dir/as-pack"
}

killed_run() {
    local point=$1 rc
    shift
    touch "$AS_KILL_DIR/$point"
    # A new session (setsid -f -w: always fork, wait): the trigger kills exactly this session.
    rc=0
    setsid -f -w bash -c 'export AS_KILL_SID=$$; exec "$@"' _ "$@" >"$BATS_TEST_TMPDIR/killed.log" 2>&1 ||
        rc=$?
    if [ -e "$AS_KILL_DIR/$point" ]; then
        rm -f "$AS_KILL_DIR/$point"
        echo "trigger $point never fired (status $rc):" >&2
        tail -n 5 "$BATS_TEST_TMPDIR/killed.log" >&2
        return 1
    fi
    if [ "$rc" -eq 0 ]; then
        echo "killed at $point but the run reports success" >&2
        return 1
    fi
}
