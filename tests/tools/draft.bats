#!/usr/bin/env bats
# as-draft / speculative decoding (lib/common/draft_model.c, draft_spec.c) on stories260K:
# the draft's forward equals an independent numpy implementation of Eagle3 (fc, midlayer on
# [norm(emb) | norm(hidden)], chain steps on the draft's own hidden); the export matches the
# schema vLLM and SGLang load; greedy speculative output is token-identical to plain greedy on
# many prompts and every k; sampling keeps the target's distribution (chi-square against plain
# sampling); bad input is refused in one line with nothing written.

load helpers
load assert_refused
set -o pipefail

ORACLE=$BATS_TEST_DIRNAME/../oracles/draft_ref.py

setup_file() {
    import_model
    as-draft init -m "$M" -o "$BATS_FILE_TMPDIR/D" --vd 256 --seed 3
    # 24 prompts: story openings cut at every length from 1 to 6 words
    local s w i
    for s in "Once upon a time there was a" "The little dog ran to the park" \
        "Lily and Tom went to play with" "One day a big red bird saw"; do
        read -ra w <<<"$s"
        for i in 1 2 3 4 5 6; do echo "${w[*]:0:i}"; done
    done >"$BATS_FILE_TMPDIR/prompts.txt"
    # training data: the target's own sampled stories (target-regenerated text), 40 x 200 tokens
    local i
    for i in $(seq 1 40); do as-gen -m "$M" -n 200 --temp 0.9 --seed "$i"; done \
        >"$BATS_FILE_TMPDIR/regen.txt"
    printf '%s\n' "Once upon a time" "The little dog" "Lily went to the park" \
        "Tom had a big red ball" "One day, a bird" "The sun was" >"$BATS_FILE_TMPDIR/eval.txt"
    # a short TTT run (about 10 s): the trained draft the acceptance tests use
    as-draft train -m "$M" -o "$BATS_FILE_TMPDIR/Dt" -f "$BATS_FILE_TMPDIR/regen.txt" \
        -e "$BATS_FILE_TMPDIR/eval.txt" --vd 256 --window 64 --steps 300 --eval-every 100 \
        --lr 5e-3 -k 3 --eval-steps 48 >"$BATS_FILE_TMPDIR/train.log"
}

T() { echo "$BATS_FILE_TMPDIR/$1"; }

@test "draft forward (prefill on taps, then chained steps) equals the numpy Eagle3 draft" {
    python3 "$ORACLE" gen "$(T in.st)" "$(T D)" "$M" 14 9 5
    as-draft forward -m "$M" -d "$(T D)" -i "$(T in.st)" -o "$(T out.st)"
    python3 "$ORACLE" forward "$(T D)" "$M" "$(T in.st)" "$(T out.st)"
    # all-prefill (no chain) too
    python3 "$ORACLE" gen "$(T in2.st)" "$(T D)" "$M" 6 6 8
    as-draft forward -m "$M" -d "$(T D)" -i "$(T in2.st)" -o "$(T out2.st)"
    python3 "$ORACLE" forward "$(T D)" "$M" "$(T in2.st)" "$(T out2.st)"
}

@test "export: the vLLM/SGLang Eagle3 schema (config keys, names without model., d2t I64, t2d)" {
    python3 "$ORACLE" schema "$(T D)" "$M"
    as-draft init -m "$M" -o "$(T Dbf)" --vd 100 --dtype bf16
    python3 "$ORACLE" schema "$(T Dbf)" "$M"
    run jq -r .torch_dtype "$(T Dbf)/config.json"
    [ "$output" = bfloat16 ]
}

@test "greedy speculative decoding is token-identical to plain greedy (24 prompts, k 1..5)" {
    local k
    for k in 1 2 3 5; do
        as-draft spec -m "$M" -d "$(T D)" -k $k -P "$(T prompts.txt)" -n 120 >"$(T spec$k.json)"
        run jq -s '[.[] | select(.summary == null and .identical == false)] | length' \
            "$(T spec$k.json)"
        [ "$output" = 0 ]
        run jq -r 'select(.summary) | "\(.prompts) \(.identical) \(.drafts > 0)"' \
            "$(T spec$k.json)"
        [ "$output" = "24 24 true" ]
    done
    # the trained draft: drafts are accepted, so the rollback paths run
    for k in 1 2 4; do
        as-draft spec -m "$M" -d "$(T Dt)" -k $k -P "$(T prompts.txt)" -n 120 >"$(T spect$k.json)"
        run jq -r 'select(.summary) | "\(.prompts) \(.identical) \(.al > 1.3)"' \
            "$(T spect$k.json)"
        [ "$output" = "24 24 true" ]
    done
}

@test "engine rowwise verification: logits and taps bit-identical to one-token decoding (1 and 2 threads)" {
    # calls of 2, 3 and 5 rows: the multi-token kernel's token pairs and its odd last token
    local th k
    for th in 1 2; do
        for k in 1 2 4; do
            OPENBLAS_NUM_THREADS=$th as-draft rowwise -m "$M" -p "Once upon a time" -k $k -n 100 \
                >"$(T rw.json)"
            run jq -r '"\(.rows) \(.logits_identical) \(.taps_identical)"' "$(T rw.json)"
            [ "$output" = "95 95 95" ]
        done
    done
}

@test "sampling: generated tokens 1 to 3 follow the plain sampling distribution (chi-square)" {
    # the trained draft (drafts accepted and rejected) and the random one (mostly rejected)
    as-draft sample -m "$M" -d "$(T Dt)" -k 3 -p "Once upon a time" --temp 1 --runs 1500 \
        --at 2 >"$(T s1.json)"
    python3 "$ORACLE" chi2 "$(T s1.json)"
    run jq '.al > 1.5' "$(T s1.json)"
    [ "$output" = true ]
    as-draft sample -m "$M" -d "$(T Dt)" -k 2 -p "The little dog" --temp 1 --runs 1500 \
        --at 3 >"$(T s2.json)"
    python3 "$ORACLE" chi2 "$(T s2.json)"
    as-draft sample -m "$M" -d "$(T D)" -k 2 -p "Lily" --temp 1.5 --runs 1000 \
        --at 1 >"$(T s3.json)"
    python3 "$ORACLE" chi2 "$(T s3.json)"
}

@test "bad input: a draft for another target (layers, hidden, vocabulary), k out of range" {
    local d
    for d in L H V; do
        mkdir -p "$(T bad$d)"
        cp "$(T D)/model.safetensors" "$(T bad$d)/"
    done
    jq '.as_target_layers = 7' "$(T D)/config.json" >"$(T badL)/config.json"
    jq '.target_hidden_size = 32' "$(T D)/config.json" >"$(T badH)/config.json"
    jq '.vocab_size = 1000' "$(T D)/config.json" >"$(T badV)/config.json"
    run --separate-stderr as-draft spec -m "$M" -d "$(T badL)" -k 2 -P "$(T prompts.txt)"
    refused "as-draft: draft $(T badL): made for a target of 7 layers, the target has 5"
    run --separate-stderr as-draft spec -m "$M" -d "$(T badH)" -k 2 -P "$(T prompts.txt)"
    refused "as-draft: draft $(T badH): made for a target of hidden size 32, the target has 64"
    run --separate-stderr as-draft spec -m "$M" -d "$(T badV)" -k 2 -P "$(T prompts.txt)"
    refused "as-draft: draft $(T badV): made for a target vocabulary of 1000, the target has 512"
    run --separate-stderr as-draft spec -m "$M" -d "$(T D)" -k 0 -P "$(T prompts.txt)"
    refused 'as-draft: -k: expected an integer in 1..16, got "0"'
    run --separate-stderr as-draft spec -m "$M" -d "$(T D)" -k 17 -P "$(T prompts.txt)"
    refused 'as-draft: -k: expected an integer in 1..16, got "17"'
    run --separate-stderr as-draft init -m "$M" -o "$(T Dbig)" --vd 513
    refused "as-draft: --vd: 513 exceeds the target's vocabulary (512)"
    [ ! -e "$(T Dbig)" ]
}

@test "as-gen --draft -k: the same text as plain as-gen, metrics JSON on stderr with -v" {
    local p
    for p in "Once upon a time" "The little dog" "Lily"; do
        as-gen -m "$M" -p "$p" -n 80 >"$(T plain.txt)"
        as-gen -m "$M" -p "$p" -n 80 --draft "$(T D)" -k 4 -v >"$(T spec.txt)" 2>"$(T m.json)"
        cmp "$(T plain.txt)" "$(T spec.txt)"
        run jq -r '"\(.k) \(.identical) \(.accept_pos | length) \(.drafts > 0)"' "$(T m.json)"
        [ "$output" = "4 true 4 true" ]
    done
    run --separate-stderr as-gen -m "$M" -p hi -k 2
    refused "as-gen: -k needs --draft DIR"
    run --separate-stderr as-gen -m "$M" -p hi --draft "$(T D)" -k 99
    refused 'as-gen: -k: expected an integer in 1..16, got "99"'
}

@test "training: a short TTT run raises AL well above the untrained draft's; export reloads to the same AL" {
    run jq -s -r '[.[] | select(.al != null)] | "\(.[0].step) \(.[0].al)"' "$(T train.log)"
    [ "$output" = "0 1" ]
    best=$(jq -s -r '[.[] | select(.done != null)][0].best_al' "$(T train.log)")
    lt 1.35 "$best"
    python3 "$ORACLE" schema "$(T Dt)" "$M"
    # the exported directory, loaded back, measures the same AL on the same prompts
    as-draft spec -m "$M" -d "$(T Dt)" -k 3 -P "$(T eval.txt)" -n 48 >"$(T re.json)"
    run jq -r 'select(.summary) | .al * 10000 | round' "$(T re.json)"
    [ "$output" = "$(jq -n "$best * 10000 | round")" ]
}

@test "training gradients (7 TTT steps, extra attention columns) equal central differences" {
    as-draft gradcheck "$M" "$(T D)" 12 7 >"$(T gc.json)"
    run jq -s 'map(select(.param)) | length' "$(T gc.json)"
    [ "$output" = 52 ]
    worst=$(jq -s -r '.[-1].worst_rel' "$(T gc.json)")
    lt "$worst" 0.1
}

@test "batched TTT (3 windows per sgemm): gradients equal central differences, loss = mean of the windows'" {
    as-draft gradcheck "$M" "$(T D)" 10 4 3 >"$(T gcb.json)"
    worst=$(jq -s -r '.[-1].worst_rel' "$(T gcb.json)")
    lt "$worst" 0.1
    # windows that leaked attention into each other, or a mean over one window's positions,
    # would change the batched loss
    run jq -r '.[-1] | (.loss - .window_mean_loss) / .loss | fabs < 1e-5' <(jq -s . "$(T gcb.json)")
    [ "$output" = true ]
}

@test "training resumes exactly after a kill (parameters and AdamW moments bit-identical)" {
    local args=(-m "$M" -f "$(T regen.txt)" -e "$(T eval.txt)" --vd 128 --window 32 --steps 40
        --eval-every 1000 --save-every 10 --ttt 3 --eval-steps 24)
    as-draft train "${args[@]}" -o "$(T Da)" -c "$(T a.ck)" >/dev/null
    as-draft train "${args[@]}" -o "$(T Db)" -c "$(T b.ck)" >"$(T b.log)" &
    local pid=$! i
    for i in $(seq 1 400); do
        [ -e "$(T b.ck)" ] && break
        sleep 0.02
    done
    kill -9 $pid || true
    wait $pid || true
    as-draft train "${args[@]}" -o "$(T Db)" -c "$(T b.ck)" >"$(T b2.log)"
    python3 -c '
import sys
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
assert set(a) == set(b) and len(a) == 39, sorted(set(a) ^ set(b))
bad = [k for k in a if not (a[k] == b[k]).all()]
assert not bad, bad
' "$(T a.ck)" "$(T b.ck)"
}

@test "dump: taps, final-normed state, argmax and vocabulary checked in numpy; offline training equals online" {
    as-draft dump -m "$M" -f "$(T regen.txt)" -o "$(T dump.st)" --vd 200 --window 64 >"$(T dump.json)"
    python3 - "$(T dump.st)" "$M" <<'PY'
import sys
from collections import Counter
import numpy as np
from safetensors.numpy import load_file
d = load_file(sys.argv[1])
emb = load_file(sys.argv[2] + "/model.safetensors")["model.embed_tokens.weight"]
N, H = d["hidden"].shape
assert d["taps"].shape == (N, 3 * H) and d["tokens"].shape == (N,) and N % 64 == 0
# the target's argmax from the dumped final-normed state through its (tied) lm_head
z = d["hidden"].astype(np.float64) @ emb.T.astype(np.float64)
top2 = np.sort(z, axis=1)[:, -2:]
clear = top2[:, 1] - top2[:, 0] > 1e-4
assert (z.argmax(1) == d["argmax"])[clear].all(), "argmax is not lm_head(hidden)'s"
# the draft vocabulary: the 200 most frequent ids (ties: lower id), ascending, via d2t and t2d
c = Counter(d["tokens"].tolist())
want = sorted(sorted(range(512), key=lambda v: (-c.get(v, 0), v))[:200])
assert (np.arange(200) + d["d2t"]).tolist() == want, "d2t is not the most frequent ids"
assert np.flatnonzero(d["t2d"]).tolist() == want
# stories260K has 5 layers: the taps (2, 2, 2) are the same state three times, not zeros
t = d["taps"].reshape(N, 3, H)
assert (t[:, 0] == t[:, 1]).all() and (t[:, 1] == t[:, 2]).all() and np.abs(t).max() > 0.1
PY
    local args=(-e "$(T eval.txt)" --steps 30 --eval-every 1000 --lr 5e-3 -k 3 --eval-steps 48)
    as-draft train -m "$M" -o "$(T Don)" -f "$(T regen.txt)" --vd 200 --window 64 "${args[@]}" |
        jq -r 'select(.loss) | .loss' >"$(T on.txt)"
    as-draft train -m "$M" -o "$(T Doff)" --dump "$(T dump.st)" "${args[@]}" |
        jq -r 'select(.loss) | .loss' >"$(T off.txt)"
    paste "$(T on.txt)" "$(T off.txt)" >"$(T both.txt)"
    run awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-3 * $1) bad++ } END { print NR, bad + 0 }' \
        "$(T both.txt)"
    [ "$output" = "3 0" ]
}

@test "dump bad input: cut short, NaN in the taps, made with another target: refused, nothing written" {
    [ -e "$(T dump.st)" ] || as-draft dump -m "$M" -f "$(T regen.txt)" -o "$(T dump.st)" --vd 200
    local a=(-e "$(T eval.txt)" --steps 3)
    head -c 500000 "$(T dump.st)" >"$(T cut.st)"
    run --separate-stderr as-draft train -m "$M" -o "$(T Dbad)" --dump "$(T cut.st)" "${a[@]}"
    refused "as-draft: $(T cut.st): tensor taps: data_offsets [32256, 6225408] out of bounds: data buffer is 499440 bytes (file truncated?)"
    [ ! -e "$(T Dbad)" ]
    cp "$(T dump.st)" "$(T nan.st)"
    st_patch "$(T nan.st)" taps $((5 * 192 * 4 + 8)) '\x00\x00\xc0\x7f'
    run --separate-stderr as-draft train -m "$M" -o "$(T Dbad)" --dump "$(T nan.st)" "${a[@]}"
    refused "as-draft: dump $(T nan.st): non-finite value in taps at token 5"
    [ ! -e "$(T Dbad)" ]
    st_rewrite "$(T dump.st)" "$(T other.st)" '.__metadata__.hidden_size = "32"'
    run --separate-stderr as-draft train -m "$M" -o "$(T Dbad)" --dump "$(T other.st)" "${a[@]}"
    refused "as-draft: dump $(T other.st): made with a target of hidden size 32, the target has 64"
    [ ! -e "$(T Dbad)" ]
}

@test "plot: loss, AL and lr against the step as SVG; a resumed run's lines replace the killed one's; a bad log refused" {
    as-draft plot "$(T train.log)" -o "$(T curves.svg)"
    # every logged point is drawn where the scale puts it (x: step over the run's range, y: the
    # value over the series' maximum; AL drawn as AL - 1), recomputed here from the log
    python3 - "$(T curves.svg)" "$(T train.log)" <<'PY'
import json, sys, xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
svg = ET.parse(sys.argv[1]).getroot()
log = [json.loads(l) for l in open(sys.argv[2])]
loss = [(l["step"], l["loss"]) for l in log if "loss" in l]
lr = [(l["step"], l["lr"]) for l in log if "lr" in l]
al = [(l["step"], l["al"] - 1) for l in log if "al" in l]
steps = [s for s, _ in loss + al]
x0, x1 = min(steps), max(steps)
polys = svg.findall(ns + "polyline")
assert len(polys) == 3, len(polys)
for poly, pts in zip(polys, (loss, al, lr)):
    got = [tuple(map(float, p.split(","))) for p in poly.get("points").split()]
    assert len(got) == len(pts), (len(got), len(pts))
    top = max(v for _, v in pts)
    for (gx, gy), (s, v) in zip(got, pts):
        assert abs(gx - (48 + 624 * (s - x0) / (x1 - x0))) < 0.06, (gx, s)
        assert abs(gy - (352 - 304 * max(v, 0) / top)) < 0.06, (gy, v)
assert len(svg.findall(ns + "circle")) == len(al)
PY
    # a run killed after step 200 and resumed from its checkpoint at step 100 logs 100.. again
    jq -c 'select((.step // 0) <= 200)' "$(T train.log)" >"$(T resumed.log)"
    jq -c 'select((.step // 0) >= 100)' "$(T train.log)" >>"$(T resumed.log)"
    as-draft plot "$(T resumed.log)" -o "$(T resumed.svg)"
    diff <(grep -v '^<text' "$(T curves.svg)") <(grep -v '^<text' "$(T resumed.svg)")
    printf '{"step":10,"loss":3}\nnot json\n' >"$(T bad.log)"
    run --separate-stderr as-draft plot "$(T bad.log)" -o "$(T bad.svg)"
    refused "as-draft: file $(T bad.log): line 2: not a JSON object ('[' or '{' expected near 'not')"
    [ ! -e "$(T bad.svg)" ]
}
