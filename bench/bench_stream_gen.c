/* bench_stream_gen: write a synthetic ~2 GiB safetensors checkpoint with 300 tensors for
 * bench/stream.sh. Shapes are real-model-like (BF16 [1792, 2048] linears for 42 layers, embeddings,
 * norms); the bytes are pseudo-random (speed only, never quality). Usage: bench_stream_gen OUT. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_error.h"

struct spec {
    char name[96];
    int64_t rows, cols; /* cols == 0: a vector */
    uint64_t nbytes;
};

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k <= 0) return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    if (argc != 2) as_die("usage: bench_stream_gen OUT.safetensors");
    static const char *linears[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                    "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                    "mlp.down_proj"};
    enum { N = 300, LAYERS = 42 };
    static struct spec s[N];
    int n = 0;
    snprintf(s[n].name, sizeof s[n].name, "model.embed_tokens.weight");
    s[n].rows = 1024, s[n++].cols = 2048;
    for (int l = 0; l < LAYERS; l++)
        for (int j = 0; j < 7; j++) {
            snprintf(s[n].name, sizeof s[n].name, "model.layers.%d.%s.weight", l, linears[j]);
            s[n].rows = 1792, s[n++].cols = 2048;
        }
    for (int l = 0; l < 3; l++) {
        snprintf(s[n].name, sizeof s[n].name, "model.layers.%d.input_layernorm.weight", l);
        s[n].rows = 2048, s[n++].cols = 0;
    }
    snprintf(s[n].name, sizeof s[n].name, "model.norm.weight");
    s[n].rows = 2048, s[n++].cols = 0;
    snprintf(s[n].name, sizeof s[n].name, "lm_head.weight");
    s[n].rows = 1024, s[n++].cols = 2048;
    if (n != N) as_die("internal: %d tensors", n);

    size_t cap = 1 << 16, len = 0;
    char *hdr = as_xmalloc(cap);
    uint64_t off = 0, max_bytes = 0;
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < N; i++) {
        s[i].nbytes = (uint64_t)s[i].rows * (uint64_t)(s[i].cols ? s[i].cols : 1) * 2;
        if (s[i].nbytes > max_bytes) max_bytes = s[i].nbytes;
        char shape[64];
        if (s[i].cols)
            snprintf(shape, sizeof shape, "%" PRId64 ",%" PRId64, s[i].rows, s[i].cols);
        else
            snprintf(shape, sizeof shape, "%" PRId64, s[i].rows);
        len +=
            (size_t)snprintf(hdr + len, cap - len,
                             ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%s],\"data_offsets\":[%" PRIu64
                             ",%" PRIu64 "]}",
                             s[i].name, shape, off, off + s[i].nbytes);
        off += s[i].nbytes;
        if (len + 256 > cap) hdr = as_xrealloc(hdr, cap *= 2);
    }
    hdr[len++] = '}';
    while (len % 8)
        hdr[len++] = ' ';
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) as_die("%s: cannot create", argv[1]);
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)((uint64_t)len >> (8 * i));
    uint8_t *buf = as_xmalloc(max_bytes + 4096);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (uint64_t i = 0; i < (max_bytes + 4096) / 8; i++) { /* xorshift64 */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(buf + 8 * i, &x, 8);
    }
    if (write_all(fd, le, 8) || write_all(fd, hdr, len)) as_die("%s: write failed", argv[1]);
    for (int i = 0; i < N; i++) /* a different window of the random buffer per tensor */
        if (write_all(fd, buf + (i * 8) % 4096, s[i].nbytes)) as_die("%s: write failed", argv[1]);
    if (close(fd)) as_die("%s: close failed", argv[1]);
    printf("%s: %d tensors, %" PRIu64 " bytes of data\n", argv[1], N, off);
    free(buf);
    free(hdr);
    return 0;
}
