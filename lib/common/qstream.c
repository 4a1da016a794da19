#include "qstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"

const char *const as_group_names[AS_GROUP_COUNT] = {"attn_qkv", "attn_o", "mlp_gate_up",
                                                     "mlp_down"};

static const char *const lin_modules[AS_LIN_COUNT] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

int as_linear_parse(const char *name, int *layer, enum as_linear *which) {
    const char *p = strstr(name, "layers.");
    if (!p) return -1;
    char *end;
    long l = strtol(p + 7, &end, 10);
    if (end == p + 7 || *end != '.' || l < 0) return -1;
    const char *mod = end + 1;
    for (int i = 0; i < AS_LIN_COUNT; i++) {
        size_t n = strlen(lin_modules[i]);
        if (!strncmp(mod, lin_modules[i], n) && (mod[n] == 0 || !strcmp(mod + n, ".weight"))) {
            *layer = (int)l;
            *which = (enum as_linear)i;
            return 0;
        }
    }
    return -1;
}

void as_linear_prefix(int layer, enum as_linear which, char *buf, size_t n) {
    snprintf(buf, n, "model.layers.%d.%s", layer, lin_modules[which]);
}

int as_qlinear_write(struct as_stream_writer *w, const char *prefix, int layer,
                     const struct as_qlinear *l, json_t *attrs) {
    int G = as_qlinear_groups(l);
    char name[1024];
    json_t *qa = json_pack("{s:i,s:i,s:b,s:b}", "bits", l->bits, "group_size",
                           l->group_size <= 0 ? -1 : l->group_size, "sym", l->sym, "act_order",
                           l->has_act_order);
    if (attrs) json_object_update(qa, attrs);
    /* the qweight record says whether a PREFIX.min record belongs to the layer */
    if (l->minv) json_object_set_new(qa, "float_min", json_true());
    else json_object_del(qa, "float_min");
    int64_t shape_nk[2] = {l->N, l->K}, shape_ng[2] = {l->N, G}, shape_k[1] = {l->K};
    int rc = 0;
    snprintf(name, sizeof name, "%s.qweight", prefix);
    rc |= as_stream_write_tensor(w, name, "qweight", layer, AS_U8, 2, shape_nk, qa, l->q);
    snprintf(name, sizeof name, "%s.scale", prefix);
    if (!rc) rc |= as_stream_write_tensor(w, name, "scale", layer, AS_F32, 2, shape_ng, NULL, l->scale);
    snprintf(name, sizeof name, "%s.zero", prefix);
    if (!rc) rc |= as_stream_write_tensor(w, name, "zero", layer, AS_I32, 2, shape_ng, NULL, l->zero);
    snprintf(name, sizeof name, "%s.min", prefix);
    if (!rc && l->minv)
        rc |= as_stream_write_tensor(w, name, "min", layer, AS_F32, 2, shape_ng, NULL, l->minv);
    snprintf(name, sizeof name, "%s.g_idx", prefix);
    if (!rc) rc |= as_stream_write_tensor(w, name, "g_idx", layer, AS_I32, 1, shape_k, NULL, l->g_idx);
    json_decref(qa);
    return rc ? -1 : 0;
}

/* PART_MIN is optional: present exactly when the qweight record's attrs say float_min. */
enum { PART_Q, PART_SCALE, PART_ZERO, PART_GIDX, PART_MIN, PART_COUNT };
static const char *const part_roles[PART_COUNT] = {"qweight", "scale", "zero", "g_idx", "min"};
static const char *const part_suffix[PART_COUNT] = {".qweight", ".scale", ".zero", ".g_idx",
                                                    ".min"};

struct qentry {
    char *prefix;
    struct as_qlinear l;
    json_t *attrs;
    int have[PART_COUNT];
    int64_t shape[PART_COUNT][2];
    int complete;
};

struct as_qcollect {
    struct qentry *e;
    int n, cap;
    int *order; /* indices of complete entries, in completion order */
    int n_done;
};

struct as_qcollect *as_qcollect_new(void) { return as_xcalloc(1, sizeof(struct as_qcollect)); }

static struct qentry *entry_for(struct as_qcollect *qc, const char *prefix) {
    for (int i = 0; i < qc->n; i++)
        if (!strcmp(qc->e[i].prefix, prefix)) return &qc->e[i];
    if (qc->n == qc->cap) {
        qc->cap = qc->cap ? 2 * qc->cap : 64;
        qc->e = as_xrealloc(qc->e, qc->cap * sizeof *qc->e);
        qc->order = as_xrealloc(qc->order, qc->cap * sizeof *qc->order);
    }
    struct qentry *e = &qc->e[qc->n++];
    memset(e, 0, sizeof *e);
    e->prefix = as_xstrdup(prefix);
    return e;
}

static int wants_min(const struct qentry *e) {
    return e->have[PART_Q] && json_is_true(json_object_get(e->attrs, "float_min"));
}

/* Once all parts are in, check that their shapes agree and build the qlinear. */
static int finish_entry(struct as_qcollect *qc, struct qentry *e, const char *stream) {
    int N = (int)e->shape[PART_Q][0], K = (int)e->shape[PART_Q][1];
    int G = (int)e->shape[PART_SCALE][1];
    if (e->have[PART_MIN] && !wants_min(e))
        return as_fail("stream %s: tensor %s.min: the qweight record's attrs do not say "
                       "float_min",
                       stream, e->prefix);
    if (e->have[PART_MIN] && (e->shape[PART_MIN][0] != N || e->shape[PART_MIN][1] != G))
        return as_fail("stream %s: tensor %s.min: shape [%lld,%lld], scale is [%d,%d]", stream,
                       e->prefix, (long long)e->shape[PART_MIN][0],
                       (long long)e->shape[PART_MIN][1], N, G);
    if (e->shape[PART_SCALE][0] != N || e->shape[PART_ZERO][0] != N ||
        e->shape[PART_ZERO][1] != G || e->shape[PART_GIDX][0] != K)
        return as_fail("stream %s: tensor %s: qweight [%d,%d], scale [%lld,%d], zero [%lld,%lld], "
                       "g_idx [%lld] do not agree",
                       stream, e->prefix, N, K, (long long)e->shape[PART_SCALE][0], G,
                       (long long)e->shape[PART_ZERO][0], (long long)e->shape[PART_ZERO][1],
                       (long long)e->shape[PART_GIDX][0]);
    json_t *b = json_object_get(e->attrs, "bits"), *g = json_object_get(e->attrs, "group_size");
    if (!json_is_integer(b) || !json_is_integer(g))
        return as_fail("stream %s: tensor %s.qweight: attrs need integer bits and group_size",
                       stream, e->prefix);
    e->l.N = N;
    e->l.K = K;
    e->l.bits = (int)json_integer_value(b);
    e->l.group_size = (int)json_integer_value(g);
    e->l.sym = json_is_true(json_object_get(e->attrs, "sym"));
    e->l.has_act_order = json_is_true(json_object_get(e->attrs, "act_order"));
    if (as_qlinear_groups(&e->l) != G)
        return as_fail("stream %s: tensor %s: %d groups for K=%d and group_size %d, scale has %d",
                       stream, e->prefix, as_qlinear_groups(&e->l), K, e->l.group_size, G);
    if (as_qlinear_check(&e->l, e->prefix)) return as_fail_prefix("stream %s: ", stream);
    e->complete = 1;
    qc->order[qc->n_done++] = (int)(e - qc->e);
    return 0;
}

int as_qcollect_offer(struct as_qcollect *qc, struct as_stream_reader *r, const struct as_rec *rec) {
    int part = -1;
    for (int i = 0; i < PART_COUNT; i++)
        if (rec->role && !strcmp(rec->role, part_roles[i])) part = i;
    if (part < 0) return 0;
    size_t n = strlen(rec->name), sl = strlen(part_suffix[part]);
    const char *stream = as_stream_name(r);
    if (n <= sl || strcmp(rec->name + n - sl, part_suffix[part]))
        return as_fail("stream %s: tensor %s: role %s but the name does not end in %s", stream,
                       rec->name, rec->role, part_suffix[part]);
    static const enum as_dtype want_dtype[PART_COUNT] = {AS_U8, AS_F32, AS_I32, AS_I32, AS_F32};
    static const int want_ndim[PART_COUNT] = {2, 2, 2, 1, 2};
    if (rec->dtype != want_dtype[part] || rec->ndim != want_ndim[part])
        return as_fail("stream %s: tensor %s: expected %s with %d dimensions, got %s with %d",
                       stream, rec->name, as_dtype_name(want_dtype[part]), want_ndim[part],
                       as_dtype_name(rec->dtype), rec->ndim);
    char prefix[1024];
    snprintf(prefix, sizeof prefix, "%.*s", (int)(n - sl), rec->name);
    struct qentry *e = entry_for(qc, prefix);
    if (e->have[part])
        return as_fail("stream %s: tensor %s appears twice", stream, rec->name);
    if (e->complete) /* only an unannounced .min can come after its layer is complete */
        return as_fail("stream %s: tensor %s: the qweight record's attrs do not say float_min",
                       stream, rec->name);
    const void *data = as_stream_payload(r);
    if (!data) return -1;
    void *copy = as_xmalloc(rec->nbytes);
    memcpy(copy, data, rec->nbytes);
    e->have[part] = 1;
    e->shape[part][0] = rec->shape[0];
    e->shape[part][1] = rec->ndim > 1 ? rec->shape[1] : 0;
    switch (part) {
    case PART_Q:
        e->l.q = copy;
        e->attrs = rec->attrs ? json_deep_copy(rec->attrs) : json_object();
        break;
    case PART_SCALE: e->l.scale = copy; break;
    case PART_ZERO: e->l.zero = copy; break;
    case PART_GIDX: e->l.g_idx = copy; break;
    default: e->l.minv = copy; break;
    }
    if (e->have[PART_Q] && e->have[PART_SCALE] && e->have[PART_ZERO] && e->have[PART_GIDX] &&
        (e->have[PART_MIN] || !wants_min(e)))
        return finish_entry(qc, e, stream) ? -1 : 1;
    return 1;
}

int as_qcollect_count(const struct as_qcollect *qc) { return qc->n_done; }

const struct as_qlinear *as_qcollect_get(const struct as_qcollect *qc, int i, const char **prefix,
                                         const json_t **attrs) {
    const struct qentry *e = &qc->e[qc->order[i]];
    if (prefix) *prefix = e->prefix;
    if (attrs) *attrs = e->attrs;
    return &e->l;
}

const struct as_qlinear *as_qcollect_find(const struct as_qcollect *qc, const char *prefix) {
    for (int i = 0; i < qc->n; i++)
        if (qc->e[i].complete && !strcmp(qc->e[i].prefix, prefix)) return &qc->e[i].l;
    return NULL;
}

int as_qcollect_check_complete(const struct as_qcollect *qc) {
    for (int i = 0; i < qc->n; i++)
        if (!qc->e[i].complete) {
            for (int p = 0; p < PART_COUNT; p++)
                if (!qc->e[i].have[p] && (p != PART_MIN || wants_min(&qc->e[i])))
                    return as_fail("tensor %s%s: missing from the stream (incomplete quantized "
                                   "layer)",
                                   qc->e[i].prefix, part_suffix[p]);
        }
    return 0;
}

void as_qcollect_free(struct as_qcollect *qc) {
    if (!qc) return;
    for (int i = 0; i < qc->n; i++) {
        free(qc->e[i].prefix);
        free(qc->e[i].l.q);
        free(qc->e[i].l.scale);
        free(qc->e[i].l.zero);
        free(qc->e[i].l.g_idx);
        free(qc->e[i].l.minv);
        json_decref(qc->e[i].attrs);
    }
    free(qc->e);
    free(qc->order);
    free(qc);
}

void as_qlinear_dequant(const struct as_qlinear *l, float *w_hat) {
    int G = as_qlinear_groups(l);
    for (int n = 0; n < l->N; n++)
        for (int k = 0; k < l->K; k++) {
            int g = l->g_idx[k];
            if (l->minv) { /* d * q + m, as ggml's dequantize_row_q4_1 */
                w_hat[(size_t)n * l->K + k] =
                    l->scale[(size_t)n * G + g] * (float)l->q[(size_t)n * l->K + k] +
                    l->minv[(size_t)n * G + g];
                continue;
            }
            w_hat[(size_t)n * l->K + k] =
                l->scale[(size_t)n * G + g] * ((float)l->q[(size_t)n * l->K + k] -
                                               (float)l->zero[(size_t)n * G + g]);
        }
}
