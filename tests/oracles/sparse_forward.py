#!/usr/bin/env python3
"""sparse_forward: perplexity of a llama2.c checkpoint with A-shape block-sparse prefill
attention, in numpy float64 (test oracle for as-eval --sparse-attn).

The model, tokenizer and window conventions are tests/tools/forward_oracle.py's (an independent
reader of the .bin and an independent llama2.c encoder); only the attention mask differs: query
i may see key j iff j <= i and block (i // B, j // B) is kept, where A-shape keeps a block iff
some token pair in it satisfies j < n_init or j > i - n_local (reference doc section 1.1), i.e.
kb*B < n_init or (kb+1)*B - 1 > qb*B - n_local.

  ppl CKPT.bin TOK.bin TEXT BYTES CTX CHUNKS B N_INIT N_LOCAL   prints "ppl" (score half)
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import forward_oracle as fo  # noqa: E402


def ashape_mask(T, B, n_init, n_local):
    nb = (T + B - 1) // B
    qb, kb = np.meshgrid(np.arange(nb), np.arange(nb), indexing="ij")
    keep = (kb <= qb) & ((kb * B < n_init) | ((kb + 1) * B - 1 > qb * B - n_local))
    tok = np.repeat(np.repeat(keep, B, 0), B, 1)[:T, :T]
    causal = np.tril(np.ones((T, T), dtype=bool))
    return np.where(tok & causal, 0.0, -np.inf)


def forward(cfg, w, ids, mask):
    T, hs, nh, nkv = len(ids), cfg["hs"], cfg["nh"], cfg["nkv"]
    x = w["emb"][np.asarray(ids)]
    for l in range(cfg["nl"]):
        h = fo.rmsnorm(x, w["rms_att"][l])
        q = fo.rope((h @ w["wq"][l].T).reshape(T, nh, hs), hs)
        k = fo.rope((h @ w["wk"][l].T).reshape(T, nkv, hs), hs)
        v = (h @ w["wv"][l].T).reshape(T, nkv, hs)
        kv_of = np.arange(nh) // (nh // nkv)
        k, v = k[:, kv_of, :], v[:, kv_of, :]
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hs) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", s, v).reshape(T, nh * hs) @ w["wo"][l].T
        h = fo.rmsnorm(x, w["rms_ffn"][l])
        g, u = h @ w["w1"][l].T, h @ w["w3"][l].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w["w2"][l].T
    return fo.rmsnorm(x, w["rms_final"]) @ w["cls"].T


def main(argv):
    if len(argv) != 11 or argv[1] != "ppl":
        sys.exit(__doc__)
    cfg, w = fo.load(argv[2])
    text = open(argv[4], "rb").read()[: int(argv[5])]
    ctx, chunks, B, n_init, n_local = (int(a) for a in argv[6:11])
    ids = fo.encode(argv[3], text)
    nw = min(len(ids) // ctx, chunks) if chunks > 0 else len(ids) // ctx
    mask = ashape_mask(ctx, B, n_init, n_local)
    nll, n = 0.0, 0
    for i in range(nw):
        win = list(ids[i * ctx:(i + 1) * ctx])
        win[0] = 1
        lg = forward(cfg, w, win, mask)
        for p in range(ctx // 2, ctx - 1):
            z = lg[p] - lg[p].max()
            nll -= z[win[p + 1]] - np.log(np.exp(z).sum())
            n += 1
    print("%.10g" % np.exp(nll / n))


if __name__ == "__main__":
    main(sys.argv)
