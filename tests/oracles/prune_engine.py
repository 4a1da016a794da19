#!/usr/bin/env python3
"""Independent float64 oracle of the pruned prefill (lib/common/prune_engine.c, docs/token-pruning.md)
on a llama2.c checkpoint, built on tests/tools/forward_oracle.py's reader, RMSNorm and SwiGLU
conventions and tests/oracles/prune_tokens.py's strategies (both independent of lib/common).

  prune_engine.py check CKPT.bin IDS METHOD KEEP LAYER KEEP_FIRST KEEP_LAST OUT.astr [NAME=VALUE..]

importance=last|tail|recv|accum|norm among the NAME=VALUE pairs chooses the scores (as-prune
--importance): the last token's attention row (default; for idpruner recv, lambda 0.875 and mmr_norm 1), the mean row of the KEEP_LAST tokens, the
attention each token receives averaged over the rows that see it (n - j of them), its plain sum
over all rows, or the L2 norm of the residual row entering LAYER.

The prompt IDS (comma-separated) runs whole through layers < LAYER; the strategy sees the residual
rows entering LAYER, the last token's head-mean attention at LAYER-1 as scores and that layer's
post-RoPE keys; the kept/merged rows are renumbered 0..M-1, the caches of layers < LAYER become
W . (pre-RoPE keys) rotated at the new positions and W . values; layers >= LAYER run on the M rows.
Then one greedy token is decoded at position M through every layer. Checks OUT.astr (as-prune
tokens --ids): kept indices exact, both logits rows within 2e-4 of the oracle's.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
sys.path.insert(0, HERE)
import forward_oracle as fo  # noqa: E402
import prune_tokens as pt  # noqa: E402


def rope_at(x, pos, hs):
    """x [T, heads, hs] rotated at explicit positions pos [T] (pairs 2i, 2i+1, llama2.c)."""
    i2 = np.arange(0, hs, 2)
    ang = np.asarray(pos, np.float64)[:, None] * (1.0 / 10000.0 ** (i2 / hs))[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
    return out


class Net:
    def __init__(self, path):
        self.cfg, self.w = fo.load(path)
        self.kpre = {}   # layer -> [rows, nkv, hs] pre-RoPE keys in the cache
        self.kpos = {}   # layer -> their positions
        self.v = {}

    def layer(self, l, x, pos, append=True):
        """x [T, dim] at positions pos, attending to the cache of layer l plus themselves."""
        c, w = self.cfg, self.w
        T, hs, nh, nkv = len(x), c["hs"], c["nh"], c["nkv"]
        h = fo.rmsnorm(x, w["rms_att"][l])
        q = rope_at((h @ w["wq"][l].T).reshape(T, nh, hs), pos, hs)
        kp = (h @ w["wk"][l].T).reshape(T, nkv, hs)
        v = (h @ w["wv"][l].T).reshape(T, nkv, hs)
        if l in self.kpre and append:
            kp = np.concatenate([self.kpre[l], kp])
            v = np.concatenate([self.v[l], v])
            kpos = np.concatenate([self.kpos[l], pos])
        else:
            kpos = np.asarray(pos)
        self.kpre[l], self.v[l], self.kpos[l] = kp, v, kpos
        k = rope_at(kp, kpos, hs)
        S = len(k)
        kv_of = np.arange(nh) // (nh // nkv)
        kk, vv = k[:, kv_of, :], v[:, kv_of, :]
        s = np.einsum("thd,shd->hts", q, kk) / np.sqrt(hs)
        s = s + np.triu(np.full((T, S), -np.inf), S - T + 1)   # causal: row t sees S-T+t
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        self.last_att = s[:, -1, :].mean(axis=0)
        self.att = s.mean(axis=0)   # [T, S] head-mean attention rows (the importance variants)
        self.last_keys = k.reshape(S, nkv * hs)
        x = x + np.einsum("hts,shd->thd", s, vv).reshape(T, nh * hs) @ w["wo"][l].T
        h = fo.rmsnorm(x, w["rms_ffn"][l])
        g, u = h @ w["w1"][l].T, h @ w["w3"][l].T
        return x + (g / (1 + np.exp(-g)) * u) @ w["w2"][l].T

    def logits(self, xrow):
        return fo.rmsnorm(xrow, self.w["rms_final"]) @ self.w["cls"].T


def main():
    a = sys.argv[1:]
    if len(a) < 9 or a[0] != "check":
        pt.die(__doc__)
    ckpt, ids = a[1], [int(t) for t in a[2].split(",")]
    method, keep, L, kf, kl, out = a[3], float(a[4]), int(a[5]), int(a[6]), int(a[7]), a[8]
    imp = None
    rest = []
    for kv in a[9:]:
        if kv.startswith("importance="):
            imp = kv.split("=", 1)[1]
        else:
            rest.append(kv)
    p = pt.parse_params(rest)
    # language-model tokens: IDPruner's importance is the attention received, lambda 0.875, the
    # redundancy normalised (each unless given); "idpruner-paper" and every other method keep the
    # published defaults
    if method == "idpruner":
        imp = imp or "recv"
        if not any(kv.startswith("lambda=") for kv in rest):
            p["lambda"] = 0.875
        if not any(kv.startswith("mmr_norm=") for kv in rest):
            p["mmr_norm"] = 1
    imp = imp or "last"
    net = Net(ckpt)
    nl = net.cfg["nl"]
    n = len(ids)
    x = net.w["emb"][np.asarray(ids)]
    for l in range(L):
        x = net.layer(l, x, np.arange(n))
    t = {"features": x, "prunable": np.array([kf <= i < n - kl for i in range(n)], np.uint8)}
    if L > 0:
        t["keys"] = net.last_keys
        A = net.att   # [n, n], causal rows
        t["scores"] = {"last": A[-1], "tail": A[n - kl:].mean(axis=0),
                       "recv": A.sum(axis=0) / (n - np.arange(n)), "accum": A.sum(axis=0),
                       "norm": np.sqrt((x ** 2).sum(axis=1))}[imp]
    elif imp == "norm":
        t["scores"] = np.sqrt((x ** 2).sum(axis=1))
    kept, W, _, _ = pt.expect(t, method, keep, p)
    M = len(kept)
    for l in range(L):   # compacted caches, renumbered
        net.kpre[l] = np.einsum("rn,nhd->rhd", W, net.kpre[l])
        net.v[l] = np.einsum("rn,nhd->rhd", W, net.v[l])
        net.kpos[l] = np.arange(M)
    x = W @ x
    for l in range(L, nl):
        x = net.layer(l, x, np.arange(M), append=False)
    lg0 = net.logits(x[-1])
    nxt = int(np.argmax(lg0))
    y = net.w["emb"][[nxt]]
    for l in range(nl):
        y = net.layer(l, y, np.array([M]))
    lg1 = net.logits(y[-1])
    got = pt.read_stream(out)
    if got["kept"].tolist() != kept:
        pt.die("%s layer %d keep %g: kept %s, oracle %s" % (method, L, keep, got["kept"].tolist(), kept))
    d0 = np.abs(got["logits"][0] - lg0).max()
    d1 = np.abs(got["logits"][1] - lg1).max()
    if max(d0, d1) > 2e-4:
        pt.die("%s layer %d keep %g: logits differ from the oracle by %g (prefill), %g (decode)"
               % (method, L, keep, d0, d1))
    print("ok %s layer %d keep %g: %d of %d tokens, logits within %.2g" % (method, L, keep, M, n, max(d0, d1)))


if __name__ == "__main__":
    main()
