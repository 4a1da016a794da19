/* llama2c: llama2.c checkpoint/tokenizer reader, reference encoder and reference forward pass.
 * The encoder and forward pass restate llama2.c's run.c (Karpathy, MIT) so that they stay an
 * independent check of the HF-layout importer and engine. */
#include "llama2c.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"

static int read_all(const char *path, unsigned char **buf, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return as_fail("file %s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return as_fail("file %s: cannot seek", path);
    }
    long size = ftell(f);
    rewind(f);
    if (size < 0) {
        fclose(f);
        return as_fail("file %s: cannot determine size", path);
    }
    *buf = as_xmalloc((size_t)size + 1);
    *n = fread(*buf, 1, (size_t)size, f);
    fclose(f);
    if (*n != (size_t)size) {
        free(*buf);
        *buf = NULL;
        return as_fail("file %s: read error", path);
    }
    return 0;
}

int as_l2c_load(const char *path, struct as_l2c_model *m)
{
    memset(m, 0, sizeof *m);
    unsigned char *buf;
    size_t n;
    if (read_all(path, &buf, &n) != 0) return -1;
    if (n < 7 * sizeof(int32_t)) {
        free(buf);
        return as_fail("file %s: truncated llama2.c header (%zu bytes, need 28)", path, n);
    }
    int32_t h[7];
    memcpy(h, buf, sizeof h);
    struct as_l2c_config *c = &m->cfg;
    c->dim = h[0], c->hidden_dim = h[1], c->n_layers = h[2], c->n_heads = h[3];
    c->n_kv_heads = h[4], c->shared_classifier = h[5] > 0;
    c->vocab_size = h[5] > 0 ? h[5] : -h[5];
    c->seq_len = h[6];
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->vocab_size <= 0 || c->seq_len <= 0 || c->dim % c->n_heads != 0 ||
        c->n_heads % c->n_kv_heads != 0 || c->dim > (1 << 16) || c->hidden_dim > (1 << 18) ||
        c->n_layers > 1024 || c->vocab_size > (1 << 20) || c->seq_len > (1 << 20) ||
        (c->dim / c->n_heads) % 2 != 0) {
        free(buf);
        return as_fail("file %s: not a llama2.c checkpoint (header dim=%d hidden=%d layers=%d "
                       "heads=%d kv_heads=%d vocab=%d seq_len=%d)",
                       path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
    }
    size_t L = c->n_layers, D = c->dim, H = c->hidden_dim, V = c->vocab_size;
    size_t hs = D / c->n_heads, kvd = hs * c->n_kv_heads;
    size_t nf = V * D + L * D + L * D * D + 2 * L * kvd * D + L * D * D + L * D + 3 * L * H * D + D +
                (size_t)c->seq_len * hs; /* two legacy RoPE tables of [seq_len, hs/2] */
    if (!c->shared_classifier) nf += V * D;
    size_t need = 28 + nf * sizeof(float);
    if (n < need) {
        free(buf);
        return as_fail("file %s: truncated llama2.c checkpoint: %zu bytes, header implies %zu", path,
                       n, need);
    }
    m->n_floats = nf;
    m->data = as_xmalloc(nf * sizeof(float));
    memcpy(m->data, buf + 28, nf * sizeof(float));
    free(buf);
    float *p = m->data;
    struct as_l2c_weights *w = &m->w;
    w->token_embedding = p, p += V * D;
    w->rms_att = p, p += L * D;
    w->wq = p, p += L * D * D;
    w->wk = p, p += L * kvd * D;
    w->wv = p, p += L * kvd * D;
    w->wo = p, p += L * D * D;
    w->rms_ffn = p, p += L * D;
    w->w1 = p, p += L * H * D;
    w->w2 = p, p += L * D * H;
    w->w3 = p, p += L * H * D;
    w->rms_final = p, p += D;
    p += (size_t)c->seq_len * hs; /* freq_cis_real and freq_cis_imag (legacy, unused) */
    w->wcls = c->shared_classifier ? w->token_embedding : p;
    return 0;
}

void as_l2c_free(struct as_l2c_model *m)
{
    free(m->data);
    memset(m, 0, sizeof *m);
}

/* ---- tokenizer ---------------------------------------------------------------------------- */

static const struct as_l2c_tokenizer *sort_ctx;
static int cmp_piece(const void *a, const void *b)
{
    return strcmp(sort_ctx->vocab[*(const int *)a], sort_ctx->vocab[*(const int *)b]);
}

int as_l2c_tokenizer_load(const char *path, int vocab_size, struct as_l2c_tokenizer *t)
{
    memset(t, 0, sizeof *t);
    unsigned char *buf;
    size_t n;
    if (read_all(path, &buf, &n) != 0) return -1;
    size_t off = 0;
    if (n < 4) {
        free(buf);
        return as_fail("file %s: truncated tokenizer.bin", path);
    }
    int32_t mx;
    memcpy(&mx, buf, 4);
    off = 4;
    t->vocab_size = vocab_size;
    t->max_token_length = mx;
    t->vocab = as_xcalloc(vocab_size, sizeof(char *));
    t->lens = as_xcalloc(vocab_size, sizeof(int));
    t->scores = as_xcalloc(vocab_size, sizeof(float));
    t->sorted = as_xcalloc(vocab_size, sizeof(int));
    for (int i = 0; i < vocab_size; i++) {
        int32_t len;
        if (n - off < 8) goto trunc;
        memcpy(&t->scores[i], buf + off, 4);
        memcpy(&len, buf + off + 4, 4);
        off += 8;
        if (len < 0 || len > mx || (size_t)len > n - off) goto trunc;
        t->vocab[i] = as_xmalloc((size_t)len + 1);
        memcpy(t->vocab[i], buf + off, (size_t)len);
        t->vocab[i][len] = 0;
        t->lens[i] = len;
        off += (size_t)len;
        t->sorted[i] = i;
    }
    free(buf);
    sort_ctx = t;
    qsort(t->sorted, vocab_size, sizeof(int), cmp_piece);
    return 0;
trunc:
    free(buf);
    as_l2c_tokenizer_free(t);
    return as_fail("file %s: truncated or corrupt tokenizer.bin (vocab %d expected)", path,
                   vocab_size);
}

void as_l2c_tokenizer_free(struct as_l2c_tokenizer *t)
{
    if (t->vocab)
        for (int i = 0; i < t->vocab_size; i++) free(t->vocab[i]);
    free(t->vocab);
    free(t->lens);
    free(t->scores);
    free(t->sorted);
    memset(t, 0, sizeof *t);
}

int as_l2c_lookup(const struct as_l2c_tokenizer *t, const char *s, int len)
{
    int lo = 0, hi = t->vocab_size - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, id = t->sorted[mid];
        int c = strncmp(t->vocab[id], s, (size_t)len);
        if (c == 0 && t->vocab[id][len] != 0) c = 1; /* piece is longer than s */
        if (c == 0) return id;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

int as_l2c_encode(const struct as_l2c_tokenizer *t, const char *text, int bos, int eos, int *ids)
{
    int n = 0;
    char buf[2 * 64 + 8];
    char *merged = as_xmalloc((size_t)t->max_token_length * 2 + 3);
    if (bos) ids[n++] = 1;
    if (text[0] != 0) ids[n++] = as_l2c_lookup(t, " ", 1); /* dummy prefix */
    size_t blen = 0;
    for (const char *c = text; *c; c++) {
        /* a new character starts unless this is a continuation byte (10xxxxxx) */
        if ((*c & 0xC0) != 0x80) blen = 0;
        buf[blen++] = *c;
        buf[blen] = 0;
        if ((*(c + 1) & 0xC0) == 0x80 && blen < 4) continue;
        int id = as_l2c_lookup(t, buf, (int)blen);
        if (id != -1) {
            ids[n++] = id;
        } else {
            for (size_t i = 0; i < blen; i++) ids[n++] = (unsigned char)buf[i] + 3;
        }
        blen = 0;
    }
    for (;;) {
        float best = -1e10f;
        int best_id = -1, best_i = -1;
        for (int i = 0; i < n - 1; i++) {
            int la = t->lens[ids[i]], lb = t->lens[ids[i + 1]];
            memcpy(merged, t->vocab[ids[i]], (size_t)la);
            memcpy(merged + la, t->vocab[ids[i + 1]], (size_t)lb);
            int id = as_l2c_lookup(t, merged, la + lb);
            if (id != -1 && t->scores[id] > best) {
                best = t->scores[id], best_id = id, best_i = i;
            }
        }
        if (best_i == -1) break;
        ids[best_i] = best_id;
        memmove(ids + best_i + 1, ids + best_i + 2, (size_t)(n - best_i - 2) * sizeof(int));
        n--;
    }
    if (eos) ids[n++] = 2;
    free(merged);
    return n;
}

int as_l2c_decode(const struct as_l2c_tokenizer *t, int prev, int id, char *out)
{
    const char *piece = t->vocab[id];
    if (prev == 1 && piece[0] == ' ') piece++;
    unsigned int byte;
    if (sscanf(piece, "<0x%02X>", &byte) == 1 && t->lens[id] == 6) {
        out[0] = (char)byte;
        return 1;
    }
    int len = (int)strlen(piece);
    if (len > 64) len = 64;
    memcpy(out, piece, (size_t)len);
    return len;
}

/* ---- reference forward pass (run.c) -------------------------------------------------------- */

static void rmsnorm(float *o, const float *x, const float *w, int n)
{
    float ss = 0;
    for (int j = 0; j < n; j++) ss += x[j] * x[j];
    ss = 1.0f / sqrtf(ss / n + 1e-5f);
    for (int j = 0; j < n; j++) o[j] = w[j] * (ss * x[j]);
}

static void matmul(float *xout, const float *x, const float *w, int n, int d)
{
    for (int i = 0; i < d; i++) {
        float val = 0;
        for (int j = 0; j < n; j++) val += w[(size_t)i * n + j] * x[j];
        xout[i] = val;
    }
}

static void softmax(float *x, int n)
{
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    float s = 0;
    for (int i = 0; i < n; i++) s += (x[i] = expf(x[i] - mx));
    for (int i = 0; i < n; i++) x[i] /= s;
}

int as_l2c_forward_ref(const struct as_l2c_model *m, const int *tokens, int T, float *logits)
{
    const struct as_l2c_config *p = &m->cfg;
    const struct as_l2c_weights *w = &m->w;
    int D = p->dim, H = p->hidden_dim, hs = D / p->n_heads, kvd = hs * p->n_kv_heads;
    int kv_mul = p->n_heads / p->n_kv_heads;
    if (T > p->seq_len) return as_fail("llama2.c reference: %d tokens exceed seq_len %d", T, p->seq_len);
    float *x = as_xcalloc(D, 4), *xb = as_xcalloc(D, 4), *xb2 = as_xcalloc(D, 4);
    float *hb = as_xcalloc(H, 4), *hb2 = as_xcalloc(H, 4), *q = as_xcalloc(D, 4);
    float *att = as_xcalloc(T, 4);
    float *kc = as_xcalloc((size_t)p->n_layers * T * kvd, 4);
    float *vc = as_xcalloc((size_t)p->n_layers * T * kvd, 4);
    for (int pos = 0; pos < T; pos++) {
        int tok = tokens[pos];
        if (tok < 0 || tok >= p->vocab_size) {
            free(x), free(xb), free(xb2), free(hb), free(hb2), free(q), free(att), free(kc), free(vc);
            return as_fail("llama2.c reference: token %d out of range", tok);
        }
        memcpy(x, w->token_embedding + (size_t)tok * D, D * sizeof(float));
        for (int l = 0; l < p->n_layers; l++) {
            rmsnorm(xb, x, w->rms_att + (size_t)l * D, D);
            float *k = kc + ((size_t)l * T + pos) * kvd, *v = vc + ((size_t)l * T + pos) * kvd;
            matmul(q, xb, w->wq + (size_t)l * D * D, D, D);
            matmul(k, xb, w->wk + (size_t)l * D * kvd, D, kvd);
            matmul(v, xb, w->wv + (size_t)l * D * kvd, D, kvd);
            /* RoPE on adjacent pairs (2i, 2i+1), frequency from the pair's index within its head */
            for (int i = 0; i < D; i += 2) {
                int hd = i % hs;
                float freq = 1.0f / powf(10000.0f, hd / (float)hs);
                float val = pos * freq, fcr = cosf(val), fci = sinf(val);
                int rotn = i < kvd ? 2 : 1;
                for (int r = 0; r < rotn; r++) {
                    float *vec = r == 0 ? q : k;
                    float v0 = vec[i], v1 = vec[i + 1];
                    vec[i] = v0 * fcr - v1 * fci;
                    vec[i + 1] = v0 * fci + v1 * fcr;
                }
            }
            for (int h = 0; h < p->n_heads; h++) {
                float *qh = q + h * hs;
                for (int t = 0; t <= pos; t++) {
                    float *kt = kc + ((size_t)l * T + t) * kvd + (h / kv_mul) * hs;
                    float s = 0;
                    for (int i = 0; i < hs; i++) s += qh[i] * kt[i];
                    att[t] = s / sqrtf((float)hs);
                }
                softmax(att, pos + 1);
                float *o = xb + h * hs;
                memset(o, 0, hs * sizeof(float));
                for (int t = 0; t <= pos; t++) {
                    float *vt = vc + ((size_t)l * T + t) * kvd + (h / kv_mul) * hs;
                    for (int i = 0; i < hs; i++) o[i] += att[t] * vt[i];
                }
            }
            matmul(xb2, xb, w->wo + (size_t)l * D * D, D, D);
            for (int i = 0; i < D; i++) x[i] += xb2[i];
            rmsnorm(xb, x, w->rms_ffn + (size_t)l * D, D);
            matmul(hb, xb, w->w1 + (size_t)l * D * H, D, H);
            matmul(hb2, xb, w->w3 + (size_t)l * D * H, D, H);
            for (int i = 0; i < H; i++) hb[i] = hb[i] * (1.0f / (1.0f + expf(-hb[i]))) * hb2[i];
            matmul(xb, hb, w->w2 + (size_t)l * D * H, H, D);
            for (int i = 0; i < D; i++) x[i] += xb[i];
        }
        rmsnorm(x, x, w->rms_final, D);
        matmul(logits + (size_t)pos * p->vocab_size, x, w->wcls, D, p->vocab_size);
    }
    free(x), free(xb), free(xb2), free(hb), free(hb2), free(q), free(att), free(kc), free(vc);
    return 0;
}
