/* test_train_ops: the training engine's pieces against independent expectations.
 *  - every op's backward (train_ops.c) against central finite differences of a double-precision
 *    forward written here from the op's definition (forward.h's equations), through a random
 *    projection L = sum(R * y): RMSNorm, linear (+bias), rotate-half RoPE, SwiGLU, causal GQA
 *    attention. The float forward ops of forward.c are checked against the same double forward.
 *  - losses (train_loss.c): CE, KL(T||S), reverse KL and cakld values against their definitions
 *    and gradients against finite differences.
 *  - AdamW against the PyTorch update written out in double; schedules at known points;
 *    clipping by global norm; non-finite gradient detection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "train_loss.h"
#include "train_ops.h"
#include "train_optim.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void) { /* xorshift64, uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2 - 1;
}
static void fill(double *d, float *f, size_t n, double s) {
    for (size_t i = 0; i < n; i++) {
        f[i] = (float)(urand() * s);
        d[i] = f[i];
    }
}
/* max |got - want| / max |want| */
static double rel(const float *got, const double *want, size_t n) {
    double e = 0, m = 1e-30;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs(got[i] - want[i]));
        m = fmax(m, fabs(want[i]));
    }
    return e / m;
}

/* L(x) = sum R * f(x) in double; central differences for each element of one input. */
typedef double (*loss_fn)(void *ctx);
static void fd(loss_fn L, void *ctx, double *x, size_t n, double *grad) {
    const double h = 1e-5;
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + h;
        double a = L(ctx);
        x[i] = x0 - h;
        double b = L(ctx);
        x[i] = x0;
        grad[i] = (a - b) / (2 * h);
    }
}

#define TOL 2e-5 /* float backward vs double finite differences, relative to the largest entry */

/* ---- RMSNorm ---- */
struct rms_ctx {
    double *x, *w, *R;
    int T, D;
    double eps;
};
static void rms_ref(const struct rms_ctx *c, double *y) {
    for (int t = 0; t < c->T; t++) {
        double ss = 0;
        for (int j = 0; j < c->D; j++)
            ss += c->x[t * c->D + j] * c->x[t * c->D + j];
        double r = 1 / sqrt(ss / c->D + c->eps);
        for (int j = 0; j < c->D; j++)
            y[t * c->D + j] = c->w[j] * c->x[t * c->D + j] * r;
    }
}
static double rms_loss(void *p) {
    struct rms_ctx *c = p;
    double y[256], s = 0;
    rms_ref(c, y);
    for (int i = 0; i < c->T * c->D; i++)
        s += c->R[i] * y[i];
    return s;
}
static void test_rmsnorm(void **st) {
    (void)st;
    enum { T = 3, D = 24 };
    double x[T * D], w[D], R[T * D], gx[T * D], gw[D], y[T * D];
    float xf[T * D], wf[D], Rf[T * D], yf[T * D], dx[T * D] = {0}, dw[D] = {0};
    fill(x, xf, T * D, 2), fill(w, wf, D, 1.5), fill(R, Rf, T * D, 1);
    struct rms_ctx c = {x, w, R, T, D, 1e-5};
    rms_ref(&c, y);
    as_op_rmsnorm(yf, xf, wf, T, D, 1e-5f);
    assert_true(rel(yf, y, T * D) < 1e-6);
    fd(rms_loss, &c, x, T * D, gx);
    fd(rms_loss, &c, w, D, gw);
    as_bwd_rmsnorm(dx, dw, Rf, xf, wf, T, D, 1e-5f);
    print_message("# rmsnorm: dx %.2e dw %.2e\n", rel(dx, gx, T * D), rel(dw, gw, D));
    assert_true(rel(dx, gx, T * D) < TOL);
    assert_true(rel(dw, gw, D) < TOL);
    /* accumulates: a second call doubles the gradients */
    as_bwd_rmsnorm(dx, dw, Rf, xf, wf, T, D, 1e-5f);
    for (int i = 0; i < D; i++)
        gw[i] *= 2;
    assert_true(rel(dw, gw, D) < TOL);
}

/* ---- linear ---- */
struct lin_ctx {
    double *x, *W, *b, *R;
    int T, C, O;
};
static double lin_loss(void *p) {
    struct lin_ctx *c = p;
    double s = 0;
    for (int t = 0; t < c->T; t++)
        for (int o = 0; o < c->O; o++) {
            double y = c->b[o];
            for (int i = 0; i < c->C; i++)
                y += c->x[t * c->C + i] * c->W[o * c->C + i];
            s += c->R[t * c->O + o] * y;
        }
    return s;
}
static void test_linear(void **st) {
    (void)st;
    enum { T = 5, C = 12, O = 7 };
    double x[T * C], W[O * C], b[O], R[T * O], gx[T * C], gW[O * C], gb[O];
    float xf[T * C], Wf[O * C], bf[O], Rf[T * O], dx[T * C] = {0}, dW[O * C] = {0}, db[O] = {0};
    fill(x, xf, T * C, 1), fill(W, Wf, O * C, 1), fill(b, bf, O, 1), fill(R, Rf, T * O, 1);
    struct lin_ctx c = {x, W, b, R, T, C, O};
    fd(lin_loss, &c, x, T * C, gx);
    fd(lin_loss, &c, W, O * C, gW);
    fd(lin_loss, &c, b, O, gb);
    as_bwd_linear(dx, dW, db, Rf, xf, Wf, T, C, O);
    print_message("# linear: dx %.2e dW %.2e db %.2e\n", rel(dx, gx, T * C), rel(dW, gW, O * C),
                  rel(db, gb, O));
    assert_true(rel(dx, gx, T * C) < TOL);
    assert_true(rel(dW, gW, O * C) < TOL);
    assert_true(rel(db, gb, O) < TOL);
}

/* ---- RoPE ---- */
struct rope_ctx {
    double *x, *R, *cs, *sn;
    int T, H, hd, pos0;
};
static void rope_ref(const struct rope_ctx *c, double *y) {
    int half = c->hd / 2;
    for (int t = 0; t < c->T; t++)
        for (int h = 0; h < c->H; h++) {
            const double *v = c->x + (t * c->H + h) * c->hd;
            double *o = y + (t * c->H + h) * c->hd;
            const double *cs = c->cs + (c->pos0 + t) * half, *sn = c->sn + (c->pos0 + t) * half;
            for (int i = 0; i < half; i++) { /* HF: x*cos + rotate_half(x)*sin */
                o[i] = v[i] * cs[i] - v[i + half] * sn[i];
                o[i + half] = v[i + half] * cs[i] + v[i] * sn[i];
            }
        }
}
static double rope_loss(void *p) {
    struct rope_ctx *c = p;
    double y[512], s = 0;
    rope_ref(c, y);
    for (int i = 0; i < c->T * c->H * c->hd; i++)
        s += c->R[i] * y[i];
    return s;
}
static void test_rope(void **st) {
    (void)st;
    enum { T = 4, H = 3, HD = 8, P0 = 2, N = T * H * HD };
    double x[N], R[N], g[N], y[N], cs[(T + P0) * HD / 2], sn[(T + P0) * HD / 2];
    float xf[N], Rf[N], csf[(T + P0) * HD / 2], snf[(T + P0) * HD / 2];
    for (int p = 0; p < T + P0; p++)
        for (int i = 0; i < HD / 2; i++) {
            float ang = (float)p * powf(10000.0f, -2.0f * i / HD);
            csf[p * HD / 2 + i] = cosf(ang), snf[p * HD / 2 + i] = sinf(ang);
            cs[p * HD / 2 + i] = csf[p * HD / 2 + i], sn[p * HD / 2 + i] = snf[p * HD / 2 + i];
        }
    fill(x, xf, N, 1), fill(R, Rf, N, 1);
    struct rope_ctx c = {x, R, cs, sn, T, H, HD, P0};
    rope_ref(&c, y);
    as_op_rope(xf, T, H, HD, P0, csf, snf);
    assert_true(rel(xf, y, N) < 1e-6);
    fd(rope_loss, &c, x, N, g);
    as_bwd_rope(Rf, T, H, HD, P0, csf, snf);
    print_message("# rope: dx %.2e\n", rel(Rf, g, N));
    assert_true(rel(Rf, g, N) < TOL);
}

/* ---- SwiGLU ---- */
struct swi_ctx {
    double *g, *u, *R;
    int n;
};
static double swi_loss(void *p) {
    struct swi_ctx *c = p;
    double s = 0;
    for (int i = 0; i < c->n; i++)
        s += c->R[i] * c->g[i] / (1 + exp(-c->g[i])) * c->u[i];
    return s;
}
static void test_swiglu(void **st) {
    (void)st;
    enum { N = 40 };
    double g[N], u[N], R[N], gg[N], gu[N];
    float gf[N], uf[N], Rf[N], dg[N] = {0}, du[N] = {0}, hf[N];
    fill(g, gf, N, 4), fill(u, uf, N, 2), fill(R, Rf, N, 1);
    struct swi_ctx c = {g, u, R, N};
    memcpy(hf, gf, sizeof hf);
    as_op_swiglu(hf, uf, N);
    for (int i = 0; i < N; i++)
        assert_true(fabs(hf[i] - g[i] / (1 + exp(-g[i])) * u[i]) < 1e-5);
    fd(swi_loss, &c, g, N, gg);
    fd(swi_loss, &c, u, N, gu);
    as_bwd_swiglu(dg, du, Rf, gf, uf, N);
    print_message("# swiglu: dg %.2e du %.2e\n", rel(dg, gg, N), rel(du, gu, N));
    assert_true(rel(dg, gg, N) < TOL);
    assert_true(rel(du, gu, N) < TOL);
}

/* ---- causal GQA attention ---- */
enum { AT = 6, AH = 4, AKV = 2, AHD = 8, AQD = AH * AHD, AKVD = AKV * AHD };
struct att_ctx {
    double *q, *k, *v, *R;
};
static void att_ref(const struct att_ctx *c, double *out) {
    for (int h = 0; h < AH; h++) {
        int kh = h / (AH / AKV); /* repeat_kv: query head h reads kv head h / n_rep */
        for (int t = 0; t < AT; t++) {
            double s[AT], mx = -1e300, sum = 0;
            for (int j = 0; j <= t; j++) {
                s[j] = 0;
                for (int i = 0; i < AHD; i++)
                    s[j] += c->q[t * AQD + h * AHD + i] * c->k[j * AKVD + kh * AHD + i];
                s[j] /= sqrt(AHD);
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j <= t; j++)
                sum += (s[j] = exp(s[j] - mx));
            for (int i = 0; i < AHD; i++) {
                double o = 0;
                for (int j = 0; j <= t; j++)
                    o += s[j] / sum * c->v[j * AKVD + kh * AHD + i];
                out[t * AQD + h * AHD + i] = o;
            }
        }
    }
}
static double att_loss(void *p) {
    struct att_ctx *c = p;
    double o[AT * AQD], s = 0;
    att_ref(c, o);
    for (int i = 0; i < AT * AQD; i++)
        s += c->R[i] * o[i];
    return s;
}
static void test_attention(void **st) {
    (void)st;
    struct as_model_config cfg = {.n_heads = AH, .n_kv_heads = AKV, .head_dim = AHD};
    double q[AT * AQD], k[AT * AKVD], v[AT * AKVD], R[AT * AQD], gq[AT * AQD], gk[AT * AKVD],
        gv[AT * AKVD], o[AT * AQD];
    float qf[AT * AQD], kf[AT * AKVD], vf[AT * AKVD], Rf[AT * AQD], of[AT * AQD];
    float P[AH * AT * AT], dq[AT * AQD] = {0}, dk[AT * AKVD] = {0}, dv[AT * AKVD] = {0},
                                   scr[AT * AT];
    fill(q, qf, AT * AQD, 2), fill(k, kf, AT * AKVD, 2), fill(v, vf, AT * AKVD, 1);
    fill(R, Rf, AT * AQD, 1);
    struct att_ctx c = {q, k, v, R};
    att_ref(&c, o);
    as_op_attention(&cfg, qf, kf, vf, of, P, AT, AT * AT, AT, 0);
    assert_true(rel(of, o, AT * AQD) < 1e-5);
    fd(att_loss, &c, q, AT * AQD, gq);
    fd(att_loss, &c, k, AT * AKVD, gk);
    fd(att_loss, &c, v, AT * AKVD, gv);
    as_bwd_attention(&cfg, dq, dk, dv, Rf, qf, kf, vf, P, AT, AT * AT, AT, scr);
    print_message("# attention: dq %.2e dk %.2e dv %.2e\n", rel(dq, gq, AT * AQD),
                  rel(dk, gk, AT * AKVD), rel(dv, gv, AT * AKVD));
    assert_true(rel(dq, gq, AT * AQD) < TOL);
    assert_true(rel(dk, gk, AT * AKVD) < TOL);
    assert_true(rel(dv, gv, AT * AKVD) < TOL);
}

/* ---- losses ---- */
enum { LT = 3, LV = 11 };
struct loss_ctx {
    double *z, *zt;
    int *y;
    enum as_kd_kind kd;
    double wce, wkd;
};
static double lse(const double *z, int n) {
    double m = z[0], s = 0;
    for (int i = 1; i < n; i++)
        m = fmax(m, z[i]);
    for (int i = 0; i < n; i++)
        s += exp(z[i] - m);
    return m + log(s);
}
/* the definitions of train_loss.h, summed over rows */
static double loss_ref(void *p) {
    struct loss_ctx *c = p;
    double tot = 0;
    for (int t = 0; t < LT; t++) {
        const double *z = c->z + t * LV, *zt = c->zt + t * LV;
        double a = lse(z, LV), b = lse(zt, LV), fkl = 0, rkl = 0, kd = 0;
        for (int i = 0; i < LV; i++) {
            double ls = z[i] - a, lt = zt[i] - b;
            fkl += exp(lt) * (lt - ls);
            rkl += exp(ls) * (ls - lt);
        }
        double conf = exp(zt[c->y[t]] - b);
        kd = c->kd == AS_KD_KL      ? fkl
             : c->kd == AS_KD_RKL   ? rkl
             : c->kd == AS_KD_CAKLD ? conf * rkl + (1 - conf) * fkl
                                    : 0;
        tot += c->wce * (a - z[c->y[t]]) + c->wkd * kd;
    }
    return tot;
}
/* the gradient with conf held constant (cakld's confidence is the teacher's, not learned) */
static void test_losses(void **st) {
    (void)st;
    double z[LT * LV], zt[LT * LV], g[LT * LV];
    float zf[LT * LV], ztf[LT * LV], d[LT * LV];
    int y[LT] = {3, 0, 10};
    fill(z, zf, LT * LV, 3), fill(zt, ztf, LT * LV, 3);
    for (int kd = AS_KD_NONE; kd <= AS_KD_CAKLD; kd++) {
        struct loss_ctx c = {z, zt, y, kd, 0.75, kd == AS_KD_NONE ? 0 : 1.25};
        struct as_loss_cfg cfg = {(float)c.wce, (float)c.wkd, kd};
        struct as_loss_sums s = {0};
        as_loss_rows(zf, ztf, y, LT, LV, &cfg, 0.5f, d, &s);
        double want = loss_ref(&c);
        fd(loss_ref, &c, z, LT * LV, g);
        for (int i = 0; i < LT * LV; i++)
            g[i] *= 0.5;
        print_message("# loss %s: value %.3e, grad %.2e\n", as_kd_name(kd),
                      fabs(s.loss - want) / fabs(want), rel(d, g, LT * LV));
        assert_int_equal(s.rows, LT);
        assert_true(fabs(s.loss - want) < 1e-9 * fabs(want));
        assert_true(rel(d, g, LT * LV) < TOL);
    }
    /* KL of a distribution with itself is 0; a masked target row contributes nothing */
    int ym[LT] = {-1, -1, -1};
    struct as_loss_cfg kl = {1, 1, AS_KD_KL};
    struct as_loss_sums s = {0};
    as_loss_rows(zf, zf, ym, LT, LV, &kl, 1, d, &s);
    assert_true(fabs(s.loss) < 1e-12);
    assert_true(fabs(s.ce) == 0);
    for (int i = 0; i < LT * LV; i++)
        assert_true(fabs(d[i]) < 1e-7);
}

/* ---- AdamW, schedules, clipping ---- */
static void test_adamw(void **st) {
    (void)st;
    enum { N = 5, STEPS = 7 };
    float w[N], g[N], b[2], gb[2];
    double wd[N], m[N] = {0}, v[N] = {0}, bd[2], mb[2] = {0}, vb[2] = {0};
    fill(wd, w, N, 1), fill(bd, b, 2, 1);
    struct as_params ps;
    as_params_init(&ps);
    as_params_add(&ps, "w", w, g, 1, N, 1);
    as_params_add(&ps, "b", b, gb, 1, 2, 0);
    struct as_adamw_cfg cfg = {0.9f, 0.95f, 1e-8f, 0.1f};
    struct as_adamw *o = as_adamw_new(&ps, &cfg);
    for (int s = 1; s <= STEPS; s++) {
        double gd[N], gbd[2], lr = 1e-2 * s;
        fill(gd, g, N, 1), fill(gbd, gb, 2, 1);
        as_adamw_step(o, &ps, (float)lr);
        /* torch.optim.AdamW (decoupled decay, bias correction), in double */
        for (int i = 0; i < N + 2; i++) {
            double *x = i < N ? &wd[i] : &bd[i - N], *mm = i < N ? &m[i] : &mb[i - N];
            double *vv = i < N ? &v[i] : &vb[i - N], gr = i < N ? gd[i] : gbd[i - N];
            if (i < N) *x *= 1 - lr * 0.1;
            *mm = 0.9 * *mm + 0.1 * gr, *vv = 0.95 * *vv + 0.05 * gr * gr;
            double mh = *mm / (1 - pow(0.9, s)), vh = *vv / (1 - pow(0.95, s));
            *x -= lr * mh / (sqrt(vh) + 1e-8);
        }
    }
    print_message("# adamw: w %.2e b %.2e\n", rel(w, wd, N), rel(b, bd, 2));
    assert_true(rel(w, wd, N) < 1e-6);
    assert_true(rel(b, bd, 2) < 1e-6);
    assert_int_equal(o->step, STEPS);
    /* clipping: norm of (3, 4) is 5 -> scaled to norm 1 */
    memset(g, 0, sizeof g), memset(gb, 0, sizeof gb);
    g[0] = 3, gb[1] = 4;
    assert_true(fabs(as_params_clip(&ps, 1.0) - 5.0) < 1e-9);
    assert_true(fabs(as_params_grad_norm(&ps) - 1.0) < 1e-6);
    assert_int_equal(as_params_nonfinite_grad(&ps), -1);
    gb[0] = NAN;
    assert_int_equal(as_params_nonfinite_grad(&ps), 1);
    as_adamw_free(o);
    as_params_free(&ps);
}

static void test_schedules(void **st) {
    (void)st;
    struct as_sched s = {AS_SCHED_COSINE, 100, 10, 0, 0.1f};
    assert_true(fabs(as_sched_lr(&s, 1, 0) - 0.1) < 1e-7); /* warmup (s+1)/10 */
    assert_true(fabs(as_sched_lr(&s, 1, 9) - 1.0) < 1e-7);
    assert_true(fabs(as_sched_lr(&s, 1, 10) - 1.0) < 1e-7);  /* cosine starts at the peak */
    assert_true(fabs(as_sched_lr(&s, 1, 55) - 0.55) < 1e-6); /* halfway: min + (1-min)/2 */
    assert_true(fabs(as_sched_lr(&s, 1, 100) - 0.1) < 1e-7); /* floor */
    s.kind = AS_SCHED_LINEAR;
    assert_true(fabs(as_sched_lr(&s, 2, 55) - 2 * 0.55) < 1e-6);
    assert_true(fabs(as_sched_lr(&s, 2, 33) - 2 * (0.1 + 0.9 * (1 - 23.0 / 90))) < 1e-6);
    s.kind = AS_SCHED_CONSTANT;
    assert_true(fabs(as_sched_lr(&s, 2, 4) - 1.0) < 1e-7);
    assert_true(fabs(as_sched_lr(&s, 2, 99) - 2) < 1e-7);
    s = (struct as_sched){AS_SCHED_WSD, 100, 10, 40, 0.0f};
    assert_true(fabs(as_sched_lr(&s, 1, 59) - 1) < 1e-7);   /* stable */
    assert_true(fabs(as_sched_lr(&s, 1, 80) - 0.5) < 1e-6); /* cosine halfway */
    assert_true(fabs(as_sched_lr(&s, 1, 70) - (0.5 + 0.5 * cos(M_PI / 4))) < 1e-6);
    assert_int_equal(as_sched_parse("wsd"), AS_SCHED_WSD);
    assert_int_equal(as_sched_parse("bogus"), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm),   cmocka_unit_test(test_linear),
        cmocka_unit_test(test_rope),      cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_attention), cmocka_unit_test(test_losses),
        cmocka_unit_test(test_adamw),     cmocka_unit_test(test_schedules),
    };
    return cmocka_run_group_tests_name("train_ops", tests, NULL, NULL);
}
