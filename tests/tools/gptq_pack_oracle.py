#!/usr/bin/env python3
"""Independent reader of as-pack's GPTQ v1 and compressed-tensors checkpoints (test oracle).

Written from /work/shared/REFERENCE.md ("Formats"), not from the C code:
  GPTQ v1: qweight int32 [K*bits/32, N], codes packed along the input dim, lowest bits first
    (a little-endian bit stream per output column: code k is bits [k*bits, (k+1)*bits));
    qzeros int32 [G, N*bits/32], the same bit stream along N, storing zero - 1;
    scales fp16 [G, N]; g_idx int32 [K]; W[n,k] = scales[g,n] * (q[n,k] - zero[g,n]), g = g_idx[k].
  compressed-tensors pack-quantized (symmetric): weight_packed int32 [N, ceil(K/(32/bits))],
    element i in word i // (32/bits) at bits bits*(i % (32/bits)), stored as value + 2^(bits-1);
    weight_scale [N, G] in the model dtype; weight_g_idx only with group actorder.

It dequantizes every packed linear and compares it with the same layer of a fakequant checkpoint of
the same stream (W_hat = scale * (q - zero) with the quantizer's f32 scales):
  gptq: scales are fp16 in the file, so for each group the f32 scale s that reproduces the
        fakequant weights bit for bit is recovered, and then fp16(s) must equal the stored scale
        and the codes must give exactly the fakequant weights: f32(s * (q - zero)) == W_hat.
  ct:   scales are f32 (model dtype): the dequantized weights must equal W_hat bit for bit.
Linears kept unpacked (fallback) must equal W_hat exactly; every other tensor must equal the
original model's. Prints a JSON summary {"packed", "fallback", "copied"} on success.

Usage: gptq_pack_oracle.py gptq|ct PACKED_DIR FAKEQUANT_DIR ORIGINAL_DIR
Exit 0: all equal; 1: a mismatch (message on stderr); 77: numpy/safetensors missing.
"""
import json
import sys

try:
    import numpy as np
    from safetensors.numpy import load_file
except ImportError:
    sys.exit(77)


def fail(msg):
    print("gptq_pack_oracle: " + msg, file=sys.stderr)
    sys.exit(1)


def bitstream_codes(words, count, bits):
    """words: uint32 [rows, W] (one little-endian bit stream per row) -> int64 [rows, count]."""
    rows = words.shape[0]
    raw = np.ascontiguousarray(words.astype("<u4")).view(np.uint8).reshape(rows, -1)
    bitv = np.unpackbits(raw, axis=1, bitorder="little")[:, : count * bits]
    bitv = bitv.reshape(rows, count, bits).astype(np.int64)
    return (bitv << np.arange(bits, dtype=np.int64)).sum(axis=2)


def dequant_gptq(t, prefix, cfg, N, K):
    bits = cfg["bits"]
    qweight = t[prefix + ".qweight"].view(np.uint32)
    qzeros = t[prefix + ".qzeros"].view(np.uint32)
    scales = t[prefix + ".scales"]
    g_idx = t[prefix + ".g_idx"].astype(np.int64)
    if qweight.shape != (K * bits // 32, N):
        fail(f"{prefix}.qweight: shape {qweight.shape}, REFERENCE wants {(K * bits // 32, N)}")
    if scales.dtype != np.float16:
        fail(f"{prefix}.scales: dtype {scales.dtype}, GPTQ v1 stores fp16")
    G = scales.shape[0]
    if scales.shape != (G, N) or qzeros.shape != (G, N * bits // 32) or g_idx.shape != (K,):
        fail(f"{prefix}: scales {scales.shape} / qzeros {qzeros.shape} / g_idx {g_idx.shape} "
             f"inconsistent with N={N}, K={K}, bits={bits}")
    if g_idx.min() < 0 or g_idx.max() >= G:
        fail(f"{prefix}.g_idx: group index outside 0..{G - 1}")
    gs = cfg["group_size"]
    if not cfg["desc_act"]:  # without act-order g_idx is k // group_size (-1: one group)
        want = np.arange(K) // gs if gs > 0 else np.zeros(K, np.int64)
        if not np.array_equal(g_idx, want):
            fail(f"{prefix}.g_idx: not k // group_size although desc_act is false")
    if cfg["sym"] and bits == 4 and not np.all(qzeros == 0x77777777):
        fail(f"{prefix}.qzeros: symmetric 4-bit must be all 0x77777777")
    q = bitstream_codes(qweight.T, K, bits)  # [N, K]
    zero = bitstream_codes(qzeros, N, bits) + 1  # [G, N], stored as zero - 1
    m = q - zero[g_idx, np.arange(N)[:, None]]  # [N, K], exact integers
    s16 = scales[g_idx, np.arange(N)[:, None]]  # [N, K]
    return m, s16, g_idx


def recover_f32_scales(w_fq, m):
    """Per row of one group: the f32 scale s with f32(s * m) == w_fq for every element.
    w_fq f32 [N, c], m int [N, c]. Returns (s [N], found [N], any_code [N])."""
    N = m.shape[0]
    rows = np.arange(N)
    nz = m != 0
    i = np.argmax(np.abs(m), axis=1)
    denom = np.where(nz[rows, i], m[rows, i], 1).astype(np.float64)
    est = (w_fq[rows, i].astype(np.float64) / denom).astype(np.float32)
    mf = m.astype(np.float32)
    s = np.zeros(N, np.float32)
    found = ~nz.any(axis=1) & ~w_fq.any(axis=1)  # all codes at the zero point: no scale to find
    up = down = est
    cands = [est]
    for _ in range(3):  # the division may be off by an ulp or two
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(-np.inf))
        cands += [up, down]
    for c in cands:
        ok = ~found & np.all((c[:, None] * mf).astype(np.float32) == w_fq, axis=1)
        s[ok] = c[ok]
        found |= ok
    return s, found, nz.any(axis=1)


def check_gptq(t, prefix, cfg, w_fq):
    N, K = w_fq.shape
    m, s16, g_idx = dequant_gptq(t, prefix, cfg, N, K)
    for g in range(int(g_idx.max()) + 1):
        cols = np.nonzero(g_idx == g)[0]
        s, found, any_code = recover_f32_scales(w_fq[:, cols], m[:, cols])
        if not found.all():
            n = int(np.argmin(found))
            fail(f"{prefix}: row {n} group {g}: the codes and zeros do not reproduce the "
                 f"fakequant weights with any single scale")
        bad = any_code & (s.astype(np.float16) != s16[:, cols[0]])
        if bad.any():
            n = int(np.argmax(bad))
            fail(f"{prefix}: row {n} group {g}: fp16 scale {float(s16[n, cols[0]])!r} is not "
                 f"the fakequant scale {float(s[n])!r} rounded to fp16")
    # Hence a loader's f32(scale16) * (q - zero) is the fakequant W_hat with its scales rounded
    # to fp16, element for element.


def check_ct(t, prefix, wcfg, w_fq):
    N, K = w_fq.shape
    bits, gs = wcfg["num_bits"], wcfg["group_size"]
    if not wcfg["symmetric"]:
        fail(f"{prefix}: asymmetric compressed-tensors is not handled by this oracle")
    packed = t[prefix + ".weight_packed"].view(np.uint32)
    scale = t[prefix + ".weight_scale"]
    shape = t[prefix + ".weight_shape"]
    per = 32 // bits
    if packed.shape != (N, -(-K // per)):
        fail(f"{prefix}.weight_packed: shape {packed.shape}, want {(N, -(-K // per))}")
    if list(shape) != [N, K]:
        fail(f"{prefix}.weight_shape: {list(shape)}, want {[N, K]}")
    if prefix + ".weight_zero_point" in t:
        fail(f"{prefix}: weight_zero_point present although symmetric")
    codes = bitstream_codes(packed, K, bits) - (1 << (bits - 1))  # value + 2^(bits-1) stored
    gi = t.get(prefix + ".weight_g_idx")
    gi = gi.astype(np.int64) if gi is not None else (np.arange(K) // gs if gs and gs > 0
                                                      else np.zeros(K, np.int64))
    if scale.shape[0] != N or gi.max() >= scale.shape[1]:
        fail(f"{prefix}.weight_scale: shape {scale.shape} does not cover the groups")
    w = scale.astype(np.float32)[np.arange(N)[:, None], gi[None, :]] * codes.astype(np.float32)
    if not np.array_equal(w.astype(np.float32), w_fq):
        bad = np.argwhere(w != w_fq)[0]
        fail(f"{prefix}: dequantized [{bad[0]},{bad[1]}] = {w[tuple(bad)]!r}, fakequant "
             f"{w_fq[tuple(bad)]!r}")


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("gptq", "ct"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    fmt, packed_dir, fq_dir, orig_dir = sys.argv[1:]
    t = load_file(packed_dir + "/model.safetensors")
    fq = load_file(fq_dir + "/model.safetensors")
    orig = load_file(orig_dir + "/model.safetensors")
    with open(packed_dir + "/config.json") as f:
        qcfg = json.load(f)["quantization_config"]
    n_packed = n_fallback = n_copied = 0
    for name, w0 in orig.items():
        w_fq = fq[name]
        if name not in t:  # a packed linear
            prefix = name[: -len(".weight")]
            if fmt == "gptq":
                check_gptq(t, prefix, qcfg, w_fq)
            else:
                check_ct(t, prefix, qcfg["config_groups"]["group_0"]["weights"], w_fq)
            n_packed += 1
        elif np.array_equal(t[name], w0) and np.array_equal(w_fq, w0):
            n_copied += 1  # not quantized: copied through unchanged
        elif np.array_equal(t[name], w_fq) and not np.array_equal(w_fq, w0):
            n_fallback += 1  # kept as W_hat in the model dtype
        else:
            fail(f"{name}: neither the original tensor nor the fakequant W_hat")
    print(json.dumps({"packed": n_packed, "fallback": n_fallback, "copied": n_copied}))


if __name__ == "__main__":
    main()
