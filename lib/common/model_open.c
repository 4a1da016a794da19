/* model_open: a checkpoint directory or a GGUF file (model_open.h). */
#include "model_open.h"

#include <stdio.h>

#include "gguf.h"

struct as_model *as_model_open(const char *path) {
    return as_path_is_gguf(path) ? as_model_load_gguf(path) : as_model_load(path);
}

struct as_tokenizer *as_tokenizer_open(const char *path) {
    if (as_path_is_gguf(path)) return as_tokenizer_load_gguf(path);
    char tok_path[4096];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", path);
    return as_tokenizer_load(tok_path);
}
