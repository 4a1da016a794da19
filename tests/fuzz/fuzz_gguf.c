/* fuzz_gguf: the GGUF reader (as_gguf_open: header, metadata KVs, tensor infos, alignment, data
 * bounds). Every tensor handed out must lie inside the mapping and be findable by name; keys must
 * be findable; small tensors are dequantized so every block they claim is read. */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "as_error.h"
#include "fuzz_util.h"
#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    struct as_gguf *g = as_gguf_open(path);
    if (g) {
        for (int i = 0; i < g->n_kv; i++)
            FUZZ_CHECK(as_gguf_find_kv(g, g->kv[i].key) == &g->kv[i]);
        for (int i = 0; i < g->n_tensors; i++) {
            const struct as_gguf_tensor *t = &g->tensors[i];
            FUZZ_CHECK(as_gguf_find_tensor(g, t->name) == t);
            FUZZ_CHECK(g->data_offset + t->offset + t->nbytes <= g->map_size);
            uint64_t n = as_gguf_tensor_numel(t);
            if (n <= 4096) {
                float *dst = malloc(sizeof(float) * (n ? n : 1));
                as_gguf_tensor_to_f32(t, dst);
                free(dst);
            }
        }
        uint32_t u;
        float f;
        int b;
        (void)as_gguf_get_u32(g, "general.alignment", &u);
        (void)as_gguf_get_f32(g, "llama.rope.freq_base", &f);
        (void)as_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b);
        (void)as_gguf_get_str(g, "general.architecture");
        as_gguf_close(g);
    } else {
        FUZZ_CHECK(as_last_error()[0] != 0);
    }
    as_clear_error();
    close(fd);
    return 0;
}
