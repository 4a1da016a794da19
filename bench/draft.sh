#!/usr/bin/env bash
# Eagle3 draft for SmolLM2-135M-Instruct (issue 19): training data, offline dump, training
# (resumable), then acceptance length and decode speedup at k = 1..4, greedy and temperature 0.7,
# on held-out prompts of two domains, speculative and plain decoding side by side in one run
# (as-draft spec, the timing part under nice -n -19). Writes bench/results/draft-DATA.txt (the
# table; draft.txt for DATA=regen) and keeps the training log and its curves (SVG) next to it.
#   BUILD, BINDIR   build and program directories (as-import, as-gen, as-draft)
#   AS_DATA         shared data (Austen novels, wikitext-2)
#   WORK            build/draft: imported model, data, dump, draft, training checkpoint (kept: a
#                   second run resumes generation and training where the first stopped)
#   MODEL           an imported SmolLM2 directory to use instead of importing one into WORK
#   DATA (mix)      regen: the target's answers (as-gen, greedy and T = 0.7 alternating, on
#                   12-word openings of Austen and wikitext paragraphs, REGEN_N tokens each), the
#                   data Eagle3 trains on; chat: the same openings as user messages ("Continue
#                   the following text: ..." / "What is this passage about? ...", alternating)
#                   answered through the model's chat template (as-gen --chat), the conversation
#                   kept whole (template, question, answer, end-of-turn); mix: both (REGEN_PROMPTS
#                   continuations, then CHAT_PROMPTS conversations); plain: windows of the
#                   Emma + wikitext text itself
#   EVAL_STYLES     held-out prompt styles measured: plain (continuations) and/or chat (the
#                   openings as "Continue the following text:" user messages through the chat
#                   template); default: both for DATA=mix, chat for chat, plain otherwise
#   REGEN_PROMPTS (4800 of 6182), CHAT_PROMPTS (mix: 500), REGEN_N (80), PLAIN_BYTES (64000)
#   GEN_BATCH (8)   answers decoded together (as-gen --batch, THREADS threads): a weight pass of
#                   several rows costs little more than one of a single row (bench_gen verify);
#                   SmolLM2 at 2 threads: 50 / 140 / 190 tokens/s at batch 1 / 4 / 8
#   STEPS (2400)    optimizer steps in all, BATCH (8) windows of WINDOW (64) tokens each, TTT 7
#   EVAL_EVERY (100) steps between AL measurements (the draft kept is the best one)
#   INIT_HEAD (1)   lm_head and final norm start from the target's (as-draft train --init-head)
#   MINUTES (60)    wall-clock budget of this run's training (it resumes next run)
#   VD (4096), LR (3e-3), N (64: prompt + generated tokens; CHAT_N 128 for chat prompts), THREADS (2),
#   PROMPTS (8: held-out prompts per domain), TABLE (1: measure the table after training)
# Held-out prompts: 12-word openings of wiki.test.raw paragraphs after byte 800000 and of
# Persuasion paragraphs (the first three of each select the draft during training, the table
# uses the next PROMPTS); the training prompts come from the other five novels and the first
# 780 KB of wikitext, alternating.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
BINDIR=${BINDIR:-bin}
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
WORK=${WORK:-build/draft}
DATA=${DATA:-mix}
REGEN_PROMPTS=${REGEN_PROMPTS:-4800}
CHAT_PROMPTS=${CHAT_PROMPTS:-$([ "$DATA" = mix ] && echo 500 || echo "$REGEN_PROMPTS")}
GEN_BATCH=${GEN_BATCH:-8}
REGEN_N=${REGEN_N:-80}
PLAIN_BYTES=${PLAIN_BYTES:-64000}
STEPS=${STEPS:-2400}
BATCH=${BATCH:-8}
MINUTES=${MINUTES:-60}
VD=${VD:-4096}
WINDOW=${WINDOW:-64}
LR=${LR:-3e-3}
N=${N:-64}
CHAT_N=${CHAT_N:-128} # chat prompts are ~40-50 tokens with SmolLM2's system message
THREADS=${THREADS:-2}
PROMPTS=${PROMPTS:-8}
TABLE=${TABLE:-1}
EVAL_EVERY=${EVAL_EVERY:-100}
INIT_HEAD=${INIT_HEAD:-1}
EVAL_STYLES=${EVAL_STYLES:-$(case $DATA in chat) echo chat ;; mix) echo "plain chat" ;; *) echo plain ;; esac)}
# the regen draft keeps its historical names; other data get their own draft and checkpoint
SUF=$([ "$DATA" = regen ] && echo "" || echo "-$DATA")
export PATH="$(pwd)/$BINDIR:$(pwd)/.venv/bin:$PATH" AS_PROGRESS=0 OPENBLAS_NUM_THREADS=$THREADS
mkdir -p "$WORK" bench/results
M=${MODEL:-$WORK/smollm2}
[ -d "$M" ] || as-import "$(pipelines/smollm2-gguf)" "$M"
python3 - "$AS_DATA" "$WORK" "$PROMPTS" "$PLAIN_BYTES" <<'PY'
import itertools, re, sys
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
books = ["emma", "pride_and_prejudice", "sense_and_sensibility", "mansfield_park", "northanger_abbey"]
e = [open(data + "/text/austen/%s.txt" % b, encoding="utf-8").read() for b in books]
# the first three of each domain select the checkpoint during training; the table measures the
# next n, so the selection's luck does not reach the reported numbers
wiki, austen = pick(w[800000:].split("\n"), n + 3), pick(a.split("\n\n"), n + 3)
sel, wiki, austen = wiki[:3] + austen[:3], wiki[3:], austen[3:]
open(work + "/eval_wiki.txt", "w").write("\n".join(wiki) + "\n")
open(work + "/eval_austen.txt", "w").write("\n".join(austen) + "\n")
open(work + "/eval_select.txt", "w").write("\n".join(sel) + "\n")
# the same held-out openings as chat questions (as-draft --chat renders them)
ask = lambda x: "Continue the following text: " + x
open(work + "/chat_eval_wiki.txt", "w").write("\n".join(map(ask, wiki)) + "\n")
open(work + "/chat_eval_austen.txt", "w").write("\n".join(map(ask, austen)) + "\n")
open(work + "/chat_eval_select.txt", "w").write("\n".join(map(ask, sel)) + "\n")
# training prompts (Emma and wiki alternating) and the plain-text set of the same sources
# (Austen paragraphs taken from the five novels in turn, so each share of the list mixes them)
au = [x for five in zip(*[pick(b.split("\n\n")) for b in e]) for x in five]
tp = [x for pair in zip(au, pick(w[:780000].split("\n"))) for x in pair]
# then openings inside the same paragraphs (a later sentence start, 24 words or more past the
# previous opening, 40 words of text after it), Austen and wiki alternating, the novels in turn:
# 1966 paragraph openings first, so a run with REGEN_PROMPTS <= 1966 has the old prompts
def inner(paras):
    out = []
    for p in paras:
        p = " ".join(p.split())
        if len(p) <= 200 or p.startswith("="):
            continue
        words, last = p.split(), 0
        at = 0
        for s in re.split(r'(?<=[.!?]) (?=[A-Z"])', p):
            n = len(s.split())
            if at - last >= 24 and len(words) - at >= 40 and n >= 6:
                out.append(" ".join(words[at:at + 12]))
                last = at
            at += n
    return out
au = [x for five in itertools.zip_longest(*[inner(b.split("\n\n")) for b in e]) for x in five if x]
tp += [x for pair in zip(au, inner(w[:780000].split("\n"))) for x in pair]
open(work + "/train_prompts.txt", "w").write("\n".join(tp) + "\n")
open(work + "/plain.txt", "w").write(e[0][: nb // 2] + w[: nb // 2])
PY
# The target's answers to the training prompts: as-gen --batch decodes GEN_BATCH of them together
# (each answer what as-gen prints for that prompt alone), 32 prompts a chunk; a chunk's text goes
# to NAME.chunks/FROM.txt atomically, so a killed run resumes at its first missing chunk. NAME.txt
# is the chunks in prompt order. Prompt i: greedy, or T = 0.7 when i / 2 is odd, seed i; chat
# prompts keep the whole conversation as the model sees it (template, question, answer,
# <|im_end|>; an answer cut at the step limit is closed too), so the draft learns the template.
gen_chunk() { # regen|chat FROM TO
    python3 - "$1" "$2" "$3" "$REGEN_N" "$WORK/train_prompts.txt" "$M" "$GEN_BATCH" <<'PY'
import json, subprocess, sys
kind, lo, hi, n, path, model = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
ps = open(path, encoding="utf-8").read().split("\n")
jobs = []
for i in range(lo, hi):
    t = 0.7 if i // 2 % 2 == 1 else 0
    if kind == "regen":
        jobs.append({"prompt": ps[i], "steps": n, "temp": t, "seed": i})
    else:
        q = ("What is this passage about? " if i % 2 else "Continue the following text: ") + ps[i]
        jobs.append({"prompt": q, "chat": True, "steps": n + 64, "temp": t, "seed": i})
out = subprocess.run(["as-gen", "-m", model, "--batch", "-", "-B", sys.argv[7]],
                     input="".join(json.dumps(j) + "\n" for j in jobs), capture_output=True,
                     text=True)
if out.returncode:
    sys.exit("draft.sh: as-gen --batch failed: " + out.stderr.strip())
for j, line in zip(jobs, out.stdout.splitlines()):
    # bytes that are no UTF-8 (a byte-level piece cut mid-character) come back as U+FFFD:
    # dropped, since the tokenizer would refuse them
    text = json.loads(line)["text"].replace("\ufffd", "").rstrip("\n")
    if kind == "regen":
        sys.stdout.write(text + "\n\n")
    else:
        head = subprocess.run(["as-gen", "-m", model, "--chat", "--chat-render", "-p",
                               j["prompt"]], capture_output=True, text=True, check=True).stdout
        sys.stdout.write(head + text + "<|im_end|>\n")
PY
}
gen_set() { # NAME COUNT
    local lo hi
    mkdir -p "$WORK/$1.chunks"
    for ((lo = 0; lo < $2; lo += 32)); do
        hi=$((lo + 32 < $2 ? lo + 32 : $2))
        [ -s "$WORK/$1.chunks/$lo.txt" ] && continue
        gen_chunk "$1" $lo $hi >"$WORK/$1.chunks/$lo.tmp"
        mv "$WORK/$1.chunks/$lo.tmp" "$WORK/$1.chunks/$lo.txt"
    done
    for ((lo = 0; lo < $2; lo += 32)); do cat "$WORK/$1.chunks/$lo.txt"; done >"$WORK/$1.txt"
}
case $DATA in
regen) gen_set regen "$REGEN_PROMPTS" && text=$WORK/regen.txt ;;
chat) gen_set chat "$CHAT_PROMPTS" && text=$WORK/chat.txt ;;
mix)
    gen_set regen "$REGEN_PROMPTS"
    gen_set chat "$CHAT_PROMPTS"
    cat "$WORK/regen.txt" "$WORK/chat.txt" >"$WORK/mix.txt"
    text=$WORK/mix.txt
    ;;
*) text=$WORK/plain.txt ;;
esac
# offline mode: the target's taps, final-normed state and argmax once per token, then training
# reads windows from the memory-mapped dump (no target forward per step)
[ -s "$WORK/$DATA.dump" ] ||
    as-draft dump -m "$M" -f "$text" -o "$WORK/$DATA.dump" --vd "$VD" --window "$WINDOW" \
        >"$WORK/$DATA.dump.json"
# training: resumable (-c), the draft kept by AL on eval_select (k = 2), timeout ends this run's
# share; a killed run loses at most 10 steps
# (the selection prompts in the data's own style: chat questions for DATA=chat)
SEL=(-e "$WORK/eval_select.txt" --eval-steps 40)
[ "$DATA" = chat ] && SEL=(-e "$WORK/chat_eval_select.txt" --chat --eval-steps "$((CHAT_N - 24))")
INIT=()
[ "$INIT_HEAD" = 1 ] && INIT=(--init-head)
timeout $((MINUTES * 60)) as-draft train -m "$M" -o "$WORK/draft$SUF" --dump "$WORK/$DATA.dump" \
    "${SEL[@]}" "${INIT[@]}" --batch "$BATCH" --steps "$STEPS" --warmup 10 --lr "$LR" \
    --eval-every "$EVAL_EVERY" --save-every 5 -k 2 -c "$WORK/train$SUF.ck" \
    >>"$WORK/train$SUF.log" || true
cp "$WORK/train$SUF.log" "bench/results/draft$SUF-train.log"
as-draft plot "bench/results/draft$SUF-train.log" -o "bench/results/draft$SUF-train.svg"
[ -d "$WORK/draft$SUF" ] || { echo "no draft yet (training has not reached an evaluation)"; exit 1; }
[ "$TABLE" = 1 ] || exit 0
out=bench/results/draft$SUF.txt
{
    echo "# SmolLM2-135M-Instruct + Eagle3 draft (as-draft), $(date -u +%F), $THREADS threads"
    echo "# data: $DATA, $(jq -r .tokens "$WORK/$DATA.dump.json") tokens in the dump"
    echo "# training: $(jq -s -r '[.[] | select(.loss)] | last | "\(.step) steps of \(.tokens / .step) tokens, \(.tokens) tokens seen, \(.wall_s) s wall"' "$WORK/train$SUF.log")"
    echo "# best AL during training (k=2, selection prompts): $(jq -s -r '[.[] | select(.al) | .al] | max' "$WORK/train$SUF.log")"
    printf '%-12s %-5s %-2s %-6s %-28s %-9s %-9s %-8s %s\n' domain temp k AL accept_pos \
        tok/s plain speedup identical
    for style in $EVAL_STYLES; do
    P=eval_ CHAT=() n=$N
    [ "$style" = chat ] && P=chat_eval_ CHAT=(--chat) n=$CHAT_N
    for dom in wiki austen; do
        for temp in 0 0.7; do
            for k in 1 2 3 4; do
                r=$(nice -n -19 as-draft spec -m "$M" -d "$WORK/draft$SUF" -k $k "${CHAT[@]}" \
                    --temp $temp -P "$WORK/$P$dom.txt" -n $n | jq -c 'select(.summary)')
                printf '%-12s %-5s %-2s %-6s %-28s %-9s %-9s %-8s %s\n' "$dom${CHAT:+-chat}" $temp $k \
                    "$(jq -r '.al * 1000 | round / 1000' <<<"$r")" \
                    "$(jq -c '[.accept_pos[] * 100 | round / 100]' <<<"$r")" \
                    "$(jq -r '.tok_s | round' <<<"$r")" "$(jq -r '.plain_tok_s | round' <<<"$r")" \
                    "$(jq -r '.speedup * 100 | round / 100' <<<"$r")" \
                    "$(jq -r '"\(.identical)/\(.prompts)"' <<<"$r")"
            done
        done
    done
    done
} | tee "$out"
