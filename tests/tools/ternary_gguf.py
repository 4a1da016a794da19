#!/usr/bin/env python3
"""Helpers of ternary_gguf.bats (as-pack -f gguf --gguf-ternary tq1_0|tq2_0).

  ternary_gguf.py model OUT_DIR TOKENIZER_DIR FFN
      a synthetic 2-layer llama checkpoint (F32, seeded random weights): hidden 256, 4 heads of 64
      (2 KV heads), FFN 512 (every row whole 256-blocks) or 384 (the down projections' rows of 384
      do not fill TQ blocks); vocab 512 with the tokenizer files of TOKENIZER_DIR (stories260K's).
  ternary_gguf.py compare GGUF FAKEQUANT_DIR TYPE
      every blk.N.* TYPE tensor of GGUF, dequantized by the gguf package (ggml's reference
      dequantizer in numpy), equals the fakequant checkpoint's weight bit for bit, q/k rows in
      llama.cpp's interleaved RoPE order (convert_hf_to_gguf.py's permute); the other linears
      are F32 there. Prints "TYPE: A linears as TYPE, B as F32, equal to the fakequant weights".
"""
import json
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

import gguf

D, H, KV, HD, L, V = 256, 4, 2, 64, 2, 512


def model(out, tokdir, FF):
    import os

    os.makedirs(out, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{tokdir}/{f}", f"{out}/{f}")
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D,
        "intermediate_size": FF, "num_hidden_layers": L, "num_attention_heads": H,
        "num_key_value_heads": KV, "head_dim": HD, "vocab_size": V, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "hidden_act": "silu", "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2,
    }
    json.dump(cfg, open(f"{out}/config.json", "w"), indent=1)
    rng = np.random.default_rng(18)

    def r(rows, cols, s=1.0):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * (s / np.sqrt(cols))).astype(np.float32)

    t = {"model.embed_tokens.weight": r(V, D, np.sqrt(D)), "model.norm.weight": np.ones(D, np.float32),
         "lm_head.weight": r(V, D, 3.0)}
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = np.ones(D, np.float32)
        t[p + "post_attention_layernorm.weight"] = np.ones(D, np.float32)
        t[p + "self_attn.q_proj.weight"] = r(H * HD, D, 2.0)
        t[p + "self_attn.k_proj.weight"] = r(KV * HD, D, 2.0)
        t[p + "self_attn.v_proj.weight"] = r(KV * HD, D)
        t[p + "self_attn.o_proj.weight"] = r(D, H * HD)
        t[p + "mlp.gate_proj.weight"] = r(FF, D)
        t[p + "mlp.up_proj.weight"] = r(FF, D)
        t[p + "mlp.down_proj.weight"] = r(D, FF)
    save_file(t, f"{out}/model.safetensors", metadata={"format": "pt"})


HF = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
      "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
      "ffn_down": "mlp.down_proj"}


def rope_perm(w, n_head):  # convert_hf_to_gguf.py LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def compare(path, fq_dir, tname):
    want_t = getattr(gguf.GGMLQuantizationType, tname)
    fq = {}
    import glob

    for f in glob.glob(f"{fq_dir}/*.safetensors"):
        fq.update(load_file(f))
    r = gguf.GGUFReader(path)
    n_t = n_f = 0
    for t in r.tensors:
        parts = t.name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[2] not in HF:
            continue
        w = fq[f"model.layers.{parts[1]}.{HF[parts[2]]}.weight"].astype(np.float32)
        if parts[2] == "attn_q":
            w = rope_perm(w, H)
        elif parts[2] == "attn_k":
            w = rope_perm(w, KV)
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(w.shape)
        if t.tensor_type == want_t:
            n_t += 1
        elif t.tensor_type == gguf.GGMLQuantizationType.F32:
            n_f += 1
        else:
            sys.exit(f"{t.name}: type {t.tensor_type.name}, expected {tname} or F32")
        if not np.array_equal(got.view(np.uint32), w.view(np.uint32)):
            bad = np.argwhere(got != w)
            sys.exit(f"{t.name}: {len(bad)} weights differ from the fakequant checkpoint, first at {bad[0]}")
    print(f"{tname}: {n_t} linears as {tname}, {n_f} as F32, equal to the fakequant weights")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "model":
        model(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) == 5 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
