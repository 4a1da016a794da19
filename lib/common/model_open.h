/* model_open: the model a user names on the command line, as the tools accept it: a Hugging Face
 * checkpoint directory (model.h, tokenizer.json) or a llama.cpp FILE.gguf (gguf.h, gguf_vocab.h).
 * One place decides, so as-eval and as-gen read the same files the same way. */
#ifndef AS_MODEL_OPEN_H
#define AS_MODEL_OPEN_H

#include "model.h"
#include "tokenizer.h"

struct as_model *as_model_open(const char *path);         /* NULL with as_fail */
struct as_tokenizer *as_tokenizer_open(const char *path); /* NULL with as_fail */

#endif
