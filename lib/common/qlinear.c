/* qlinear: packed ternary / 2-bit linears through the int8 kernels (qlinear.h). */
#include "qlinear.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"

struct as_qlin *as_qlin_open(const struct as_ckpt *ck, const char *name, int rows, int cols) {
    char pn[1100], path[4200];
    snprintf(pn, sizeof pn, "%s_packed", name);
    const struct as_st_tensor *t = as_ckpt_find(ck, pn);
    if (!t) return NULL;
    snprintf(path, sizeof path, "%s/config.json", ck->dir);
    json_error_t err;
    json_t *cfg = json_load_file(path, 0, &err);
    const char *f = cfg ? json_string_value(json_object_get(
                              json_object_get(cfg, "quantization_config"), "format"))
                        : NULL;
    int fmt = f ? as_tern_fmt_parse(f) : -1;
    json_decref(cfg);
    if (fmt < 0 || t->nbytes != as_tern_packed_bytes(fmt, rows, cols)) return NULL;
    struct as_qlin *q = as_xcalloc(1, sizeof *q);
    uint8_t *data = as_xmalloc(t->nbytes);
    memcpy(data, t->data, t->nbytes);
    q->W = (struct as_tern_matrix){(enum as_tern_fmt)fmt, rows, cols, data};
    q->isa = as_kernel_isa_best();
    return q;
}

void as_qlin_free(struct as_qlin *q) {
    if (!q) return;
    free((void *)q->W.data);
    free(q);
}

int as_qlin_enabled(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("AS_TERNARY_KERNELS");
        on = e && !strcmp(e, "1");
    }
    return on;
}

void as_qlin_apply(const struct as_qlin *q, const float *x, int T, float *out, const float *bias) {
    const int N = q->W.N, K = q->W.K;
    struct as_act8 a[4];
    for (int i = 0; i < 4; i++)
        as_act8_init(&a[i], q->W.fmt, K);
    for (int t0 = 0; t0 < T; t0 += 4) {
        int m = T - t0 < 4 ? T - t0 : 4;
        for (int i = 0; i < m; i++)
            as_act8_quantize(&a[i], x + (size_t)(t0 + i) * K);
        as_tern_gemm(q->isa, &q->W, a, m, out + (size_t)t0 * N, 0, N);
    }
    if (bias)
        for (int t = 0; t < T; t++)
            for (int r = 0; r < N; r++)
                out[(size_t)t * N + r] += bias[r];
    for (int i = 0; i < 4; i++)
        as_act8_free(&a[i]);
}
