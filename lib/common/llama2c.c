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

#include <jansson.h>

#include "as_error.h"
#include "atomic_file.h"
#include "dtype.h"
#include "safetensors.h"

static int read_all(const char *path, unsigned char **buf, size_t *n) {
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

int as_l2c_load(const char *path, struct as_l2c_model *m) {
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
    c->vocab_size = h[5] > 0 ? h[5] : h[5] == INT32_MIN ? 0 : -h[5]; /* -INT32_MIN overflows */
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
    size_t nf = V * D + L * D + L * D * D + 2 * L * kvd * D + L * D * D + L * D + 3 * L * H * D +
                D + (size_t)c->seq_len * hs; /* two legacy RoPE tables of [seq_len, hs/2] */
    if (!c->shared_classifier) nf += V * D;
    size_t need = 28 + nf * sizeof(float);
    if (n < need) {
        free(buf);
        return as_fail("file %s: truncated llama2.c checkpoint: %zu bytes, header implies %zu",
                       path, n, need);
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

void as_l2c_free(struct as_l2c_model *m) {
    free(m->data);
    memset(m, 0, sizeof *m);
}

/* ---- tokenizer ---------------------------------------------------------------------------- */

/* The order as_l2c_lookup searches in: bytes, then length (strcmp's order for NUL-free pieces). */
static int cmp_piece(const void *a, const void *b, void *ctx) {
    const struct as_l2c_tokenizer *t = ctx;
    int x = *(const int *)a, y = *(const int *)b, lx = t->lens[x], ly = t->lens[y];
    int c = memcmp(t->vocab[x], t->vocab[y], (size_t)(lx < ly ? lx : ly));
    return c ? c : lx < ly ? -1 : lx > ly;
}

int as_l2c_tokenizer_load(const char *path, int vocab_size, struct as_l2c_tokenizer *t) {
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
    /* llama2.c's encoder sends raw bytes to ids 3..258 (<0xXX> byte fallback after <unk>, <s>,
     * </s>): a smaller vocabulary would make it emit ids outside the table. */
    if (vocab_size < 259 || mx < 0) {
        free(buf);
        return as_fail("file %s: vocab size %d / max token length %d: a llama2.c tokenizer needs "
                       "at least 259 tokens (3 specials, 256 bytes) and a non-negative length",
                       path, vocab_size, (int)mx);
    }
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
    qsort_r(t->sorted, (size_t)vocab_size, sizeof(int), cmp_piece, t);
    return 0;
trunc:
    free(buf);
    as_l2c_tokenizer_free(t);
    return as_fail("file %s: truncated or corrupt tokenizer.bin (vocab %d expected)", path,
                   vocab_size);
}

void as_l2c_tokenizer_free(struct as_l2c_tokenizer *t) {
    if (t->vocab)
        for (int i = 0; i < t->vocab_size; i++)
            free(t->vocab[i]);
    free(t->vocab);
    free(t->lens);
    free(t->scores);
    free(t->sorted);
    memset(t, 0, sizeof *t);
}

int as_l2c_lookup(const struct as_l2c_tokenizer *t, const char *s, int len) {
    int lo = 0, hi = t->vocab_size - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, id = t->sorted[mid];
        /* by bytes and length, never past the piece's end: pieces may hold NUL bytes */
        int lp = t->lens[id];
        int c = memcmp(t->vocab[id], s, (size_t)(lp < len ? lp : len));
        if (c == 0) c = lp < len ? -1 : lp > len; /* a shorter piece sorts first */
        if (c == 0) return id;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* Id of the concatenation of pieces a and b, or -1. */
static int merge_id(const struct as_l2c_tokenizer *t, int a, int b, char *buf) {
    int la = t->lens[a], lb = t->lens[b];
    memcpy(buf, t->vocab[a], (size_t)la);
    memcpy(buf + la, t->vocab[b], (size_t)lb);
    return as_l2c_lookup(t, buf, la + lb);
}

int as_l2c_encode(const struct as_l2c_tokenizer *t, const char *text, int bos, int eos, int *ids) {
    int n = 0;
    char buf[2 * 64 + 8];
    /* Sized by the longest piece present, not by the header's max_token_length, which a
     * damaged file may set to 2^31 - 1. */
    size_t longest = 0;
    for (int i = 0; i < t->vocab_size; i++)
        if ((size_t)t->lens[i] > longest) longest = (size_t)t->lens[i];
    char *merged = as_xmalloc(longest * 2 + 3);
    if (bos) ids[n++] = 1;
    int space = text[0] != 0 ? as_l2c_lookup(t, " ", 1) : -1;
    if (space >= 0) ids[n++] = space; /* dummy prefix (none if the vocabulary lacks " ") */
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
            for (size_t i = 0; i < blen; i++)
                ids[n++] = (unsigned char)buf[i] + 3;
        }
        blen = 0;
    }
    /* Merge loop. Same choice as llama2.c (highest merged score, first on ties); the merged id
     * of each adjacent pair is cached and only the pairs next to a merge are looked up again. */
    int *pair = as_xmalloc(((size_t)n + 1) * sizeof(int));
    for (int i = 0; i < n - 1; i++)
        pair[i] = merge_id(t, ids[i], ids[i + 1], merged);
    for (;;) {
        float best = -1e10f;
        int best_i = -1;
        for (int i = 0; i < n - 1; i++)
            if (pair[i] != -1 && t->scores[pair[i]] > best) best = t->scores[pair[i]], best_i = i;
        if (best_i == -1) break;
        ids[best_i] = pair[best_i];
        memmove(ids + best_i + 1, ids + best_i + 2, (size_t)(n - best_i - 2) * sizeof(int));
        memmove(pair + best_i + 1, pair + best_i + 2, (size_t)(n - best_i - 2) * sizeof(int));
        n--;
        if (best_i > 0) pair[best_i - 1] = merge_id(t, ids[best_i - 1], ids[best_i], merged);
        if (best_i < n - 1) pair[best_i] = merge_id(t, ids[best_i], ids[best_i + 1], merged);
    }
    free(pair);
    if (eos) ids[n++] = 2;
    free(merged);
    return n;
}

int as_l2c_decode(const struct as_l2c_tokenizer *t, int prev, int id, char *out) {
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

static void rmsnorm(float *o, const float *x, const float *w, int n) {
    float ss = 0;
    for (int j = 0; j < n; j++)
        ss += x[j] * x[j];
    ss = 1.0f / sqrtf(ss / n + 1e-5f);
    for (int j = 0; j < n; j++)
        o[j] = w[j] * (ss * x[j]);
}

static void matmul(float *xout, const float *x, const float *w, int n, int d) {
    for (int i = 0; i < d; i++) {
        float val = 0;
        for (int j = 0; j < n; j++)
            val += w[(size_t)i * n + j] * x[j];
        xout[i] = val;
    }
}

static void softmax(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    float s = 0;
    for (int i = 0; i < n; i++)
        s += (x[i] = expf(x[i] - mx));
    for (int i = 0; i < n; i++)
        x[i] /= s;
}

int as_l2c_forward_ref(const struct as_l2c_model *m, const int *tokens, int T, float *logits) {
    const struct as_l2c_config *p = &m->cfg;
    const struct as_l2c_weights *w = &m->w;
    int D = p->dim, H = p->hidden_dim, hs = D / p->n_heads, kvd = hs * p->n_kv_heads;
    int kv_mul = p->n_heads / p->n_kv_heads;
    if (T > p->seq_len)
        return as_fail("llama2.c reference: %d tokens exceed seq_len %d", T, p->seq_len);
    float *x = as_xcalloc(D, 4), *xb = as_xcalloc(D, 4), *xb2 = as_xcalloc(D, 4);
    float *hb = as_xcalloc(H, 4), *hb2 = as_xcalloc(H, 4), *q = as_xcalloc(D, 4);
    float *att = as_xcalloc(T, 4);
    float *kc = as_xcalloc((size_t)p->n_layers * T * kvd, 4);
    float *vc = as_xcalloc((size_t)p->n_layers * T * kvd, 4);
    for (int pos = 0; pos < T; pos++) {
        int tok = tokens[pos];
        if (tok < 0 || tok >= p->vocab_size) {
            free(x), free(xb), free(xb2), free(hb), free(hb2), free(q), free(att), free(kc),
                free(vc);
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
                    for (int i = 0; i < hs; i++)
                        s += qh[i] * kt[i];
                    att[t] = s / sqrtf((float)hs);
                }
                softmax(att, pos + 1);
                float *o = xb + h * hs;
                memset(o, 0, hs * sizeof(float));
                for (int t = 0; t <= pos; t++) {
                    float *vt = vc + ((size_t)l * T + t) * kvd + (h / kv_mul) * hs;
                    for (int i = 0; i < hs; i++)
                        o[i] += att[t] * vt[i];
                }
            }
            matmul(xb2, xb, w->wo + (size_t)l * D * D, D, D);
            for (int i = 0; i < D; i++)
                x[i] += xb2[i];
            rmsnorm(xb, x, w->rms_ffn + (size_t)l * D, D);
            matmul(hb, xb, w->w1 + (size_t)l * D * H, D, H);
            matmul(hb2, xb, w->w3 + (size_t)l * D * H, D, H);
            for (int i = 0; i < H; i++)
                hb[i] = hb[i] * (1.0f / (1.0f + expf(-hb[i]))) * hb2[i];
            matmul(xb, hb, w->w2 + (size_t)l * D * H, H, D);
            for (int i = 0; i < D; i++)
                x[i] += xb[i];
        }
        rmsnorm(x, x, w->rms_final, D);
        matmul(logits + (size_t)pos * p->vocab_size, x, w->wcls, D, p->vocab_size);
    }
    free(x), free(xb), free(xb2), free(hb), free(hb2), free(q), free(att), free(kc), free(vc);
    return 0;
}

/* ---- conversion to the Hugging Face layout -------------------------------------------------- */

int as_l2c_hf_row(int hf_row, int head_dim) {
    int h = hf_row / head_dim, i = hf_row % head_dim, half = head_dim / 2;
    return h * head_dim + (i < half ? 2 * i : 2 * (i - half) + 1);
}

/* The HF piece of id: specials by name, ' ' written as U+2581 (SentencePiece's meta space). */
static char *hf_piece(const struct as_l2c_tokenizer *t, int id) {
    if (id == 0) return as_xstrdup("<unk>");
    if (id == 1) return as_xstrdup("<s>");
    if (id == 2) return as_xstrdup("</s>");
    const char *p = t->vocab[id];
    char *out = as_xmalloc(strlen(p) * 3 + 1), *o = out;
    for (; *p; p++) {
        if (*p == ' ') {
            memcpy(o, "\xe2\x96\x81", 3);
            o += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return out;
}

static int is_byte_piece(const struct as_l2c_tokenizer *t, int id) {
    unsigned b;
    return t->lens[id] == 6 && sscanf(t->vocab[id], "<0x%02X>", &b) == 1;
}

struct merge {
    float score;
    int id, split; /* split: byte offset of the boundary in the piece */
};

static int cmp_merge(const void *pa, const void *pb) {
    const struct merge *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1; /* higher score first */
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    return a->split < b->split ? -1 : a->split > b->split;
}

/* Merges from scores: every split t = a + b with a, b in the vocabulary, ranked by the score of t
 * (descending, ties by lower id). A BPE applying the lowest-rank merge first then reproduces
 * llama2.c's "merge the adjacent pair with the highest merged score". */
static json_t *build_merges(const struct as_l2c_tokenizer *t) {
    size_t cap = 1024, n = 0;
    struct merge *ms = as_xmalloc(cap * sizeof *ms);
    for (int id = 3; id < t->vocab_size; id++) {
        if (is_byte_piece(t, id)) continue;
        const char *p = t->vocab[id];
        for (int k = 1; k < t->lens[id]; k++) {
            if (((unsigned char)p[k] & 0xC0) == 0x80) continue; /* split only at char boundaries */
            int a = as_l2c_lookup(t, p, k), b = as_l2c_lookup(t, p + k, t->lens[id] - k);
            if (a < 0 || b < 0) continue;
            if (n == cap) ms = as_xrealloc(ms, (cap *= 2) * sizeof *ms);
            ms[n++] = (struct merge){t->scores[id], id, k};
        }
    }
    qsort(ms, n, sizeof *ms, cmp_merge);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *p = t->vocab[ms[i].id];
        int a = as_l2c_lookup(t, p, ms[i].split);
        int b = as_l2c_lookup(t, p + ms[i].split, t->lens[ms[i].id] - ms[i].split);
        char *pa = hf_piece(t, a), *pb = hf_piece(t, b);
        char *m = as_xmalloc(strlen(pa) + strlen(pb) + 2);
        sprintf(m, "%s %s", pa, pb);
        json_array_append_new(arr, json_string(m));
        free(pa), free(pb), free(m);
    }
    free(ms);
    return arr;
}

static json_t *jstr_pattern(const char *pattern, const char *content) {
    return json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", pattern,
                     "content", content);
}

int as_l2c_write_tokenizer_json(const struct as_l2c_tokenizer *t, const char *path) {
    const char *meta = "\xe2\x96\x81";
    json_t *vocab = json_object();
    for (int id = 0; id < t->vocab_size; id++) {
        char *p = hf_piece(t, id);
        json_t *s = json_string(p);
        if (!s || json_object_get(vocab, p)) {
            json_decref(s);
            json_decref(vocab);
            int r = as_fail("file %s: token %d (\"%s\"): %s", path, id, p,
                            s ? "duplicate piece" : "not valid UTF-8");
            free(p);
            return r;
        }
        json_decref(s);
        json_object_set_new(vocab, p, json_integer(id));
        free(p);
    }
    json_t *added = json_array();
    const char *specials[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++)
        json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", i,
                                               "content", specials[i], "single_word", 0, "lstrip",
                                               0, "rstrip", 0, "normalized", 0, "special", 1));
    json_t *normalizer = json_pack("{s:s, s:[{s:s, s:s}, o]}", "type", "Sequence", "normalizers",
                                   "type", "Prepend", "prepend", meta, jstr_pattern(" ", meta));
    json_t *decoder =
        json_pack("{s:s, s:[o, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}", "type", "Sequence",
                  "decoders", jstr_pattern(meta, " "), "type", "ByteFallback", "type", "Fuse",
                  "type", "Strip", "content", " ", "start", 1, "stop", 0);
    json_t *post = json_pack(
        "{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, "
        "{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}",
        "type", "TemplateProcessing", "single", "SpecialToken", "id", "<s>", "type_id", 0,
        "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken", "id", "<s>", "type_id", 0,
        "Sequence", "id", "A", "type_id", 0, "SpecialToken", "id", "<s>", "type_id", 1, "Sequence",
        "id", "B", "type_id", 1, "special_tokens", "<s>", "id", "<s>", "ids", 1, "tokens", "<s>");
    json_t *model = json_pack("{s:s, s:n, s:s, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE",
                              "dropout", "unk_token", "<unk>", "continuing_subword_prefix",
                              "end_of_word_suffix", "fuse_unk", 1, "byte_fallback", 1,
                              "ignore_merges", 0, "vocab", vocab, "merges", build_merges(t));
    json_t *root =
        json_pack("{s:s, s:n, s:n, s:o, s:o, s:n, s:o, s:o, s:o}", "version", "1.0", "truncation",
                  "padding", "added_tokens", added, "normalizer", normalizer, "pre_tokenizer",
                  "post_processor", post, "decoder", decoder, "model", model);
    if (!root) return as_fail("file %s: cannot build tokenizer JSON", path);
    int rc = json_dump_file(root, path, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (rc != 0) return as_fail("file %s: cannot write: %s", path, strerror(errno));
    return 0;
}

static int dump_json(json_t *o, const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!o) return as_fail("file %s: cannot build JSON", path);
    int rc = json_dump_file(o, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (rc != 0) return as_fail("file %s: cannot write: %s", path, strerror(errno));
    return 0;
}

/* q/k: rows reordered from llama2.c's interleaved pairs to HF's rotate-half halves. */
static float *permute_rows(const float *w, int rows, int cols, int head_dim) {
    float *out = as_xmalloc((size_t)rows * cols * sizeof(float));
    for (int r = 0; r < rows; r++)
        memcpy(out + (size_t)r * cols, w + (size_t)as_l2c_hf_row(r, head_dim) * cols,
               (size_t)cols * sizeof(float));
    return out;
}

static int write_weights(const struct as_l2c_model *m, const char *path) {
    const struct as_l2c_config *c = &m->cfg;
    const struct as_l2c_weights *w = &m->w;
    int64_t D = c->dim, H = c->hidden_dim, V = c->vocab_size, hs = D / c->n_heads;
    int64_t kvd = hs * c->n_kv_heads;
    struct as_st_writer *wr = as_st_writer_new(path);
    if (!wr) return -1;
    char name[256];
    int rc = 0;
#define ADD2(nm, ptr, r, cc)                                                                       \
    do {                                                                                           \
        int64_t sh[2] = {(r), (cc)};                                                               \
        rc |= as_st_writer_add(wr, nm, AS_F32, 2, sh, ptr, (uint64_t)(r) * (cc)*4);                \
    } while (0)
#define ADD1(nm, ptr, r)                                                                           \
    do {                                                                                           \
        int64_t sh[1] = {(r)};                                                                     \
        rc |= as_st_writer_add(wr, nm, AS_F32, 1, sh, ptr, (uint64_t)(r)*4);                       \
    } while (0)
    ADD2("model.embed_tokens.weight", w->token_embedding, V, D);
    for (int l = 0; l < c->n_layers && rc == 0; l++) {
        const char *fmt = "model.layers.%d.%s";
        snprintf(name, sizeof name, fmt, l, "input_layernorm.weight");
        ADD1(name, w->rms_att + l * D, D);
        float *q = permute_rows(w->wq + l * D * D, (int)D, (int)D, (int)hs);
        float *k = permute_rows(w->wk + l * kvd * D, (int)kvd, (int)D, (int)hs);
        int64_t shq[2] = {D, D}, shk[2] = {kvd, D};
        snprintf(name, sizeof name, fmt, l, "self_attn.q_proj.weight");
        rc |= as_st_writer_add_copy(wr, name, AS_F32, 2, shq, q, (uint64_t)D * D * 4);
        snprintf(name, sizeof name, fmt, l, "self_attn.k_proj.weight");
        rc |= as_st_writer_add_copy(wr, name, AS_F32, 2, shk, k, (uint64_t)kvd * D * 4);
        free(q), free(k);
        snprintf(name, sizeof name, fmt, l, "self_attn.v_proj.weight");
        ADD2(name, w->wv + l * kvd * D, kvd, D);
        snprintf(name, sizeof name, fmt, l, "self_attn.o_proj.weight");
        ADD2(name, w->wo + l * D * D, D, D);
        snprintf(name, sizeof name, fmt, l, "post_attention_layernorm.weight");
        ADD1(name, w->rms_ffn + l * D, D);
        snprintf(name, sizeof name, fmt, l, "mlp.gate_proj.weight"); /* w1 */
        ADD2(name, w->w1 + l * H * D, H, D);
        snprintf(name, sizeof name, fmt, l, "mlp.up_proj.weight"); /* w3 */
        ADD2(name, w->w3 + l * H * D, H, D);
        snprintf(name, sizeof name, fmt, l, "mlp.down_proj.weight"); /* w2 */
        ADD2(name, w->w2 + l * D * H, D, H);
    }
    ADD1("model.norm.weight", w->rms_final, D);
    if (!c->shared_classifier) ADD2("lm_head.weight", w->wcls, V, D);
#undef ADD1
#undef ADD2
    if (rc != 0) {
        as_st_writer_abort(wr);
        return -1;
    }
    return as_st_writer_finish(wr);
}

int as_l2c_export_hf(const struct as_l2c_model *m, const struct as_l2c_tokenizer *tok,
                     const char *out_dir) {
    const struct as_l2c_config *c = &m->cfg;
    if (tok && tok->vocab_size != c->vocab_size)
        return as_fail("tokenizer vocab %d does not match checkpoint vocab %d", tok->vocab_size,
                       c->vocab_size);
    char *tmp = as_atomic_dir_begin(out_dir);
    if (!tmp) return -1;
    char path[4096];
    json_t *cfg = json_pack(
        "{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:s, s:s, s:i, s:i, "
        "s:b}",
        "architectures", "LlamaForCausalLM", "model_type", "llama", "hidden_size", c->dim,
        "intermediate_size", c->hidden_dim, "num_hidden_layers", c->n_layers, "num_attention_heads",
        c->n_heads, "num_key_value_heads", c->n_kv_heads, "head_dim", c->dim / c->n_heads,
        "vocab_size", c->vocab_size, "max_position_embeddings", c->seq_len, "rms_norm_eps", 1e-5,
        "rope_theta", 10000.0, "tie_word_embeddings", c->shared_classifier, "hidden_act", "silu",
        "torch_dtype", "float32", "bos_token_id", 1, "eos_token_id", 2, "attention_bias", 0);
    json_t *gen = json_pack("{s:i, s:i, s:i, s:b}", "bos_token_id", 1, "eos_token_id", 2,
                            "max_length", c->seq_len, "_from_model_config", 1);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    if (dump_json(cfg, tmp, "config.json") != 0 ||
        dump_json(gen, tmp, "generation_config.json") != 0 || write_weights(m, path) != 0)
        goto fail;
    if (tok) {
        snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
        json_t *tc =
            json_pack("{s:b, s:b, s:s, s:s, s:s, s:n, s:i, s:s, s:b, s:b}", "add_bos_token", 1,
                      "add_eos_token", 0, "bos_token", "<s>", "eos_token", "</s>", "unk_token",
                      "<unk>", "pad_token", "model_max_length", c->seq_len, "tokenizer_class",
                      "PreTrainedTokenizerFast", "legacy", 1, "clean_up_tokenization_spaces", 0);
        if (as_l2c_write_tokenizer_json(tok, path) != 0 ||
            dump_json(tc, tmp, "tokenizer_config.json") != 0)
            goto fail;
    }
    if (as_atomic_dir_commit(tmp, out_dir) != 0) goto fail;
    free(tmp);
    return 0;
fail:
    as_atomic_dir_abort(tmp);
    free(tmp);
    return -1;
}
