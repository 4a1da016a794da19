#!/usr/bin/env python3
"""Independent AWQ GEMM unpacker (numpy + safetensors), written from REFERENCE.md "AWQ GEMM" only.

qweight int32 [K, N/8]: nibble i (bits 4i..4i+3) of word (k, c) holds q[k, 8c + order[i]],
order = [0, 2, 4, 6, 1, 3, 5, 7]; qzeros int32 [K/gs, N/8] with the same interleave (no -1);
scales fp16 [K/gs, N]. W[n, k] = scale[g, n] * (q[k, n] - zero[g, n]) with g = k // gs, in float32.

Usage: awq_oracle.py CONFIG_JSON SAFETENSORS PREFIX EXPECTED_F32
  CONFIG_JSON holds the quantization_config (quant_method "awq"). Compares the dequantized
  [N, K] float32 matrix bitwise with EXPECTED_F32 (raw little-endian). Exit 0 on a match, 1 on a
  mismatch, 77 when numpy/safetensors are missing.
"""
import json
import sys

try:
    import numpy as np
    from safetensors.numpy import load_file
except ImportError:
    sys.exit(77)

ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def unpack(words):
    """uint32 [R, C] -> uint32 [R, 8C], column 8c + ORDER[i] from nibble i of word c."""
    out = np.zeros((words.shape[0], words.shape[1] * 8), dtype=np.uint32)
    for i, col in enumerate(ORDER):
        out[:, col::8] = (words >> np.uint32(4 * i)) & np.uint32(15)
    return out


def main():
    cfg_path, st_path, prefix, expected_path = sys.argv[1:5]
    cfg = json.load(open(cfg_path))
    assert cfg["quant_method"] == "awq" and cfg["version"] == "gemm" and cfg["bits"] == 4
    gs = cfg["group_size"]
    t = load_file(st_path)
    qweight = t[prefix + ".qweight"].view(np.uint32)
    qzeros = t[prefix + ".qzeros"].view(np.uint32)
    scales = t[prefix + ".scales"]
    assert scales.dtype == np.float16
    q = unpack(qweight).astype(np.int64)  # [K, N]
    z = unpack(qzeros).astype(np.int64)  # [G, N]
    K, N = q.shape
    assert qzeros.shape[0] == K // gs and scales.shape == (K // gs, N)
    g = np.arange(K) // gs
    w = scales.astype(np.float32)[g, :] * (q - z[g, :]).astype(np.float32)  # [K, N]
    got = np.ascontiguousarray(w.T)
    want = np.fromfile(expected_path, dtype="<f4").reshape(N, K)
    if got.tobytes() != want.tobytes():
        bad = np.argwhere(got.view(np.uint32) != want.view(np.uint32))[0]
        print(f"mismatch at {tuple(bad)}: oracle {got[tuple(bad)]} expected {want[tuple(bad)]}")
        sys.exit(1)
    sys.exit(0)


main()
