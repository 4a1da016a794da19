#!/usr/bin/env bash
# bench/sparse_ttft.sh: SmolLM2 time to first token at 8K, dense flash prefill vs sparse configs,
# interleaved (dense, config, dense, config...) so both see the same machine load; as-gen's
# prefill wall time and the process's CPU seconds (user + sys) per run, one line each in
# bench/results/sparse-ttft.tsv (appended): len, spec, rep, prefill s, cpu s, density, key ok.
#   REPS=2 SPECS="xattention bench/sparse-smollm2-xattn.json" bench/sparse_ttft.sh
# Timing runs: start it with nice -n -19 on a shared machine (docs/sparse-attention.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(cd "${BINDIR:-bin}" && pwd)
PY=${PY:-.venv/bin/python3}
MODEL=${MODEL:-/tmp/smol}
LEN=${LEN:-8192}
DEPTH=${DEPTH:-50}
REPS=${REPS:-2}
SPECS=${SPECS:-bench/sparse-smollm2-xattn.json}
CACHE=${SPARSE_CACHE:-${TMPDIR:-/tmp}/as-sparse-cache}
OUT=bench/results/sparse-ttft.tsv
mkdir -p "$CACHE"
export OPENBLAS_NUM_THREADS=${THREADS:-2} AS_PROGRESS=0
prompt=$CACHE/passkey-$LEN-$DEPTH.txt
[ -s "$prompt" ] || $PY bench/sparse_passkey.py "$MODEL/tokenizer.json" $((LEN - 16)) "$DEPTH" \
    "$DEPTH" > "$prompt" 2> "$prompt.key"
key=$(cat "$prompt.key")
for rep in $(seq "$REPS"); do
    for m in dense $SPECS; do
        sp=(); [ "$m" = dense ] || sp=(--sparse-attn "$m")
        out=$(/usr/bin/time -f "cpu %U %S" "$BIN/as-gen" -m "$MODEL" -p "$(cat "$prompt")" -n "$LEN" \
              -v "${sp[@]}" 2> "$CACHE/ttft.err")
        got=$(printf '%s' "${out##*What is the pass key? The pass key is}" | grep -o '[0-9][0-9]*' |
              head -1 || true)
        pre=$(sed -n 's/.*prefill of [0-9]* tokens in \([0-9.]*\) s.*/\1/p' "$CACHE/ttft.err")
        cpu=$(awk '/^cpu /{printf "%.1f", $2 + $3}' "$CACHE/ttft.err")
        dens=$(sed -n 's/.*sparse density \([0-9.]*\).*/\1/p' "$CACHE/ttft.err")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$LEN" "$m" "$rep" "$pre" "$cpu" "${dens:-1}" \
            "$([ "$got" = "$key" ] && echo 1 || echo 0)" >> "$OUT"
        tail -1 "$OUT"
    done
done
