#!/usr/bin/env python3
"""forward_oracle: an independent numpy forward pass of a llama2.c checkpoint (test oracle).

Written from llama2.c's run.c conventions (the checkpoint format of ../shared/REFERENCE.md), not
from lib/common: it reads the .bin itself (7 int32 header: dim, hidden_dim, n_layers, n_heads,
n_kv_heads, vocab_size (negative = separate classifier), seq_len; then fp32 token embedding,
rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, the unused freq_cis tables, [wcls]) and
computes in float64: RMSNorm (eps 1e-5), RoPE on interleaved pairs (2i, 2i+1) with frequency
10000^(-(2i mod head_size)/head_size), grouped-query attention (query head h reads kv head
h // (n_heads / n_kv_heads)), causal softmax, SwiGLU w2(silu(w1 x) * w3 x).
Token ids come from tests/tools/tokenizer_oracle.py (an independent llama2.c encoder).

  logits CKPT.bin IDS OUT.f32             teacher-forced logits [T, V] (float32) of the comma-
                                          separated ids
  greedy CKPT.bin TOK.bin PROMPT N        greedy decoding, BOS first, until N positions, decoded
                                          like llama2.c (leading space after BOS stripped)
  ppl CKPT.bin TOK.bin TEXT BYTES CTX half|all CHUNKS
                                          llama.cpp-convention perplexity (windows of CTX tokens,
                                          first token replaced by BOS; half: positions CTX/2 ..
                                          CTX-2 predict the next token, all: 0 .. CTX-2); CHUNKS 0
                                          = every window. Prints "tokens windows scored ppl".
  weights CKPT.bin DIR                    DIR/model.safetensors (as-import's output) holds every
                                          weight of the .bin under its HF name, f32 bit for bit,
                                          q/k rows moved from llama2.c's interleaved pairs to HF's
                                          rotate-half order (row h*hs + i <- h*hs + 2i for i < hs/2,
                                          h*hs + hs/2 + i <- h*hs + 2i + 1); prints "N tensors equal"
  next-probs CKPT.bin TOK.bin PROMPT TEMP next-token distribution softmax(logits/TEMP) after BOS
                                          + PROMPT, as lines "prob<TAB>piece-hex", piece = the
                                          text the token decodes to (hex, so spaces survive)
Exits 1 with a message on any error (a missing numpy is an ImportError: also non-zero).
"""
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_oracle  # noqa: E402  (independent llama2.c encoder, tests/tools)


def load(path):
    raw = open(path, "rb").read()
    dim, hid, nl, nh, nkv, vocab, seq = struct.unpack_from("<7i", raw, 0)
    shared = vocab > 0
    vocab = abs(vocab)
    a = np.frombuffer(raw, "<f4", offset=28).astype(np.float64)
    hs = dim // nh
    kvd = nkv * hs
    o = 0

    def take(*shape):
        nonlocal o
        n = int(np.prod(shape))
        if o + n > a.size:
            sys.exit("forward_oracle: %s: truncated" % path)
        t = a[o:o + n].reshape(shape)
        o += n
        return t

    w = {}
    w["emb"] = take(vocab, dim)
    w["rms_att"] = take(nl, dim)
    w["wq"] = take(nl, dim, dim)
    w["wk"] = take(nl, kvd, dim)
    w["wv"] = take(nl, kvd, dim)
    w["wo"] = take(nl, dim, dim)
    w["rms_ffn"] = take(nl, dim)
    w["w1"] = take(nl, hid, dim)
    w["w2"] = take(nl, dim, hid)
    w["w3"] = take(nl, hid, dim)
    w["rms_final"] = take(dim)
    take(seq, hs // 2)  # freq_cis_real (unused by run.c)
    take(seq, hs // 2)  # freq_cis_imag
    w["cls"] = w["emb"] if shared else take(vocab, dim)
    cfg = dict(dim=dim, hid=hid, nl=nl, nh=nh, nkv=nkv, vocab=vocab, seq=seq, hs=hs)
    return cfg, w


def rmsnorm(x, g):
    return g * x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5)


def rope(x, hs):
    """x [T, heads, hs]: rotate pairs (2i, 2i+1) of each head by pos * 10000^(-2i/hs)."""
    T = x.shape[0]
    i2 = np.arange(0, hs, 2)
    ang = np.arange(T)[:, None] * (1.0 / 10000.0 ** (i2 / hs))[None, :]  # [T, hs/2]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def forward(cfg, w, ids):
    """Logits [T, V] (float64) for every position of ids."""
    T, hs, nh, nkv = len(ids), cfg["hs"], cfg["nh"], cfg["nkv"]
    x = w["emb"][np.asarray(ids)]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(cfg["nl"]):
        h = rmsnorm(x, w["rms_att"][l])
        q = rope((h @ w["wq"][l].T).reshape(T, nh, hs), hs)
        k = rope((h @ w["wk"][l].T).reshape(T, nkv, hs), hs)
        v = (h @ w["wv"][l].T).reshape(T, nkv, hs)
        kv_of = np.arange(nh) // (nh // nkv)
        k, v = k[:, kv_of, :], v[:, kv_of, :]
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hs) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", s, v).reshape(T, nh * hs) @ w["wo"][l].T
        h = rmsnorm(x, w["rms_ffn"][l])
        g, u = h @ w["w1"][l].T, h @ w["w3"][l].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w["w2"][l].T
    return rmsnorm(x, w["rms_final"]) @ w["cls"].T


def pieces(tok_path):
    toks, _ = tokenizer_oracle.read_llama2c(tok_path)
    return toks


def decode(toks, prev, tok):
    """llama2.c decode(): strip the leading space after BOS; <0xNN> is the raw byte."""
    p = toks[tok]
    if prev == 1 and p.startswith(b" "):
        p = p[1:]
    if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
        p = bytes([int(p[3:5], 16)])
    return p


def encode(tok_path, text):
    """BOS + llama2.c encode() of text (bytes)."""
    toks, scores = tokenizer_oracle.read_llama2c(tok_path)
    return [1] + list(tokenizer_oracle.llama2c_encode(toks, scores, text))


def main(argv):
    cmd = argv[1]
    cfg, w = load(argv[2])
    if cmd == "logits":
        ids = [int(t) for t in argv[3].split(",")]
        forward(cfg, w, ids).astype("<f4").tofile(argv[4])
    elif cmd == "greedy":
        toks = pieces(argv[3])
        ids = encode(argv[3], argv[4].encode())
        n = int(argv[5])
        out = b""
        for t in range(1, len(ids)):
            out += decode(toks, ids[t - 1], ids[t])
        while len(ids) < n + 1:  # run.c: positions 0..N-1 each predict one token
            nxt = int(np.argmax(forward(cfg, w, ids)[-1]))
            out += decode(toks, ids[-1], nxt)
            ids.append(nxt)
        sys.stdout.buffer.write(out + b"\n")
    elif cmd == "ppl":
        text = open(argv[4], "rb").read()[: int(argv[5])]
        ctx, mode, chunks = int(argv[6]), argv[7], int(argv[8])
        ids = encode(argv[3], text)
        nw = len(ids) // ctx
        if chunks > 0:
            nw = min(nw, chunks)
        first = 0 if mode == "all" else ctx // 2
        nll, n = 0.0, 0
        for i in range(nw):
            win = list(ids[i * ctx:(i + 1) * ctx])
            win[0] = 1
            lg = forward(cfg, w, win)
            for p in range(first, ctx - 1):
                z = lg[p] - lg[p].max()
                nll -= z[win[p + 1]] - np.log(np.exp(z).sum())
                n += 1
        print(len(ids), nw, n, "%.10g" % np.exp(nll / n))
    elif cmd == "weights":
        import json
        raw = open(argv[3] + "/model.safetensors", "rb").read()
        n = int.from_bytes(raw[:8], "little")
        hdr = json.loads(raw[8:8 + n])
        got = {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                                "<f4").reshape(v["shape"])
               for k, v in hdr.items() if k != "__metadata__"}
        hs = cfg["hs"]

        def hf_rows(m, heads):  # interleaved pairs -> rotate-half, per head
            m = m.reshape(heads, hs // 2, 2, -1)
            return np.concatenate([m[:, :, 0, :], m[:, :, 1, :]], axis=1).reshape(heads * hs, -1)

        want = {"model.embed_tokens.weight": w["emb"], "model.norm.weight": w["rms_final"]}
        for l in range(cfg["nl"]):
            p = "model.layers.%d." % l
            want[p + "input_layernorm.weight"] = w["rms_att"][l]
            want[p + "post_attention_layernorm.weight"] = w["rms_ffn"][l]
            want[p + "self_attn.q_proj.weight"] = hf_rows(w["wq"][l], cfg["nh"])
            want[p + "self_attn.k_proj.weight"] = hf_rows(w["wk"][l], cfg["nkv"])
            want[p + "self_attn.v_proj.weight"] = w["wv"][l]
            want[p + "self_attn.o_proj.weight"] = w["wo"][l]
            want[p + "mlp.gate_proj.weight"] = w["w1"][l]
            want[p + "mlp.down_proj.weight"] = w["w2"][l]
            want[p + "mlp.up_proj.weight"] = w["w3"][l]
        bad = sorted(set(got) ^ set(want))
        for k, v in want.items():
            if k in got and not np.array_equal(got[k].view("<u4"),
                                               v.astype("<f4").view("<u4")):
                bad.append(k)
        if bad:
            sys.exit("forward_oracle: weights differ or missing: " + " ".join(bad))
        print("%d tensors equal" % len(want))
    elif cmd == "next-probs":
        toks = pieces(argv[3])
        ids = encode(argv[3], argv[4].encode())
        z = forward(cfg, w, ids)[-1] / float(argv[5])
        p = np.exp(z - z.max())
        p /= p.sum()
        for t in range(cfg["vocab"]):
            print("%.12g\t%s" % (p[t], decode(toks, ids[-1], t).hex()))
    else:
        sys.exit("forward_oracle: unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
