/* quant_ternary: RTN ternary / SEQ 2-bit / Sherry quantizers and the as_qlinear <-> packed
 * layout bridge (quant_ternary.h). */
#include "quant_ternary.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "dtype.h"
#include "model.h"
#include "safetensors.h"

void as_tern_qlinear_free(struct as_qlinear *l) {
    free(l->q);
    free(l->scale);
    free(l->zero);
    free(l->g_idx);
    free(l->minv);
    memset(l, 0, sizeof *l);
}

static uint8_t tern_code(float w, float alpha) {
    float v = nearbyintf(fmaxf(-1.0f, fminf(1.0f, w / alpha)));
    return (uint8_t)((int)v + 1);
}

int as_tern_rtn(enum as_tern_fmt f, const float *W, int N, int K, struct as_qlinear *l) {
    /* A row the format cannot hold (K not whole blocks) is still quantized, with one scale per
     * row (TQ: absmean per row instead of per 256-block), so that as-pack can report it and keep
     * it dense (as_tern_packable says why) and the fakequant checkpoint stays comparable. */
    const int gs = as_tern_layouts[f].scale == AS_TS_BLOCK_F16 && K % 256 == 0 ? 256 : 0;
    if (K <= 0 || N <= 0 || (f == AS_TF_SHERRY && K % 4))
        return as_fail("shape [%d, %d]: %s needs rows of a multiple of %d weights", N, K,
                       as_tern_layouts[f].name, f == AS_TF_SHERRY ? 4 : 1);
    memset(l, 0, sizeof *l);
    l->N = N, l->K = K, l->bits = 2, l->group_size = gs > 0 ? gs : -1, l->sym = 0;
    const int G = as_qlinear_groups(l);
    l->q = as_xmalloc((size_t)N * K);
    l->scale = as_xmalloc((size_t)N * G * sizeof(float));
    l->zero = as_xmalloc((size_t)N * G * sizeof(int32_t));
    l->g_idx = as_xmalloc((size_t)K * sizeof(int32_t));
    for (int k = 0; k < K; k++)
        l->g_idx[k] = gs > 0 ? k / gs : 0;
    if (f == AS_TF_SEQ2) l->minv = as_xmalloc((size_t)N * G * sizeof(float));
    double tensor_abs = 0;
    if (f == AS_TF_I2_S)
        for (size_t i = 0; i < (size_t)N * K; i++)
            tensor_abs += fabsf(W[i]);
    const float tensor_alpha = (float)(tensor_abs / ((double)N * K));
    for (int n = 0; n < N; n++) {
        const float *w = W + (size_t)n * K;
        uint8_t *q = l->q + (size_t)n * K;
        switch (f) {
        case AS_TF_TQ1_0:
        case AS_TF_TQ2_0: {
            const int bl = gs > 0 ? 256 : K;
            for (int g = 0; g < G; g++) {
                double s = 0;
                for (int k = 0; k < bl; k++)
                    s += fabsf(w[bl * g + k]);
                float a = as_f16_to_f32(as_f32_to_f16((float)(s / bl)));
                if (!(a > 0.0f) || !isfinite(a)) a = 1.0f;
                l->scale[(size_t)n * G + g] = a;
                l->zero[(size_t)n * G + g] = 1;
                for (int k = 0; k < bl; k++)
                    q[bl * g + k] = tern_code(w[bl * g + k], a);
            }
            break;
        }
        case AS_TF_I2_S: {
            float a = tensor_alpha > 0.0f ? tensor_alpha : 1.0f;
            l->scale[n] = a;
            l->zero[n] = 1;
            for (int k = 0; k < K; k++)
                q[k] = tern_code(w[k], a);
            break;
        }
        case AS_TF_SEQ2: {
            float amax = 0.0f;
            for (int k = 0; k < K; k++)
                amax = fmaxf(amax, fabsf(w[k]));
            float alpha = amax > 0.0f ? amax : 2.0f;
            for (int k = 0; k < K; k++) {
                float t = fmaxf(-0.99f, fminf(0.99f, w[k] / alpha));
                q[k] = (uint8_t)((int)nearbyintf(t * 2.0f - 0.5f) + 2);
            }
            l->scale[n] = alpha / 2.0f;
            l->minv[n] = -1.5f * l->scale[n];
            l->zero[n] = 2;
            break;
        }
        default: { /* SHERRY */
            double kept = 0;
            for (int k = 0; k < K; k += 4) {
                int z = 0;
                for (int p = 1; p < 4; p++)
                    if (fabsf(w[k + p]) < fabsf(w[k + z])) z = p;
                for (int p = 0; p < 4; p++) {
                    if (p == z) {
                        q[k + p] = 1;
                        continue;
                    }
                    kept += fabsf(w[k + p]);
                    q[k + p] = w[k + p] < 0.0f ? 0 : 2; /* an exact 0 kept counts as +1 */
                }
            }
            float a = (float)(kept / (K / 4 * 3));
            l->scale[n] = a > 0.0f ? a : 1.0f;
            l->zero[n] = 1;
            break;
        }
        }
    }
    return 0;
}

int as_tern_packable(enum as_tern_fmt f, const struct as_qlinear *l, char *why, size_t why_len) {
    const struct as_tern_layout *L = &as_tern_layouts[f];
    const int G = as_qlinear_groups(l);
    if (l->K % L->block) {
        snprintf(why, why_len, "rows of %d weights do not fill %s's %d-weight blocks", l->K,
                 L->name, L->block);
        return 0;
    }
    if (!as_qlinear_gidx_is_trivial(l)) {
        snprintf(why, why_len, "act-order groups (%s has contiguous scale blocks)", L->name);
        return 0;
    }
    if (L->scale == AS_TS_BLOCK_F16 && l->group_size != 256) {
        snprintf(why, why_len, "group size %d (%s stores one scale per 256 weights)", l->group_size,
                 L->name);
        return 0;
    }
    if (L->scale != AS_TS_BLOCK_F16) /* one scale per row (or tensor): groups must agree */
        for (int n = 0; n < l->N; n++)
            for (int g = 1; g < G; g++)
                if (l->scale[(size_t)n * G + g] != l->scale[(size_t)n * G]) {
                    snprintf(why, why_len, "scales differ within row %d (%s has one per %s)", n,
                             L->name, L->scale == AS_TS_TENSOR ? "tensor" : "row");
                    return 0;
                }
    if (L->scale == AS_TS_TENSOR)
        for (int n = 1; n < l->N; n++)
            if (l->scale[(size_t)n * G] != l->scale[0]) {
                snprintf(why, why_len, "scales differ between rows (I2_S has one per tensor)");
                return 0;
            }
    for (size_t i = 0; i < (size_t)l->N * G; i++) {
        if (f == AS_TF_SEQ2) {
            if (!l->minv || l->minv[i] != -1.5f * l->scale[i]) {
                snprintf(why, why_len, "not SEQ 2-bit (needs the float minimum -1.5 * scale)");
                return 0;
            }
        } else if (l->minv || l->zero[i] != 1) {
            snprintf(why, why_len, "not ternary (needs zero point 1, got %s%d)",
                     l->minv ? "a float minimum, " : "", l->zero[i]);
            return 0;
        }
    }
    return 1;
}

int as_tern_pack_qlinear(enum as_tern_fmt f, const char *name, const struct as_qlinear *l,
                         uint8_t *out) {
    const int G = as_qlinear_groups(l);
    size_t ns = as_tern_scale_count(f, l->N, l->K);
    float *s = as_xmalloc(ns * sizeof *s);
    for (size_t i = 0; i < ns; i++)
        s[i] = as_tern_layouts[f].scale == AS_TS_BLOCK_F16 ? l->scale[i] : l->scale[i * G];
    int rc = as_tern_pack(f, name, l->N, l->K, l->q, s, out);
    free(s);
    return rc;
}

int as_tern_write(struct as_st_writer *w, const char *prefix, enum as_tern_fmt f,
                  const struct as_qlinear *l) {
    char name[1100];
    snprintf(name, sizeof name, "%s.weight", prefix);
    const size_t nb = as_tern_packed_bytes(f, l->N, l->K);
    uint8_t *p = as_xmalloc(nb);
    if (as_tern_pack_qlinear(f, name, l, p)) {
        free(p);
        return -1;
    }
    /* read back: every code and scale as the quantizer gave them */
    const size_t ns = as_tern_scale_count(f, l->N, l->K);
    const int G = as_qlinear_groups(l);
    uint8_t *c = as_xmalloc((size_t)l->N * l->K);
    float *s = as_xmalloc(ns * sizeof *s);
    as_tern_unpack(f, l->N, l->K, p, c, s);
    int bad = memcmp(c, l->q, (size_t)l->N * l->K) != 0;
    for (size_t i = 0; i < ns && !bad; i++)
        bad = s[i] != (as_tern_layouts[f].scale == AS_TS_BLOCK_F16 ? l->scale[i] : l->scale[i * G]);
    free(c);
    free(s);
    int rc = -1;
    if (bad) {
        as_fail("verify: tensor %s: %s codes or scales read back differ from the quantizer's", name,
                as_tern_layouts[f].name);
    } else {
        char pn[1100];
        snprintf(pn, sizeof pn, "%s.weight_packed", prefix);
        int64_t shape1[1] = {(int64_t)nb}, shape2[1] = {2};
        int32_t nk[2] = {l->N, l->K};
        rc = as_st_writer_add_copy(w, pn, AS_U8, 1, shape1, p, nb);
        snprintf(pn, sizeof pn, "%s.weight_shape", prefix);
        if (!rc) rc = as_st_writer_add_copy(w, pn, AS_I32, 1, shape2, nk, sizeof nk);
    }
    free(p);
    return rc;
}

json_t *as_tern_quant_config(enum as_tern_fmt f, const char *const *skip, int n_skip) {
    const struct as_tern_layout *L = &as_tern_layouts[f];
    json_t *np = json_array();
    for (int i = 0; i < n_skip; i++)
        json_array_append_new(np, json_string(skip[i]));
    return json_pack("{s:s, s:s, s:f, s:o}", "quant_method", "as-ternary", "format", L->name,
                     "bits_per_weight", (double)L->block_bytes * 8.0 / L->block, "not_packed", np);
}

/* The format of a checkpoint: config.json quantization_config.format, read per load call (a
 * model has a few hundred linears; the file is small). */
static int ckpt_format(const struct as_ckpt *c) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", c->dir);
    json_error_t err;
    json_t *cfg = json_load_file(path, 0, &err);
    if (!cfg) return as_fail("%s: line %d: %s", path, err.line, err.text);
    json_t *qc = json_object_get(cfg, "quantization_config");
    const char *f = json_string_value(json_object_get(qc, "format"));
    int fmt = f ? as_tern_fmt_parse(f) : -1;
    json_decref(cfg);
    if (fmt < 0) return as_fail("%s: quantization_config.format: not a ternary format", path);
    return fmt;
}

static int ternary_loader(const struct as_ckpt *c, const char *name, int64_t rows, int64_t cols,
                          float *dst) {
    char pn[1100];
    size_t n = strlen(name);
    if (n < 7 || n > 1000 || strcmp(name + n - 7, ".weight"))
        return as_weight_load_dense(c, name, rows, cols, dst);
    snprintf(pn, sizeof pn, "%.*s.weight_packed", (int)(n - 7), name);
    const struct as_st_tensor *t = as_ckpt_find(c, pn);
    if (!t) return as_weight_load_dense(c, name, rows, cols, dst);
    int f = ckpt_format(c);
    if (f < 0) return -1;
    size_t want = as_tern_packed_bytes((enum as_tern_fmt)f, (int)rows, (int)cols);
    if (t->dtype != AS_U8 || t->ndim != 1 || t->nbytes != want || !want)
        return as_fail("%s: tensor %s: %llu bytes, %s [%lld, %lld] needs %zu", c->dir, pn,
                       (unsigned long long)t->nbytes, as_tern_layouts[f].name, (long long)rows,
                       (long long)cols, want);
    as_tern_dequant((enum as_tern_fmt)f, (int)rows, (int)cols, t->data, dst);
    return 0;
}

void as_register_ternary_loader(void) {
    as_weight_loader_register("as-ternary", ternary_loader);
}
