#!/usr/bin/env python3
"""Independent dequantizer for GPTQ v1 and compressed-tensors pack-quantized checkpoints.

Test oracle for tests/unit/test_pack.c, written from the format descriptions (REFERENCE.md
"Formats", AutoGPTQ's dequantization, compressed-tensors' unpack_from_int32), not from the C code.
It reads files with the `safetensors` package (BF16 tensors, which numpy cannot represent, are
read as raw uint16 from the header offsets) and computes W_hat = scale * (q - zero) in float32.

Usage: pack_oracle.py JOBS
  JOBS: lines "FORMAT CONFIG_JSON SAFETENSORS PREFIX EXPECTED_F32 OUT_F32", FORMAT gptq|ct.
  Writes each dequantized [N, K] float32 matrix to OUT_F32 and compares it bitwise with
  EXPECTED_F32. Exit 0 when all match, 1 otherwise, 77 when numpy/safetensors are missing.
"""
import json
import struct
import sys

try:
    import numpy as np
    from safetensors import safe_open
except ImportError:
    sys.exit(77)


class Checkpoint:
    def __init__(self, path):
        self.path = path
        self.f = safe_open(path, framework="numpy")
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            self.header = json.loads(fh.read(n))
            self.data_start = 8 + n

    def has(self, name):
        return name in self.f.keys()

    def dtype(self, name):
        return self.header[name]["dtype"]

    def get(self, name):
        if self.header[name]["dtype"] == "BF16":
            # bf16 is the top half of an f32: widen by shifting into the high 16 bits.
            b, e = self.header[name]["data_offsets"]
            with open(self.path, "rb") as fh:
                fh.seek(self.data_start + b)
                raw = np.frombuffer(fh.read(e - b), dtype="<u2")
            f32 = (raw.astype(np.uint32) << 16).view(np.float32)
            return f32.reshape(self.header[name]["shape"])
        return self.f.get_tensor(name)


def unpack_gptq_rows(packed, bits, count):
    """packed uint32 [R, C], values along dim 0 -> uint32 [count, C] (AutoGPTQ order)."""
    maxq = (1 << bits) - 1
    if bits in (2, 4, 8):
        per = 32 // bits
        out = np.zeros((packed.shape[0] * per, packed.shape[1]), dtype=np.uint32)
        for j in range(per):
            out[j::per] = (packed >> np.uint32(bits * j)) & np.uint32(maxq)
        return out[:count]
    assert bits == 3
    # AutoGPTQ 3-bit: 32 values in 3 words; values 10 and 21 straddle word boundaries.
    w = packed.reshape(-1, 3, packed.shape[1])
    w0, w1, w2 = w[:, 0], w[:, 1], w[:, 2]
    vals = []
    for j in range(10):
        vals.append((w0 >> np.uint32(3 * j)) & 7)
    vals.append(((w0 >> np.uint32(30)) | ((w1 & 1) << np.uint32(2))) & 7)
    for j in range(10):
        vals.append((w1 >> np.uint32(3 * j + 1)) & 7)
    vals.append(((w1 >> np.uint32(31)) | ((w2 & 3) << np.uint32(1))) & 7)
    for j in range(10):
        vals.append((w2 >> np.uint32(3 * j + 2)) & 7)
    out = np.stack(vals, axis=1)  # [blocks, 32, C]
    return out.reshape(-1, packed.shape[1])[:count]


def dequant_gptq(cfg, ck, prefix):
    bits = cfg["bits"]
    qweight = ck.get(prefix + ".qweight").view(np.uint32)
    N = qweight.shape[1]
    K = qweight.shape[0] * 32 // bits
    q = unpack_gptq_rows(qweight, bits, K).astype(np.int64)  # [K, N]
    qzeros = ck.get(prefix + ".qzeros").view(np.uint32)
    # qzeros packs along N: unpack the transposed matrix, then add back the stored -1.
    zeros = unpack_gptq_rows(np.ascontiguousarray(qzeros.T), bits, N).T.astype(np.int64) + 1
    assert ck.dtype(prefix + ".scales") == "F16", "GPTQ scales must be fp16"
    scales = ck.get(prefix + ".scales").astype(np.float32)  # [G, N]
    g_idx = ck.get(prefix + ".g_idx").astype(np.int64)
    diff = (q - zeros[g_idx]).astype(np.float32)  # [K, N]
    w = scales[g_idx] * diff
    return np.ascontiguousarray(w.T.astype(np.float32))


def unpack_ct_cols(packed, bits, count):
    """uint32 [R, W] -> [R, count]: element i at bits bits*(i % per) of word i // per."""
    per = 32 // bits
    mask = np.uint32((1 << bits) - 1)
    out = np.zeros((packed.shape[0], packed.shape[1] * per), dtype=np.uint32)
    for j in range(per):
        out[:, j::per] = (packed >> np.uint32(bits * j)) & mask
    return out[:, :count]


def dequant_ct(cfg, ck, prefix):
    wcfg = cfg["config_groups"]["group_0"]["weights"]
    bits = wcfg["num_bits"]
    N, K = [int(v) for v in ck.get(prefix + ".weight_shape")]
    packed = ck.get(prefix + ".weight_packed").view(np.uint32)
    stored = unpack_ct_cols(packed, bits, K).astype(np.int64)
    signed = stored - (1 << (bits - 1))  # offset binary -> signed int value
    scale = ck.get(prefix + ".weight_scale").astype(np.float32)  # [N, G]
    G = scale.shape[1]
    if wcfg["symmetric"]:
        zp = np.zeros((N, G), dtype=np.int64)
    else:
        zpp = ck.get(prefix + ".weight_zero_point").view(np.uint32)  # [ceil(N/per), G]
        zp = unpack_ct_cols(np.ascontiguousarray(zpp.T), bits, N).T.astype(np.int64)
        zp -= 1 << (bits - 1)
    if ck.has(prefix + ".weight_g_idx"):
        g_idx = ck.get(prefix + ".weight_g_idx").astype(np.int64)
    elif wcfg["strategy"] == "group":
        g_idx = np.arange(K) // wcfg["group_size"]
    else:
        g_idx = np.zeros(K, dtype=np.int64)
    diff = (signed - zp[:, g_idx]).astype(np.float32)
    return np.ascontiguousarray((scale[:, g_idx] * diff).astype(np.float32))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    bad = 0
    with open(sys.argv[1]) as fh:
        for line in fh:
            if not line.strip():
                continue
            fmt, cfg_path, st, prefix, expected, out = line.split()
            with open(cfg_path) as cf:
                cfg = json.load(cf)
            ck = Checkpoint(st)
            w = dequant_gptq(cfg, ck, prefix) if fmt == "gptq" else dequant_ct(cfg, ck, prefix)
            w.tofile(out)
            exp = np.fromfile(expected, dtype=np.float32).reshape(w.shape)
            if exp.view(np.uint32).tobytes() != w.view(np.uint32).tobytes():
                idx = np.argwhere(exp.view(np.uint32) != w.view(np.uint32))[0]
                print(f"pack_oracle: {st}: mismatch at {tuple(idx)}: "
                      f"{w[tuple(idx)]!r} vs {exp[tuple(idx)]!r}", file=sys.stderr)
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
