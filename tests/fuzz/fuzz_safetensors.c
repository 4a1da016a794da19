/* fuzz_safetensors: the safetensors header parser (as_st_open_mem: the same validation as
 * as_st_open on a mapped file). Input: a whole file image. Every tensor handed out must lie inside
 * the image, be numel x dtype size long and be findable by name; small tensors are converted to
 * f32 so the codecs read every byte they claim. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "dtype.h"
#include "fuzz_util.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private copy, so that reading past the end is an ASan report, not a read of the
     * fuzzer's larger buffer. */
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    struct as_st_file *f = as_st_open_mem(buf, size, "fuzz.safetensors");
    if (f) {
        FUZZ_CHECK(f->header_len + 8 <= size);
        uint64_t prev_end = 8 + f->header_len;
        for (int i = 0; i < f->n_tensors; i++) {
            const struct as_st_tensor *t = &f->tensors[i];
            FUZZ_CHECK(t->offset == prev_end); /* tiled, in offset order */
            FUZZ_CHECK(t->offset + t->nbytes <= size);
            prev_end = t->offset + t->nbytes;
            int ovf = 0;
            FUZZ_CHECK(as_dtype_nbytes(t->dtype, t->numel, &ovf) == t->nbytes && !ovf);
            FUZZ_CHECK(as_st_find(f, t->name) == t);
            if (t->numel <= 4096) {
                float *dst = malloc(sizeof(float) * (t->numel ? t->numel : 1));
                (void)as_convert_to_f32(t->dtype, t->data, dst, (size_t)t->numel);
                free(dst);
            }
        }
        FUZZ_CHECK(prev_end == size);
        as_st_close(f);
    } else {
        FUZZ_CHECK(as_last_error()[0] != 0); /* every failure says why */
    }
    as_clear_error();
    free(buf);
    return 0;
}
