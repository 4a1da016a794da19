/* fuzz_tokenizer: tokenizer.json loading (as_tokenizer_load) and, when it loads, encoding and
 * decoding. Input: tokenizer.json text, optionally followed by a NUL byte and the text to encode
 * (at most 256 bytes; a fixed sample otherwise). Decoding the encoded ids must not fail. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_error.h"
#include "fuzz_util.h"
#include "tokenizer.h"

static const char sample[] =
    "Once upon a time, h\xc3\xa9llo  w\xe2\x96\x81rld\n\t<s> 123 \xf0\x9f\x98\x80!";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t jlen = nul ? (size_t)(nul - data) : size;
    const char *text = sample;
    size_t tlen = sizeof sample - 1;
    if (nul) {
        text = (const char *)nul + 1;
        tlen = size - jlen - 1;
        if (tlen > 256) tlen = 256;
    }
    char path[64];
    int fd = fuzz_memfd(data, jlen, path, sizeof path);
    if (fd < 0) return 0;
    struct as_tokenizer *t = as_tokenizer_load(path);
    if (t) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (as_tokenizer_encode(t, text, tlen, 1, &ids, &n) == 0) {
            int32_t v = as_tokenizer_vocab_size(t);
            for (size_t i = 0; i < n; i++)
                FUZZ_CHECK(ids[i] >= 0 && ids[i] < v);
            size_t len = 0;
            char *s = as_tokenizer_decode(t, ids, n, &len);
            FUZZ_CHECK(s != NULL);
            free(s);
            char buf[8];
            for (size_t i = 0; i < n; i++)
                (void)as_tokenizer_decode_piece(t, i ? ids[i - 1] : -1, ids[i], buf, sizeof buf);
            free(ids);
        }
        int32_t v = as_tokenizer_vocab_size(t);
        for (int32_t id = 0; id < v && id < 512; id++) {
            const char *p = as_tokenizer_id_to_piece(t, id);
            if (p) (void)as_tokenizer_piece_to_id(t, p);
        }
        as_tokenizer_free(t);
    } else {
        FUZZ_CHECK(as_last_error()[0] != 0);
    }
    as_clear_error();
    close(fd);
    return 0;
}
