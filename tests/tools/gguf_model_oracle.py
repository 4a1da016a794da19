#!/usr/bin/env python3
"""Tiny GGUF checkpoints for as-import's tests (tests/tools/import_gguf.bats), written with the
`gguf` package's own writer and quantizers, independently of the C code.

  gguf_model_oracle.py tiny OUT.gguf ARCH [VARIANT]
      ARCH llama | qwen2 | qwen3: hidden 64, 2 layers, 4 heads / 2 KV heads (head 16), FFN 96,
      a byte-level vocabulary (256 byte tokens, 2 merges, 3 specials), tied embeddings for llama;
      linears in Q8_0, Q4_K, Q6_K, Q5_0 (types vary by tensor), the rest F32.
      VARIANT: ok (default) | arch (general.architecture "gpt2") | type (one linear as IQ4_NL,
      which as-import does not read) | truncate (the file cut in the middle of the data) |
      rope_freqs (a llama3 rope_freqs tensor) | no_vocab (tokenizer.ggml.tokens missing)
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

H, NH, NKV, HD, FF = 64, 4, 2, 16, 96
# GGUF_TINY_LAYERS: more layers, for code that must order layers 0, 1, 2, ..., 10, 11 by number
L = int(os.environ.get("GGUF_TINY_LAYERS", "2"))


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def tiny(out, arch, variant="ok"):
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(out, "gpt2" if variant == "arch" else arch)
    w.add_block_count(L)
    w.add_context_length(256)
    w.add_embedding_length(H)
    w.add_feed_forward_length(FF)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    toks = bytes_to_unicode() + ["Ġt", "he", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [1] * 258 + [3, 3, 3]
    if variant != "no_vocab":
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(toks)
        w.add_token_types(types)
        w.add_token_merges(["Ġ t", "h e"])
        w.add_bos_token_id(259)
        w.add_eos_token_id(260)
        w.add_add_bos_token(False)
    V = len(toks)

    def add(name, rows, cols, qtype):
        x = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        if qtype == T.F32:
            w.add_tensor(name, x)
        else:
            w.add_tensor(name, quantize(x, qtype), raw_dtype=qtype)

    add("token_embd.weight", V, H, T.Q8_0)
    w.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(H)).astype(np.float32))
    if arch != "llama":
        add("output.weight", V, H, T.Q6_K if H % 256 == 0 else T.Q8_0)
    if variant == "rope_freqs":
        w.add_tensor("rope_freqs.weight", np.ones(HD // 2, dtype=np.float32))
    lin = [("attn_q", NH * HD, H, T.Q8_0), ("attn_k", NKV * HD, H, T.Q5_0),
           ("attn_v", NKV * HD, H, T.Q4_1), ("attn_output", H, NH * HD, T.Q5_1),
           ("ffn_gate", FF, H, T.Q8_0), ("ffn_up", FF, H, T.Q4_0), ("ffn_down", H, FF, T.F32)]
    for layer in range(L):
        p = f"blk.{layer}."
        w.add_tensor(p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(H)).astype(np.float32))
        w.add_tensor(p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(H)).astype(np.float32))
        for n, r, c, q in lin:
            if variant == "type" and layer == 1 and n == "attn_v":
                # IQ4_NL (type 20): 18-byte blocks of 32; raw bytes of the right size
                w.add_tensor(p + n + ".weight", np.zeros((r, c // 32 * 18), np.uint8),
                             raw_dtype=T.IQ4_NL)
                continue
            add(p + n + ".weight", r, c, q)
        if arch == "qwen2":
            for n, r in (("attn_q", NH * HD), ("attn_k", NKV * HD), ("attn_v", NKV * HD)):
                w.add_tensor(p + n + ".bias", (0.1 * rng.standard_normal(r)).astype(np.float32))
        if arch == "qwen3":
            for n in ("attn_q_norm", "attn_k_norm"):
                w.add_tensor(p + n + ".weight",
                             (1 + 0.1 * rng.standard_normal(HD)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if variant == "truncate":
        size = os.path.getsize(out)
        with open(out, "r+b") as f:
            f.truncate(size - size // 3)


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] != "tiny":
        sys.exit(__doc__)
    tiny(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "ok")
