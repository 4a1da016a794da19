#!/usr/bin/env python3
"""Independent autograd reference for the training engine's gradients (tests/unit/test_train_model.c).

A Llama decoder written from the Hugging Face definition (transformers' modeling_llama:
LlamaRMSNorm, rotate_half RoPE with inv_freq = theta^(-2i/d), repeat_kv GQA, causal softmax
attention scaled by 1/sqrt(head_dim), SiLU(gate) * up MLP, final norm, lm_head tied or not) in
jax, float64, differentiated by jax.grad. Reads the checkpoint directory itself (config.json,
model.safetensors), never our C code's outputs.

usage: train_grad.py MODEL_DIR TOKENS(comma-separated) NAMES_FILE OUT.f32 [TEACHER.f32 W_CE W_KD KD]
Loss: mean over positions t < T-1 of w_ce * CE(next token) + w_kd * KD(teacher logits row t),
KD one of none, kl (KL(T||S)), rkl (KL(S||T)), cakld. Writes d(loss)/d(param) as float32 for each
name in NAMES_FILE (one per line, HF tensor names), concatenated in that order, and prints the
loss.
"""
import json
import sys

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402


def main():
    mdir, toks, names_file, out = sys.argv[1:5]
    cfg = json.load(open(f"{mdir}/config.json"))
    if cfg.get("rope_scaling"):
        sys.exit("train_grad.py: rope_scaling is not implemented in the oracle")
    raw = load_file(f"{mdir}/model.safetensors")
    params = {k: jnp.asarray(v.astype(np.float64)) for k, v in raw.items()}
    tied = "lm_head.weight" not in params
    ids = jnp.asarray([int(t) for t in toks.split(",")])
    T = ids.shape[0]
    D = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim") or D // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    L = cfg["num_hidden_layers"]
    teacher = None
    w_ce, w_kd, kd = 1.0, 0.0, "none"
    if len(sys.argv) > 5:
        V = cfg["vocab_size"]
        teacher = jnp.asarray(np.fromfile(sys.argv[5], dtype=np.float32).reshape(T, V), dtype=jnp.float64)
        w_ce, w_kd, kd = float(sys.argv[6]), float(sys.argv[7]), sys.argv[8]

    inv_freq = 1.0 / (theta ** (jnp.arange(0, hd, 2, dtype=jnp.float64) / hd))
    pos = jnp.arange(T, dtype=jnp.float64)
    freqs = jnp.outer(pos, inv_freq)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    cos, sin = jnp.cos(emb), jnp.sin(emb)

    def rms(x, w):
        var = jnp.mean(x * x, axis=-1, keepdims=True)
        return w * (x / jnp.sqrt(var + eps))

    def rotate_half(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return jnp.concatenate([-x2, x1], axis=-1)

    def forward(p):
        x = p["model.embed_tokens.weight"][ids]
        mask = jnp.tril(jnp.ones((T, T), dtype=bool))
        for i in range(L):
            pre = f"model.layers.{i}."
            h = rms(x, p[pre + "input_layernorm.weight"])
            q = (h @ p[pre + "self_attn.q_proj.weight"].T).reshape(T, H, hd).transpose(1, 0, 2)
            k = (h @ p[pre + "self_attn.k_proj.weight"].T).reshape(T, KV, hd).transpose(1, 0, 2)
            v = (h @ p[pre + "self_attn.v_proj.weight"].T).reshape(T, KV, hd).transpose(1, 0, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = jnp.repeat(k, H // KV, axis=0)  # repeat_kv
            v = jnp.repeat(v, H // KV, axis=0)
            s = q @ k.transpose(0, 2, 1) / jnp.sqrt(hd)
            s = jnp.where(mask, s, -jnp.inf)
            a = jax.nn.softmax(s, axis=-1) @ v
            a = a.transpose(1, 0, 2).reshape(T, H * hd)
            x = x + a @ p[pre + "self_attn.o_proj.weight"].T
            h = rms(x, p[pre + "post_attention_layernorm.weight"])
            g = h @ p[pre + "mlp.gate_proj.weight"].T
            u = h @ p[pre + "mlp.up_proj.weight"].T
            x = x + (jax.nn.silu(g) * u) @ p[pre + "mlp.down_proj.weight"].T
        x = rms(x, p["model.norm.weight"])
        head = p["model.embed_tokens.weight"] if tied else p["lm_head.weight"]
        return x @ head.T

    def loss(p):
        z = forward(p)[: T - 1]
        ls = jax.nn.log_softmax(z, axis=-1)
        ce = -jnp.take_along_axis(ls, ids[1:, None], axis=-1)[:, 0]
        tot = w_ce * ce
        if kd != "none":
            lt = jax.nn.log_softmax(teacher[: T - 1], axis=-1)
            pt, ps = jnp.exp(lt), jnp.exp(ls)
            fkl = jnp.sum(pt * (lt - ls), axis=-1)
            rkl = jnp.sum(ps * (ls - lt), axis=-1)
            if kd == "kl":
                k_ = fkl
            elif kd == "rkl":
                k_ = rkl
            else:  # cakld: confidence = teacher's probability of the label, a constant
                conf = jax.lax.stop_gradient(jnp.take_along_axis(pt, ids[1:, None], axis=-1)[:, 0])
                k_ = conf * rkl + (1 - conf) * fkl
            tot = tot + w_kd * k_
        return jnp.mean(tot)

    val, grads = jax.value_and_grad(loss)(params)
    names = [n.strip() for n in open(names_file) if n.strip()]
    with open(out, "wb") as f:
        for n in names:
            f.write(np.asarray(grads[n], dtype=np.float32).tobytes())
    print(f"{float(val):.12g}")


if __name__ == "__main__":
    main()
