#!/usr/bin/env bash
# submit.sh: the W4A16 recipe (pipelines/w4a16-gptq.mk) as three Slurm jobs chained with afterok:
#
#   calib.sbatch          make calib                         one task
#   quant-layer.sbatch    make OUT/layers/quant.N.stream     job array, index = layer N
#   pack.sbatch           make (gather, pack, evaluate)      one task
#
#   pipelines/slurm/submit.sh [OPTIONS] [--] MODEL=DIR DATA=TEXT OUT=DIR [BITS=4 ...]
#
# OUT must be on a file system every node mounts at the same path (the jobs start in this
# directory). Each job is a plain `make` of one target, so resubmitting after a failure or a
# preemption redoes only what is missing. A failed task cancels the jobs that depend on it
# (--kill-on-invalid-dep). Prints the three job ids; --wait blocks until pack ends and exits with
# its status. Logs: OUT/slurm/{calib-J,quant-A_N,pack-J}.out.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: pipelines/slurm/submit.sh [OPTIONS] [--] VAR=VALUE...   (the recipe's MODEL= DATA= OUT= ...)
  -p, --partition P        Slurm partition (default: the cluster's default)
      --max-parallel N     at most N layer tasks at once (--array=...%N)
      --layers LIST        only these layers in the array (Slurm syntax: 0-79, 3,7; default all)
      --cpus-calib N       CPUs for calibration (default 2)
      --cpus-layer N       CPUs per layer task (default 2)
      --cpus-pack N        CPUs for packing (default 1)
      --mem-calib M, --mem-layer M, --mem-pack M     memory per job (sbatch --mem syntax)
      --time T             time limit of each job (sbatch syntax, default: partition default)
      --sbatch-opt OPT     extra sbatch option for every job (repeatable), e.g. --account=x
      --after JOBID        start calibration after JOBID succeeded
      --recipe FILE        Make recipe (default: pipelines/w4a16-gptq.mk)
      --wait               wait for the pack job and exit with its status
  -h, --help
EOF
}

here=$(cd "$(dirname "$0")" && pwd)
recipe=$(cd "$here/.." && pwd)/w4a16-gptq.mk
partition='' max_par='' layers='' time_limit='' after='' wait=0
cpus_calib=2 cpus_layer=2 cpus_pack=1 mem_calib='' mem_layer='' mem_pack=''
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
    -p | --partition) partition=$2; shift 2 ;;
    --max-parallel) max_par=$2; shift 2 ;;
    --layers) layers=$2; shift 2 ;;
    --cpus-calib) cpus_calib=$2; shift 2 ;;
    --cpus-layer) cpus_layer=$2; shift 2 ;;
    --cpus-pack) cpus_pack=$2; shift 2 ;;
    --mem-calib) mem_calib=$2; shift 2 ;;
    --mem-layer) mem_layer=$2; shift 2 ;;
    --mem-pack) mem_pack=$2; shift 2 ;;
    --time) time_limit=$2; shift 2 ;;
    --sbatch-opt) extra+=("$2"); shift 2 ;;
    --after) after=$2; shift 2 ;;
    --recipe) recipe=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --wait) wait=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "submit.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) break ;;
    esac
done
for v in "$@"; do
    [[ "$v" == *=* ]] || { echo "submit.sh: expected VAR=VALUE, got '$v'" >&2; exit 2; }
done
command -v sbatch >/dev/null || { echo "submit.sh: sbatch not found (Slurm client tools)" >&2; exit 1; }

mkvar() { local v=$1; shift; make --no-print-directory -s -f "$recipe" "$@" "print-$v"; }
out=$(mkvar OUT "$@")
[ "$(mkvar SEQUENTIAL "$@")" != 1 ] ||
    { echo "submit.sh: SEQUENTIAL=1 is one as-calib process; submit calib.sbatch alone" >&2; exit 2; }
if [ -z "$layers" ]; then
    n=$(wc -w <<<"$(mkvar LAYERS "$@")")
    layers="0-$((n - 1))"
fi
mkdir -p "$out/slurm"

common=(--parsable --chdir="$PWD" --kill-on-invalid-dep=yes "${extra[@]}")
[ -n "$partition" ] && common+=(--partition="$partition")
[ -n "$time_limit" ] && common+=(--time="$time_limit")
mem() { if [ -n "$1" ]; then echo "--mem=$1"; fi; }

calib_dep=()
[ -n "$after" ] && calib_dep=(--dependency="afterok:$after")
# shellcheck disable=SC2046
calib=$(sbatch "${common[@]}" "${calib_dep[@]}" --cpus-per-task="$cpus_calib" $(mem "$mem_calib") \
    --output="$out/slurm/calib-%j.out" "$here/calib.sbatch" "$recipe" "$@")
calib=${calib%%;*}
# shellcheck disable=SC2046
array=$(sbatch "${common[@]}" --dependency="afterok:$calib" --array="$layers${max_par:+%$max_par}" \
    --cpus-per-task="$cpus_layer" $(mem "$mem_layer") --output="$out/slurm/quant-%A_%a.out" \
    "$here/quant-layer.sbatch" "$recipe" "$@")
array=${array%%;*}
echo "calib $calib"
echo "array $array"
# shellcheck disable=SC2046
pack=$(sbatch "${common[@]}" --dependency="afterok:$array" \
    --cpus-per-task="$cpus_pack" $(mem "$mem_pack") --output="$out/slurm/pack-%j.out" \
    "$here/pack.sbatch" "$recipe" "$@")
pack=${pack%%;*}
echo "pack $pack"
[ "$wait" = 1 ] || exit 0

# --wait: poll the pack job each second (sbatch --wait backs off to tens of seconds). A failed
# layer cancels pack (DependencyNeverSatisfied + --kill-on-invalid-dep), which ends the wait.
while :; do
    state=$(scontrol show job -o "$pack" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    case "$state" in
    COMPLETED) exit 0 ;;
    FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED | DEADLINE | BOOT_FAIL)
        echo "submit.sh: pack job $pack ended $state; logs in $out/slurm/" >&2
        exit 1
        ;;
    "") echo "submit.sh: pack job $pack unknown to scontrol" >&2; exit 1 ;;
    esac
    sleep 1
done
