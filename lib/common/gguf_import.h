/* gguf_import: a GGUF checkpoint (llama, qwen2, qwen3) as a Hugging Face checkpoint directory.
 *
 * config.json (every field the GGUF carries that the engine and transformers read: sizes, heads,
 * context length, RoPE theta and scaling, RMSNorm eps, tied embeddings, bos/eos),
 * generation_config.json, model.safetensors (weights dequantized exactly as ggml does, llama's
 * q/k rows un-permuted, written F32 / BF16 / F16), tokenizer.json and tokenizer_config.json
 * rebuilt from tokenizer.ggml.* (gguf_vocab.c; chat template kept). The directory appears whole
 * or not at all (atomic_file.h). */
#ifndef AS_GGUF_IMPORT_H
#define AS_GGUF_IMPORT_H

#include "dtype.h"

/* Non-zero when path starts with the GGUF magic (or, if unreadable, ends in ".gguf"). */
int as_file_is_gguf(const char *path);
int as_gguf_import_hf(const char *gguf_path, const char *out_dir, enum as_dtype dt);

#endif
