#!/usr/bin/env bash
# Larger-than-memory benchmark: a synthetic bf16 checkpoint with realistic large shapes (hidden
# 8192, intermediate 28672, 7 layers: 13 GB on disk, made by bench_bigmodel, never committed) goes
# through the W4A16 Make recipe, every as-* process under /usr/bin/time -v:
#   RTN recipe, all layers:   peak RSS of each step (calib = as-cat, each layer's as-gptq, gather,
#                             as-pack), wall time per layer, disk read throughput vs cat; then
#                             as-pack again on the same stream with --max-shard-size SHARD (HF
#                             sharded output + index) and the peak of the whole recipe
#   GPTQ recipe, GPTQ_LAYERS: synthetic Hessians (bench_bigmodel hessians, by reference, in the
#                             scratch dir); peak RSS and time of the per-layer step
# Writes the table to bench/results/bigmodel.txt. Skips (exit 0, message) with < 30 GB free.
#   BIGDIR       scratch directory (default: a new /tmp/as-bigmodel.XXXXXX, removed at the end)
#   LAYERS       decoder layers of the synthetic model (default 7: >= 12 GB)
#   GPTQ_LAYERS  layers for the GPTQ step (default 1; each takes minutes: three 28672^2 Choleskys;
#                0 skips it)
#   SHARD        --max-shard-size of the second as-pack run (default 1GB)
#   BIN BUILD    programs and build dir (default bin/, build/rel)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
BUILD=${BUILD:-build/rel}
BIN=$(cd "${BIN:-bin}" && pwd)
LAYERS=${LAYERS:-7}
GPTQ_LAYERS=${GPTQ_LAYERS:-1}
SHARD=${SHARD:-1GB}
gen="$root/$BUILD/bench/bench_bigmodel"
[ -x "$gen" ] || { echo "bigmodel.sh: $gen not built (run make)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bigmodel.sh: /usr/bin/time missing (Debian: time)" >&2; exit 1; }
mkdir -p bench/results
out=$root/bench/results/bigmodel.txt

if [ -n "${BIGDIR:-}" ]; then
    mkdir -p "$BIGDIR"
    dir=$(cd "$BIGDIR" && pwd)
    keep=1
else
    dir=$(mktemp -d /tmp/as-bigmodel.XXXXXX)
    keep=0
fi
# BIGDIR keeps only the generated model between runs (the outputs take another 10+ GB).
cleanup() { if [ "$keep" = 1 ]; then rm -rf "${dir:?}"/{time,wrapbin,rtn,gptq,hess}; else rm -rf "$dir"; fi; }
trap cleanup EXIT
avail=$(df -BG --output=avail "$dir" | tail -n 1 | tr -dc 0-9)
if [ "$avail" -lt 30 ]; then
    msg="SKIP: bigmodel needs 30 GB free in $dir (has ${avail} GB)"
    echo "$msg"
    echo "# $(date -u +%Y-%m-%dT%H:%MZ) $msg" >"$out"
    exit 0
fi

# Every as-* program runs under /usr/bin/time -v; one log per process: $dir/time/TOOL.PID{,.args}
wrap=$dir/wrapbin
rm -rf "${dir:?}"/{time,wrapbin,rtn,gptq,hess}
mkdir -p "$wrap" "$dir/time"
for t in "$BIN"/as-*; do
    n=$(basename "$t")
    cat >"$wrap/$n" <<EOF
#!/bin/sh
echo "\$*" > $dir/time/$n.\$\$.args
exec /usr/bin/time -v -o $dir/time/$n.\$\$ $t "\$@"
EOF
    chmod +x "$wrap/$n"
done
# peak RSS (MB) and wall seconds of one /usr/bin/time -v log
rss_mb() { awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$1"; }
wall_s() {
    awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0
        for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.1f", s }' "$1"
}
# the time log of the TOOL process whose arguments match PATTERN
log_of() {
    local a
    for a in "$dir"/time/"$1".*.args; do
        grep -qE -- "$2" "$a" && { echo "${a%.args}"; return 0; }
    done
    return 1
}
drop_cache() { dd if="$1" iflag=nocache count=0 status=none 2>/dev/null || true; }

export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$(nproc)} AS_PROGRESS=0
# the streams refer to the model and the Hessians in $dir: allow it (ref_policy.h; default /tmp)
export AS_REF_ROOT=${AS_REF_ROOT:+$AS_REF_ROOT:}$dir
M=$dir/model
t0=$(date +%s)
if [ "$(jq -r .num_hidden_layers "$M/config.json" 2>/dev/null)" != "$LAYERS" ]; then # BIGDIR reuse
    "$gen" gen "$M" "$LAYERS" >"$dir/gen.txt" 2>/dev/null
fi
gen_s=$(($(date +%s) - t0))
model_gb=$(du -B1 -c "$M"/*.safetensors | tail -n 1 | awk '{ printf "%.2f", $1 / 1e9 }')
shard=$(ls "$M"/model-*.safetensors | sed -n 2p) # layer 0
shard_gb=$(stat -c %s "$shard" | awk '{ printf "%.3f", $1 / 1e9 }')

# Disk read throughput: cat of layer 0's shard, cold (its pages dropped) and warm.
drop_cache "$shard"
t=$(date +%s.%N); cat "$shard" >/dev/null; cat_cold=$(echo "$(date +%s.%N) - $t" | bc)
t=$(date +%s.%N); cat "$shard" >/dev/null; cat_warm=$(echo "$(date +%s.%N) - $t" | bc)
for f in "$M"/*.safetensors; do drop_cache "$f"; done

# RTN recipe over every layer, one process at a time (cold model files).
R=$dir/rtn
t=$(date +%s.%N)
make -s -f pipelines/w4a16-rtn.mk MODEL="$M" OUT="$R" BIN="$wrap" GROUP=128 >"$dir/rtn.log" 2>&1 || {
    echo "bigmodel.sh: RTN recipe failed:" >&2
    tail -n 5 "$dir/rtn.log" >&2
    exit 1
}
rtn_s=$(echo "$(date +%s.%N) - $t" | bc)
# as-pack once more, sharded (the recipe's own run wrote one model.safetensors or default shards)
"$wrap/as-pack" -m "$M" -f gptq --max-shard-size "$SHARD" -o "$R/sharded" <"$R/quant.stream" 2>>"$dir/rtn.log"

# GPTQ per-layer step on synthetic Hessians (what one Slurm array task or parallel job runs).
G=$dir/gptq
mkdir -p "$G/layers" "$dir/hess"
touch "$G/.dir"
[ "$GPTQ_LAYERS" -gt 0 ] && "$gen" hessians "$M" "$dir/hess" 0 $((GPTQ_LAYERS - 1)) >"$G/calib.stream" 2>/dev/null
for l in $(seq 0 $((GPTQ_LAYERS - 1))); do
    make -s -f pipelines/w4a16-gptq.mk MODEL="$M" DATA=unused OUT="$G" BIN="$wrap" GROUP=128 \
        "$G/layers/quant.$l.stream" >>"$dir/gptq.log" 2>&1 || {
        echo "bigmodel.sh: GPTQ layer $l failed:" >&2
        tail -n 5 "$dir/gptq.log" >&2
        exit 1
    }
done

{
    echo "# bench/bigmodel.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo) RAM: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "# synthetic bf16 checkpoint: hidden 8192, intermediate 28672, 64/8 heads, vocab 32000,"
    echo "# $LAYERS layers, $model_gb GB in $((LAYERS + 2)) shards (generated in ${gen_s} s); group 128, 4 bits"
    echo
    echo "disk read of one layer's shard ($shard_gb GB):"
    printf "  %-44s %8.2f s %8.0f MB/s\n" "cat > /dev/null, cold (dd iflag=nocache first)" "$cat_cold" "$(awk -v g="$shard_gb" -v t="$cat_cold" 'BEGIN { print g * 1000 / t }')"
    printf "  %-44s %8.2f s %8.0f MB/s\n" "cat > /dev/null, warm" "$cat_warm" "$(awk -v g="$shard_gb" -v t="$cat_warm" 'BEGIN { print g * 1000 / t }')"
    t=$(date +%s.%N); "$BIN/as-cat" --inline "$shard" >/dev/null; s=$(echo "$(date +%s.%N) - $t" | bc)
    printf "  %-44s %8.2f s %8.0f MB/s\n" "as-cat --inline SHARD > /dev/null (mmap, warm)" "$s" "$(awk -v g="$shard_gb" -v t="$s" 'BEGIN { print g * 1000 / t }')"
    echo
    echo "RTN recipe (make -f pipelines/w4a16-rtn.mk), total ${rtn_s%.*} s; per process:"
    printf "  %-44s %10s %10s %10s\n" step "peak RSS" "wall s" "read MB/s"
    l=$(log_of as-cat "model$") && printf "  %-44s %7s MB %10s\n" "as-cat MODEL > calib.stream" "$(rss_mb "$l")" "$(wall_s "$l")"
    for i in $(seq 0 $((LAYERS - 1))); do
        l=$(log_of as-gptq "rtn/layers/report\.$i\.jsonl") || continue
        w=$(wall_s "$l")
        lb=$(stat -c %s "$(ls "$M"/model-*.safetensors | sed -n "$((i + 2))p")")
        printf "  %-44s %7s MB %10s %10.0f\n" "layer $i: as-cat --layer $i | as-gptq -m rtn" \
            "$(rss_mb "$l")" "$w" "$(awk -v b="$lb" -v w="$w" 'BEGIN { print b / 1e6 / w }')"
    done
    l=$(log_of as-cat "quant\.0\.stream") && printf "  %-44s %7s MB %10s\n" "as-cat layers/* > quant.stream" "$(rss_mb "$l")" "$(wall_s "$l")"
    l=$(log_of as-pack "checkpoint") && printf "  %-44s %7s MB %10s\n" "as-pack -f gptq ($(ls "$R/checkpoint" | grep -c 'safetensors$') shard(s))" "$(rss_mb "$l")" "$(wall_s "$l")"
    l=$(log_of as-pack "max-shard-size") && printf "  %-44s %7s MB %10s\n" "as-pack -f gptq --max-shard-size $SHARD ($(ls "$R/sharded" | grep -c 'safetensors$') shards)" "$(rss_mb "$l")" "$(wall_s "$l")"
    echo "  quant.stream $(du -BM "$R/quant.stream" | cut -f1), checkpoint $(du -BM -s "$R/checkpoint" | cut -f1)"
    peak=0
    for a in "$dir"/time/*.args; do
        grep -q "gptq/" "$a" && continue
        m=$(rss_mb "${a%.args}"); [ "${m:-0}" -gt "$peak" ] && peak=$m
    done
    echo "  peak RSS of the whole RTN recipe (largest process): $peak MB"
    echo
    if [ "$GPTQ_LAYERS" -eq 0 ]; then
        echo "GPTQ per-layer step: skipped (GPTQ_LAYERS=0)"
    else
        echo "GPTQ per-layer step (synthetic Hessians by reference; largest fp32 Hessian 28672^2 x 4 B = 3288 MB):"
        printf "  %-44s %10s %10s\n" step "peak RSS" "wall s"
        for i in $(seq 0 $((GPTQ_LAYERS - 1))); do
            l=$(log_of as-gptq "gptq/layers/report\.$i\.jsonl") || continue
            printf "  %-44s %7s MB %10s\n" "layer $i: as-cat --layer $i | as-gptq" "$(rss_mb "$l")" "$(wall_s "$l")"
            jq -r '"    \(.name) [\(.shape[0]), \(.shape[1])]: \(.seconds | . * 10 | round / 10) s"' \
                "$G/layers/report.$i.jsonl"
        done
        peak=0
        for a in "$dir"/time/*.args; do
            grep -q "rtn/layers/" "$a" && continue # the GPTQ recipe: its per-layer steps, gather, pack
            m=$(rss_mb "${a%.args}"); [ "${m:-0}" -gt "$peak" ] && peak=$m
        done
        echo "  peak RSS of the GPTQ recipe (per-layer step, gather, as-pack; largest process): $peak MB"
    fi
} | tee "$out.tmp"
mv "$out.tmp" "$out"
