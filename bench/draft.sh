#!/usr/bin/env bash
# Eagle3 draft for SmolLM2-135M-Instruct (issue 19): train (resumable), then acceptance length and
# decode speedup at k = 1..4, greedy and temperature 0.7, on held-out prompts of two domains,
# speculative and plain decoding side by side in one run (as-draft spec). Writes
# bench/results/draft.txt (the table) and keeps the training log next to it.
#   BUILD, BINDIR   build and program directories (as-import, as-draft)
#   AS_DATA         shared data (Austen novels, wikitext-2)
#   WORK            build/draft: imported model, data, draft, training checkpoint (kept: a second
#                   run resumes training where the first stopped, then measures)
#   STEPS (300)     optimizer steps in all (windows of WINDOW tokens, TTT 7 steps each)
#   MINUTES (60)    wall-clock budget of this run's training (it resumes next run)
#   VD (4096), WINDOW (64), LR (3e-3), N (64: prompt + generated tokens), THREADS (2),
#   PROMPTS (8: held-out prompts per domain)
# Training text: Emma (first 400 KB) + wiki.test.raw (first 300 KB); held-out prompts: 12-word
# openings of wiki.test.raw paragraphs after byte 800000 and of Persuasion paragraphs.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
BINDIR=${BINDIR:-bin}
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
WORK=${WORK:-build/draft}
STEPS=${STEPS:-300}
MINUTES=${MINUTES:-60}
VD=${VD:-4096}
WINDOW=${WINDOW:-64}
LR=${LR:-3e-3}
N=${N:-64}
THREADS=${THREADS:-2}
PROMPTS=${PROMPTS:-8}
export PATH="$(pwd)/$BINDIR:$(pwd)/.venv/bin:$PATH" AS_PROGRESS=0
mkdir -p "$WORK" bench/results
M=$WORK/smollm2
[ -d "$M" ] || as-import "$(pipelines/smollm2-gguf)" "$M"
if [ ! -s "$WORK/train.txt" ]; then
    head -c 400000 "$AS_DATA/text/austen/emma.txt" >"$WORK/train.txt"
    head -c 300000 "$AS_DATA/text/wikitext-2-raw/wiki.test.raw" >>"$WORK/train.txt"
fi
python3 - "$AS_DATA" "$WORK" "$PROMPTS" <<'PY'
import sys
data, work = sys.argv[1], sys.argv[2]
w = open(data + "/text/wikitext-2-raw/wiki.test.raw", encoding="utf-8").read()[800000:]
a = open(data + "/text/austen/persuasion.txt", encoding="utf-8").read()[100000:]
def pick(paras, n):
    out = []
    for p in paras:
        p = " ".join(p.split())
        if len(p) > 200 and not p.startswith("="):
            out.append(" ".join(p.split()[:12]))
        if len(out) == n:
            return out
n = int(sys.argv[3])
wiki, austen = pick(w.split("\n"), n), pick(a.split("\n\n"), n)
open(work + "/eval_wiki.txt", "w").write("\n".join(wiki) + "\n")
open(work + "/eval_austen.txt", "w").write("\n".join(austen) + "\n")
open(work + "/eval_select.txt", "w").write("\n".join(wiki[:3] + austen[:3]) + "\n")
PY
# training: resumable (-c), the draft kept by AL on eval_select (k = 2), timeout ends this run's
# share; a killed run loses at most 10 steps
OPENBLAS_NUM_THREADS=$THREADS timeout $((MINUTES * 60)) as-draft train -m "$M" -o "$WORK/draft" \
    -f "$WORK/train.txt" -e "$WORK/eval_select.txt" --vd "$VD" --window "$WINDOW" \
    --steps "$STEPS" --warmup 10 --lr "$LR" --eval-every 50 --save-every 10 -k 2 \
    --eval-steps 40 -c "$WORK/train.ck" >>"$WORK/train.log" || true
cp "$WORK/train.log" bench/results/draft-train.log
[ -d "$WORK/draft" ] || { echo "no draft yet (training has not reached an evaluation)"; exit 1; }
out=bench/results/draft.txt
{
    echo "# SmolLM2-135M-Instruct + Eagle3 draft (as-draft), $(date -u +%F), $THREADS threads"
    echo "# training: $(jq -s -r '[.[] | select(.loss)] | last | "\(.step) steps, \(.tokens) tokens, \(.wall_s) s"' "$WORK/train.log")"
    echo "# best AL during training (k=2, selection prompts): $(jq -s -r '[.[] | select(.al) | .al] | max' "$WORK/train.log")"
    printf '%-7s %-5s %-2s %-6s %-28s %-9s %-9s %-8s %s\n' domain temp k AL accept_pos \
        tok/s plain speedup identical
    for dom in wiki austen; do
        for temp in 0 0.7; do
            for k in 1 2 3 4; do
                r=$(OPENBLAS_NUM_THREADS=$THREADS as-draft spec -m "$M" -d "$WORK/draft" -k $k \
                    --temp $temp -P "$WORK/eval_$dom.txt" -n $N | jq -c 'select(.summary)')
                printf '%-7s %-5s %-2s %-6s %-28s %-9s %-9s %-8s %s\n' $dom $temp $k \
                    "$(jq -r '.al * 1000 | round / 1000' <<<"$r")" \
                    "$(jq -c '[.accept_pos[] * 100 | round / 100]' <<<"$r")" \
                    "$(jq -r '.tok_s | round' <<<"$r")" "$(jq -r '.plain_tok_s | round' <<<"$r")" \
                    "$(jq -r '.speedup * 100 | round / 100' <<<"$r")" \
                    "$(jq -r '"\(.identical)/\(.prompts)"' <<<"$r")"
            done
        done
    done
} | tee "$out"
