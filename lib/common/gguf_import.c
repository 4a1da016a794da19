/* gguf_import: GGUF -> Hugging Face checkpoint directory (gguf_import.h). */
#include "gguf_import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "atomic_file.h"
#include "gguf.h"
#include "gguf_vocab.h"
#include "model.h"
#include "model_save.h"
#include "tokenizer.h"

int as_file_is_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return as_path_is_gguf(path);
    unsigned char b[4] = {0};
    size_t n = fread(b, 1, 4, f);
    fclose(f);
    return n == 4 && !memcmp(b, "GGUF", 4);
}

int as_gguf_import_hf(const char *gguf_path, const char *out_dir, enum as_dtype dt) {
    /* Everything is read and validated before the output directory is begun, so a bad file
     * leaves nothing behind, not even a staging directory. */
    struct as_model *m = as_model_load_gguf(gguf_path);
    if (!m) return -1;
    struct as_tokenizer *tok = as_tokenizer_load_gguf(gguf_path);
    if (!tok) {
        as_model_free(m);
        return -1;
    }
    as_tokenizer_free(tok);
    char *tmp = as_atomic_dir_begin(out_dir);
    if (!tmp) {
        as_model_free(m);
        return -1;
    }
    int rc = as_model_save_hf(m, tmp, dt);
    struct as_gguf *g = rc == 0 ? as_gguf_open(gguf_path) : NULL;
    if (rc == 0 && !g) rc = -1;
    if (rc == 0) rc = as_gguf_vocab_write_hf(g, tmp);
    as_gguf_close(g);
    if (rc == 0) rc = as_atomic_dir_commit(tmp, out_dir);
    if (rc != 0) as_atomic_dir_abort(tmp);
    free(tmp);
    as_model_free(m);
    return rc;
}
