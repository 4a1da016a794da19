#!/usr/bin/env bash
# bench/sparse.sh: training-free sparse prefill attention (docs/sparse-attention.md).
#   attn    attention-only time on SmolLM2-shaped heads, dense flash vs each method, densities
#           (bench_sparse_attn; ATTN_LENS, ATTN_HEADS)
#   needle  tensor-level needle test up to 64K (NEEDLE_LENS)
#   ppl     SmolLM2-135M perplexity and KLD vs dense, first window of wiki.test.raw at CTXS
#   passkey RULER-style passkey retrieval at PK_LENS x PK_DEPTHS, exact match, with the prefill
#           time (TTFT) and density of each run; PK_FILLER=TEXT uses that text's sentences as
#           the haystack (results in sparse-passkey-NAME.tsv, NAME = the text's base name)
#   report  the PPL/KLD and passkey tables (bench/sparse_report.py)
# Resumable: every finished measurement is a line of bench/results/sparse-*.tsv and is skipped
# when the script runs again (delete the file to measure again). PARTS selects the parts.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
BIN=$(cd "${BINDIR:-bin}" && pwd)
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
PY=${PY:-.venv/bin/python3}
OUT=bench/results
MODEL=${MODEL:-/tmp/smol}
THREADS=${THREADS:-2}
PARTS=${PARTS:-attn needle ppl passkey report}
METHODS=${METHODS:-a_shape vertical_and_slash:vertical=1000,slash=2048 xattention flexprefill stem bench/sparse-smollm2-xattn-layered.json}
CTXS=${CTXS:-4096 8192}
PK_LENS=${PK_LENS:-2048 4096 8192}
PK_DEPTHS=${PK_DEPTHS:-10 20 30 40 50 60 70 80 90 100}
ATTN_LENS=${ATTN_LENS:-2048,4096,8192,16384,32768,65536}
NEEDLE_LENS=${NEEDLE_LENS:-4096,8192,16384,32768,65536}
ATTN_METHODS=${ATTN_METHODS:-a_shape,tri_shape,vertical_and_slash,xattention,xattention:n_last=64,xattention:stride=16,flexprefill,flexprefill:min_budget=512,n_last=64,stem}
TEXT=$AS_DATA/text/wikitext-2-raw/wiki.test.raw
# prompts, generations and the base logits (800 MB at 8K) live outside the tree
CACHE=${SPARSE_CACHE:-${TMPDIR:-/tmp}/as-sparse-cache}
mkdir -p "$OUT" "$CACHE"
export OPENBLAS_NUM_THREADS=$THREADS AS_PROGRESS=0

if [ ! -f "$MODEL/config.json" ]; then
    echo "importing SmolLM2-135M-Instruct into $MODEL" >&2
    "$BIN/as-import" "$(pipelines/smollm2-gguf)" "$MODEL"
fi

has() { grep -q "^$1	" "$2" 2>/dev/null; } # key, file

for part in $PARTS; do
case $part in
attn)
    f=$OUT/sparse-attn.md
    [ -s "$f" ] || "$BUILD/bench/bench_sparse_attn" -t "$THREADS" -l "$ATTN_LENS" \
        -m "$ATTN_METHODS" --no-needle > "$f.tmp" && mv "$f.tmp" "$f"
    cat "$f" ;;
needle)
    f=$OUT/sparse-needle.md
    [ -s "$f" ] || "$BUILD/bench/bench_sparse_attn" -t "$THREADS" --no-speed \
        --needle "$NEEDLE_LENS" -m "$ATTN_METHODS" > "$f.tmp" && mv "$f.tmp" "$f"
    cat "$f" ;;
ppl)
    f=$OUT/sparse-ppl.tsv
    for ctx in $CTXS; do
        cache=$CACHE/base-$ctx.logits
        for m in dense $METHODS; do
            has "$ctx	$m" "$f" && continue
            sp=(); [ "$m" = dense ] || sp=(--sparse-attn "$m")
            "$BIN/as-eval" -m "$MODEL" -b "$MODEL" --base-logits "$cache" -f "$TEXT" \
                --bytes 400000 -c "$ctx" --chunks 1 --threads "$THREADS" "${sp[@]}" --json |
                $PY -c 'import json,sys; d=json.load(sys.stdin); print("%s\t%s\t%.4f\t%.5f\t%.1f\t%.3f" % (sys.argv[1], sys.argv[2], d["ppl"], d["kld"]["mean"], d["ctx"] / d["prefill_tok_s"], d.get("sparse_density", 1.0)))' "$ctx" "$m" >> "$f"
            tail -1 "$f"
        done
    done ;;
passkey)
    f=$OUT/sparse-passkey.tsv tag=
    if [ -n "${PK_FILLER:-}" ]; then
        tag=$(basename "$PK_FILLER" .txt)-
        f=$OUT/sparse-passkey-${tag%-}.tsv
    fi
    for len in $PK_LENS; do
        for depth in $PK_DEPTHS; do
            prompt=$CACHE/passkey-$tag$len-$depth.txt
            [ -s "$prompt" ] || $PY bench/sparse_passkey.py "$MODEL/tokenizer.json" $((len - 16)) \
                "$depth" "$depth" ${PK_FILLER:+"$PK_FILLER"} > "$prompt" 2> "$prompt.key"
            key=$(cat "$prompt.key")
            for m in dense $METHODS; do
                has "$len	$depth	$m" "$f" && continue
                sp=(); [ "$m" = dense ] || sp=(--sparse-attn "$m")
                out=$("$BIN/as-gen" -m "$MODEL" -p "$(cat "$prompt")" -n "$len" -v "${sp[@]}" \
                      2> "$CACHE/gen.err")
                # the answer: the first number generated after the question (the prompt holds
                # the question once; the model may go on repeating "The pass key is")
                gen=${out##*What is the pass key? The pass key is}
                printf '%s\n' "$gen" > "$CACHE/gen-$tag$len-$depth-${m//[^a-z0-9_]/_}.txt"
                got=$(printf '%s' "$gen" | grep -o '[0-9][0-9]*' | head -1 || true)
                pre=$(sed -n 's/.*prefill of [0-9]* tokens in \([0-9.]*\) s.*/\1/p' "$CACHE/gen.err")
                dens=$(sed -n 's/.*sparse density \([0-9.]*\).*/\1/p' "$CACHE/gen.err")
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$len" "$depth" "$m" "$key" "${got:-none}" \
                    "$([ "$got" = "$key" ] && echo 1 || echo 0)" "$pre" "${dens:-1}" >> "$f"
                tail -1 "$f"
            done
        done
    done ;;
report) $PY bench/sparse_report.py "$OUT" ;;
*) echo "unknown part $part" >&2; exit 2 ;;
esac
done
