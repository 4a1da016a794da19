#!/usr/bin/env bats
# as-qat on stories260K: exact resume after kill -9 (final weights and training state bit for
# bit equal to an uninterrupted run), SEQ 2-bit QAT with KD lowering the KL divergence to the
# teacher as as-eval measures it, outputs on the quantizer's grid and in the codes stream, and
# one-line errors (teacher vocabulary, resume from another configuration, data shorter than a
# window, NaN loss) that leave no output and keep the last good state.

load helpers
load assert_refused

setup_file() {
    import_model
    export TXT=$BATS_FILE_TMPDIR/train.txt
    head -c 200000 "$AUSTEN/pride_and_prejudice.txt" >"$TXT"
}

setup() {
    import_model
    T=$BATS_TEST_TMPDIR
}

# state_step FILE: the "step" of a training state (safetensors metadata, read independently).
state_step() {
    python3 -c 'import json,struct,sys
f=open(sys.argv[1],"rb"); n=struct.unpack("<Q",f.read(8))[0]
print(json.loads(f.read(n))["__metadata__"]["step"])' "$1"
}

QAT=(--steps 120 --seq 32 --batch 2 --save-every 10 --lr 1e-3 --seed 7)

@test "as-qat killed with SIGKILL resumes to the bit-identical result of an uninterrupted run" {
    as-qat -m "$M" -t "$M" -d "$TXT" "${QAT[@]}" --state "$T/ref.state" -o "$T/ref"
    [ "$(state_step "$T/ref.state")" = 120 ]
    as-qat -m "$M" -t "$M" -d "$TXT" "${QAT[@]}" --state "$T/run.state" -o "$T/run" &
    pid=$!
    for _ in $(seq 600); do
        [ -e "$T/run.state" ] && break
        sleep 0.05
    done
    kill -9 "$pid"
    wait "$pid" || true
    # killed in the middle: a saved state before the end, no output
    [ -e "$T/run.state" ]
    step=$(state_step "$T/run.state")
    echo "killed after the state of step $step" >&3
    [ "$step" -lt 120 ]
    [ ! -e "$T/run" ]
    as-qat -m "$M" -t "$M" -d "$TXT" "${QAT[@]}" --state "$T/run.state" --resume -o "$T/run"
    cmp "$T/ref/model.safetensors" "$T/run/model.safetensors"
    cmp "$T/ref.state" "$T/run.state"
    # --stop-after: a time-sliced run continues the same way
    as-qat -m "$M" -t "$M" -d "$TXT" "${QAT[@]}" --state "$T/sl.state" --stop-after 50 -o "$T/sl"
    [ "$(state_step "$T/sl.state")" = 50 ]
    [ ! -e "$T/sl" ]
    as-qat -m "$M" -t "$M" -d "$TXT" "${QAT[@]}" --state "$T/sl.state" --resume -o "$T/sl"
    cmp "$T/ref/model.safetensors" "$T/sl/model.safetensors"
}

@test "as-qat seq2 with KD: KL to the teacher falls (as-eval), weights on the 2-bit grid, codes stream" {
    # before training: the same quantizer at its initial scales (learning rate 0)
    as-qat -m "$M" -t "$M" -d "$TXT" --steps 1 --lr 0 --seq 32 -o "$T/ptq"
    as-qat -m "$M" -t "$M" -d "$TXT" --steps 150 --seq 64 --batch 4 --lr 2e-3 --w-ce 0 \
        --log "$T/log.jsonl" --svg "$T/curve.svg" --codes "$T/codes.astr" -o "$T/qat"
    before=$(kld_of "$T/ptq")
    after=$(kld_of "$T/qat")
    echo "KLD to the teacher (wikitext 20 KB): before $before, after $after" >&3
    python3 -c "import sys; b, a = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if a < 0.6 * b else 1)" "$before" "$after"
    # JSON lines: one per step, every field there
    [ "$(wc -l <"$T/log.jsonl")" = 150 ]
    jq -e 'select(.step == 150) | .tokens == 150 * 4 * 64 and .kd >= 0 and .lr >= 0 and .tok_per_s > 0' "$T/log.jsonl"
    grep -q '<polyline' "$T/curve.svg"
    # every decoder linear on the SEQ 2-bit grid {-3, -1, 1, 3} * alpha / 4 of its row; the
    # codes stream dequantizes to the same weights
    python3 - "$T/qat" "$T/codes.astr" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file
w = load_file(sys.argv[1] + "/model.safetensors")
lin = [k for k in w if k.startswith("model.layers.") and k.endswith("proj.weight")]
assert len(lin) == 35, len(lin)
for k in lin:
    for row in w[k]:
        a = np.abs(row).max() / 3  # alpha / 4
        assert np.allclose(np.abs(row) / a, np.round(np.abs(row) / a), atol=1e-4), k
        assert set(np.round(row / a).astype(int)) <= {-3, -1, 1, 3}, k
PY
    run as-ls "$T/codes.astr"
    [ "$status" -eq 0 ]
    [ "$(grep -c '"role":"qweight"' <<<"$output")" = 35 ]
    [ "$(grep -c '"qat_scheme":"seq2"' <<<"$output")" = 35 ]
}

@test "as-qat: teacher with another vocabulary is refused" {
    python3 - "$M" "$T/t256" <<'PY'
import json, os, shutil, sys
from safetensors.numpy import load_file, save_file
src, dst = sys.argv[1:3]
os.makedirs(dst)
for f in os.listdir(src):
    shutil.copy(os.path.join(src, f), dst)
w = load_file(src + "/model.safetensors")
w["model.embed_tokens.weight"] = w["model.embed_tokens.weight"][:256].copy()
save_file(w, dst + "/model.safetensors")
c = json.load(open(dst + "/config.json")); c["vocab_size"] = 256
json.dump(c, open(dst + "/config.json", "w"))
PY
    run --separate-stderr as-qat -m "$M" -t "$T/t256" -d "$TXT" --steps 2 --seq 32 -o "$T/out"
    refused "as-qat: teacher $T/t256: vocabulary size 256 differs from the student's 512 ($M)"
    [ ! -e "$T/out" ]
}

@test "as-qat: resume from another configuration is refused, the state kept" {
    as-qat -m "$M" -d "$TXT" --steps 4 --seq 32 --state "$T/s" --stop-after 2
    cp "$T/s" "$T/s.before"
    run --separate-stderr as-qat -m "$M" -d "$TXT" --steps 4 --seq 32 --lr 2e-3 --state "$T/s" --resume -o "$T/out"
    refused "as-qat: --resume $T/s: written by another configuration (lr=0.001, this run lr=0.002)"
    [ ! -e "$T/out" ]
    cmp "$T/s" "$T/s.before"
}

@test "as-qat: data shorter than one window is refused" {
    head -c 300 "$TXT" >"$T/short.txt"
    n=$(python3 -c 'import sys; from tokenizers import Tokenizer; t = Tokenizer.from_file(sys.argv[1]); print(len(t.encode(open(sys.argv[2]).read(), add_special_tokens=False).ids))' "$M/tokenizer.json" "$T/short.txt")
    run --separate-stderr as-qat -m "$M" -d "$T/short.txt" --steps 2 --seq 256 -o "$T/out"
    refused "as-qat: $T/short.txt: $n tokens, shorter than one window of 257 (--seq 256, plus the next token)"
    [ ! -e "$T/out" ]
}

@test "as-qat: a NaN loss stops with the step, nothing written, the last good state kept" {
    # a teacher whose final norm holds a NaN: its logits, hence the KD loss, are NaN
    python3 - "$M" "$T/tnan" <<'PY'
import os, shutil, sys
from safetensors.numpy import load_file, save_file
src, dst = sys.argv[1:3]
os.makedirs(dst)
for f in os.listdir(src):
    shutil.copy(os.path.join(src, f), dst)
w = load_file(src + "/model.safetensors")
w["model.norm.weight"][5] = float("nan")
save_file(w, dst + "/model.safetensors")
PY
    run --separate-stderr as-qat -m "$M" -t "$T/tnan" -d "$TXT" --steps 4 --seq 32 --state "$T/s0" -o "$T/out"
    refused "as-qat: step 1: loss is nan (no state saved)"
    [ ! -e "$T/out" ]
    [ ! -e "$T/s0" ]
    # two good steps with the real teacher, then the NaN teacher on resume: stops at step 3
    as-qat -m "$M" -t "$M" -d "$TXT" --steps 4 --seq 32 --state "$T/s" --stop-after 2
    cp "$T/s" "$T/s.good"
    run --separate-stderr as-qat -m "$M" -t "$T/tnan" -d "$TXT" --steps 4 --seq 32 --state "$T/s" --resume -o "$T/out"
    refused "as-qat: step 3: loss is nan (last good state: $T/s, step 2)"
    [ ! -e "$T/out" ]
    cmp "$T/s" "$T/s.good"
}
