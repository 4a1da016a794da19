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
# Rows: idpruner = the language-model default (recv, mmr_norm 1, lambda 0.875), idpruner:lambda=0.8
# (the needle setting), idpruner:mmr_norm=0:lambda=0.8 (the previous default), idpruner-paper.
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
METHODS=${METHODS:-random,idpruner,idpruner:lambda=0.8,idpruner:mmr_norm=0:lambda=0.8,idpruner-paper,fastv,divprune,visionzip,dart,scope,vispruner,samp,atome,fastadasp}
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

# The tables from the per-prompt lines (so an interrupted run still gives them, over the prompts
# every (method, keep) finished); FLOP reduction from the model's config.json shapes, the same
# count as as_prune_prefill_flops.
"$PY" - "$OUT/prune$TAG" "$SMOL/config.json" "$LAYER" <<'EOF' | tee "$OUT/prune$TAG.md"
import json, subprocess, sys, datetime, os
base, cfgf, L = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = json.load(open(cfgf))
D, I, H, KV, nl = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_key_value_heads"], c["num_hidden_layers"]
hd = c.get("head_dim", D // H)
def fl(T, layers):
    lin = 2 * (D * H * hd + 2 * D * KV * hd + H * hd * D + 3 * D * I)
    return layers * (T * lin + 4.0 * H * hd * T * (T + 1) / 2)
def load(set_):
    try:
        rows = [json.loads(l) for l in open("%s.%s.jsonl" % (base, set_)) if l.strip()]
    except FileNotFoundError:
        return [], [], [], 0
    rows = [r for r in rows if not r.get("summary")]
    combos = []
    for r in rows:
        if (r["method"], r["keep"]) not in combos:
            combos.append((r["method"], r["keep"]))
    by_p = {}
    for r in rows:
        by_p.setdefault(r["prompt"], []).append(r)
    done = [p for p in by_p if len(by_p[p]) == len(combos)]
    rows = [r for r in rows if r["prompt"] in done]
    return rows, [m for m in dict.fromkeys(m for m, _ in combos)], sorted({k for _, k in combos}, reverse=True), len(done)
def agg(rows, m, k):
    return [r for r in rows if r["method"] == m and r["keep"] == k]
head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
text, methods, keeps, nt = load("text")
pk, pmethods, pkeeps, npk = load("passkey")
print("# token pruning on SmolLM2-135M-Instruct, pruned before layer %d %s" % (L, os.environ.get("PARAMS", "")))
print("# %s %s %d cpus; prompts: %d text, %d passkey (those every method and keep finished)" % (
    datetime.datetime.utcnow().strftime("%Y-%m-%d"), head, os.cpu_count(), nt, npk))
if text:
    print("\n## text prompts: next-token KLD (pruned vs full), top-1 agreement\n")
    print("| method | " + " | ".join("keep %g KLD | top-1" % k for k in keeps) + " |")
    print("|---|" + "---|---|" * len(keeps))
    for m in methods:
        cells = []
        for k in keeps:
            a = agg(text, m, k)
            cells.append("%.3f | %d%%" % (sum(r["kld"] for r in a) / len(a), round(100 * sum(r["top1_same"] for r in a) / len(a))))
        print("| %s | %s |" % (m, " | ".join(cells)))
if pk:
    full = sum(1 for r in agg(pk, pmethods[0], pkeeps[0]) if r.get("hit_full")) / npk
    print("\n## passkey prompts: exact match of the greedy continuation (full model: %d%%)\n" % round(100 * full))
    print("| method | " + " | ".join("keep %g match | KLD" % k for k in pkeeps) + " |")
    print("|---|" + "---|---|" * len(pkeeps))
    for m in pmethods:
        cells = []
        for k in pkeeps:
            a = agg(pk, m, k)
            cells.append("%d%% | %.3f" % (round(100 * sum(1 for r in a if r.get("hit_pruned")) / len(a)), sum(r["kld"] for r in a) / len(a)))
        print("| %s | %s |" % (m, " | ".join(cells)))
if text:
    print("\n## prefill cost (text prompts): theoretical FLOP reduction vs measured prefill speedup\n")
    print("| method | keep | tokens kept | FLOP reduction | measured speedup |")
    print("|---|---|---|---|---|")
    for m in methods:
        for k in keeps:
            a = agg(text, m, k)
            ff = sum(fl(r["n"], nl) for r in a)
            fp = sum(fl(r["n"], L) + fl(r["m"], nl - L) for r in a)
            print("| %s | %g | %d%% | %.2fx | %.2fx |" % (m, k, round(100 * sum(r["m"] for r in a) / sum(r["n"] for r in a)),
                  ff / fp, sum(r["prefill_full_s"] for r in a) / sum(r["prefill_pruned_s"] for r in a)))
EOF
