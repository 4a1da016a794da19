/* fuzz_stream: the tensor stream reader (prefix, header JSON, record validation, inline payloads,
 * end records, references), through a seekable memfd and through a pipe.
 *
 * Random bytes almost never carry a valid XXH3 header checksum, which would stop the fuzzer at
 * the first check. So the harness first walks the input record by record and rewrites each
 * header checksum (and each inline payload's "xxh3" field) to match: the mutations then reach the
 * JSON and payload logic behind them. The checksum checks themselves are covered by the unit and
 * bats tests. By-reference payloads go through the allow-list (ref_policy.h) like in the tools. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "as_error.h"
#include "fuzz_util.h"
#include "stream.h"

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) {
    return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void fix_checksums(uint8_t *b, size_t n) {
    size_t pos = 0;
    while (n - pos >= 32 && memcmp(b + pos, "ASTR", 4) == 0) {
        uint64_t hlen = rd32(b + pos + 8), pad = rd32(b + pos + 12), plen = rd64(b + pos + 16);
        if (hlen > n - pos - 32) break;
        uint8_t *hdr = b + pos + 32;
        uint64_t pstart = pos + 32 + hlen;
        if (plen <= n - pstart) { /* inline payload present: make its xxh3 field match */
            static const char key[] = "\"xxh3\":\"";
            uint8_t *k = memmem(hdr, hlen, key, sizeof key - 1);
            if (k && (uint64_t)(k - hdr) + sizeof key - 1 + 16 <= hlen) {
                char hex[17];
                snprintf(hex, sizeof hex, "%016" PRIx64, XXH3_64bits(b + pstart, plen));
                memcpy(k + sizeof key - 1, hex, 16);
            }
        }
        XXH3_state_t st;
        XXH3_64bits_reset(&st);
        XXH3_64bits_update(&st, b + pos, 24);
        XXH3_64bits_update(&st, hdr, hlen);
        uint64_t h = XXH3_64bits_digest(&st);
        for (int i = 0; i < 8; i++)
            b[pos + 24 + i] = (uint8_t)(h >> (8 * i));
        if (plen > n - pstart || pad > n - pstart - plen) break;
        pos = pstart + plen + pad;
    }
}

static void read_all(struct as_stream_reader *r) {
    const struct as_rec *rec;
    int k;
    int i = 0;
    while ((k = as_stream_next(r, &rec)) == 1) {
        FUZZ_CHECK(rec && rec->name && rec->name[0] && rec->role);
        FUZZ_CHECK(rec->ndim >= 0 && rec->ndim <= AS_MAX_DIMS);
        json_t *o = as_rec_to_json(rec);
        json_decref(o);
        /* every other record's payload is left unread, to exercise skipping */
        if (i++ % 2 == 0) {
            const void *p = as_stream_payload(r);
            if (p && rec->nbytes) {
                volatile uint8_t x = ((const uint8_t *)p)[rec->nbytes - 1];
                (void)x;
            }
        }
    }
    FUZZ_CHECK(k == 0 || as_last_error()[0] != 0);
    as_clear_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *b = malloc(size ? size : 1);
    memcpy(b, data, size);
    fix_checksums(b, size);

    char path[64];
    int fd = fuzz_memfd(b, size, path, sizeof path);
    if (fd >= 0) {
        struct as_stream_reader *r = as_stream_open_fd(fd, "fuzz");
        read_all(r);
        as_stream_close(r);
        close(fd);
    }
    /* A pipe is not seekable: payloads are skipped by reading. The whole input fits the pipe. */
    int p[2];
    if (size <= 65536 && pipe2(p, O_CLOEXEC) == 0) {
        size_t done = 0;
        while (done < size) {
            ssize_t k = write(p[1], b + done, size - done);
            if (k <= 0) break;
            done += (size_t)k;
        }
        close(p[1]);
        struct as_stream_reader *r = as_stream_open_fd(p[0], "fuzz-pipe");
        read_all(r);
        as_stream_close(r);
        close(p[0]);
    }
    free(b);
    return 0;
}
