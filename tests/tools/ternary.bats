#!/usr/bin/env bats
# Ternary packing (lib/common/pack_ternary.c) against the gguf package's numpy quantizer: our
# TQ1_0 / TQ2_0 bytes for random ternary codes must be exactly what gguf.quants.quantize writes for
# the same values (ggml's quantize_row_tq*_ref: d = absmax of the block, code = round(x/d) + 1),
# and gguf's dequantizer must read them back to the same values. The unit tests
# (test_pack_ternary, test_kernel_ternary) hold the other layouts and the kernels.
bats_require_minimum_version 1.5.0

setup_file() {
    export TP="${BUILD:-build/rel}/tests/test_pack_ternary"
    [ -x "$TP" ]
}

tq_oracle() {
    python3 - "$@" <<'PY'
import sys
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize
t, n, k, vals, packed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
qt = {"TQ1_0": T.TQ1_0, "TQ2_0": T.TQ2_0}[t]
v = np.fromfile(vals, dtype="<f4").reshape(n, k)
ours = np.fromfile(packed, dtype=np.uint8).reshape(n, -1)
want = quantize(v, qt)
if want.shape != ours.shape:
    sys.exit(f"shape {ours.shape} vs gguf {want.shape}")
bad = np.argwhere(want != ours)
if bad.size:
    sys.exit(f"{t}: {len(bad)} bytes differ from gguf's quantizer, first at {bad[0]}")
back = dequantize(ours, qt)
if not np.array_equal(back, v):
    sys.exit(f"{t}: gguf's dequantizer reads other values")
print(f"{t}: {ours.size} bytes as gguf's quantizer writes them")
PY
}

@test "ternary: TQ1_0 and TQ2_0 bytes equal gguf's numpy quantizer (random codes, f16 scales)" {
    for t in TQ1_0 TQ2_0; do
        "$TP" write "$t" 6 1536 11 "$BATS_TEST_TMPDIR/$t.f32" "$BATS_TEST_TMPDIR/$t.bin"
        run tq_oracle "$t" 6 1536 "$BATS_TEST_TMPDIR/$t.f32" "$BATS_TEST_TMPDIR/$t.bin"
        echo "$output"
        [ "$status" -eq 0 ]
    done
}

@test "ternary: numpy decodes our I2_S, SEQ2 and SHERRY bytes (with 128-chunks and a 32-block tail)" {
    for fk in I2_S:1536 SEQ2:1568 SHERRY:1568 SHERRY:96; do
        IFS=: read -r f k <<<"$fk"
        "$TP" write "$f" 5 "$k" 3 "$BATS_TEST_TMPDIR/v.f32" "$BATS_TEST_TMPDIR/p.bin"
        run python3 "$BATS_TEST_DIRNAME/ternary_oracle.py" decode "$f" 5 "$k" \
            "$BATS_TEST_TMPDIR/v.f32" "$BATS_TEST_TMPDIR/p.bin"
        echo "$output"
        [ "$status" -eq 0 ]
    done
}

# stories260K (dim 64, hidden 172): RTN codes from as-gptq --ternary, packed by as-pack.
m260k() {
    local d=${AS_DATA:-../shared/data}/models/stories260K
    M="$BATS_FILE_TMPDIR/m"
    [ -d "$M" ] || as-import -t "$d/tok512.bin" "$d/stories260K.bin" "$M"
}

@test "ternary: as-pack -f sherry / seq2 on stories260K: packed layers decode (numpy) to the fakequant weights, as-eval PPL equal to 1e-4; 172-wide rows kept dense and reported" {
    m260k
    local f
    for f in sherry seq2; do
        as-cat "$M" | as-gptq -m rtn --ternary "$f" >"$BATS_TEST_TMPDIR/q.$f"
        as-pack -m "$M" -o "$BATS_TEST_TMPDIR/fq.$f" -f fakequant "$BATS_TEST_TMPDIR/q.$f" 2>/dev/null
        run --separate-stderr as-pack -m "$M" -o "$BATS_TEST_TMPDIR/out.$f" -f "$f" "$BATS_TEST_TMPDIR/q.$f"
        [ "$status" -eq 0 ]
        local F=${f^^}
        [ "$(grep -c "kept as dequantized F32 weights (rows of 172 weights do not fill $F's 32-weight blocks)" <<<"$stderr")" -eq 5 ]
        grep -qx "as-pack: wrote $BATS_TEST_TMPDIR/out.$f ($f, 1 shard): 35 linears quantized, 30 packed, 5 kept dequantized, verified" <<<"$stderr"
        run python3 "$BATS_TEST_DIRNAME/ternary_oracle.py" compare "$BATS_TEST_TMPDIR/out.$f" "$BATS_TEST_TMPDIR/fq.$f"
        echo "$output"
        [ "$status" -eq 0 ]
        [ "$output" = "$F: 30 packed layers equal the fakequant weights, 5 kept dense" ]
        # as-eval reads the packed checkpoint (quant_method as-ternary): same PPL as the fakequant
        local W=${AS_DATA:-../shared/data}/text/wikitext-2-raw/wiki.test.raw a b
        a=$(as-eval -m "$BATS_TEST_TMPDIR/out.$f" -f "$W" --bytes 8000 --ctx 128 --json | jq -r .ppl)
        b=$(as-eval -m "$BATS_TEST_TMPDIR/fq.$f" -f "$W" --bytes 8000 --ctx 128 --json | jq -r .ppl)
        echo "$f: packed $a fakequant $b"
        python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(abs(a - b) > 1e-4 * b)' "$a" "$b"
    done
}

@test "ternary: as-pack -f i2_s keeps 64-wide rows dense (I2_S blocks are 128) and says so" {
    m260k
    as-cat "$M" | as-gptq -m rtn --ternary i2_s >"$BATS_TEST_TMPDIR/q"
    run --separate-stderr as-pack -m "$M" -o "$BATS_TEST_TMPDIR/o" -f i2_s "$BATS_TEST_TMPDIR/q"
    [ "$status" -eq 0 ]
    grep -qx "as-pack: tensor model.layers.0.self_attn.q_proj.weight: kept as dequantized F32 weights (rows of 64 weights do not fill I2_S's 128-weight blocks)" <<<"$stderr"
    [ "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["quantization_config"]["not_packed"]))' "$BATS_TEST_TMPDIR/o/config.json")" -eq 35 ]
}

@test "ternary: bad input: a 3:4 mask violation names the tensor and quad, nothing written; --ternary misuse" {
    load assert_refused
    m260k
    # absmean ternary codes (I2_S RTN: no 3:4 mask) packed as SHERRY
    as-cat "$M" | as-gptq -m rtn --ternary i2_s >"$BATS_TEST_TMPDIR/q"
    run --separate-stderr as-pack -m "$M" -o "$BATS_TEST_TMPDIR/bad" -f sherry "$BATS_TEST_TMPDIR/q"
    refused "as-pack: tensor model.layers.0.mlp.gate_proj.weight: quad [0, 12..15] has 2 zeros (SHERRY's 3:4 mask needs exactly one per contiguous quad)"
    [ ! -e "$BATS_TEST_TMPDIR/bad" ]
    [ -z "$(ls -A "$BATS_TEST_TMPDIR" | grep '^bad')" ] # no staging directory left either
    run --separate-stderr as-gptq --ternary sherry </dev/null
    refused "as-gptq: --ternary: needs --method rtn"
    run --separate-stderr as-gptq -m rtn --ternary q4 </dev/null
    refused "as-gptq: --ternary 'q4': expected tq1_0, tq2_0, i2_s, seq2 or sherry"
}

@test "ternary: AS_TERNARY_KERNELS=1 runs the packed layers through the int8 kernels: same PPL on every ISA, within 1% of the dequantized path; as-gen runs the kernels by default" {
    m260k
    local W=${AS_DATA:-../shared/data}/text/wikitext-2-raw/wiki.test.raw a b c
    as-cat "$M" | as-gptq -m rtn --ternary seq2 >"$BATS_TEST_TMPDIR/q"
    as-pack -m "$M" -o "$BATS_TEST_TMPDIR/o" -f seq2 "$BATS_TEST_TMPDIR/q" 2>/dev/null
    as-pack -m "$M" -o "$BATS_TEST_TMPDIR/fq" -f fakequant "$BATS_TEST_TMPDIR/q" 2>/dev/null
    a=$(as-eval -m "$BATS_TEST_TMPDIR/o" -f "$W" --bytes 8000 --ctx 128 --json | jq -r .ppl)
    b=$(AS_TERNARY_KERNELS=1 as-eval -m "$BATS_TEST_TMPDIR/o" -f "$W" --bytes 8000 --ctx 128 --json | jq -r .ppl)
    c=$(AS_TERNARY_KERNELS=1 AS_KERNEL_ISA=ref as-eval -m "$BATS_TEST_TMPDIR/o" -f "$W" --bytes 8000 --ctx 128 --json | jq -r .ppl)
    echo "dequantized $a, kernels $b, reference kernels $c"
    [ "$b" = "$c" ]
    [ "$a" != "$b" ] # the int8 activations are really used
    python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(abs(b / a - 1) > 0.01)' "$a" "$b"
    # as-gen: on the dequantized path the packed checkpoint generates what the fakequant one does;
    # by default it runs the kernels (says so with -v) and generates what AS_TERNARY_KERNELS=1 does
    [ "$(AS_TERNARY_KERNELS=0 as-gen -m "$BATS_TEST_TMPDIR/o" -p "Once upon a time" -n 16)" = "$(as-gen -m "$BATS_TEST_TMPDIR/fq" -p "Once upon a time" -n 16)" ]
    run --separate-stderr as-gen -m "$BATS_TEST_TMPDIR/o" -p "Once upon a time" -n 24 -v
    [ "$status" -eq 0 ]
    grep -qx "as-gen: 30 packed linears through the int8 kernels (seq2)" <<<"$stderr"
    [ "$output" = "$(AS_TERNARY_KERNELS=1 as-gen -m "$BATS_TEST_TMPDIR/o" -p "Once upon a time" -n 24)" ]
    run --separate-stderr env AS_TERNARY_KERNELS=0 as-gen -m "$BATS_TEST_TMPDIR/o" -p "Once upon a time" -n 24 -v
    grep -qx "as-gen: 30 packed linears on their dequantized f32 weights (AS_TERNARY_KERNELS=0)" <<<"$stderr"
}
