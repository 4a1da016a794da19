#!/usr/bin/env bash
# parallel.sh: the Make recipe (pipelines/w4a16-gptq.mk) with its per-layer step fanned out by
# GNU parallel, on the local cores or on ssh hosts. Nothing is scheduled here: Make decides what
# is still to do (a killed run resumes, finished layers are kept), GNU parallel runs the layers.
#
#   pipelines/parallel.sh [OPTIONS] [--] MODEL=DIR DATA=TEXT OUT=DIR [BITS=4 GROUP=128 ...]
#
#   1. make calib                        statistics (or, for METHOD=rtn, the weight references)
#   2. one job per unfinished layer N:   shared file system (default): each job runs
#        `make OUT/layers/quant.N.stream` in this directory, on whichever host GNU parallel picks;
#      --no-shared-fs: `as-cat --inline --split-layers OUT/jobs calib.stream` makes one
#        self-contained job file per layer (weights inline), GNU parallel ships it
#        (--transferfile), runs as-gptq on the host and brings the result back (--return)
#   3. make                              gather the layers, pack (and evaluate if EVAL_TEXT)
# The result is bit-identical to a plain `make` (tests/tools/scaleout.bats checks it).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: pipelines/parallel.sh [OPTIONS] [--] VAR=VALUE...   (the recipe's variables: MODEL= DATA= OUT= ...)
  -j, --jobs N           layers at once on each host (default: one per CPU core)
  -S, --sshlogin LOGIN   run layers on LOGIN ([ncpus/]host, GNU parallel syntax, repeatable;
                         ':' is this machine); default: this machine only
      --sshloginfile F   hosts from file F (one LOGIN per line)
      --ssh CMD          the ssh command (default ssh), e.g. 'ssh -F ~/.ssh/cluster_config'
      --no-shared-fs     the hosts do not see this directory: transfer each layer's job file,
                         run as-gptq there, return its output (needs rsync on both ends)
      --remote-bin DIR   directory of the as-* programs on the hosts (default: the recipe's BIN)
      --recipe FILE      Make recipe (default: pipelines/w4a16-gptq.mk next to this script)
      --keep-jobs        keep OUT/jobs (the per-layer job files of --no-shared-fs)
  -h, --help
EOF
}

here=$(cd "$(dirname "$0")" && pwd)
recipe=$here/w4a16-gptq.mk
jobs='' remote_bin='' ssh_cmd='' shared=1 keep_jobs=0
logins=()
while [ $# -gt 0 ]; do
    case "$1" in
    -j | --jobs) jobs=$2; shift 2 ;;
    -j?*) jobs=${1#-j}; shift ;;
    --jobs=*) jobs=${1#--jobs=}; shift ;;
    -S | --sshlogin) logins+=(-S "$2"); shift 2 ;;
    --sshloginfile) logins+=(--sshloginfile "$2"); shift 2 ;;
    --ssh) ssh_cmd=$2; shift 2 ;;
    --no-shared-fs) shared=0; shift ;;
    --remote-bin) remote_bin=$2; shift 2 ;;
    --recipe) recipe=$2; shift 2 ;;
    --keep-jobs) keep_jobs=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "parallel.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) break ;;
    esac
done
for v in "$@"; do
    [[ "$v" == *=* ]] || { echo "parallel.sh: expected VAR=VALUE, got '$v'" >&2; exit 2; }
done
command -v parallel >/dev/null || { echo "parallel.sh: GNU parallel not installed (Debian: parallel)" >&2; exit 1; }
[ "$shared" = 1 ] || [ ${#logins[@]} -gt 0 ] ||
    { echo "parallel.sh: --no-shared-fs needs --sshlogin/--sshloginfile" >&2; exit 2; }

mk=(make --no-print-directory -f "$recipe" "$@")
var() { "${mk[@]}" -s "print-$1"; }
out=$(var OUT)
bin=$(var BIN)
method=$(var METHOD)
[ "$(var SEQUENTIAL)" != 1 ] || { echo "parallel.sh: SEQUENTIAL=1 runs all layers in one as-calib; use make" >&2; exit 2; }
remote_bin=${remote_bin:-$bin}

# 1. statistics
"${mk[@]}" calib

# Layers whose output is missing or older than calib.stream (make -q: 0 = up to date).
todo=()
for l in $(var LAYERS); do
    "${mk[@]}" -q "$out/layers/quant.$l.stream" 2>/dev/null || todo+=("$l")
done
echo "parallel.sh: ${#todo[@]} layer(s) to quantize: ${todo[*]:-none}" >&2

par=(parallel --will-cite --line-buffer)
[ -n "$jobs" ] && par+=(-j "$jobs")
[ -n "$ssh_cmd" ] && par+=(--ssh "$ssh_cmd")
par+=("${logins[@]}")
for e in AS_PROGRESS OPENBLAS_NUM_THREADS OMP_NUM_THREADS; do
    [ -n "${!e:-}" ] && par+=(--env "$e")
done

# 2. the layers
if [ ${#todo[@]} -gt 0 ]; then
    if [ "$shared" = 1 ]; then
        # Each job is the recipe's own per-layer rule, run where this directory is mounted.
        q=$(printf '%q ' make --no-print-directory -f "$(cd "$(dirname "$recipe")" && pwd)/$(basename "$recipe")" "$@")
        "${par[@]}" "cd $(printf %q "$PWD") && $q $(printf %q "$out")/layers/quant.{}.stream" ::: "${todo[@]}"
    else
        # Self-contained job files (weights inline: the hosts cannot read the model), paths
        # relative to OUT so that --transferfile/--return mirror them under the remote workdir.
        opts=$(var GPTQ_OPTS)
        [ "$method" = rtn ] || [ -n "$opts" ]
        if [ ! -f "$out/jobs/.split" ] || [ "$out/jobs/.split" -ot "$out/calib.stream" ]; then
            rm -rf "$out/jobs"
            "$bin/as-cat" --inline --split-layers "$out/jobs" "$out/calib.stream"
            touch "$out/jobs/.split"
        fi
        rb=$(printf %q "$remote_bin")
        (cd "$out" && "${par[@]}" --workdir ... --cleanup \
            --transferfile 'jobs/layer.{}.astr' \
            --return 'layers/quant.{}.stream' --return 'layers/report.{}.jsonl' \
            "mkdir -p layers && $rb/as-gptq $opts --report layers/report.{}.jsonl < jobs/layer.{}.astr > layers/quant.{}.stream.tmp && mv layers/quant.{}.stream.tmp layers/quant.{}.stream" \
            ::: "${todo[@]}")
        [ "$keep_jobs" = 1 ] || rm -rf "$out/jobs"
    fi
fi

# 3. gather, pack (evaluate)
"${mk[@]}"
