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
