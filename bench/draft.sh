#!/usr/bin/env bash
# Eagle3 draft for SmolLM2-135M-Instruct (issue 19): training data, offline dump, training
# (resumable), then acceptance length and decode speedup at k = 1..4, greedy and temperature 0.7,
# on held-out prompts of two domains, speculative and plain decoding side by side in one run
# (as-draft spec, the timing part under nice -n -19). Writes bench/results/draft.txt (the table)
# and keeps the training log next to it.
#   BUILD, BINDIR   build and program directories (as-import, as-gen, as-draft)
#   AS_DATA         shared data (Austen novels, wikitext-2)
#   WORK            build/draft: imported model, data, dump, draft, training checkpoint (kept: a
#                   second run resumes generation and training where the first stopped)
#   MODEL           an imported SmolLM2 directory to use instead of importing one into WORK
#   DATA (regen)    regen: the target's own answers (as-gen, greedy and T = 0.7 alternating, on
#                   12-word openings of Emma and wikitext paragraphs, REGEN_N tokens each), the
#                   data Eagle3 trains on; plain: windows of the Emma + wikitext text itself
#   REGEN_PROMPTS (800: all of them), REGEN_N (80), PLAIN_BYTES (64000)
#   STEPS (3000)    optimizer steps in all, BATCH (8) windows of WINDOW (64) tokens each, TTT 7
#   MINUTES (60)    wall-clock budget of this run's training (it resumes next run)
#   VD (4096), LR (3e-3), N (64: prompt + generated tokens), THREADS (2),
#   PROMPTS (8: held-out prompts per domain), TABLE (1: measure the table after training)
# Held-out prompts: 12-word openings of wiki.test.raw paragraphs after byte 800000 and of
# Persuasion paragraphs (the training prompts come from Emma and the first 300 KB of wikitext).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
BINDIR=${BINDIR:-bin}
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
WORK=${WORK:-build/draft}
DATA=${DATA:-regen}
REGEN_PROMPTS=${REGEN_PROMPTS:-800}
REGEN_N=${REGEN_N:-80}
PLAIN_BYTES=${PLAIN_BYTES:-64000}
STEPS=${STEPS:-3000}
BATCH=${BATCH:-8}
MINUTES=${MINUTES:-60}
VD=${VD:-4096}
WINDOW=${WINDOW:-64}
LR=${LR:-3e-3}
N=${N:-64}
THREADS=${THREADS:-2}
PROMPTS=${PROMPTS:-8}
TABLE=${TABLE:-1}
export PATH="$(pwd)/$BINDIR:$(pwd)/.venv/bin:$PATH" AS_PROGRESS=0 OPENBLAS_NUM_THREADS=$THREADS
mkdir -p "$WORK" bench/results
M=${MODEL:-$WORK/smollm2}
[ -d "$M" ] || as-import "$(pipelines/smollm2-gguf)" "$M"
python3 - "$AS_DATA" "$WORK" "$PROMPTS" "$PLAIN_BYTES" <<'PY'
import sys
data, work, n, nb = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def pick(paras, n=None):
    out = []
    for p in paras:
        p = " ".join(p.split())
        if len(p) > 200 and not p.startswith("="):
            out.append(" ".join(p.split()[:12]))
        if len(out) == n:
            break
    return out
w = open(data + "/text/wikitext-2-raw/wiki.test.raw", encoding="utf-8").read()
a = open(data + "/text/austen/persuasion.txt", encoding="utf-8").read()[100000:]
e = open(data + "/text/austen/emma.txt", encoding="utf-8").read()[:400000]
wiki, austen = pick(w[800000:].split("\n"), n), pick(a.split("\n\n"), n)
open(work + "/eval_wiki.txt", "w").write("\n".join(wiki) + "\n")
open(work + "/eval_austen.txt", "w").write("\n".join(austen) + "\n")
open(work + "/eval_select.txt", "w").write("\n".join(wiki[:3] + austen[:3]) + "\n")
# training prompts (Emma and wiki alternating) and the plain-text set of the same sources
tp = [x for pair in zip(pick(e.split("\n\n")), pick(w[:300000].split("\n"))) for x in pair]
open(work + "/train_prompts.txt", "w").write("\n".join(tp) + "\n")
open(work + "/plain.txt", "w").write(e[: nb // 2] + w[: nb // 2])
PY
if [ "$DATA" = regen ]; then
    # the target's answers, one prompt at a time, resumable (regen.done counts the prompts done)
    done_n=$(cat "$WORK/regen.done" 2>/dev/null || echo 0)
    i=0
    while IFS= read -r p && [ $i -lt "$REGEN_PROMPTS" ]; do
        if [ $i -ge "$done_n" ]; then
            t=0
            [ $((i / 2 % 2)) = 1 ] && t=0.7
            printf '%s\n\n' "$(as-gen -m "$M" -p "$p" -n "$REGEN_N" --temp $t --seed $i)" \
                >>"$WORK/regen.txt"
            echo $((i + 1)) >"$WORK/regen.done"
        fi
        i=$((i + 1))
    done <"$WORK/train_prompts.txt"
    text=$WORK/regen.txt
else
    text=$WORK/plain.txt
fi
# offline mode: the target's taps, final-normed state and argmax once per token, then training
# reads windows from the memory-mapped dump (no target forward per step)
[ -s "$WORK/$DATA.dump" ] ||
    as-draft dump -m "$M" -f "$text" -o "$WORK/$DATA.dump" --vd "$VD" --window "$WINDOW" \
        >"$WORK/$DATA.dump.json"
# training: resumable (-c), the draft kept by AL on eval_select (k = 2), timeout ends this run's
# share; a killed run loses at most 10 steps
timeout $((MINUTES * 60)) as-draft train -m "$M" -o "$WORK/draft" --dump "$WORK/$DATA.dump" \
    -e "$WORK/eval_select.txt" --batch "$BATCH" --steps "$STEPS" --warmup 10 --lr "$LR" \
    --eval-every 25 --save-every 5 -k 2 --eval-steps 40 -c "$WORK/train.ck" \
    >>"$WORK/train.log" || true
cp "$WORK/train.log" bench/results/draft-train.log
[ -d "$WORK/draft" ] || { echo "no draft yet (training has not reached an evaluation)"; exit 1; }
[ "$TABLE" = 1 ] || exit 0
out=bench/results/draft.txt
{
    echo "# SmolLM2-135M-Instruct + Eagle3 draft (as-draft), $(date -u +%F), $THREADS threads"
    echo "# data: $DATA, $(jq -r .tokens "$WORK/$DATA.dump.json") tokens in the dump"
    echo "# training: $(jq -s -r '[.[] | select(.loss)] | last | "\(.step) steps of \(.tokens / .step) tokens, \(.tokens) tokens seen, \(.wall_s) s wall"' "$WORK/train.log")"
    echo "# best AL during training (k=2, selection prompts): $(jq -s -r '[.[] | select(.al) | .al] | max' "$WORK/train.log")"
    printf '%-7s %-5s %-2s %-6s %-28s %-9s %-9s %-8s %s\n' domain temp k AL accept_pos \
        tok/s plain speedup identical
    for dom in wiki austen; do
        for temp in 0 0.7; do
            for k in 1 2 3 4; do
                r=$(nice -n -19 as-draft spec -m "$M" -d "$WORK/draft" -k $k \
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
