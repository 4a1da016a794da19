#!/usr/bin/env bash
# Token pruning on SmolLM2-135M-Instruct (issue 21, docs/token-pruning.md): every strategy of
# `as-prune tokens` side by side with random pruning, at keep 50 / 25 / 10 % of the prompt, pruned
# inside the prefill before layer LAYER (default 2, FastV's cut). Two prompt sets:
#   text    -- long prompts cut from the bundled Austen and WikiText texts: KLD of the next-token
#              distribution after the prompt (pruned vs full) and top-1 agreement
#   passkey -- the standard passkey prompt (filler, needle "The pass key is N. Remember it. N is
#              the pass key." at a depth, question "What is the pass key? The pass key is"):
#              exact match of the greedy continuation
# The question / last text tokens are never pruned (keep-last), nor the first token.
# Prints the tables and keeps them (with the raw JSON lines) in bench/results/prune.*.
#   N_TEXT=12 N_PASSKEY=12 CTX_WORDS=500 LAYER=2 METHODS=... KEEPS=0.5,0.25,0.1 bench/prune.sh
# TAG=.x writes bench/results/prune.x.*; PARAMS="--param lambda=0.8" passes strategy parameters.
# SETS="text passkey" (default) runs both sets; SETS=text and SETS=passkey can run side by side
# (one core each), then SETS= only prints the tables from the kept raw lines.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${BINDIR:-bin}}
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
PY=${PY:-.venv/bin/python3}
N_TEXT=${N_TEXT:-12}
N_PASSKEY=${N_PASSKEY:-12}
CTX_WORDS=${CTX_WORDS:-500}
TAG=${TAG:-}
PARAMS=${PARAMS:-}
LAYER=${LAYER:-2}
KEEPS=${KEEPS:-0.5,0.25,0.1}
METHODS=${METHODS:-random,idpruner,idpruner-paper,fastv,divprune,visionzip,dart,scope,vispruner,samp,atome,fastadasp}
GEN=${GEN:-8}
OUT=bench/results
TMP=${TMPDIR:-/tmp}/as-bench-prune.$$
mkdir -p "$TMP" "$OUT"
trap 'rm -rf "$TMP"' EXIT
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

# The model: an HF checkpoint directory (SMOL=DIR), else imported from the GGUF once.
SMOL=${SMOL:-}
if [ -z "$SMOL" ]; then
    SMOL=$TMP/smol
    "$BIN/as-import" "$(pipelines/smollm2-gguf)" "$SMOL" >/dev/null
fi

"$PY" - "$AS_DATA" "$TMP" "$N_TEXT" "$N_PASSKEY" "$CTX_WORDS" <<'EOF'
import json, random, sys
data, tmp, n_text, n_pk, words = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(21)
srcs = [data + "/text/austen/pride_and_prejudice.txt", data + "/text/austen/emma.txt",
        data + "/text/wikitext-2-raw/wiki.test.raw"]
with open(tmp + "/text.jsonl", "w") as f:
    for i in range(n_text):
        w = open(srcs[i % len(srcs)], encoding="utf-8", errors="replace").read().split()
        s = rng.randrange(1000, len(w) - words - 100)
        f.write(json.dumps({"context": " ".join(w[s:s + words]),
                            "question": " " + " ".join(w[s + words:s + words + 8]), "answer": ""}) + "\n")
head = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
        "them. I will quiz you about the important information there.")
filler = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
reps = max(2, words // 20)
with open(tmp + "/passkey.jsonl", "w") as f:
    for i in range(n_pk):
        key = str(rng.randrange(10000, 100000))
        depth = (i + 0.5) / n_pk
        at = int(reps * depth)
        ctx = head + filler * at + " The pass key is %s. Remember it. %s is the pass key." % (key, key) \
            + filler * (reps - at)
        f.write(json.dumps({"context": ctx, "question": " What is the pass key? The pass key is",
                            "answer": key}) + "\n")
EOF

for set in ${SETS-text passkey}; do
    "$BIN/as-prune" tokens --model "$SMOL" --prompts "$TMP/$set.jsonl" --method random --keep 1 \
        --methods "$METHODS" --keeps "$KEEPS" --layer "$LAYER" --gen "$GEN" $PARAMS >"$OUT/prune$TAG.$set.jsonl"
done

{
    echo "# token pruning on SmolLM2-135M-Instruct, pruned before layer $LAYER ${PARAMS}"
    echo "# $(date -u +%F) $(git rev-parse --short HEAD) $(nproc) cpus; prompts: $N_TEXT text ($CTX_WORDS words), $N_PASSKEY passkey"
    echo
    echo "## text prompts: next-token KLD (pruned vs full), top-1 agreement"
    jq -s -r '(map(select(.summary)) | group_by(.keep) | sort_by(-.[0].keep)) as $g |
      "| method | " + ($g | map("keep \(.[0].keep) KLD | top-1") | join(" | ")) + " |",
      "|---|" + ($g | map("---|---") | join("|")) + "|",
      ($g[0] | map(.method)[] as $m | "| \($m) | " + ($g | map(.[] | select(.method == $m) |
        "\(.kld_mean * 1000 | round / 1000) | \(.top1_agree * 100 | round)%") | join(" | ")) + " |")' \
        "$OUT/prune$TAG.text.jsonl"
    echo
    echo "## passkey prompts: exact match of the greedy continuation (full model: $(jq -s -r 'map(select(.summary))[0].passkey_full * 100 | round' "$OUT/prune$TAG.passkey.jsonl")%)"
    jq -s -r '(map(select(.summary)) | group_by(.keep) | sort_by(-.[0].keep)) as $g |
      "| method | " + ($g | map("keep \(.[0].keep) match | KLD") | join(" | ")) + " |",
      "|---|" + ($g | map("---|---") | join("|")) + "|",
      ($g[0] | map(.method)[] as $m | "| \($m) | " + ($g | map(.[] | select(.method == $m) |
        "\(.passkey_pruned * 100 | round)% | \(.kld_mean * 1000 | round / 1000)") | join(" | ")) + " |")' \
        "$OUT/prune$TAG.passkey.jsonl"
    echo
    echo "## prefill cost (text prompts): theoretical FLOP reduction vs measured prefill speedup"
    jq -s -r '"| method | keep | tokens kept | FLOP reduction | measured speedup |", "|---|---|---|---|---|",
      (map(select(.summary))[] | "| \(.method) | \(.keep) | \(.token_ratio * 100 | round)% | \(.flops_reduction * 100 | round / 100)x | \(.prefill_speedup * 100 | round / 100)x |")' \
        "$OUT/prune$TAG.text.jsonl"
} | tee "$OUT/prune$TAG.md"
