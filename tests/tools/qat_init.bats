#!/usr/bin/env bats
# as-qat starting from a PTQ result (--init-codes: the step-0 fake-quantized weights are the
# codes' dequantized weights, computed here in numpy from the stream's bytes) and with the
# teacher's logits read from a cached stream (--teacher-cache: the same losses as the teacher
# run on the fly, to 1e-6, and the same trained weights).

load helpers
load assert_refused

setup_file() {
    import_model
    export TXT=$BATS_FILE_TMPDIR/train.txt
    head -c 100000 "$AUSTEN/pride_and_prejudice.txt" >"$TXT"
}

setup() {
    import_model
    T=$BATS_TEST_TMPDIR
}

# same_weights CODES CKPT: every decoder linear of CKPT equals W_hat of the codes stream, bit
# for bit. The stream is parsed from docs/stream-format.md (32-byte prefix, JSON header, payload
# inline or by reference) and W_hat = scale[g] * (q - zero[g]) in f32, or scale (q - 1.5) for seq2.
same_weights() {
    python3 - "$1" "$2" <<'PY'
import json, struct, sys
import numpy as np
from safetensors.numpy import load_file
data, recs, pos = open(sys.argv[1], "rb").read(), {}, 0
DT = {"F32": np.float32, "I32": np.int32, "U8": np.uint8}
while pos < len(data):
    magic, ver, kind, hlen, pad, plen, _ = struct.unpack_from("<4sHHIIQQ", data, pos)
    h = json.loads(data[pos + 32:pos + 32 + hlen])
    body = pos + 32 + hlen
    if kind == 1:
        p = h["payload"]
        if p["kind"] == "inline":
            raw = data[body:body + plen]
        else:
            with open(p["file"], "rb") as f:
                f.seek(p["offset"]); raw = f.read(p["nbytes"])
        recs[h["name"]] = np.frombuffer(raw, DT[h["dtype"]]).reshape(h["shape"])
    pos = body + plen + pad
w = load_file(sys.argv[2] + "/model.safetensors")
n = 0
for k in w:
    if not (k.startswith("model.layers.") and k.endswith("proj.weight")):
        continue
    pre = k[:-len(".weight")]
    q, s, gi = recs[pre + ".qweight"], recs[pre + ".scale"], recs[pre + ".g_idx"]
    S = s[:, gi]
    if pre + ".min" in recs:
        # seq2's float minimum -1.5 scale: W_hat = scale (q - 1.5), the grid point once rounded
        # (scale * q + min rounds twice)
        assert np.allclose(recs[pre + ".min"], -1.5 * s, rtol=2e-7, atol=0), k
        wh = S * (q.astype(np.float32) - np.float32(1.5))
    else:
        wh = S * (q.astype(np.int32) - recs[pre + ".zero"][:, gi]).astype(np.float32)
    d = np.abs(w[k] - wh).max()
    assert np.array_equal(w[k], wh), (k, float(d))
    n += 1
assert n == 35, n
print("35 linears equal to the codes' W_hat")
PY
}

@test "as-qat --init-codes: step-0 fake-quantized weights equal the PTQ codes' dequantized weights" {
    # SEQ 2-bit from as-gptq's ternary-family RTN (seq2 grid, one scale and minimum per row)
    as-cat "$M" | as-gptq -m rtn --ternary seq2 >"$T/seq2.astr"
    as-qat -m "$M" -d "$TXT" --scheme seq2 --init-codes "$T/seq2.astr" --steps 1 --lr 0 --seq 32 \
        --batch 1 -o "$T/seq2" 2>"$T/err"
    cat "$T/err" >&3
    same_weights "$T/seq2.astr" "$T/seq2"
    # LSQ 4-bit from GPTQ per channel, symmetric (the LSQ grid alpha * [-8, 7])
    as-calib -m "$M" -d "$TXT" -n 8 -l 64 | as-gptq -b 4 -g -1 --sym >"$T/g4.astr"
    as-qat -m "$M" -d "$TXT" --scheme lsq4 --init-codes "$T/g4.astr" --steps 1 --lr 0 --seq 32 \
        --batch 1 -o "$T/lsq4" 2>"$T/err"
    same_weights "$T/g4.astr" "$T/lsq4"
    # and training moves on from there: 20 steps of KD change the weights
    as-qat -m "$M" -t "$M" -d "$TXT" --scheme seq2 --init-codes "$T/seq2.astr" --steps 20 \
        --seq 32 --batch 2 -o "$T/seq2t" 2>/dev/null
    run same_weights "$T/seq2.astr" "$T/seq2t"
    [ "$status" -ne 0 ]
}

@test "as-qat --init-codes: a stream without the student's layers is refused, nothing written" {
    # the codes of layer 0 only (a stream made for another, smaller model)
    as-cat --layer 0 "$M" | as-gptq -m rtn --ternary seq2 >"$T/cut.astr"
    run --separate-stderr as-qat -m "$M" -d "$TXT" --init-codes "$T/cut.astr" --steps 1 --seq 32 -o "$T/out"
    refused "as-qat: --init-codes $T/cut.astr: no quantized layer model.layers.1.self_attn.q_proj"
    [ ! -e "$T/out" ]
}

@test "as-qat --teacher-cache: the same losses and weights as the teacher on the fly" {
    A=(-m "$M" -d "$TXT" --scheme seq2 --steps 6 --seq 32 --batch 3 --seed 3 --w-ce 0.5)
    as-qat "${A[@]}" -t "$M" --log "$T/fly.jsonl" -o "$T/fly"
    # first run: computes the cache with the teacher, then trains reading it
    as-qat "${A[@]}" -t "$M" --teacher-cache "$T/tc" --log "$T/mk.jsonl" -o "$T/mk"
    [ -s "$T/tc" ]
    # second run: no teacher at all, the logits come from the file
    as-qat "${A[@]}" --teacher-cache "$T/tc" --log "$T/rd.jsonl" -o "$T/rd"
    python3 - "$T/fly.jsonl" "$T/mk.jsonl" "$T/rd.jsonl" <<'PY'
import json, sys
runs = [[json.loads(l) for l in open(p)] for p in sys.argv[1:]]
assert all(len(r) == 6 for r in runs)
for a, b, c in zip(*runs):
    assert a["kd"] > 0
    for k in ("loss", "kd", "ce"):
        for x in (b, c):
            assert abs(x[k] - a[k]) <= 1e-6 * max(1, abs(a[k])), (a["step"], k, a[k], x[k])
PY
    cmp "$T/fly/model.safetensors" "$T/mk/model.safetensors"
    cmp "$T/fly/model.safetensors" "$T/rd/model.safetensors"
    # a cache of other windows (another seed) is refused, naming the file and the difference
    B=(-m "$M" -d "$TXT" --scheme seq2 --steps 6 --seq 32 --batch 3 --seed 4 --w-ce 0.5)
    run --separate-stderr as-qat "${B[@]}" --teacher-cache "$T/tc" -o "$T/bad"
    [ "$status" -ne 0 ]
    [[ "$stderr" == "as-qat: --teacher-cache: file $T/tc: base logits were computed for another text (token ids)"* ]]
    [ ! -e "$T/bad" ]
    # no file and no teacher to compute it
    run --separate-stderr as-qat "${A[@]}" --teacher-cache "$T/none" -o "$T/bad"
    refused "as-qat: --teacher-cache $T/none: no such file, and no --teacher to compute it"
    [ ! -e "$T/bad" ]
    [ ! -e "$T/none" ]
}

@test "as-qat --export: a run's checkpoint written from its state, equal to the run's own output" {
    A=(-m "$M" -t "$M" -d "$TXT" --scheme seq2 --steps 6 --seq 32 --batch 2 --state "$T/s")
    as-qat "${A[@]}" --stop-after 3
    as-qat "${A[@]}" --resume --export -o "$T/at3" --codes "$T/at3.astr"
    # exporting trains nothing: the state is still at step 3, and the run continues from it
    as-qat "${A[@]}" --resume -o "$T/end"
    as-qat "${A[@]}" --resume --export -o "$T/at6"
    cmp "$T/end/model.safetensors" "$T/at6/model.safetensors"
    run cmp "$T/at3/model.safetensors" "$T/at6/model.safetensors"
    [ "$status" -ne 0 ]
    # the exported codes stream dequantizes to the exported checkpoint
    same_weights "$T/at3.astr" "$T/at3"
    # and the continued run is the uninterrupted one
    as-qat "${A[@]/$T\/s/$T/u}" -o "$T/ref"
    cmp "$T/ref/model.safetensors" "$T/end/model.safetensors"
    # with no state to export from
    run --separate-stderr as-qat "${A[@]/$T\/s/$T/none}" --resume --export -o "$T/bad"
    refused "as-qat: --export needs --resume and an existing --state"
    [ ! -e "$T/bad" ]
}
