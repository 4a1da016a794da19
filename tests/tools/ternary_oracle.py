#!/usr/bin/env python3
"""Oracle for the ternary / 2-bit checkpoints of as-pack -f i2_s|seq2|sherry|tq1_0|tq2_0: a numpy
decoder of the layouts written from their definitions (docs/ternary.md,
../shared/reference/ternary-qat.md), independent of lib/common/pack_ternary.c.

  ternary_oracle.py decode FMT N K VALUES.f32 PACKED.bin
      the packed bytes (test_pack_ternary write) decoded by numpy equal VALUES bit for bit
  ternary_oracle.py compare PACKED_DIR FAKEQUANT_DIR
      every PREFIX.weight_packed of PACKED_DIR decoded to f32 must equal PREFIX.weight of the
      fakequant checkpoint written from the same stream: bit for bit for the ternary formats
      (value (code - 1) * scale), within one f32 rounding for SEQ2 ((code - 1.5) * scale against
      the fakequant's scale * code + min); the layers listed not_packed must be plain weights there.
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file

# STQ1_0 codebook rule: slot = z << 2 | r, non-zero lanes +1, (r&1 ? -1 : +1), (r&2 ? -1 : +1),
# sign negates; lane p of the pattern is weight 4g + p of quad g.
def sherry_patterns():
    pats = np.zeros((32, 4), dtype=np.int8)
    for ix in range(32):
        sign, z, r = ix >> 4, (ix >> 2) & 3, ix & 3
        vals, nz = [], 0
        for p in range(4):
            if p == z:
                vals.append(0)
                continue
            v = 1 if nz == 0 else (-1 if r & (1 << (nz - 1)) else 1)
            nz += 1
            vals.append(-v if sign else v)
        pats[ix] = vals
    return pats


def decode(fmt, blob, n, k):
    b = np.frombuffer(blob.tobytes(), dtype=np.uint8)
    if fmt == "I2_S":  # byte p of a 128-block: elements p + 32 i at shift 6 - 2 i; tensor scale
        rows = b[: n * k // 4].reshape(n, k // 128, 32)
        scale = np.frombuffer(b[n * k // 4: n * k // 4 + 4].tobytes(), dtype="<f4")[0]
        codes = np.concatenate([(rows >> (6 - 2 * i)) & 3 for i in range(4)], axis=2)
        return (codes.reshape(n, k).astype(np.float32) - 1) * scale
    if fmt == "SEQ2":  # byte g of a 32-block: elements 4g .. 4g + 3, LSB first; row scales
        rows = b[: n * k // 4].reshape(n, k // 4)
        scale = np.frombuffer(b[n * k // 4: n * k // 4 + 4 * n].tobytes(), dtype="<f4")
        codes = np.stack([(rows >> (2 * p)) & 3 for p in range(4)], axis=2).reshape(n, k)
        return (codes.astype(np.float32) - np.float32(1.5)) * scale[:, None]
    if fmt == "SHERRY":  # 32-blocks of 5 bytes: 8 five-bit pattern indices, LSB first
        rb = k // 32 * 5
        scale = np.frombuffer(b[n * rb: n * rb + 4 * n].tobytes(), dtype="<f4")
        pats = sherry_patterns()
        blocks = b[: n * rb].reshape(n * k // 32, 5).astype(np.uint64)
        bits = sum(blocks[:, i] << np.uint64(8 * i) for i in range(5))
        ix = np.stack([(bits >> np.uint64(5 * g)) & np.uint64(31) for g in range(8)], axis=1)
        out = pats[ix.astype(np.int64)].reshape(n, k).astype(np.float32)
        return out * scale[:, None]
    sys.exit(f"oracle: no decoder for {fmt}")


def compare(packed_dir, fq_dir):
    cfg = json.load(open(f"{packed_dir}/config.json"))["quantization_config"]
    fmt = cfg["format"]
    packed = load_file(f"{packed_dir}/model.safetensors")
    fq = load_file(f"{fq_dir}/model.safetensors")
    n_ok = 0
    for name in sorted(packed):
        if not name.endswith(".weight_packed"):
            continue
        prefix = name[: -len(".weight_packed")]
        n, k = (int(v) for v in packed[prefix + ".weight_shape"])
        got = decode(fmt, packed[name], n, k)
        want = fq[prefix + ".weight"].astype(np.float32)
        if fmt == "SEQ2":  # one rounding of scale * q + min: relative to the row's largest value
            tol = np.float32(2.4e-7) * np.abs(want).max(axis=1, keepdims=True)
            ok = np.all(np.abs(got - want) <= tol)
        else:
            ok = np.array_equal(got.view(np.uint32), want.view(np.uint32))
        if not ok:
            sys.exit(f"{prefix}: decoded {fmt} weights differ from the fakequant checkpoint")
        n_ok += 1
    for p in cfg["not_packed"]:
        if p + ".weight" not in packed or p + ".weight_packed" in packed:
            sys.exit(f"{p}: listed not_packed but not a plain weight")
        if not np.array_equal(packed[p + ".weight"], fq[p + ".weight"]):
            sys.exit(f"{p}: kept weights differ from the fakequant checkpoint")
    print(f"{fmt}: {n_ok} packed layers equal the fakequant weights, {len(cfg['not_packed'])} kept dense")


def decode_file(fmt, n, k, values, packed):
    want = np.fromfile(values, dtype="<f4").reshape(n, k)
    got = decode(fmt, np.fromfile(packed, dtype=np.uint8), n, k)
    if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
        bad = np.argwhere(got != want)
        sys.exit(f"{fmt}: {len(bad)} values differ from numpy's decoding, first at {bad[0]}")
    print(f"{fmt}: {n}x{k} decoded by numpy bit for bit")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 7 and sys.argv[1] == "decode":
        decode_file(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6])
    else:
        sys.exit(__doc__)
