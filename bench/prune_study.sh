#!/usr/bin/env bash
# IDPruner's importance and lambda for language-model tokens (issue 21, docs/token-pruning.md):
# a grid of importance sources x lambda at one keep ratio, on text prompts cut from texts that
# bench/prune.sh does NOT use (Persuasion, Mansfield Park, Sense and Sensibility), so the choice
# is not tuned on the texts the tables report. Prints one row per variant (KLD of the next-token
# distribution vs the full prefill, top-1 agreement) and keeps them in
# bench/results/prune-study.{md,jsonl}.
#   N=10 CTX_WORDS=500 KEEPS=0.25 LAMBDAS=0.5,0.7,0.8,0.9 IMPS=last,tail,recv,accum,norm \
#   EXTRA=random,scope SMOL=DIR bench/prune_study.sh
# SET=passkey: passkey prompts instead (as bench/prune.sh's, other keys and depths: seed 2021),
# with the exact-match rate; SET=passkey-other: passkey prompts with another haystack than
# bench/prune.sh's (other repeated filler sentences on even prompts, running text from Persuasion
# on odd ones; seed 7021); TAG=.x writes bench/results/prune-study.x.*
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${BINDIR:-bin}}
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
PY=${PY:-.venv/bin/python3}
N=${N:-10}
CTX_WORDS=${CTX_WORDS:-500}
KEEPS=${KEEPS:-0.25}
LAMBDAS=${LAMBDAS:-0.5,0.7,0.8,0.9}
IMPS=${IMPS:-last,tail,recv,accum,norm}
EXTRA=${EXTRA:-random,scope,scope:importance=tail,fastv:importance=tail}
LAYER=${LAYER:-2}
TAG=${TAG:-}
GEN=1
case "${SET:-text}" in passkey*) GEN=8 ;; esac
OUT=bench/results
TMP=${TMPDIR:-/tmp}/as-bench-prune-study.$$
mkdir -p "$TMP" "$OUT"
trap 'rm -rf "$TMP"' EXIT
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
SMOL=${SMOL:-}
if [ -z "$SMOL" ]; then
    SMOL=$TMP/smol
    "$BIN/as-import" "$(pipelines/smollm2-gguf)" "$SMOL" >/dev/null
fi

"$PY" - "$AS_DATA" "$TMP" "$N" "$CTX_WORDS" "${SET:-text}" <<'PYEOF'
import json, random, sys
data, tmp, n, words = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(2021)
if sys.argv[5] == "passkey-other":
    rng = random.Random(7021)
    head = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
            "them. I will quiz you about the important information there.")
    filler = (" The river runs to the sea. Birds fly south in the winter. The hills are quiet at"
              " night. Bread is baked in the morning.")
    w = open(data + "/text/austen/persuasion.txt", encoding="utf-8", errors="replace").read().split()
    needle = " The pass key is %s. Remember it. %s is the pass key."
    with open(tmp + "/choose.jsonl", "w") as f:
        for i in range(n):
            key = str(rng.randrange(10000, 100000))
            depth = rng.random()
            if i % 2 == 0:
                reps = words // 22
                at = int(reps * depth)
                ctx = head + filler * at + needle % (key, key) + filler * (reps - at)
            else:
                s = rng.randrange(1000, len(w) - words - 100)
                hay = w[s:s + words - 50]
                at = int(len(hay) * depth)
                ctx = head + " " + " ".join(hay[:at]) + needle % (key, key) + " " + " ".join(hay[at:])
            f.write(json.dumps({"context": ctx, "question": " What is the pass key? The pass key is",
                                "answer": key}) + "\n")
    sys.exit(0)
if sys.argv[5] == "passkey":
    head = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
            "them. I will quiz you about the important information there.")
    filler = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
    reps = max(2, words // 20)
    with open(tmp + "/choose.jsonl", "w") as f:
        for i in range(n):
            key = str(rng.randrange(10000, 100000))
            at = int(reps * rng.random())
            ctx = head + filler * at + " The pass key is %s. Remember it. %s is the pass key." % (key, key) \
                + filler * (reps - at)
            f.write(json.dumps({"context": ctx, "question": " What is the pass key? The pass key is",
                                "answer": key}) + "\n")
    sys.exit(0)
srcs = [data + "/text/austen/" + b + ".txt" for b in ("persuasion", "mansfield_park", "sense_and_sensibility")]
with open(tmp + "/choose.jsonl", "w") as f:
    for i in range(n):
        w = open(srcs[i % len(srcs)], encoding="utf-8", errors="replace").read().split()
        s = rng.randrange(1000, len(w) - words - 100)
        f.write(json.dumps({"context": " ".join(w[s:s + words]),
                            "question": " " + " ".join(w[s + words:s + words + 8]), "answer": ""}) + "\n")
PYEOF

methods=$EXTRA
for imp in ${IMPS//,/ }; do
    for lam in ${LAMBDAS//,/ }; do
        methods+=",idpruner:lambda=$lam:importance=$imp"
    done
done
"$BIN/as-prune" tokens --model "$SMOL" --prompts "$TMP/choose.jsonl" --method random --keep 1 \
    --methods "$methods" --keeps "$KEEPS" --layer "$LAYER" --gen "$GEN" >"$OUT/prune-study$TAG.jsonl"
{
    echo "# IDPruner importance x lambda on SmolLM2-135M-Instruct, layer $LAYER, $N prompts of $CTX_WORDS words"
    if [ "${SET:-text}" = passkey-other ]; then
        echo "# passkey prompts with another haystack (other filler sentences / Persuasion's text, seed 7021) than bench/prune.sh's"
    elif [ "${SET:-text}" = passkey ]; then
        echo "# passkey prompts (seed 2021: other keys and depths than bench/prune.sh's)"
    else
        echo "# from Persuasion / Mansfield Park / Sense and Sensibility (not the texts of bench/prune.sh)"
    fi
    echo "# $(date -u +%F) $(git rev-parse --short HEAD) $(nproc) cpus"
    echo
    echo "| variant | keep | KLD | top-1 | passkey match |"
    echo "|---|---|---|---|---|"
    jq -s -r 'map(select(.summary))[] | "| \(.method) | \(.keep) | \(.kld_mean * 1000 | round / 1000) | \(.top1_agree * 100 | round)% | \(if .passkey_pruned then (.passkey_pruned * 100 | round | tostring) + "%" else "-" end) |"' \
        "$OUT/prune-study$TAG.jsonl"
} | tee "$OUT/prune-study$TAG.md"
