/* test_train_fakequant: the fake quantizers (fakequant.c) against a reference written here from
 * the formulas of ../shared/reference/ternary-qat.md, in double:
 *  - forward values of every scheme (seq2, seq3, lsq3, lsq4, absmean, twn, tequila with its
 *    dead-zone bias, sherry 3:4 with and without Arenas), codes * scales (+ bias) = W_eff,
 *    code ranges, sherry's one zero per 4 inputs;
 *  - gradients: identity STEs pass g (Arenas (1 + lambda) g); SEQ/LSQ clip masks; the alpha
 *    gradient (LSQ formula, hand-derived per element) and, where the quantizer is
 *    differentiable (every weight clipped: W_eff = +-Qp alpha), against finite differences;
 *    tequila's dead-zone path against finite differences of the bias;
 *  - Arenas lambda schedule; bad groups refused;
 *  - as a weight map of the training engine on a random llama (absmean, sherry): the latent
 *    weights' gradients equal the gradients of a model holding W_eff, through the STE. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "as_error.h"
#include "dtype.h"
#include "fakequant.h"
#include "fakequant_model.h"
#include "model.h"
#include "train_loss.h"
#include "train_model.h"

enum { R = 6, C = 32 };
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2 - 1;
}
static void randw(float *w, size_t n, double s) {
    for (size_t i = 0; i < n; i++)
        w[i] = (float)(urand() * s);
}

/* ---- reference quantizers (double), from the formulas ---- */
static double rnd(double x) { /* torch.round: half to even */
    return nearbyint(x);
}
static double sgn(double x) {
    return (x > 0) - (x < 0);
}
/* group bounds: group > 0 consecutive inputs, 0 a row, -1 the tensor */
static void ref(enum as_fq_scheme s, const float *W, int group, const float *alpha, double lambda,
                double *We, double *be) {
    for (int r = 0; r < R; r++)
        be[r] = 0;
    if (s == AS_FQ_SEQ2 || s == AS_FQ_SEQ3) {
        double k = s == AS_FQ_SEQ2 ? 2 : 1.5, sh = s == AS_FQ_SEQ2 ? 0.5 : 0;
        for (int r = 0; r < R; r++)
            for (int i = 0; i < C; i++) {
                double a = alpha[r], x = fmin(fmax(W[r * C + i] / a, -0.99), 0.99);
                We[r * C + i] = a * (rnd(x * k - sh) + sh) / k;
            }
        return;
    }
    if (s == AS_FQ_LSQ3 || s == AS_FQ_LSQ4) {
        double qp = s == AS_FQ_LSQ3 ? 3 : 7, qn = -qp - 1;
        for (int r = 0; r < R; r++)
            for (int i = 0; i < C; i++)
                We[r * C + i] = alpha[r] * fmin(fmax(rnd(W[r * C + i] / alpha[r]), qn), qp);
        return;
    }
    int gs = group > 0 ? group : C;
    for (int r0 = 0; r0 < R; r0++)
        for (int g0 = 0; g0 < C; g0 += gs) {
            /* the group's members */
            int rlo = group < 0 ? 0 : r0, rhi = group < 0 ? R : r0 + 1;
            if (group < 0 && (r0 > 0 || g0 > 0)) continue;
            double sum = 0, n = 0;
            for (int r = rlo; r < rhi; r++)
                for (int i = g0; i < g0 + gs && i < C; i++)
                    sum += fabs(W[r * C + i]), n++;
            double mean = sum / n;
            if (s == AS_FQ_ABSMEAN) {
                double a = fmax(mean, 1e-5);
                for (int r = rlo; r < rhi; r++)
                    for (int i = g0; i < g0 + gs && i < C; i++)
                        We[r * C + i] = a * fmin(fmax(rnd(W[r * C + i] / a), -1), 1);
            } else if (s == AS_FQ_TWN) {
                double d = 0.7 * mean, ks = 0, kn = 0;
                for (int r = rlo; r < rhi; r++)
                    for (int i = g0; i < g0 + gs && i < C; i++)
                        if (fabs(W[r * C + i]) > d) ks += fabs(W[r * C + i]), kn++;
                for (int r = rlo; r < rhi; r++)
                    for (int i = g0; i < g0 + gs && i < C; i++)
                        We[r * C + i] = fabs(W[r * C + i]) > d ? sgn(W[r * C + i]) * ks / kn : 0;
            } else if (s == AS_FQ_TEQUILA) {
                for (int r = rlo; r < rhi; r++)
                    for (int i = g0; i < g0 + gs && i < C; i++) {
                        double w = W[r * C + i];
                        We[r * C + i] = w >= mean / 2 ? mean : w <= -mean / 2 ? -mean : 0;
                        if (fabs(w) < mean / 2) be[r] += lambda * w;
                    }
            } else if (s == AS_FQ_SHERRY) {
                /* mask: per 4 contiguous inputs keep the 3 largest |w| */
                double kept = 0;
                int mask[C];
                for (int r = rlo; r < rhi; r++) {
                    for (int b = g0; b < g0 + gs && b < C; b += 4) {
                        int z = b;
                        for (int j = b + 1; j < b + 4; j++)
                            if (fabs(W[r * C + j]) < fabs(W[r * C + z])) z = j;
                        for (int j = b; j < b + 4; j++) {
                            mask[j] = j != z;
                            if (mask[j]) kept += fabs(W[r * C + j]);
                        }
                    }
                    (void)mask;
                }
                double a = kept / (n * 0.75);
                for (int r = rlo; r < rhi; r++)
                    for (int b = g0; b < g0 + gs && b < C; b += 4) {
                        int z = b;
                        for (int j = b + 1; j < b + 4; j++)
                            if (fabs(W[r * C + j]) < fabs(W[r * C + z])) z = j;
                        for (int j = b; j < b + 4; j++)
                            We[r * C + j] =
                                (j != z) * sgn(W[r * C + j]) * a + lambda * W[r * C + j];
                    }
            }
        }
}

static void check_forward(enum as_fq_scheme s, int group, float lambda) {
    float W[R * C], We[R * C], be[R], sc[R * C];
    int8_t codes[R * C];
    double Wr[R * C], br[R];
    randw(W, R * C, 0.1);
    W[5] = 0.5f, W[40] = -0.7f; /* outliers: clipping and big scales */
    struct as_fq q;
    assert_int_equal(as_fq_init(&q, s, W, R, C, group), 0);
    q.lambda = lambda;
    if (q.alpha) /* init: max|W_row| (seq), max|W_row|/Qp (lsq) */
        for (int r = 0; r < R; r++) {
            double mx = 0;
            for (int i = 0; i < C; i++)
                mx = fmax(mx, fabs(W[r * C + i]));
            double qp = s == AS_FQ_LSQ3 ? 3 : s == AS_FQ_LSQ4 ? 7 : 1;
            assert_float_equal(q.alpha[r], mx / qp, 1e-7);
            q.alpha[r] *= 0.8f; /* some weights beyond the clip */
        }
    int hb = -1;
    as_fq_forward(&q, W, We, be, &hb);
    ref(s, W, q.group, q.alpha, lambda, Wr, br);
    double e = 0, eb = 0;
    for (int i = 0; i < R * C; i++)
        e = fmax(e, fabs(We[i] - Wr[i]));
    assert_int_equal(hb, s == AS_FQ_TEQUILA);
    if (hb)
        for (int r = 0; r < R; r++)
            eb = fmax(eb, fabs(be[r] - br[r]));
    print_message("# %s group %d lambda %g: W_eff max err %.2e, bias %.2e\n", as_fq_info(s)->name,
                  q.group, lambda, e, eb);
    assert_true(e < 1e-6);
    assert_true(eb < 1e-8);
    /* codes: scales * codes (+ bias) == W_eff (without Arenas' lambda W term) */
    if (lambda == 0 || s == AS_FQ_TEQUILA) {
        float bias[R];
        int ng = as_fq_codes(&q, W, codes, sc, bias);
        int lim = s == AS_FQ_SEQ2 ? 3 : s == AS_FQ_LSQ3 ? 4 : s == AS_FQ_LSQ4 ? 8 : 1;
        for (int r = 0; r < R; r++)
            for (int i = 0; i < C; i++) {
                int c = codes[r * C + i];
                assert_true(c >= -lim && c <= lim);
                if (s == AS_FQ_SEQ2) assert_true(c & 1); /* {-3,-1,1,3} */
                if (s == AS_FQ_LSQ3 || s == AS_FQ_LSQ4) assert_true(c < lim);
                assert_float_equal(sc[r * ng + (ng > 1 ? i / q.gsize : 0)] * c, We[r * C + i],
                                   1e-7);
            }
        if (s == AS_FQ_TEQUILA)
            for (int r = 0; r < R; r++)
                assert_float_equal(bias[r], be[r], 1e-9);
        if (s == AS_FQ_SHERRY) /* exactly one zero per 4 */
            for (int b = 0; b < R * C; b += 4)
                assert_int_equal(!codes[b] + !codes[b + 1] + !codes[b + 2] + !codes[b + 3], 1);
    }
    as_fq_free(&q);
}

static void test_forward(void **st) {
    (void)st;
    check_forward(AS_FQ_SEQ2, INT32_MIN, 0);
    check_forward(AS_FQ_SEQ3, INT32_MIN, 0);
    check_forward(AS_FQ_LSQ3, INT32_MIN, 0);
    check_forward(AS_FQ_LSQ4, INT32_MIN, 0);
    check_forward(AS_FQ_ABSMEAN, INT32_MIN, 0); /* per tensor */
    check_forward(AS_FQ_ABSMEAN, 8, 0);
    check_forward(AS_FQ_TWN, INT32_MIN, 0);
    check_forward(AS_FQ_TWN, 0, 0);
    check_forward(AS_FQ_TEQUILA, 16, 1e-3f);
    check_forward(AS_FQ_TEQUILA, 8, 0.25f);
    check_forward(AS_FQ_TEQUILA, 12, 0.25f); /* ragged: groups 12, 12, 8 */
    check_forward(AS_FQ_ABSMEAN, 20, 0);
    check_forward(AS_FQ_SHERRY, 16, 0);
    check_forward(AS_FQ_SHERRY, 0, 0);
    check_forward(AS_FQ_SHERRY, 16, 0.4f);
    check_forward(AS_FQ_SHERRY, 12, 0);
}

static void test_gradients(void **st) {
    (void)st;
    float W[R * C], g[R * C], gW[R * C], gb[R], We[R * C], be[R];
    randw(W, R * C, 0.1), randw(g, R * C, 1), randw(gb, R, 1);
    int hb;
    /* identity STEs */
    enum as_fq_scheme id[] = {AS_FQ_ABSMEAN, AS_FQ_TWN, AS_FQ_SHERRY};
    for (int k = 0; k < 3; k++) {
        struct as_fq q;
        assert_int_equal(as_fq_init(&q, id[k], W, R, C, INT32_MIN), 0);
        q.lambda = id[k] == AS_FQ_SHERRY ? 0.3f : 0;
        memset(gW, 0, sizeof gW);
        as_fq_backward(&q, W, g, NULL, gW);
        for (int i = 0; i < R * C; i++)
            assert_float_equal(gW[i], g[i] * (1 + q.lambda), 1e-7);
        as_fq_free(&q);
    }
    /* tequila: g, plus lambda * dL/db_j on the dead zone; the bias path against finite
     * differences of L = sum_j gb_j c_j(W) (membership does not change for a small step) */
    struct as_fq q;
    assert_int_equal(as_fq_init(&q, AS_FQ_TEQUILA, W, R, C, 16), 0);
    q.lambda = 0.5f;
    memset(gW, 0, sizeof gW);
    as_fq_backward(&q, W, g, gb, gW);
    int dead = 0;
    for (int i = 0; i < R * C; i++) {
        float h = 1e-3f, w0 = W[i];
        double half = 0; /* the group's threshold a/2: a step across it changes membership */
        for (int j = i / 16 * 16; j < i / 16 * 16 + 16; j++)
            half += fabs(W[j]) / 32;
        if (fabs(fabs(w0) - half) < 4 * h) continue;
        W[i] = w0 + h;
        as_fq_forward(&q, W, We, be, &hb);
        double lp = 0, lm = 0;
        for (int r = 0; r < R; r++)
            lp += gb[r] * be[r];
        W[i] = w0 - h;
        as_fq_forward(&q, W, We, be, &hb);
        for (int r = 0; r < R; r++)
            lm += gb[r] * be[r];
        W[i] = w0;
        double fdg = (lp - lm) / (2.0 * h);
        dead += fabs(fdg) > 1e-6;
        assert_true(fabs((gW[i] - g[i]) - fdg) < 1e-4);
    }
    print_message("# tequila: %d of %d weights in the dead zone carry the bias gradient\n", dead,
                  R * C);
    assert_true(dead > 0 && dead < R * C);
    as_fq_free(&q);

    /* SEQ / LSQ: mask and alpha gradient, per element by hand */
    enum as_fq_scheme ls[] = {AS_FQ_SEQ2, AS_FQ_SEQ3, AS_FQ_LSQ3, AS_FQ_LSQ4};
    for (int k = 0; k < 4; k++) {
        enum as_fq_scheme s = ls[k];
        int seq = s == AS_FQ_SEQ2 || s == AS_FQ_SEQ3;
        assert_int_equal(as_fq_init(&q, s, W, R, C, INT32_MIN), 0);
        for (int r = 0; r < R; r++)
            q.alpha[r] *= 0.6f;
        memset(gW, 0, sizeof gW);
        memset(q.galpha, 0, R * sizeof(float));
        as_fq_backward(&q, W, g, NULL, gW);
        double kk = s == AS_FQ_SEQ2 ? 2 : 1.5, sh = s == AS_FQ_SEQ2 ? 0.5 : 0;
        double qp = seq ? (kk - sh) / kk : s == AS_FQ_LSQ3 ? 3 : 7, qn = seq ? -qp : -qp - 1;
        double lo = seq ? -0.99 : qn, hi = seq ? 0.99 : qp;
        double gamma = seq ? 1 / sqrt(R * C) : 1 / sqrt(R * C * qp);
        int clipped = 0;
        for (int r = 0; r < R; r++) {
            double ga = 0;
            for (int i = 0; i < C; i++) {
                double x = W[r * C + i] / (double)q.alpha[r], gg = g[r * C + i];
                int in = x >= lo && x <= hi;
                clipped += !in;
                assert_float_equal(gW[r * C + i], in ? gg : 0, 0);
                double qh = seq ? (rnd(x * kk - sh) + sh) / kk : rnd(x);
                ga += gg * (x < lo ? qn : x > hi ? qp : qh - x);
            }
            assert_float_equal(q.galpha[r], gamma * ga, 1e-6 * (1 + fabs(gamma * ga)));
        }
        assert_true(clipped > 0);
        /* every weight clipped: W_eff = +-Qp alpha is differentiable in alpha; the alpha
         * gradient / gamma is the finite difference of L = sum g W_eff */
        float Wc[R * C];
        for (int i = 0; i < R * C; i++)
            Wc[i] = W[i] > 0 ? 20.0f : -20.0f;
        for (int r = 0; r < R; r++)
            q.alpha[r] = 1.0f;
        memset(q.galpha, 0, R * sizeof(float));
        memset(gW, 0, sizeof gW);
        as_fq_backward(&q, Wc, g, NULL, gW);
        for (int r = 0; r < R; r++) {
            double L[2];
            for (int sgn2 = 0; sgn2 < 2; sgn2++) {
                q.alpha[r] = 1.0f + (sgn2 ? -1e-3f : 1e-3f);
                as_fq_forward(&q, Wc, We, be, &hb);
                L[sgn2] = 0;
                for (int i = 0; i < C; i++)
                    L[sgn2] += (double)g[r * C + i] * We[r * C + i];
            }
            q.alpha[r] = 1.0f;
            double fdg = (L[0] - L[1]) / 2e-3;
            /* ternary SEQ clips to level 2/3 but ParetoQ's gradient uses Qp = (k-s)/k = 1 */
            if (s == AS_FQ_SEQ3) fdg *= 1.5;
            assert_true(fabs(q.galpha[r] / gamma - fdg) < 1e-3 * (1 + fabs(fdg)));
        }
        print_message("# %s: %d weights clipped, alpha gradient by hand and by FD when clipped\n",
                      as_fq_info(s)->name, clipped);
        as_fq_free(&q);
    }
}

static void test_arenas_and_errors(void **st) {
    (void)st;
    assert_float_equal(as_arenas_lambda(0, 1000, 1), 0, 0);
    assert_float_equal(as_arenas_lambda(50, 1000, 1), 0.5, 1e-7);  /* warmup T/10 = 100 */
    assert_float_equal(as_arenas_lambda(100, 1000, 1), 1, 1e-7);   /* peak */
    assert_float_equal(as_arenas_lambda(550, 1000, 1), 0.5, 1e-6); /* cosine halfway */
    assert_float_equal(as_arenas_lambda(1000, 1000, 1), 0, 0);     /* off after T */
    assert_float_equal(as_arenas_lambda(100, 1000, 0.5f), 0.5, 1e-7);
    float W[R * C] = {0};
    struct as_fq q;
    assert_int_equal(as_fq_init(&q, AS_FQ_SHERRY, W, R, 30, 10), -1);
    assert_string_equal(as_last_error(),
                        "fakequant sherry: 3:4 blocks need inputs (30) and group (10) in 4s");
    assert_int_equal(as_fq_init(&q, AS_FQ_SEQ2, W, R, C, 16), -1);
    assert_int_equal(as_fq_parse("sherry"), AS_FQ_SHERRY);
    assert_int_equal(as_fq_parse("int2"), -1);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}
/* The map through the engine: with an identity STE the latent weights' gradients are those of a
 * model holding W_eff. */
static void test_engine_map(void **st) {
    (void)st;
    char dir[] = "/tmp/as_test_fq.XXXXXX", path[4200];
    assert_non_null(mkdtemp(dir));
    struct as_model_config c = {0};
    snprintf(c.model_type, sizeof c.model_type, "llama");
    c.arch = AS_ARCH_LLAMA;
    c.hidden = 32, c.intermediate = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
    c.head_dim = 8, c.vocab = 64, c.max_pos = 32, c.rms_eps = 1e-5f, c.rope_theta = 10000.0f;
    c.bos_id = c.eos_id = -1, c.tie_embeddings = 1;
    snprintf(path, sizeof path, "%s/hf", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(as_model_write_random(&c, AS_F32, 3, path), 0);
    struct as_model *m = as_model_load(path), *mq = as_model_load(path);
    assert_non_null(m);
    enum { T = 12 };
    int ids[T], tg[T];
    for (int t = 0; t < T; t++)
        ids[t] = (t * 7 + 3) % 64, tg[t] = t + 1 < T ? (t * 7 + 10) % 64 : -1;
    struct as_loss_cfg lc = {1, 0, AS_KD_NONE};
    enum as_fq_scheme schemes[] = {AS_FQ_ABSMEAN, AS_FQ_SHERRY};
    for (int k = 0; k < 2; k++) {
        struct as_fq_model fm;
        assert_int_equal(as_fq_model_init(&fm, m, schemes[k], 16), 0);
        struct as_weight_map map = as_fq_model_map(&fm);
        /* the reference model holds W_eff and runs without a map */
        for (int l = 0; l < c.n_layers; l++)
            for (int w = 0; w < AS_LIN_COUNT; w++) {
                int hb;
                float b[64];
                as_fq_forward(&fm.q[l][w], m->layers[l].w[w], mq->layers[l].w[w], b, &hb);
            }
        struct as_model_grads *g = as_model_grads_new(m), *gq = as_model_grads_new(mq);
        struct as_train_state *s1 = as_train_state_new(m, T), *s2 = as_train_state_new(mq, T);
        as_train_set_map(s1, &map);
        struct as_loss_sums l1 = {0}, l2 = {0};
        assert_int_equal(as_train_forward(m, s1, ids, T), 0);
        as_loss_rows(as_train_logits(s1), NULL, tg, T, 64, &lc, 1.0f / T, as_train_logits(s1), &l1);
        as_train_backward(m, s1, g, as_train_logits(s1));
        assert_int_equal(as_train_forward(mq, s2, ids, T), 0);
        as_loss_rows(as_train_logits(s2), NULL, tg, T, 64, &lc, 1.0f / T, as_train_logits(s2), &l2);
        as_train_backward(mq, s2, gq, as_train_logits(s2));
        assert_float_equal(l1.loss, l2.loss, 0);
        /* and the quantization matters: the unquantized model's loss differs */
        struct as_loss_sums l0 = {0};
        assert_int_equal(as_train_forward(m, s2, ids, T), 0);
        as_loss_rows(as_train_logits(s2), NULL, tg, T, 64, &lc, 1.0f / T, NULL, &l0);
        print_message("# %s: loss %.9f, unquantized %.9f\n", as_fq_info(schemes[k])->name,
                      l1.loss / T, l0.loss / T);
        assert_true(fabs(l0.loss - l1.loss) > 1e-3 * l0.loss);
        for (int l = 0; l < c.n_layers; l++)
            for (int w = 0; w < AS_LIN_COUNT; w++) {
                int r, cc;
                as_model_linear_shape(m, w, &r, &cc);
                assert_memory_equal(g->layers[l].w[w], gq->layers[l].w[w],
                                    (size_t)r * cc * sizeof(float));
            }
        assert_memory_equal(g->embed, gq->embed, 64 * 32 * sizeof(float));
        print_message("# engine map %s: loss %.6f, latent gradients = W_eff model's, bit for bit\n",
                      as_fq_info(schemes[k])->name, l1.loss / T);
        as_train_state_free(s1), as_train_state_free(s2);
        as_model_grads_free(m, g), as_model_grads_free(mq, gq);
        as_fq_model_free(&fm);
    }
    as_model_free(m), as_model_free(mq);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_arenas_and_errors),
        cmocka_unit_test(test_engine_map),
    };
    return cmocka_run_group_tests_name("train_fakequant", tests, NULL, NULL);
}
