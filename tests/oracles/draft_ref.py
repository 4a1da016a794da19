#!/usr/bin/env python3
"""Independent checks of the Eagle3 draft (lib/common/draft_model.c) in numpy, written from
../shared/reference/eagle3.md sections 1 and 5 and vLLM's llama_eagle3.py (float64):

  gen IN.safetensors DRAFT TARGET T T0 SEED   random inputs: tokens [T], feats [T0, 3H]
  forward DRAFT TARGET IN OUT                 OUT (as-draft forward) == the numpy draft (1e-4)
  schema DRAFT TARGET                         the export vLLM / SGLang load (config + tensors)
  chi2 JSON [ALPHA]                           two-sample chi-square of as-draft sample's
                                              histograms: fails if p < ALPHA (default 1e-3)
"""
import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def cfg_of(d):
    with open(d + "/config.json") as f:
        return json.load(f)


def rmsnorm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rope(x, pos, theta):
    # x [T, heads, hd], HF rotate-half
    hd = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.asarray(pos, dtype=np.float64)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang), np.cos(ang)], -1)[:, None, :]
    sin = np.concatenate([np.sin(ang), np.sin(ang)], -1)[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    rot = np.concatenate([-x2, x1], -1)
    return x * cos + rot * sin


def draft_forward(D, M, tokens, feats):
    """Logits [T, Vd] and pre-norm hidden [T, H]: positions < T0 take fc(feats), later ones the
    previous position's hidden (a drafting chain), all attending causally to every earlier
    position's keys."""
    c = cfg_of(D)
    w = {k: v.astype(np.float64) for k, v in load_file(D + "/model.safetensors").items()
         if k not in ("d2t", "t2d")}
    emb = load_file(M + "/model.safetensors")["model.embed_tokens.weight"].astype(np.float64)
    H, nh, nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim", H // nh)
    eps, theta = c["rms_norm_eps"], c["rope_theta"]
    T, T0 = len(tokens), feats.shape[0]
    ks, vs, logits, hid = [], [], [], []
    for t in range(T):
        if t < T0:
            g = w["fc.weight"] @ feats[t]
        else:
            g = hid[t - 1]
        e = emb[tokens[t]]
        x = np.concatenate([rmsnorm(e, w["midlayer.input_layernorm.weight"], eps),
                            rmsnorm(g, w["midlayer.hidden_norm.weight"], eps)])
        q = (w["midlayer.self_attn.q_proj.weight"] @ x).reshape(1, nh, hd)
        k = (w["midlayer.self_attn.k_proj.weight"] @ x).reshape(1, nkv, hd)
        v = (w["midlayer.self_attn.v_proj.weight"] @ x).reshape(nkv, hd)
        q, k = rope(q, [t], theta)[0], rope(k, [t], theta)[0]
        ks.append(k), vs.append(v)
        K, V = np.stack(ks), np.stack(vs)  # [t+1, nkv, hd]
        o = np.zeros((nh, hd))
        for h in range(nh):
            kv = h // (nh // nkv)
            s = K[:, kv, :] @ q[h] / math.sqrt(hd)
            p = np.exp(s - s.max())
            p /= p.sum()
            o[h] = p @ V[:, kv, :]
        h1 = g + w["midlayer.self_attn.o_proj.weight"] @ o.reshape(-1)
        y = rmsnorm(h1, w["midlayer.post_attention_layernorm.weight"], eps)
        gate = w["midlayer.mlp.gate_proj.weight"] @ y
        up = w["midlayer.mlp.up_proj.weight"] @ y
        h2 = h1 + w["midlayer.mlp.down_proj.weight"] @ (gate / (1 + np.exp(-gate)) * up)
        hid.append(h2)
        logits.append(w["lm_head.weight"] @ rmsnorm(h2, w["norm.weight"], eps))
    return np.stack(logits), np.stack(hid)


def cmd_gen(out, D, M, T, T0, seed):
    c = cfg_of(D)
    rng = np.random.default_rng(int(seed))
    T, T0 = int(T), int(T0)
    Ht = c.get("target_hidden_size", c["hidden_size"])
    tokens = rng.integers(0, c["vocab_size"], size=T).astype(np.int32)
    feats = rng.standard_normal((T0, 3 * Ht)).astype(np.float32)
    save_file({"tokens": tokens, "feats": feats}, out)


def cmd_forward(D, M, inp, out):
    x = load_file(inp)
    ref_l, ref_h = draft_forward(D, M, x["tokens"].astype(np.int64), x["feats"].astype(np.float64))
    y = load_file(out)
    for name, ref in (("logits", ref_l), ("hidden", ref_h)):
        got = y[name].astype(np.float64)
        assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
        err = np.abs(got - ref).max() / max(1.0, np.abs(ref).max())
        assert err < 1e-4, f"{name}: max relative error {err:.3g}"
    # the chain positions must depend on the chain (not silently re-read from feats)
    print(f"ok: T={len(x['tokens'])} T0={x['feats'].shape[0]} max|logit|={np.abs(ref_l).max():.3g}")


def cmd_schema(D, M):
    c, tc = cfg_of(D), cfg_of(M)
    L = tc["num_hidden_layers"]
    want = {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama",
            "num_hidden_layers": 1, "tie_word_embeddings": False, "rope_scaling": None,
            "hidden_size": tc["hidden_size"], "vocab_size": tc["vocab_size"],
            "eagle_aux_hidden_state_layer_ids": [min(2, L - 1), L // 2, max(L - 3, 0)]}
    for k, v in want.items():
        assert c.get(k, "<absent>") == v, f"config {k}: {c.get(k, '<absent>')!r} != {v!r}"
    for k in ("draft_vocab_size", "rope_theta", "intermediate_size", "num_attention_heads",
              "num_key_value_heads", "rms_norm_eps", "max_position_embeddings"):
        assert k in c, f"config: no {k}"
    H, Vd, V, I = c["hidden_size"], c["draft_vocab_size"], c["vocab_size"], c["intermediate_size"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim", H // nh)
    shapes = {"fc.weight": (H, 3 * H), "midlayer.input_layernorm.weight": (H,),
              "midlayer.hidden_norm.weight": (H,),
              "midlayer.self_attn.q_proj.weight": (nh * hd, 2 * H),
              "midlayer.self_attn.k_proj.weight": (nkv * hd, 2 * H),
              "midlayer.self_attn.v_proj.weight": (nkv * hd, 2 * H),
              "midlayer.self_attn.o_proj.weight": (H, nh * hd),
              "midlayer.post_attention_layernorm.weight": (H,),
              "midlayer.mlp.gate_proj.weight": (I, H), "midlayer.mlp.up_proj.weight": (I, H),
              "midlayer.mlp.down_proj.weight": (H, I), "norm.weight": (H,),
              "lm_head.weight": (Vd, H), "d2t": (Vd,), "t2d": (V,)}
    hdr, t = st_read(D + "/model.safetensors", ("d2t", "t2d"))
    assert set(hdr) == set(shapes), f"tensors {sorted(set(hdr) ^ set(shapes))} unexpected/missing"
    for k, s in shapes.items():
        assert tuple(hdr[k]["shape"]) == s, f"{k}: shape {hdr[k]['shape']} != {s}"
    want_dt = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[c["torch_dtype"]]
    for k in shapes:
        if k not in ("d2t", "t2d"):
            assert hdr[k]["dtype"] == want_dt, f"{k}: {hdr[k]['dtype']}, config says {want_dt}"
    assert not any(k.startswith("model.") for k in hdr), "a name with the model. prefix"
    assert hdr["d2t"]["dtype"] == "I64", f"d2t is {hdr['d2t']['dtype']}, vLLM wants I64"
    assert hdr["t2d"]["dtype"] == "BOOL", f"t2d is {hdr['t2d']['dtype']}"
    used = np.arange(Vd) + t["d2t"]
    assert np.all(np.diff(used) > 0), "draft ids must map to ascending target ids"
    assert used.min() >= 0 and used.max() < V, "d2t maps outside the vocabulary"
    assert np.array_equal(np.flatnonzero(t["t2d"]), used), "t2d is not the set d2t maps to"
    print(f"ok: Vd={Vd} of V={V}, H={H}, taps {c['eagle_aux_hidden_state_layer_ids']}")


def st_read(path, names):
    """The header of a safetensors file read by hand (numpy has no bfloat16), and the named
    I64/BOOL tensors."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    hdr.pop("__metadata__", None)
    out = {}
    for k in names:
        a, b = hdr[k]["data_offsets"]
        dt = {"I64": np.int64, "BOOL": np.bool_}[hdr[k]["dtype"]]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dt).reshape(hdr[k]["shape"])
    return hdr, out


def chi2_sf(x, k):
    """Survival function of chi-square with k dof: Wilson-Hilferty (accurate to ~1e-3 here)."""
    if k <= 0:
        return 1.0
    z = ((x / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


def cmd_chi2(path, alpha="1e-3"):
    r = json.load(open(path))
    a, b = r["plain"], r["spec"]
    keys = sorted(set(a) | set(b))
    na, nb = sum(a.values()), sum(b.values())
    # pool rare categories (expected < 5) into one bin
    rows, rest = [], [0, 0]
    for k in keys:
        x, y = a.get(k, 0), b.get(k, 0)
        if (x + y) * min(na, nb) / (na + nb) < 5:
            rest[0] += x
            rest[1] += y
        else:
            rows.append((x, y))
    if sum(rest):
        rows.append(tuple(rest))
    stat = 0.0
    for x, y in rows:
        n = x + y
        ea, eb = n * na / (na + nb), n * nb / (na + nb)
        stat += (x - ea) ** 2 / ea + (y - eb) ** 2 / eb
    dof = len(rows) - 1
    p = chi2_sf(stat, dof)
    print(f"chi2={stat:.2f} dof={dof} p={p:.4g} categories={len(keys)}")
    assert dof >= 2, "too few categories for a meaningful test"
    assert p >= float(alpha), f"distributions differ: p={p:.3g} < {alpha}"


if __name__ == "__main__":
    cmds = {"gen": cmd_gen, "forward": cmd_forward, "schema": cmd_schema, "chi2": cmd_chi2}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    try:
        cmds[sys.argv[1]](*sys.argv[2:])
    except AssertionError as e:
        sys.exit(f"draft_ref {sys.argv[1]}: {e}")
