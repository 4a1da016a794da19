#!/usr/bin/env python3
"""Write a synthetic 0.7B-shaped llama GGUF (F16, random weights) for llama-bench anchors:
24 layers, hidden 1536, FFN 4096, 12 heads of 128 (no GQA: q, k, v, o all 1536x1536, as bench_ternary decode), SmolLM2's tokenizer (vocab 49152,
the tokenizer.* keys copied from the SmolLM2 GGUF).
Usage: ternary_llama_model.py SMOLLM2.gguf OUT.gguf [LAYERS]  (LAYERS 24; 2 for the compatibility check)
llama-quantize then makes the TQ1_0 / TQ2_0 / Q4_0 files (bench/ternary.sh)."""
import sys

import numpy as np

import gguf


def main(src, out, layers=24):
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(out, "llama")
    L, D, FF, H, KV, V = layers, 1536, 4096, 12, 12, 49152
    w.add_name("ternary-bench-0.7b")
    w.add_block_count(L)
    w.add_context_length(2048)
    w.add_embedding_length(D)
    w.add_feed_forward_length(FF)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(D // H)
    w.add_vocab_size(V)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for name, f in r.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vt = f.types[0]
        sub = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), vt, sub_type=sub)
    rng = np.random.default_rng(0)

    def t(name, *shape):
        a = (rng.standard_normal(shape, dtype=np.float32) * (1.0 / np.sqrt(shape[-1])))
        w.add_tensor(name, a.astype(np.float16))

    t("token_embd.weight", V, D)
    w.add_tensor("output_norm.weight", np.ones(D, dtype=np.float32))
    for i in range(L):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(D, dtype=np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(D, dtype=np.float32))
        t(p + "attn_q.weight", D, D)
        t(p + "attn_k.weight", KV * D // H, D)
        t(p + "attn_v.weight", KV * D // H, D)
        t(p + "attn_output.weight", D, D)
        t(p + "ffn_gate.weight", FF, D)
        t(p + "ffn_up.weight", FF, D)
        t(p + "ffn_down.weight", D, FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 24)
