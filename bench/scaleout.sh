#!/usr/bin/env bash
# Per-layer fan-out benchmark on this machine: the GPTQ quantization phase of the W4A16 recipe
# (one as-gptq per decoder layer) run as
#   one process      as-gptq over the whole statistics stream
#   make -j1         the recipe's per-layer rule, one layer at a time
#   make -j2         two layers at a time
#   parallel -j2     pipelines/parallel.sh (GNU parallel on the local cores)
#   Slurm array      pipelines/slurm/submit.sh on a private localhost cluster
#                    (tests/tools/slurm_setup.sh; skipped without root/slurm-wlm/munge)
# on the synthetic 2048/5632 bf16 model of bench_gen (4 layers) with a tokenizer from the bundled
# model, statistics from 16 windows of 256 Austen tokens. Every variant must produce the same
# checkpoint bytes (checked). Table in bench/results/scaleout.txt.
#   BIN BUILD AS_DATA   programs, build dir, shared data (defaults: bin, build/rel, ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
BUILD=${BUILD:-build/rel}
BIN=$(cd "${BIN:-bin}" && pwd)
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
[ -x "$BUILD/bench/bench_gen" ] || { echo "scaleout.sh: $BUILD/bench/bench_gen not built" >&2; exit 1; }
# One BLAS thread count for every variant: OpenBLAS's threaded Cholesky rounds differently
# with another count, and the Slurm tasks would otherwise use their CPU allocation.
export AS_PROGRESS=0 PATH="$BIN:$PATH" OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$(nproc)}
dir=$(mktemp -d /tmp/as-scaleout.XXXXXX)
slurm_dir=
cleanup() {
    [ -n "$slurm_dir" ] && "$root/tests/tools/slurm_setup.sh" stop "$slurm_dir"
    rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p bench/results
out=$root/bench/results/scaleout.txt

M=$dir/model
"$BUILD/bench/bench_gen" prefill "$M" 16 >/dev/null
as-import -t "$AS_DATA/models/stories260K/tok512.bin" "$AS_DATA/models/stories260K/stories260K.bin" \
    "$dir/tiny" 2>/dev/null
cp "$dir/tiny/tokenizer.json" "$dir/tiny/tokenizer_config.json" "$M/" 2>/dev/null || true
L=$(jq -r .num_hidden_layers "$M/config.json")
vars() { echo BIN="$BIN" MODEL="$M" DATA="$AS_DATA/text/austen" SAMPLES=16 SEQLEN=256 GROUP=128 OUT="$1"; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

# Statistics once; every variant starts from a copy of them (so only the layer phase differs).
R=$dir/ref
t=$(now)
# shellcheck disable=SC2046
make -s -f pipelines/w4a16-gptq.mk $(vars "$R") calib >/dev/null 2>&1
calib_s=$(since "$t")
seed_out() { mkdir -p "$1/layers" && cp -p "$R/calib.stream" "$1/" && touch "$1/.dir"; }
# shellcheck disable=SC2046
opts=$(make -s -f pipelines/w4a16-gptq.mk $(vars "$R") print-GPTQ_OPTS)

declare -A took sha
# one process
O=$dir/single
seed_out "$O"
t=$(now)
# shellcheck disable=SC2086
as-gptq $opts <"$O/calib.stream" >"$O/quant.stream"
t2=$(now)
as-pack -m "$M" -f gptq -o "$O/checkpoint" <"$O/quant.stream" 2>/dev/null
pack_s=$(since "$t2")
took[single]=$(since "$t")
sha[single]=$(sha256sum "$O/checkpoint/model.safetensors" | cut -d' ' -f1)

run_variant() { # NAME CMD...: everything after the statistics (layers, gather, pack)
    local name=$1 O=$dir/$1
    shift
    seed_out "$O"
    local t
    t=$(now)
    "$@" "$O" >"$dir/$name.log" 2>&1 || { echo "scaleout.sh: $name failed:" >&2; tail -n 5 "$dir/$name.log" >&2; exit 1; }
    took[$name]=$(since "$t")
    sha[$name]=$(sha256sum "$O/checkpoint/model.safetensors" | cut -d' ' -f1)
}
# shellcheck disable=SC2046
make_layers() { local j=$1 O=$2; make -s -j"$j" -f pipelines/w4a16-gptq.mk $(vars "$O"); }
make_j1() { make_layers 1 "$1"; }
make_j2() { make_layers 2 "$1"; }
# shellcheck disable=SC2046
par_j2() { pipelines/parallel.sh -j2 -- $(vars "$1"); }
run_variant make-j1 make_j1
run_variant make-j2 make_j2
run_variant parallel-j2 par_j2

slurm_note=
if [ "$(id -u)" = 0 ] && slurm_dir=$dir/slurm && tests/tools/slurm_setup.sh start "$slurm_dir" 2>"$dir/slurm.skip"; then
    # shellcheck disable=SC1091
    . "$slurm_dir/env"
    # shellcheck disable=SC2046
    slurm_layers() { pipelines/slurm/submit.sh --wait --cpus-calib 1 --cpus-layer 1 --cpus-pack 1 -- $(vars "$1"); }
    run_variant slurm-array slurm_layers
else
    slurm_note="Slurm array: skipped ($(cat "$dir/slurm.skip" 2>/dev/null || echo 'needs root'))"
    slurm_dir=
fi

{
    echo "# bench/scaleout.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg); OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-unset}"
    echo "# model: synthetic bf16, hidden 2048, intermediate 5632, $L layers (bench_gen); as-gptq $opts"
    echo "# statistics (as-calib, 16 x 256 tokens): ${calib_s%.*}.$(printf %s "${calib_s#*.}" | cut -c1) s; as-pack: $(printf '%.1f' "$pack_s") s"
    echo
    echo "layers + gather + pack (wall s); per layer = (that - as-pack) / $L"
    printf "%-14s %12s %14s %10s  %s\n" variant "wall s" "per layer s" speedup "checkpoint = one process"
    for v in single make-j1 make-j2 parallel-j2 slurm-array; do
        [ -n "${took[$v]:-}" ] || continue
        printf "%-14s %12.2f %14.2f %9.2fx  %s\n" "$v" "${took[$v]}" "$(echo "(${took[$v]} - $pack_s) / $L" | bc -l)" \
            "$(echo "${took[single]} / ${took[$v]}" | bc -l)" "$([ "${sha[$v]}" = "${sha[single]}" ] && echo yes || echo NO)"
    done
    [ -z "$slurm_note" ] || echo "$slurm_note"
    echo "(Slurm includes its scheduling latency: job start and the afterok chain, ~1-3 s per step.)"
} | tee "$out.tmp"
mv "$out.tmp" "$out"
for v in "${!sha[@]}"; do
    [ "${sha[$v]}" = "${sha[single]}" ] || { echo "scaleout.sh: $v produced different checkpoint bytes" >&2; exit 1; }
done
