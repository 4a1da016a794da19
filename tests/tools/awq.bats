#!/usr/bin/env bats
# as-awq end to end on the bundled stories260K model: as-calib --keep-seqs records, folding keeps
# the model's function (through the stream and as-pack's replacements), the statistics transformed
# for as-gptq, the AWQ GEMM checkpoint read back by as-eval, AWQ against RTN, and one-line errors.
# The numpy checks are independent of the C code; numpy and safetensors come with `make deps`
# (.venv), so their absence is a failure, not a skip.

bats_require_minimum_version 1.5.0
# a failure anywhere in a pipeline fails the test, not only its last command
set -o pipefail

setup_file() {
    export MODEL_DIR="$BATS_FILE_TMPDIR/model"
    local d=${AS_DATA:-../shared/data}
    as-import -t "$d/models/stories260K/tok512.bin" "$d/models/stories260K/stories260K.bin" "$MODEL_DIR"
    export CALIB="$BATS_FILE_TMPDIR/calib.astr"
    as-calib -m "$MODEL_DIR" -d "$d/text/austen" -n 24 -l 128 --keep-seqs 6 > "$CALIB" 2>/dev/null
    export TEXT="$d/text/wikitext-2-raw/wiki.test.raw"
    export QUANT="$BATS_FILE_TMPDIR/awq4.astr"
    as-awq -m "$MODEL_DIR" -b 4 -g 32 -e quantized < "$CALIB" > "$QUANT" 2>/dev/null
}

load assert_refused

# Minimal stream reader for the checks below (docs/stream-format.md): name -> numpy array.
PYREAD='
import json, struct, sys
import numpy as np
DT = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "U8": np.uint8}
def read(path):
    data, pos, out = open(path, "rb").read(), 0, {}
    while pos < len(data):
        magic, ver, kind, hlen, pad, plen, _ = struct.unpack_from("<4sHHIIQQ", data, pos)
        h = json.loads(data[pos + 32:pos + 32 + hlen]); body = pos + 32 + hlen
        if kind == 1:
            p = h["payload"]
            if p["kind"] == "inline":
                raw = data[body:body + plen]
            else:
                f = open(p["file"], "rb"); f.seek(p["offset"]); raw = f.read(p["nbytes"])
            if h["dtype"] in DT:
                out[h["name"]] = (h, np.frombuffer(raw, DT[h["dtype"]]).reshape(h["shape"]))
        pos = body + plen + pad
    return out
'

lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; } # a < b, any number format

evaluate() { # model -> "ppl kld top1"
    as-eval -m "$1" -b "$MODEL_DIR" -f "$TEXT" --bytes 20000 --ctx 128 --json |
        jq -r '"\(.ppl) \(.kld.mean) \(.same_top)"'
}

@test "as-calib --keep-seqs: layer-input records hold the residual stream of whole windows" {
    run bash -c "as-ls '$CALIB' | jq -c 'select(.role == \"layer-input\") | [.name, .shape, .attrs.seqs, .attrs.seqlen, .layer]'"
    [ "${#lines[@]}" -eq 5 ]
    [ "${lines[0]}" = '["model.layers.0.input",[768,64],6,128,0]' ]
    [ "${lines[4]}" = '["model.layers.4.input",[768,64],6,128,4]' ]
    # layer 0's input is the token embeddings: every row is an embedding row, BOS first
    python3 -c "$PYREAD
from safetensors.numpy import load_file
E = load_file('$MODEL_DIR/model.safetensors')['model.embed_tokens.weight']
h, X = read('$CALIB')['model.layers.0.input']
rows = {r.tobytes() for r in E}
assert all(x.tobytes() in rows for x in X), 'a row is not an embedding'
for s in range(6):
    assert X[s * 128].tobytes() == E[1].tobytes(), 'window %d does not start with BOS' % s
h1, X1 = read('$CALIB')['model.layers.1.input']
assert not np.array_equal(X, X1)
"
}

@test "as-calib --keep-seqs: bad values are one-line errors" {
    run --separate-stderr as-calib -m "$MODEL_DIR" -d "$TEXT" -n 4 -l 32 --keep-seqs 5
    refused "as-calib: --keep-seqs 5: expected 0..4 (the number of windows)"
    run --separate-stderr as-calib -m "$MODEL_DIR" -d "$TEXT" -n 4 -l 32 --keep-seqs 2 --sequential cat
    refused "as-calib: --keep-seqs keeps full-precision layer inputs; it does not combine with --sequential"
}

@test "folding keeps the model's function: scaled weights and norms, no clipping, evaluate as fp" {
    as-awq -m "$MODEL_DIR" -b 4 -g 32 --no-clip < "$CALIB" > "$BATS_TEST_TMPDIR/s.astr"
    # every linear and both norms of every layer are replaced
    n=$(as-ls "$BATS_TEST_TMPDIR/s.astr" | jq -r 'select(.role == "weight") | .name' | sort -u | wc -l)
    [ "$n" -eq 45 ]
    as-pack -m "$MODEL_DIR" -f fakequant -o "$BATS_TEST_TMPDIR/fold" < "$BATS_TEST_TMPDIR/s.astr"
    r=$(evaluate "$BATS_TEST_TMPDIR/fold")
    read -r ppl kld top <<<"$r"
    echo "folded: ppl $ppl kld $kld top $top"
    # folding is exact in real arithmetic; f32 rounding moves the logits by ~1e-6, a KLD of
    # ~1/2 E[dlogit^2] ~ 1e-12 (measured 3e-12). 1e-10 allows logit errors 10x larger; one
    # channel folded wrongly moves it by orders of magnitude more.
    lt "$kld" 1e-10
    lt 0.999 "$top"
    # and the norms really changed (the scales are not all 1)
    python3 -c "$PYREAD
from safetensors.numpy import load_file
W = load_file('$MODEL_DIR/model.safetensors')
S = read('$BATS_TEST_TMPDIR/s.astr')
n = 'model.layers.2.post_attention_layernorm.weight'
assert not np.allclose(S[n][1], W[n], rtol=1e-3)
"
}

@test "scaled stream: statistics transformed for x/s, and as-gptq quantizes it" {
    as-awq -m "$MODEL_DIR" -b 4 -g 32 < "$CALIB" > "$BATS_TEST_TMPDIR/s.astr"
    as-gptq -b 4 -g 32 --asym < "$BATS_TEST_TMPDIR/s.astr" > "$BATS_TEST_TMPDIR/q.astr"
    n=$(as-ls "$BATS_TEST_TMPDIR/q.astr" | jq -r 'select(.role == "qweight") | .name' | wc -l)
    [ "$n" -eq 35 ]
    # s = norm / norm' for the attn_qkv group: mean|x|' = mean|x| / s, H' = H / (s sᵀ)
    python3 -c "$PYREAD
from safetensors.numpy import load_file
W = load_file('$MODEL_DIR/model.safetensors')
A, S = read('$CALIB'), read('$BATS_TEST_TMPDIR/s.astr')
for l in range(5):
    n = 'model.layers.%d.input_layernorm.weight' % l
    s = W[n].astype(np.float64) / S[n][1]
    p = 'model.layers.%d.attn_qkv.' % l
    np.testing.assert_allclose(S[p + 'act_mean_abs'][1], A[p + 'act_mean_abs'][1] / s, rtol=1e-5)
    np.testing.assert_allclose(S[p + 'hessian'][1], A[p + 'hessian'][1] / np.outer(s, s), rtol=1e-4, atol=1e-7)
    assert S[p + 'hessian'][0]['attrs']['targets'] == A[p + 'hessian'][0]['attrs']['targets']
"
}

@test "as-pack -f awq: AWQ GEMM checkpoint, verified, loaded by as-eval; AWQ beats RTN" {
    as-pack -m "$MODEL_DIR" -f awq -o "$BATS_TEST_TMPDIR/awq" < "$QUANT" 2> "$BATS_TEST_TMPDIR/err"
    grep -q "verified" "$BATS_TEST_TMPDIR/err"
    run jq -c '.quantization_config | [.quant_method, .zero_point, .group_size, .bits, .version]' "$BATS_TEST_TMPDIR/awq/config.json"
    [ "$output" = '["awq",true,32,4,"gemm"]' ]
    # the MLP (172 features) does not fit: listed in modules_to_not_convert, stored as weights
    run jq -r '.quantization_config.modules_to_not_convert | length' "$BATS_TEST_TMPDIR/awq/config.json"
    [ "$output" -eq 15 ]
    run bash -c "as-cat '$BATS_TEST_TMPDIR/awq' | as-ls | jq -c 'select(.name | startswith(\"model.layers.0.self_attn.q_proj\")) | [.name, .dtype, .shape]'"
    [ "${lines[0]}" = '["model.layers.0.self_attn.q_proj.qweight","I32",[64,8]]' ]
    [ "${lines[1]}" = '["model.layers.0.self_attn.q_proj.qzeros","I32",[2,8]]' ]
    [ "${lines[2]}" = '["model.layers.0.self_attn.q_proj.scales","F16",[2,64]]' ]
    as-pack -m "$MODEL_DIR" -f fakequant -o "$BATS_TEST_TMPDIR/fq" < "$QUANT"
    r1=$(evaluate "$BATS_TEST_TMPDIR/awq")
    r2=$(evaluate "$BATS_TEST_TMPDIR/fq")
    read -r p1 k1 t1 <<<"$r1"
    read -r p2 k2 t2 <<<"$r2"
    echo "awq gemm: $p1 $k1 $t1; fakequant: $p2 $k2 $t2"
    # same model up to the fp16 rounding of the scales (relative error <= 2^-11 per scale):
    # measured 1.1e-4 relative in PPL; bound 1.5e-4 (+35%). One wrong code or zero point in a
    # group moves the PPL by more (a step is 1/15 of a group's range).
    d=$(awk -v a="$p1" -v b="$p2" 'BEGIN { d = a - b; print (d < 0 ? -d : d) / b }')
    echo "relative PPL difference $d"
    lt "$d" 1.5e-4
    # RTN with the same (AWQ) rounding: s = 1, no clipping
    as-awq -m "$MODEL_DIR" -b 4 -g 32 -e quantized --grid 1 --no-duo-scaling --no-clip < "$CALIB" |
        as-pack -m "$MODEL_DIR" -f fakequant -o "$BATS_TEST_TMPDIR/rtn"
    r3=$(evaluate "$BATS_TEST_TMPDIR/rtn")
    read -r p3 k3 t3 <<<"$r3"
    echo "rtn: $p3 $k3 $t3"
    lt "$k2" "$k3"
    lt "$p2" "$p3"
}

@test "as-pack -f awq: 3-bit layers fall back to dequantized weights; none packed: a dense checkpoint" {
    as-awq -m "$MODEL_DIR" -b 3 -g 32 -e quantized --grid 2 < "$CALIB" > "$BATS_TEST_TMPDIR/q3.astr"
    as-pack -m "$MODEL_DIR" -f awq -o "$BATS_TEST_TMPDIR/awq3" < "$BATS_TEST_TMPDIR/q3.astr" 2> "$BATS_TEST_TMPDIR/err"
    grep -q "stores 4 bits, not 3" "$BATS_TEST_TMPDIR/err"
    # an AWQ config excluding every linear crashes transformers: no quantization_config at all
    grep -qx "as-pack: no linear fits the AWQ GEMM layout: wrote $BATS_TEST_TMPDIR/awq3 as a dense checkpoint (the quantizer's weights, no quantization_config)" "$BATS_TEST_TMPDIR/err"
    run jq -r 'has("quantization_config")' "$BATS_TEST_TMPDIR/awq3/config.json"
    [ "$output" = false ]
    run evaluate "$BATS_TEST_TMPDIR/awq3"
    [ "$status" -eq 0 ]
}

@test "as-awq: bad input is a one-line error" {
    # a statistics stream without layer inputs
    as-calib -m "$MODEL_DIR" -d "$TEXT" -n 2 -l 32 --layers 0 > "$BATS_TEST_TMPDIR/plain.astr" 2>/dev/null
    run --separate-stderr as-awq -m "$MODEL_DIR" -e quantized < "$BATS_TEST_TMPDIR/plain.astr"
    [ "$status" -eq 1 ]
    refused "as-awq: layer 0: no layer-input record in the stream (run as-calib with --keep-seqs S)"
    # layers out of order: found only when layer 1 comes again, after layers 1 and 0 went out
    # (a filter streams); what it wrote has no end record, so no reader takes it as a stream
    as-cat --layer 1 "$CALIB" > "$BATS_TEST_TMPDIR/l1.astr"
    as-cat --layer 0 "$CALIB" > "$BATS_TEST_TMPDIR/l0.astr"
    run --separate-stderr bash -c "as-awq -m '$MODEL_DIR' --grid 1 -e quantized '$BATS_TEST_TMPDIR/l1.astr' '$BATS_TEST_TMPDIR/l0.astr' '$BATS_TEST_TMPDIR/l1.astr' >'$BATS_TEST_TMPDIR/ooo.astr'"
    refused "as-awq: stream $BATS_TEST_TMPDIR/l1.astr: tensor model.layers.1.input: layer 1 was already processed; records must come in layer order, as as-calib writes them"
    run --separate-stderr as-ls "$BATS_TEST_TMPDIR/ooo.astr"
    [ "$status" -ne 0 ]
    [[ "$stderr" == *"no end record"* ]]
    # truncated stream
    head -c 100000 "$CALIB" > "$BATS_TEST_TMPDIR/trunc.astr"
    run --separate-stderr as-awq -m "$MODEL_DIR" < "$BATS_TEST_TMPDIR/trunc.astr"
    [ "$status" -eq 1 ]
    refused "as-awq: stream stdin: record 1 (model.layers.0.input): truncated in payload (got 99744 of 196608 bytes)"
    # options
    run --separate-stderr as-awq -m "$MODEL_DIR" -e packed < /dev/null
    [ "$status" -eq 1 ]
    refused "as-awq: --emit 'packed': expected scaled or quantized"
    run --separate-stderr as-awq -m "$MODEL_DIR" -b 9 < /dev/null
    [ "$status" -eq 1 ]
    refused "as-awq: --bits 9: expected 2..8"
    run --separate-stderr as-awq
    [ "$status" -eq 2 ]
    [[ "${stderr_lines[0]}" == "usage: as-awq -m MODEL [options] [STREAM...] > OUT_STREAM" ]]
    [ -z "$output" ]
    # a missing model
    run --separate-stderr as-awq -m "$BATS_FILE_TMPDIR/nope" < /dev/null
    [ "$status" -eq 1 ]
    refused "as-awq: file $BATS_FILE_TMPDIR/nope/config.json: cannot parse JSON: unable to open $BATS_FILE_TMPDIR/nope/config.json: No such file or directory (line -1)"
    # a single layer works on its own (layers are independent)
    as-cat --layer 3 "$CALIB" | as-awq -m "$MODEL_DIR" --grid 2 -e quantized > "$BATS_TEST_TMPDIR/one.astr"
    n=$(as-ls "$BATS_TEST_TMPDIR/one.astr" | jq -r 'select(.role == "qweight") | .layer' | sort -u)
    [ "$n" = "3" ]
}
