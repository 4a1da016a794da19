#!/usr/bin/env python3
"""Independent numpy check of as-pack's FP8 / INT8 / FP4 / W4A8 checkpoints (docs/lepto.md).

Usage: fp_oracle.py FORMAT MODEL_DIR PACKED_DIR [CALIB_STREAM]
       fp_oracle.py kv-cache MODEL_DIR PACKED_DIR CALIB_STREAM
       fp_oracle.py lepto-loss MODEL_DIR CALIB_STREAM REPORT

Recomputes, from the original model's weights and the format rules of REFERENCE.md alone (value
grids enumerated from the definitions, nearest value with ties to the even code), every code byte
and scale of every decoder linear, and compares them with the packed checkpoint's bytes. With
CALIB_STREAM, static input scales are checked against the calibration absmax / 448 (absmax method).
kv-cache: the FP8 KV-cache scales (kv_cache_scheme, model.layers.N.self_attn.k_scale / v_scale)
against keys and values recomputed in float64 from the calibration stream's layer inputs
(as-calib --keep-seqs S --kv-stats with S = all windows): RMSNorm, k/v projections, rotate-half
RoPE at each window position, absmax / 448.
lepto-loss: every line of as-lepto --report recomputed in float64 from the model and the kept
layer inputs (attention / MLP block forward written here): candidate scales, their block-output
MSE, the absmax baseline's, and the choice.
Prints one line per format and exits 1 on the first mismatch. Needs numpy only (its own safetensors reader)."""
import json
import struct
import sys

import numpy as np

F32 = np.float32


def load_file(path):
    """safetensors from the format description (u64 header length, JSON header, data buffer);
    FP8 / E8M0 tensors come back as their raw uint8 bytes, BF16 as float32."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    dt = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "U8": np.uint8, "I32": np.int32,
          "I64": np.int64, "F8_E4M3": np.uint8, "F8_E8M0": np.uint8, "BF16": np.uint16}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        a = np.frombuffer(raw[base + b : base + e], dt[t["dtype"]]).reshape(t["shape"])
        if t["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a
    return out


def e4m3_grid():
    """Positive E4M3FN values in code order 0..126: subnormals m*2^-9, then (1+m/8)*2^(e-7)."""
    v = [m * 2.0 ** -9 for m in range(8)]
    for e in range(1, 16):
        for m in range(8):
            if e == 15 and m == 7:
                break
            v.append((1 + m / 8) * 2.0 ** (e - 7))
    return np.array(v, dtype=np.float64)


E4M3 = e4m3_grid()
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float64)


def nearest_code(x, grid):
    """Index of the nearest grid value to |x| (saturating), ties to the even index; sign bit
    added by the caller."""
    a = np.minimum(np.abs(x.astype(np.float64)), grid[-1])
    hi = np.clip(np.searchsorted(grid, a, side="left"), 1, len(grid) - 1)
    lo = hi - 1
    dlo, dhi = a - grid[lo], grid[hi] - a
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (hi % 2 == 0))
    return np.where(pick_hi, hi, lo).astype(np.uint8)


def fp8_codes(x):
    c = nearest_code(x, E4M3)
    return (c | np.where(np.signbit(x), 0x80, 0)).astype(np.uint8)


def fp8_value(codes):
    v = E4M3[codes & 0x7F]
    return np.where(codes & 0x80, -v, v)


def fp4_codes(x):
    c = nearest_code(x, E2M1)
    return (c | np.where(np.signbit(x) & (c != 0), 8, 0)).astype(np.uint8)


def fp4_codes_signed(x):
    """The encoder keeps the sign of -0 results (code 8); compare magnitudes and signs of
    non-zero codes, and accept either sign for a zero magnitude."""
    return nearest_code(x, E2M1), np.signbit(x)


def fail(msg):
    print("MISMATCH: " + msg)
    sys.exit(1)


def linears(model):
    for name in sorted(model):
        if name.endswith("_proj.weight") and ".layers." in name:
            yield name[: -len(".weight")], model[name].astype(F32)


def read_stream_absmax(path):
    """act_absmax records of an as-calib stream (docs/stream-format.md): {layer.group: max}."""
    data, pos, out = open(path, "rb").read(), 0, {}
    while pos < len(data):
        magic, ver, kind, hlen, pad, plen, _ = struct.unpack_from("<4sHHIIQQ", data, pos)
        h = json.loads(data[pos + 32 : pos + 32 + hlen])
        body = pos + 32 + hlen
        if kind == 1 and h.get("role") == "act-absmax":
            p = h["payload"]
            if p["kind"] == "inline":
                raw = data[body : body + plen]
            else:
                with open(p["file"], "rb") as f:
                    f.seek(p["offset"])
                    raw = f.read(p["nbytes"])
            out[h["name"][: -len(".act_absmax")]] = np.frombuffer(raw, np.float32).max()
        pos = body + plen + pad
    return out


def read_stream_records(path, role):
    """{name: (header, float32 array)} of the records with this role."""
    data, pos, out = open(path, "rb").read(), 0, {}
    while pos < len(data):
        magic, ver, kind, hlen, pad, plen, _ = struct.unpack_from("<4sHHIIQQ", data, pos)
        h = json.loads(data[pos + 32 : pos + 32 + hlen])
        body = pos + 32 + hlen
        if kind == 1 and h.get("role") == role:
            p = h["payload"]
            if p["kind"] == "inline":
                raw = data[body : body + plen]
            else:
                with open(p["file"], "rb") as f:
                    f.seek(p["offset"])
                    raw = f.read(p["nbytes"])
            out[h["name"]] = (h, np.frombuffer(raw, np.float32).reshape(h["shape"]))
        pos = body + plen + pad
    return out


def check_kv_cache(model_dir, packed_dir, calib_path):
    cfg = json.load(open(model_dir + "/config.json"))
    qc = json.load(open(packed_dir + "/config.json"))["quantization_config"]
    want_scheme = {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False,
                   "symmetric": True}
    if qc.get("kv_cache_scheme") != want_scheme:
        fail("kv_cache_scheme %s" % json.dumps(qc.get("kv_cache_scheme")))
    model = load_file(model_dir + "/model.safetensors")
    packed_raw = open(packed_dir + "/model.safetensors", "rb").read()
    (n,) = struct.unpack_from("<Q", packed_raw, 0)
    header = json.loads(packed_raw[8 : 8 + n])
    packed = load_file(packed_dir + "/model.safetensors")
    inputs = read_stream_records(calib_path, "layer-input")
    L = cfg["num_hidden_layers"]
    H, KVH = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    D = cfg["hidden_size"]
    hd = cfg.get("head_dim") or D // H
    theta = cfg.get("rope_theta", 10000.0)
    eps = cfg.get("rms_norm_eps", 1e-5)
    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    for l in range(L):
        h, x = inputs["model.layers.%d.input" % l]
        seqlen = h["attrs"]["seqlen"]
        x = x.astype(np.float64)
        w = model["model.layers.%d.input_layernorm.weight" % l].astype(np.float64)
        xn = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps) * w
        p = "model.layers.%d.self_attn." % l
        k = xn @ model[p + "k_proj.weight"].astype(np.float64).T
        v = xn @ model[p + "v_proj.weight"].astype(np.float64).T
        pos = np.arange(x.shape[0]) % seqlen
        ang = pos[:, None] * inv_freq[None, :]
        k = k.reshape(x.shape[0], KVH, hd)
        k1, k2 = k[..., : hd // 2], k[..., hd // 2 :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        k = np.concatenate([k1 * c - k2 * s, k2 * c + k1 * s], axis=-1)
        for nm, t in (("k_scale", k), ("v_scale", v)):
            t_h = header.get(p + nm)
            if t_h is None or t_h["dtype"] != "F32" or t_h["shape"] != [1]:
                fail("%s%s: %s, expected F32 [1]" % (p, nm, json.dumps(t_h)))
            got = float(packed[p + nm][0])
            want = np.abs(t).max() / 448.0
            if not abs(got - want) <= 1e-5 * want:
                fail("%s%s = %r, recomputed absmax/448 = %r" % (p, nm, got, want))
    print("ok kv-cache: %d layers' k_scale/v_scale match the recomputed keys and values" % L)


def fq8(x, s):
    """FP8 E4M3 fake quantization of x with scale s (saturating at 448): DEC(ENC(x / s)) * s."""
    return fp8_value(fp8_codes(x / s)) * s


# The tool sums in float32 over 10^4-10^5 values, the oracle in float64, and a float32 rounding
# difference that flips an FP8 rounding of an input moves the loss by a whole FP8 step: measured
# 4.3e-4 relative at worst with the sgemm attention, 1.1e-3 with the flash prefill kernel
# (kernel_attn.c, same inputs); a wrong loss (wrong block, scale or rounding) is off by far more.
LOSS_RTOL = 3e-3


def check_lepto_loss(model_dir, calib_path, report_path):
    """Recomputes every LeptoQuant report line (docs/lepto.md) in float64 from the checkpoint and
    the kept layer inputs: the 13 candidate scales from the sorted |x| of the group's inputs, the
    block-output MSE of each candidate and of the absmax baseline (calibration act_absmax / 448),
    and the choice (the baseline unless a candidate is strictly better)."""
    cfg = json.load(open(model_dir + "/config.json"))
    model = {k: v.astype(np.float64) for k, v in load_file(model_dir + "/model.safetensors").items()}
    inputs = read_stream_records(calib_path, "layer-input")
    absmax = read_stream_absmax(calib_path)
    H, KVH = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    D = cfg["hidden_size"]
    hd = cfg.get("head_dim") or D // H
    theta = cfg.get("rope_theta", 10000.0)
    eps = cfg.get("rms_norm_eps", 1e-5)
    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    lines = [json.loads(t) for t in open(report_path)]
    if not lines:
        fail("empty report")
    worst = 0.0
    for r in lines:
        l, g = r["layer"], r["group"]
        h, x = inputs["model.layers.%d.input" % l]
        S, T = h["attrs"]["seqs"], h["attrs"]["seqlen"]
        x = x.astype(np.float64)
        P = "model.layers.%d." % l
        W = lambda n: model[P + n + ".weight"]

        def norm(v, w):
            return v / np.sqrt((v * v).mean(axis=1, keepdims=True) + eps) * w

        def rope(t, nh):
            t = t.reshape(S * T, nh, hd)
            ang = (np.arange(S * T) % T)[:, None] * inv_freq[None, :]
            c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
            t1, t2 = t[..., : hd // 2], t[..., hd // 2 :]
            return np.concatenate([t1 * c - t2 * s, t2 * c + t1 * s], axis=-1)

        def attn_core(xn):
            q = rope(xn @ W("self_attn.q_proj").T, H)
            k = rope(xn @ W("self_attn.k_proj").T, KVH)
            v = (xn @ W("self_attn.v_proj").T).reshape(S * T, KVH, hd)
            out = np.empty((S * T, H, hd))
            mask = np.triu(np.full((T, T), -np.inf), 1)
            for s0 in range(0, S * T, T):
                for hh in range(H):
                    kv = hh // (H // KVH)
                    a = q[s0 : s0 + T, hh] @ k[s0 : s0 + T, kv].T / np.sqrt(hd) + mask
                    a = np.exp(a - a.max(axis=1, keepdims=True))
                    a /= a.sum(axis=1, keepdims=True)
                    out[s0 : s0 + T, hh] = a @ v[s0 : s0 + T, kv]
            return out.reshape(S * T, H * hd)

        xn = norm(x, W("input_layernorm"))
        att = attn_core(xn)
        if g == "attn_qkv":
            inp, block = xn, lambda z: attn_core(z) @ W("self_attn.o_proj").T
        elif g == "attn_o":
            inp, block = att, lambda z: z @ W("self_attn.o_proj").T
        else:
            x2 = norm(x + att @ W("self_attn.o_proj").T, W("post_attention_layernorm"))
            silu = lambda z: z / (1 + np.exp(-z))
            mid = silu(x2 @ W("mlp.gate_proj").T) * (x2 @ W("mlp.up_proj").T)
            if g == "mlp_gate_up":
                inp = x2
                block = lambda z: (silu(z @ W("mlp.gate_proj").T) * (z @ W("mlp.up_proj").T)) @ W("mlp.down_proj").T
            elif g == "mlp_down":
                inp, block = mid, lambda z: z @ W("mlp.down_proj").T
            else:
                fail("layer %d: unknown group %r" % (l, g))
        ref = block(inp)

        def loss(s):
            return float(((block(fq8(inp, s)) - ref) ** 2).mean())

        tag = "layer %d %s" % (l, g)
        if r["values"] != inp.size:
            fail("%s: values %d, the kept windows hold %d" % (tag, r["values"], inp.size))
        a = np.sort(np.abs(inp).ravel().astype(np.float32))
        amax = float(a[-1])
        base = float(F32(absmax["model.layers.%d.%s" % (l, g)]) / F32(448))
        cands = r["candidates"]
        if [c["p"] for c in cands] != [round(0.999 + 0.00005 * i, 5) for i in range(8, 21)]:
            fail("%s: candidate percentiles %s" % (tag, [c["p"] for c in cands]))

        def close(got, want, what, rtol):
            global_worst = abs(got - want) / abs(want) if want else abs(got)
            if not global_worst <= rtol:
                fail("%s: %s %r, recomputed %r" % (tag, what, got, want))
            return global_worst

        close(r["absmax_scale"], base, "absmax_scale", 1e-6)
        worst = max(worst, close(r["loss_absmax"], loss(base), "loss_absmax", LOSS_RTOL))
        best = (loss(base), base, 1.0)
        for c in cands:
            n = min(round(a.size * c["p"]), a.size - 1)
            code = fp8_value(fp8_codes(np.array([a[n] * 448.0 / amax])))[0]
            want_s = amax / code
            close(c["scale"], want_s, "candidate p=%g scale" % c["p"], 1e-6)
            lw = loss(c["scale"])
            worst = max(worst, close(c["loss"], lw, "candidate p=%g loss" % c["p"], LOSS_RTOL))
            if lw < best[0] * (1 - 1e-6):
                best = (lw, c["scale"], c["p"])
        close(r["scale"], best[1], "chosen scale", 1e-6)
        close(r["loss"], best[0], "chosen loss", LOSS_RTOL)
        if r["percentile"] != best[2]:
            fail("%s: percentile %r, recomputed choice %r" % (tag, r["percentile"], best[2]))
    print("ok lepto-loss: %d groups, losses within %.2g relative of the float64 recomputation"
          % (len(lines), worst))


GROUP = {"q_proj": "attn_qkv", "k_proj": "attn_qkv", "v_proj": "attn_qkv", "o_proj": "attn_o",
         "gate_proj": "mlp_gate_up", "up_proj": "mlp_gate_up", "down_proj": "mlp_down"}


def check_input_scale(prefix, packed, calib, key="input_scale"):
    if calib is None or key not in packed_names(packed, prefix):
        return
    layer = prefix.split(".")[2]
    g = GROUP[prefix.split(".")[-1]]
    amax = calib["model.layers.%s.%s" % (layer, g)]
    want = F32(amax) / F32(448)
    got = packed[prefix + "." + key].reshape(-1)[0]
    if got != want:
        fail("%s.%s = %r, calibration absmax/448 = %r" % (prefix, key, got, want))


def packed_names(packed, prefix):
    return {k[len(prefix) + 1 :] for k in packed if k.startswith(prefix + ".")}


def check_fp8(prefix, w, packed, strategy, block=128, scale_key="weight_scale"):
    N, K = w.shape
    codes = packed[prefix + ".weight"].view(np.uint8)
    sc = packed[prefix + "." + scale_key].astype(F32)
    if strategy == "tensor":
        s = np.full((N, K), F32(np.abs(w).max()) / F32(448), F32)
        if sc.reshape(-1)[0] != s[0, 0]:
            fail(prefix + ": per-tensor scale")
    elif strategy == "channel":
        s = np.repeat((np.abs(w).max(axis=1) / F32(448)).astype(F32)[:, None], K, axis=1)
        if sc.shape != (N, 1) or np.any(sc[:, 0] != s[:, 0]):
            fail(prefix + ": per-channel scales")
    else:
        nb, kb = -(-N // block), -(-K // block)
        if sc.shape != (nb, kb):
            fail("%s: block scale shape %s, want %s" % (prefix, sc.shape, (nb, kb)))
        s = np.empty((N, K), F32)
        for i in range(nb):
            for j in range(kb):
                blk = w[i * block : (i + 1) * block, j * block : (j + 1) * block]
                v = F32(np.abs(blk).max()) / F32(448)
                if sc[i, j] != v:
                    fail("%s: block scale [%d,%d]" % (prefix, i, j))
                s[i * block : (i + 1) * block, j * block : (j + 1) * block] = v
    want = fp8_codes((w / s).astype(F32))
    if not np.array_equal(codes, want):
        bad = np.argwhere(codes != want)[0]
        fail("%s: FP8 code at %s: %#x, want %#x" % (prefix, bad, codes[tuple(bad)], want[tuple(bad)]))


def check_int8(prefix, w, packed):
    q = packed[prefix + ".weight"]
    s = (np.abs(w).max(axis=1) / F32(127)).astype(F32)
    if np.any(packed[prefix + ".weight_scale"][:, 0].astype(F32) != s):
        fail(prefix + ": int8 scales")
    want = np.clip(np.rint(w / s[:, None]), -128, 127).astype(np.int8)
    if q.dtype != np.int8 or not np.array_equal(q, want):
        fail(prefix + ": int8 codes")


def unpack_nibbles(packed):
    lo, hi = packed & 15, packed >> 4
    out = np.empty((packed.shape[0], packed.shape[1] * 2), np.uint8)
    out[:, 0::2], out[:, 1::2] = lo, hi  # even column in the low nibble
    return out


def check_fp4_codes(prefix, w, eff, got):
    mag, neg = fp4_codes_signed((w / eff).astype(F32))
    gm, gs = got & 7, (got & 8) != 0
    ok = (gm == mag) & ((gs == neg) | (mag == 0))
    if not ok.all():
        bad = np.argwhere(~ok)[0]
        fail("%s: FP4 code at %s" % (prefix, bad))


def check_nvfp4(prefix, w, packed, gscale):
    N, K = w.shape
    if packed[prefix + ".weight_global_scale"].reshape(-1)[0] != gscale:
        fail(prefix + ": weight_global_scale %r, want %r" % (packed[prefix + ".weight_global_scale"], gscale))
    bs = packed[prefix + ".weight_scale"].view(np.uint8)
    amax16 = np.abs(w.reshape(N, K // 16, 16)).max(axis=2).astype(F32)
    want_bs = fp8_codes((gscale * amax16 / F32(6)).astype(F32))
    if not np.array_equal(bs, want_bs):
        fail(prefix + ": NVFP4 E4M3 block scales")
    eff = (fp8_value(bs).astype(F32) / gscale).astype(F32)
    eff = np.repeat(eff, 16, axis=1)
    check_fp4_codes(prefix, w, np.where(eff > 0, eff, F32(1)), unpack_nibbles(packed[prefix + ".weight_packed"]))


def check_mxfp4(prefix, w, packed):
    N, K = w.shape
    e8 = packed[prefix + ".weight_scale"].view(np.uint8)
    amax = np.abs(w.reshape(N, K // 32, 32)).max(axis=2).astype(np.float64)
    e = np.floor(np.log2(amax)).astype(np.int64) - 2  # OCP MX: floor(log2 amax) - emax(E2M1)
    if not np.array_equal(e8.astype(np.int64), e + 127):
        fail(prefix + ": MXFP4 E8M0 scales")
    s = np.repeat(np.ldexp(F32(1), e).astype(F32), 32, axis=1)
    check_fp4_codes(prefix, w, s, unpack_nibbles(packed[prefix + ".weight_packed"]))


def check_w4a8(prefix, w, packed, group):
    N, K = w.shape
    G = K // group
    s = ((F32(2) * np.abs(w.reshape(N, G, group)).max(axis=2)) / F32(15)).astype(F32)
    if np.any(packed[prefix + ".weight_scale"].astype(F32) != s):
        fail(prefix + ": int4 group scales")
    q = np.clip(np.rint(w / np.repeat(s, group, axis=1)) + 8, 0, 15).astype(np.uint32)
    words = packed[prefix + ".weight_packed"].view(np.uint32)
    got = np.stack([(words >> (4 * i)) & 15 for i in range(8)], axis=2).reshape(N, -1)[:, :K]
    if not np.array_equal(got, q):
        fail(prefix + ": int4 codes (pack-quantized, offset binary)")


def main():
    fmt, model_dir, packed_dir = sys.argv[1:4]
    if fmt == "kv-cache":
        check_kv_cache(model_dir, packed_dir, sys.argv[4])
        return
    if fmt == "lepto-loss":  # MODEL CALIB REPORT
        check_lepto_loss(model_dir, packed_dir, sys.argv[4])
        return
    calib = read_stream_absmax(sys.argv[4]) if len(sys.argv) > 4 else None
    model = load_file(model_dir + "/model.safetensors")
    packed = load_file(packed_dir + "/model.safetensors")
    qc = json.load(open(packed_dir + "/config.json"))["quantization_config"]
    ignore = set(qc.get("ignore", []) + qc.get("ignored_layers", []))
    n = 0
    lin = dict(linears(model))
    for prefix, w in lin.items():
        if prefix in ignore:
            continue
        n += 1
        if fmt == "fp8":
            if qc["quant_method"] != "fp8" or qc["weight_block_size"] != [128, 128]:
                fail("config " + json.dumps(qc))
            check_fp8(prefix, w, packed, "block", 128, "weight_scale_inv")
            continue
        g0 = qc["config_groups"]["group_0"]
        wa = g0["weights"]
        if fmt == "float-quantized":
            check_fp8(prefix, w, packed, wa["strategy"], (wa.get("block_structure") or [128])[0])
            check_input_scale(prefix, packed, calib)
        elif fmt == "int-quantized":
            check_int8(prefix, w, packed)
        elif fmt == "nvfp4-pack-quantized":
            # fused q/k/v and gate/up share the global scale (largest absmax of the group)
            parts = {"q_proj": ["q_proj", "k_proj", "v_proj"], "k_proj": ["q_proj", "k_proj", "v_proj"],
                     "v_proj": ["q_proj", "k_proj", "v_proj"], "gate_proj": ["gate_proj", "up_proj"],
                     "up_proj": ["gate_proj", "up_proj"]}.get(prefix.split(".")[-1], [prefix.split(".")[-1]])
            base = prefix.rsplit(".", 1)[0]
            amax = max(np.abs(lin[base + "." + p]).max() for p in parts)
            check_nvfp4(prefix, w, packed, F32(448 * 6) / F32(amax))
        elif fmt == "mxfp4-pack-quantized":
            check_mxfp4(prefix, w, packed)
        elif fmt == "w4a8":
            check_w4a8(prefix, w, packed, wa["group_size"])
            check_input_scale(prefix, packed, calib)
        else:
            fail("unknown format " + fmt)
    if n == 0:
        fail("no quantized linears checked")
    print("ok %s: %d linears match the format rules" % (fmt, n))


if __name__ == "__main__":
    main()
