#!/usr/bin/env python3
"""options_oracle: numpy helpers for tests/tools/options.bats, written from the documents
(docs/stream-format.md, docs/tools.md, docs/lepto.md), never from the C code.

  tensor STREAM NAME OUT.f32      the F32 payload of record NAME (inline, or a reference into its
                                  file) written raw; exit 1 if absent
  st-tensor FILE.safetensors NAME OUT.f32
                                  an F32/BF16 tensor of a safetensors file as raw float32
  damp H.f32 K P                  the documented absolute damping P * mean(diag(H)) of a [K, K]
                                  Hessian, printed with 9 significant digits
  gptq-dir DIR N K BITS GROUP DAMP BLOCK ACT STATIC
                                  DIR/meta.txt for tests/tools/gptq_oracle.py (symmetric GPTQ)
  compare A.f32 B.f32 N K         print "close_fraction max_abs_diff" of two [N, K] matrices
                                  (close: |a - b| <= 1e-6, float32 rounding; a different
                                  integer code differs by a whole quantization step, ~1e-2)
  kurtosis MODEL_DIR K            names of the decoder linear weights whose kurtosis
                                  E[(x-mu)^4]/sigma^4 exceeds K (Pearson, not excess), sorted
  awq-qkv MODEL_DIR CALIB SCALED LAYER GROUP ALPHA DUO
                                  docs/awq.md step 2 for layer LAYER's q/k/v group: x_mean from
                                  CALIB's act-mean-abs record, w_mean = column mean of |W| / (max
                                  |W| of its (row, group) + 1e-6) over stacked q, k, v; s = x^a /
                                  (w^(1-a) + 1e-4) (DUO 1) or x^a (DUO 0), clamped >= 1e-4,
                                  divided by sqrt(max s * min s). The s the tool folded is
                                  input_layernorm / its value in SCALED (step 3). Prints the max
                                  relative difference.
  chisq SAMPLES PROBS             Pearson chi-square of the observed pieces (one hex piece per line
                                  of SAMPLES) against the expected distribution (lines
                                  "prob<TAB>hex" of forward_oracle.py next-probs; equal pieces
                                  merged); bins with expected count < 5 pooled. Prints "chi2 df
                                  critical" (critical: the 0.999 quantile, Wilson-Hilferty) and
                                  exits 1 if chi2 > critical or a piece of probability 0 appears.
"""
import collections
import json
import math
import struct
import sys

import numpy as np


def read_records(path):
    data = open(path, "rb").read()
    pos = 0
    while pos + 32 <= len(data):
        magic, version, kind, hlen, pad, plen, _ = struct.unpack_from("<4sHHIIQQ", data, pos)
        if magic != b"ASTR":
            sys.exit("options_oracle: %s: bad magic at %d" % (path, pos))
        h = json.loads(data[pos + 32:pos + 32 + hlen])
        body = pos + 32 + hlen
        if kind == 1:
            p = h["payload"]
            if p["kind"] == "inline":
                payload = data[body:body + plen]
            else:
                with open(p["file"], "rb") as f:
                    f.seek(p["offset"])
                    payload = f.read(p["nbytes"])
            yield h, payload
        pos = body + plen + pad


def st_tensor(path, name):
    raw = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    hdr = json.loads(raw[8:8 + n])
    t = hdr[name]
    a, b = t["data_offsets"]
    buf = raw[8 + n + a:8 + n + b]
    if t["dtype"] == "F32":
        return np.frombuffer(buf, "<f4").reshape(t["shape"])
    if t["dtype"] == "BF16":
        return (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(t["shape"])
    sys.exit("options_oracle: %s: %s: dtype %s" % (path, name, t["dtype"]))


def chi2_critical(df, z=3.090232):  # z of the 0.999 quantile
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def main(a):
    cmd = a[1]
    if cmd == "tensor":
        for h, payload in read_records(a[2]):
            if h["name"] == a[3]:
                if h["dtype"] != "F32":
                    sys.exit("options_oracle: %s: dtype %s" % (a[3], h["dtype"]))
                open(a[4], "wb").write(payload)
                return
        sys.exit("options_oracle: %s: no record %s" % (a[2], a[3]))
    elif cmd == "st-tensor":
        st_tensor(a[2], a[3]).astype("<f4").tofile(a[4])
    elif cmd == "damp":
        k = int(a[3])
        H = np.fromfile(a[2], "<f4").reshape(k, k).astype(np.float64)
        print("%.9g" % (float(a[4]) * np.mean(np.diag(H))))
    elif cmd == "gptq-dir":
        d, n, k, bits, g, damp, block, act, static = a[2:11]
        with open(d + "/meta.txt", "w") as f:
            # symmetric GPTQ, no retries needed for a positive definite Hessian
            f.write("%s %s %s %s 1 %s %s %s %s 0 0\n0.01 0\n" % (n, k, bits, g, act, static, damp, block))
    elif cmd == "compare":
        n, k = int(a[4]), int(a[5])
        x = np.fromfile(a[2], "<f4").reshape(n, k)
        y = np.fromfile(a[3], "<f4").reshape(n, k)
        print("%.6f %.3g" % ((np.abs(x - y) <= 1e-6).mean(), np.abs(x - y).max()))
    elif cmd == "kurtosis":
        import glob
        out = []
        for f in sorted(glob.glob(a[2] + "/*.safetensors")):
            raw = open(f, "rb").read()
            (n,) = struct.unpack_from("<Q", raw, 0)
            for name in json.loads(raw[8:8 + n]):
                if name.endswith("proj.weight") and ".layers." in name:
                    x = st_tensor(f, name).astype(np.float64).ravel()
                    c = x - x.mean()
                    kurt = (c ** 4).mean() / (c ** 2).mean() ** 2
                    if kurt > float(a[3]):
                        out.append(name)
        print("\n".join(sorted(out)))
    elif cmd == "awq-qkv":
        model, calib, scaled, layer, gs, a, duo = a[2], a[3], a[4], int(a[5]), int(a[6]), float(a[7]), a[8] == "1"
        st = model + "/model.safetensors"
        pre = "model.layers.%d." % layer
        x = None
        for h, payload in read_records(calib):
            if h["name"] == pre + "attn_qkv.act_mean_abs":
                x = np.frombuffer(payload, "<f4").astype(np.float64)
        norm_scaled = None
        for h, payload in read_records(scaled):
            if h["name"] == pre + "input_layernorm.weight":
                norm_scaled = np.frombuffer(payload, "<f4").astype(np.float64)
        W = np.concatenate([st_tensor(st, pre + "self_attn.%s_proj.weight" % p).astype(np.float64)
                            for p in "qkv"])
        n, k = W.shape
        g = np.abs(W).reshape(n, k // gs, gs)
        wn = (g / (g.max(-1, keepdims=True) + 1e-6)).reshape(n, k)
        w = wn.mean(0)
        s_exp = x ** a / (w ** (1 - a) + 1e-4) if duo else x ** a
        s_exp = np.maximum(s_exp, 1e-4)
        s_exp = s_exp / np.sqrt(s_exp.max() * s_exp.min())
        s_got = st_tensor(st, pre + "input_layernorm.weight").astype(np.float64) / norm_scaled
        print("%.3g" % np.max(np.abs(s_got - s_exp) / s_exp))
    elif cmd == "chisq":
        obs = collections.Counter(l.strip() for l in open(a[2]) if l.strip() != "")
        exp = collections.defaultdict(float)
        for line in open(a[3]):
            p, piece = line.rstrip("\n").split("\t")
            exp[piece] += float(p)
        total = sum(obs.values())
        for piece in obs:
            if exp.get(piece, 0.0) == 0.0:
                sys.exit("options_oracle: sampled piece %r has probability 0" % piece)
        big = [p for p in exp if exp[p] * total >= 5]
        e = [exp[p] * total for p in big] + [total * (1 - sum(exp[p] for p in big))]
        o = [obs.get(p, 0) for p in big] + [total - sum(obs.get(p, 0) for p in big)]
        if e[-1] < 5:  # pool a small remainder into the smallest bin
            e[-2] += e[-1]
            o[-2] += o[-1]
            e, o = e[:-1], o[:-1]
        chi2 = sum((oi - ei) ** 2 / ei for oi, ei in zip(o, e))
        df = len(e) - 1
        crit = chi2_critical(df)
        print("%.3f %d %.3f" % (chi2, df, crit))
        if df < 2 or chi2 > crit:
            sys.exit(1)
    else:
        sys.exit("options_oracle: unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
