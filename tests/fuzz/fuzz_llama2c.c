/* fuzz_llama2c: the llama2.c readers. Input byte 0 selects the parser:
 *   even: tokenizer.bin (as_l2c_tokenizer_load) with vocab_size = bytes 1..2 (LE, < 4096), then
 *         the reference encoder and decoder on a fixed text;
 *   odd:  checkpoint (as_l2c_load) from bytes 1..; the header must be rejected unless the file
 *         holds every float it implies. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_error.h"
#include "fuzz_util.h"
#include "llama2c.h"

static const char sample[] = "Once upon a time, h\xc3\xa9llo\n\xff!";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int ckpt = data[0] & 1;
    size_t skip = ckpt ? 1 : 3;
    if (size < skip) return 0;
    int vocab = ckpt ? 0 : (data[1] | data[2] << 8) % 4096;
    char path[64];
    int fd = fuzz_memfd(data + skip, size - skip, path, sizeof path);
    if (fd < 0) return 0;
    if (ckpt) {
        struct as_l2c_model m;
        if (as_l2c_load(path, &m) == 0) {
            FUZZ_CHECK(28 + m.n_floats * sizeof(float) <= size - skip);
            as_l2c_free(&m);
        } else {
            FUZZ_CHECK(as_last_error()[0] != 0);
        }
    } else {
        struct as_l2c_tokenizer t;
        if (as_l2c_tokenizer_load(path, vocab, &t) == 0) {
            int ids[sizeof sample + 3];
            int n = as_l2c_encode(&t, sample, 1, 1, ids);
            FUZZ_CHECK(n >= 0 && n <= (int)sizeof sample + 2);
            char out[128];
            for (int i = 0; i < n; i++)
                if (ids[i] >= 0 && ids[i] < t.vocab_size)
                    (void)as_l2c_decode(&t, i ? ids[i - 1] : 0, ids[i], out);
            as_l2c_tokenizer_free(&t);
        } else {
            FUZZ_CHECK(as_last_error()[0] != 0);
        }
    }
    as_clear_error();
    close(fd);
    return 0;
}
