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
    as_qlin_use_lut(q);
    return q;
}

void as_qlin_use_lut(struct as_qlin *q) {
    const char *e = getenv("AS_TERNARY_LUT");
    if (q->lut || q->isa != AS_ISA_AVX512 || !as_lut_supported(q->W.fmt, q->W.K) ||
        (e && !strcmp(e, "0")))
        return;
    q->lut = as_xmalloc(sizeof *q->lut);
    as_lut_repack(&q->W, q->lut);
}

void as_qlin_free(struct as_qlin *q) {
    if (!q) return;
    free((void *)q->W.data);
    if (q->lut) as_lut_free(q->lut);
    free(q->lut);
    free(q);
}

static int qlin_default;

void as_qlin_set_default(int on) {
    qlin_default = on;
}

int as_qlin_enabled(void) {
    static int env = -2; /* -2: not read yet, -1: unset */
    if (env == -2) {
        const char *e = getenv("AS_TERNARY_KERNELS");
        env = !e || !*e ? -1 : !strcmp(e, "1");
    }
    return env >= 0 ? env : qlin_default;
}

struct qlin_job {
    const struct as_qlin *q;
    const struct as_act8 *a;    /* T tokens, quantized once */
    const struct as_lut_act *t; /* one token's tables, when q->lut serves it */
    int T;
    float *out;
};

/* Rows [N part / n, N (part + 1) / n) of every token, 4 tokens per as_tern_gemm. */
static void qlin_part(void *arg, int part, int n) {
    const struct qlin_job *j = arg;
    const int N = j->q->W.N;
    const int r0 = (int)((long long)N * part / n), r1 = (int)((long long)N * (part + 1) / n);
    if (r0 >= r1) return;
    if (j->t) {
        as_lut_gemv(j->q->isa, j->q->lut, j->t, j->out, r0, r1);
        return;
    }
    for (int t0 = 0; t0 < j->T; t0 += 4) {
        int m = j->T - t0 < 4 ? j->T - t0 : 4;
        as_tern_gemm(j->q->isa, &j->q->W, j->a + t0, m, j->out + (size_t)t0 * N, r0, r1);
    }
}

void as_qlin_apply_par(const struct as_qlin *q, const float *x, int T, float *out,
                       const float *bias, as_qlin_runner run) {
    const int N = q->W.N, K = q->W.K;
    struct as_act8 *a = as_xmalloc(sizeof *a * (size_t)(T > 0 ? T : 1));
    for (int t = 0; t < T; t++) {
        as_act8_init(&a[t], q->W.fmt, K);
        as_act8_quantize(&a[t], x + (size_t)t * K);
    }
    struct as_lut_act lt;
    const int lut = q->lut && T == 1;
    if (lut) {
        as_lut_act_init(&lt, q->W.fmt, K);
        as_lut_act_build(q->isa, &lt, &a[0]);
    }
    struct qlin_job j = {q, a, lut ? &lt : NULL, T, out};
    /* parts of at least 64 rows and 1M multiply-adds: below that the pool's hand-off (a wake-up,
     * and on a shared machine a wait for the other thread's core) costs more than the rows; one
     * token of SmolLM2's 576 x 576 is 0.33M, a few microseconds of kernel */
    if (run && N >= 128 && (long long)N * K * T >= (1 << 20))
        run(qlin_part, &j, N / 64);
    else
        qlin_part(&j, 0, 1);
    if (bias)
        for (int t = 0; t < T; t++)
            for (int r = 0; r < N; r++)
                out[(size_t)t * N + r] += bias[r];
    for (int t = 0; t < T; t++)
        as_act8_free(&a[t]);
    free(a);
    if (lut) as_lut_act_free(&lt);
}

void as_qlin_apply(const struct as_qlin *q, const float *x, int T, float *out, const float *bias) {
    as_qlin_apply_par(q, x, T, out, bias, NULL);
}
