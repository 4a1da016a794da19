#!/usr/bin/env python3
"""Independent check of as-import's GGUF -> Hugging Face conversion (tests/tools/import_gguf.bats).

  gguf_import_oracle.py weights MODEL.gguf OUT_DIR   every tensor of OUT_DIR/model.safetensors equals
                                                  the gguf package's numpy dequantization of the
                                                  GGUF tensor, llama q/k rows un-permuted (the
                                                  inverse of convert_hf_to_gguf.py's permute), bit
                                                  for bit in f32 (or rounded to bf16/f16 as written)
  gguf_import_oracle.py config MODEL.gguf OUT_DIR    config.json fields equal the GGUF metadata

Prints one line per problem and exits 1 if any; prints a summary and exits 0 otherwise."""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def load_file(path):
    """model.safetensors as {name: float32 array}, BF16/F16 widened exactly (numpy has no bf16,
    so the format is read here from its definition: u64 header length, JSON header, data)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = np.frombuffer(data[a:b], dtype={"F32": "<f4", "BF16": "<u2", "F16": "<f2"}[t["dtype"]])
        if t["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = raw.astype(np.float32).reshape(t["shape"])
        out[name + "@dtype"] = t["dtype"]
    return out


def round_to(w, dtype):
    """w (f32) rounded as the checkpoint stores it: BF16 round-to-nearest-even on the bits, F16
    by numpy's IEEE conversion."""
    if dtype == "BF16":
        b = w.view(np.uint32).astype(np.uint64)
        b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
        return b.astype(np.uint32).view(np.float32)
    if dtype == "F16":
        return w.astype(np.float16).astype(np.float32)
    return w

LIN = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
       "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
       "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
       "ffn_norm": "post_attention_layernorm", "attn_q_norm": "self_attn.q_norm",
       "attn_k_norm": "self_attn.k_norm"}


def field(r, key):
    f = r.fields.get(key)
    return None if f is None else f.contents()


def hf_name(gname):
    base, _, kind = gname.rpartition(".")
    if base == "token_embd":
        return "model.embed_tokens." + kind
    if base == "output_norm":
        return "model.norm." + kind
    if base == "output":
        return "lm_head." + kind
    _, layer, part = base.split(".")
    return f"model.layers.{layer}.{LIN[part]}.{kind}"


def unpermute(w, n_head):
    # convert_hf_to_gguf.py: w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2)
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def weights(gguf_path, out):
    r = GGUFReader(gguf_path)
    arch = field(r, "general.architecture")
    heads = field(r, f"{arch}.attention.head_count")
    kv = field(r, f"{arch}.attention.head_count_kv") or heads
    st = load_file(f"{out}/model.safetensors")
    bad, seen = [], set()
    for t in r.tensors:
        name = hf_name(t.name)
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape)]) if len(t.shape) > 1 else w.reshape(-1)
        if arch == "llama" and t.name.endswith("attn_q.weight"):
            w = unpermute(w, heads)
        if arch == "llama" and t.name.endswith("attn_k.weight"):
            w = unpermute(w, kv)
        if name not in st:
            bad.append(f"{name}: missing in model.safetensors")
            continue
        seen.add(name)
        got = st[name]
        w = round_to(np.ascontiguousarray(w), st[name + "@dtype"])
        if got.shape != w.shape:
            bad.append(f"{name}: shape {got.shape}, expected {w.shape}")
        elif not np.array_equal(got.view(np.uint32), w.view(np.uint32)):
            n = int(np.sum(got.view(np.uint32) != w.view(np.uint32)))
            bad.append(f"{name}: {n} of {w.size} values differ")
    for extra in sorted(k for k in set(st) - seen if not k.endswith("@dtype")):
        bad.append(f"{extra}: not in the GGUF")
    return bad, f"{len(seen)} tensors equal bit for bit"


def config(gguf_path, out):
    r = GGUFReader(gguf_path)
    arch = field(r, "general.architecture")
    c = json.load(open(f"{out}/config.json"))
    emb = next(t for t in r.tensors if t.name == "token_embd.weight")
    heads = field(r, f"{arch}.attention.head_count")
    want = {
        "model_type": arch,
        "hidden_size": field(r, f"{arch}.embedding_length"),
        "intermediate_size": field(r, f"{arch}.feed_forward_length"),
        "num_hidden_layers": field(r, f"{arch}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": field(r, f"{arch}.attention.head_count_kv") or heads,
        "max_position_embeddings": field(r, f"{arch}.context_length"),
        "vocab_size": int(emb.shape[1]),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in r.tensors),
        "bos_token_id": field(r, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field(r, "tokenizer.ggml.eos_token_id"),
    }
    bad = [f"config.json {k}: {c.get(k)!r}, GGUF says {v!r}" for k, v in want.items()
           if c.get(k) != v]
    # floats: the GGUF stores f32; config.json must read back as the same f32
    for k, key in (("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
                   ("rope_theta", "rope.freq_base")):
        v = field(r, f"{arch}.{key}")
        if v is not None and np.float32(c.get(k, np.nan)) != np.float32(v):
            bad.append(f"config.json {k}: {c.get(k)!r}, GGUF says {v!r}")
    return bad, f"{len(want) + 2} config fields equal"


if __name__ == "__main__":
    mode, gguf_path, out = sys.argv[1:4]
    bad, ok = {"weights": weights, "config": config}[mode](gguf_path, out)
    for b in bad:
        print(b)
    if bad:
        sys.exit(1)
    print(ok)
