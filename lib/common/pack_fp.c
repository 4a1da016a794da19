/* pack_fp: stream records of FP8/INT8/FP4/W4A8 linears and their checkpoint writers (pack_fp.h,
 * docs/lepto.md). as_pack_fp() is as-pack for these formats: gather the stream, write the
 * checkpoint into a staging directory, read every quantized linear back through the loaders the
 * engine uses (quant_load_fp.c, quant_load.c) and compare bit for bit with DEC(code) * scale
 * (scales rounded to their stored dtype), then rename into place. */
#include "pack_fp.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "atomic_file.h"
#include "pack_formats.h"
#include "quant_load.h"
#include "safetensors.h"

/* ---- stream records ---- */

static enum as_dtype codes_dtype(enum as_wq_kind k) {
    switch (k) {
    case AS_WQ_INT8_CHANNEL:
        return AS_I8;
    case AS_WQ_NVFP4:
    case AS_WQ_MXFP4:
        return AS_F4;
    case AS_WQ_INT4_GROUP:
        return AS_U8;
    default:
        return AS_F8_E4M3;
    }
}

static enum as_dtype scale_dtype_of(enum as_wq_kind k) {
    return k == AS_WQ_NVFP4 ? AS_F8_E4M3 : k == AS_WQ_MXFP4 ? AS_F8_E8M0 : AS_F32;
}

int as_fplinear_write(struct as_stream_writer *w, const char *prefix, int layer,
                      const struct as_fpq_weight *q, enum as_aq_kind act, float input_scale,
                      json_t *attrs) {
    char name[600];
    json_t *a = json_object();
    if (attrs) json_object_update(a, attrs);
    json_object_set_new(a, "weights", json_string(as_wq_names[q->kind]));
    json_object_set_new(a, "act", json_string(as_aq_names[act]));
    json_object_set_new(a, "block", json_pack("[i,i]", q->block_n, q->block_k));
    int64_t shape[2] = {q->N, q->K};
    snprintf(name, sizeof name, "%s.weight_codes", prefix);
    struct as_rec rec;
    as_rec_init(&rec, name, "fp-codes", layer, codes_dtype(q->kind), 2, shape);
    rec.attrs = a;
    int rc = as_stream_write(w, &rec, q->codes);
    json_decref(a);
    int64_t ss[2] = {q->sn, q->sk};
    snprintf(name, sizeof name, "%s.weight_scale", prefix);
    enum as_dtype sd = scale_dtype_of(q->kind);
    if (!rc)
        rc = as_stream_write_tensor(w, name, "fp-scale", layer, sd, 2, ss, NULL,
                                    sd == AS_F32 ? (const void *)q->scale : q->scale8);
    int64_t one[1] = {1};
    if (!rc && q->kind == AS_WQ_NVFP4) {
        snprintf(name, sizeof name, "%s.weight_global_scale", prefix);
        rc = as_stream_write_tensor(w, name, "fp-global-scale", layer, AS_F32, 1, one, NULL,
                                    &q->global_scale);
    }
    if (!rc && input_scale > 0) {
        snprintf(name, sizeof name, "%s.input_scale", prefix);
        rc = as_stream_write_tensor(w, name, "input-scale", layer, AS_F32, 1, one, NULL,
                                    &input_scale);
    }
    return rc;
}

int as_kvscale_write(struct as_stream_writer *w, int layer, float k_scale, float v_scale,
                     json_t *attrs) {
    char name[128];
    int64_t one[1] = {1};
    int rc = 0;
    for (int which = 0; which < 2 && !rc; which++) {
        snprintf(name, sizeof name, "model.layers.%d.self_attn.%c_scale", layer, which ? 'v' : 'k');
        struct as_rec rec;
        as_rec_init(&rec, name, "kv-scale", layer, AS_F32, 1, one);
        rec.attrs = attrs;
        rc = as_stream_write(w, &rec, which ? &v_scale : &k_scale);
    }
    return rc;
}

struct fp_entry {
    struct as_fplinear l;
    int have_codes, have_scale, have_global, have_input, complete;
    enum as_dtype scale_dt;
    int64_t sshape[2];
    void *scale_raw;
};

struct as_fpcollect {
    struct fp_entry *e;
    int n;
    int *order; /* completed, in completion order */
    int n_done;
};

struct as_fpcollect *as_fpcollect_new(void) {
    return as_xcalloc(1, sizeof(struct as_fpcollect));
}

static const char *const fp_suffix[4] = {".weight_codes", ".weight_scale", ".weight_global_scale",
                                         ".input_scale"};

static struct fp_entry *entry_for(struct as_fpcollect *fc, const char *prefix, int layer) {
    for (int i = 0; i < fc->n; i++)
        if (!strcmp(fc->e[i].l.prefix, prefix)) return &fc->e[i];
    fc->e = as_xrealloc(fc->e, sizeof *fc->e * (fc->n + 1));
    struct fp_entry *e = &fc->e[fc->n++];
    memset(e, 0, sizeof *e);
    e->l.prefix = as_xstrdup(prefix);
    e->l.layer = layer;
    return e;
}

/* Once codes, scale and (as the attrs require) global and input scales are in: check shapes. */
static int try_complete(struct as_fpcollect *fc, struct fp_entry *e, const char *sname) {
    struct as_fplinear *l = &e->l;
    if (e->complete || !e->have_codes || !e->have_scale) return 0;
    if (l->w.kind == AS_WQ_NVFP4 && !e->have_global) return 0;
    int needs_input =
        l->act == AS_AQ_FP8_STATIC || l->act == AS_AQ_INT8_STATIC || l->act == AS_AQ_NVFP4;
    if (needs_input && !e->have_input) return 0;
    struct as_fpq_weight *q = &l->w;
    int N = q->N, K = q->K, bn = q->block_n, bk = q->block_k;
    int64_t sn = (N + bn - 1) / bn, sk = (K + bk - 1) / bk;
    if (e->sshape[0] != sn || e->sshape[1] != sk)
        return as_fail("stream %s: tensor %s.weight_scale: shape [%lld, %lld], expected [%lld, "
                       "%lld] for %s blocks %dx%d of [%d, %d]",
                       sname, l->prefix, (long long)e->sshape[0], (long long)e->sshape[1],
                       (long long)sn, (long long)sk, as_wq_names[q->kind], bn, bk, N, K);
    if (e->scale_dt != scale_dtype_of(q->kind))
        return as_fail("stream %s: tensor %s.weight_scale: dtype %s, expected %s", sname, l->prefix,
                       as_dtype_name(e->scale_dt), as_dtype_name(scale_dtype_of(q->kind)));
    q->sn = (int)sn, q->sk = (int)sk;
    if (e->scale_dt == AS_F32) {
        q->scale = e->scale_raw;
        for (int64_t i = 0; i < sn * sk; i++)
            if (!(q->scale[i] > 0) || q->scale[i] == INFINITY)
                return as_fail("stream %s: tensor %s.weight_scale: scale %g at %lld is not a "
                               "positive finite number",
                               sname, l->prefix, (double)q->scale[i], (long long)i);
    } else {
        q->scale8 = e->scale_raw;
    }
    e->scale_raw = NULL;
    if (q->kind == AS_WQ_NVFP4 && !(q->global_scale > 0 && q->global_scale < INFINITY))
        return as_fail("stream %s: tensor %s.weight_global_scale: %g is not positive finite", sname,
                       l->prefix, (double)q->global_scale);
    if (needs_input && !(l->input_scale > 0 && l->input_scale < INFINITY))
        return as_fail("stream %s: tensor %s.input_scale: %g is not positive finite", sname,
                       l->prefix, (double)l->input_scale);
    if (q->kind == AS_WQ_INT4_GROUP)
        for (size_t i = 0; i < q->codes_bytes; i++)
            if (q->codes[i] > 15)
                return as_fail("stream %s: tensor %s.weight_codes: int4 code %d out of range",
                               sname, l->prefix, q->codes[i]);
    e->complete = 1;
    fc->order = as_xrealloc(fc->order, sizeof(int) * (fc->n_done + 1));
    fc->order[fc->n_done++] = (int)(e - fc->e);
    return 0;
}

int as_fpcollect_offer(struct as_fpcollect *fc, struct as_stream_reader *r,
                       const struct as_rec *rec) {
    size_t len = strlen(rec->name);
    int which = -1;
    for (int i = 0; i < 4 && which < 0; i++) {
        size_t sl = strlen(fp_suffix[i]);
        if (len > sl && !strcmp(rec->name + len - sl, fp_suffix[i])) which = i;
    }
    if (which < 0) return 0;
    static const char *const roles[4] = {"fp-codes", "fp-scale", "fp-global-scale", "input-scale"};
    if (!rec->role || strcmp(rec->role, roles[which])) return 0;
    const char *sname = as_stream_name(r);
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%.*s", (int)(len - strlen(fp_suffix[which])), rec->name);
    struct fp_entry *e = entry_for(fc, prefix, rec->layer);
    const void *data = as_stream_payload(r);
    if (!data) return -1;
    uint64_t numel = as_rec_numel(rec);
    int dup = which == 0   ? e->have_codes
              : which == 1 ? e->have_scale
              : which == 2 ? e->have_global
                           : e->have_input;
    if (dup) return as_fail("stream %s: tensor %s appears twice", sname, rec->name);
    if (which == 0) {
        const char *wn = json_string_value(json_object_get(rec->attrs, "weights"));
        const char *an = json_string_value(json_object_get(rec->attrs, "act"));
        json_t *blk = json_object_get(rec->attrs, "block");
        int wk = wn ? as_wq_from_name(wn) : -1, ak = an ? as_aq_from_name(an) : -1;
        if (wk < 0 || ak < 0 || !json_is_array(blk) || json_array_size(blk) != 2)
            return as_fail("stream %s: tensor %s: attrs need weights (fp8-tensor, ...), act and "
                           "block [bn, bk]",
                           sname, rec->name);
        int bn = (int)json_integer_value(json_array_get(blk, 0));
        int bk = (int)json_integer_value(json_array_get(blk, 1));
        if (rec->ndim != 2 || rec->shape[0] < 1 || rec->shape[1] < 1 || bn < 1 || bk < 1 ||
            rec->shape[0] > (1 << 30) || rec->shape[1] > (1 << 30))
            return as_fail("stream %s: tensor %s: expected codes [N, K] and positive blocks", sname,
                           rec->name);
        if (rec->dtype != codes_dtype((enum as_wq_kind)wk))
            return as_fail("stream %s: tensor %s: dtype %s, expected %s for %s", sname, rec->name,
                           as_dtype_name(rec->dtype),
                           as_dtype_name(codes_dtype((enum as_wq_kind)wk)), wn);
        if ((wk == AS_WQ_NVFP4 || wk == AS_WQ_MXFP4) && rec->shape[1] % 2)
            return as_fail("stream %s: tensor %s: FP4 codes need an even K", sname, rec->name);
        struct as_fpq_weight *q = &e->l.w;
        q->kind = (enum as_wq_kind)wk, q->N = (int)rec->shape[0], q->K = (int)rec->shape[1];
        q->block_n = bn, q->block_k = bk;
        q->codes_bytes = rec->nbytes;
        q->codes = as_xmalloc(rec->nbytes ? rec->nbytes : 1);
        memcpy(q->codes, data, rec->nbytes);
        e->l.act = (enum as_aq_kind)ak;
        e->l.attrs = json_deep_copy(rec->attrs);
        e->have_codes = 1;
    } else if (which == 1) {
        if (rec->ndim != 2)
            return as_fail("stream %s: tensor %s: expected a 2-d scale grid", sname, rec->name);
        if (rec->dtype != AS_F32 && rec->dtype != AS_F8_E4M3 && rec->dtype != AS_F8_E8M0)
            return as_fail("stream %s: tensor %s: dtype %s, expected F32, F8_E4M3 or F8_E8M0",
                           sname, rec->name, as_dtype_name(rec->dtype));
        e->scale_dt = rec->dtype;
        e->sshape[0] = rec->shape[0], e->sshape[1] = rec->shape[1];
        e->scale_raw = as_xmalloc(rec->nbytes ? rec->nbytes : 1);
        memcpy(e->scale_raw, data, rec->nbytes);
        e->have_scale = 1;
    } else {
        if (rec->dtype != AS_F32 || numel != 1)
            return as_fail("stream %s: tensor %s: expected F32 [1]", sname, rec->name);
        float v;
        memcpy(&v, data, 4);
        if (which == 2)
            e->l.w.global_scale = v, e->have_global = 1;
        else
            e->l.input_scale = v, e->have_input = 1;
    }
    return try_complete(fc, e, sname) ? -1 : 1;
}

int as_fpcollect_count(const struct as_fpcollect *fc) {
    return fc->n_done;
}
const struct as_fplinear *as_fpcollect_get(const struct as_fpcollect *fc, int i) {
    return &fc->e[fc->order[i]].l;
}
const struct as_fplinear *as_fpcollect_find(const struct as_fpcollect *fc, const char *prefix) {
    for (int i = 0; i < fc->n; i++)
        if (fc->e[i].complete && !strcmp(fc->e[i].l.prefix, prefix)) return &fc->e[i].l;
    return NULL;
}
int as_fpcollect_check_complete(const struct as_fpcollect *fc) {
    for (int i = 0; i < fc->n; i++)
        if (!fc->e[i].complete) {
            const struct fp_entry *e = &fc->e[i];
            const char *miss = !e->have_codes   ? "weight_codes"
                               : !e->have_scale ? "weight_scale"
                               : e->l.w.kind == AS_WQ_NVFP4 && !e->have_global
                                   ? "weight_global_scale"
                                   : "input_scale";
            return as_fail("tensor %s: incomplete quantized linear (%s missing)", e->l.prefix,
                           miss);
        }
    return 0;
}
void as_fpcollect_free(struct as_fpcollect *fc) {
    if (!fc) return;
    for (int i = 0; i < fc->n; i++) {
        free(fc->e[i].l.prefix);
        as_fpq_free(&fc->e[i].l.w);
        json_decref(fc->e[i].l.attrs);
        free(fc->e[i].scale_raw);
    }
    free(fc->e), free(fc->order), free(fc);
}

/* ---- formats ---- */

enum fp_format { F_FLOAT, F_INT, F_NVFP4, F_MXFP4, F_W4A8, F_DEEPSEEK, F_FAKEQUANT, F_AUTO };
static const char *const format_names[] = {
    "float-quantized",      "int-quantized", "nvfp4-pack-quantized",
    "mxfp4-pack-quantized", "w4a8",          "fp8",
    "fakequant-fp",         "ct-fp"};

static int format_of(const char *name) {
    for (int i = 0; i <= F_AUTO; i++)
        if (!strcmp(name, format_names[i])) return i;
    return -1;
}

int as_pack_fp_handles(const char *format) {
    return format && format_of(format) >= 0;
}

static int format_for_weights(enum as_wq_kind k) {
    switch (k) {
    case AS_WQ_INT8_CHANNEL:
        return F_INT;
    case AS_WQ_NVFP4:
        return F_NVFP4;
    case AS_WQ_MXFP4:
        return F_MXFP4;
    case AS_WQ_INT4_GROUP:
        return F_W4A8;
    default:
        return F_FLOAT;
    }
}

/* Does format f hold weights k with activations a? */
static int format_accepts(int f, enum as_wq_kind k, enum as_aq_kind a) {
    switch (f) {
    case F_FLOAT:
        return (k == AS_WQ_FP8_TENSOR || k == AS_WQ_FP8_CHANNEL || k == AS_WQ_FP8_BLOCK) &&
               (a == AS_AQ_NONE || a == AS_AQ_FP8_STATIC || a == AS_AQ_FP8_TOKEN ||
                a == AS_AQ_FP8_GROUP128);
    case F_INT:
        return k == AS_WQ_INT8_CHANNEL &&
               (a == AS_AQ_NONE || a == AS_AQ_INT8_TOKEN || a == AS_AQ_INT8_STATIC);
    case F_NVFP4:
        return k == AS_WQ_NVFP4 && (a == AS_AQ_NONE || a == AS_AQ_NVFP4);
    case F_MXFP4:
        return k == AS_WQ_MXFP4 && (a == AS_AQ_NONE || a == AS_AQ_MXFP4);
    case F_W4A8:
        return k == AS_WQ_INT4_GROUP && (a == AS_AQ_FP8_STATIC || a == AS_AQ_NONE);
    case F_DEEPSEEK:
        return k == AS_WQ_FP8_BLOCK && (a == AS_AQ_FP8_GROUP128 || a == AS_AQ_FP8_TOKEN);
    case F_FAKEQUANT:
        return 1;
    default:
        return 0;
    }
}

int as_fp_packable(const char *format, const struct as_fpq_weight *q, char *why, size_t n) {
    int f = format_of(format);
    if (f == F_AUTO) f = format_for_weights(q->kind);
    if (f == F_NVFP4 && q->K % 16) {
        snprintf(why, n, "K = %d is not a multiple of the NVFP4 block 16", q->K);
        return 0;
    }
    if (f == F_MXFP4 && q->K % 32) {
        snprintf(why, n, "K = %d is not a multiple of the MXFP4 block 32", q->K);
        return 0;
    }
    if (f == F_W4A8 && q->K % q->block_k) {
        snprintf(why, n, "ragged last group: K = %d, group %d", q->K, q->block_k);
        return 0;
    }
    return 1;
}

/* compressed-tensors quantization args (the keys llm-compressor writes). */
static json_t *qargs(int bits, const char *type, const char *strategy, int group, int block,
                     json_t *dynamic) {
    json_t *o = json_object();
    json_object_set_new(o, "num_bits", json_integer(bits));
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "symmetric", json_true());
    json_object_set_new(o, "group_size", group > 0 ? json_integer(group) : json_null());
    json_object_set_new(o, "strategy", json_string(strategy));
    json_object_set_new(o, "block_structure",
                        block > 0 ? json_pack("[i,i]", block, block) : json_null());
    json_object_set_new(o, "dynamic", dynamic);
    json_object_set_new(o, "actorder", json_null());
    json_object_set_new(o, "observer",
                        json_is_true(dynamic) || json_is_string(dynamic) ? json_null()
                                                                         : json_string("minmax"));
    json_object_set_new(o, "observer_kwargs", json_object());
    return o;
}

/* The block-scale dtype, as compressed-tensors' own NVFP4 / MXFP4 presets write it. Without it
 * compressed-tensors computes the dynamic activation block scales in float (no rounding to E4M3,
 * no power-of-two MX exponent): another quantizer than the one the scheme names (NVFP4 on
 * stories260K: perplexity 1.4e-2 away from as-eval's). */
static json_t *with_scale_dtype(json_t *args, enum as_wq_kind k) {
    json_object_set_new(args, "scale_dtype",
                        json_string(k == AS_WQ_NVFP4 ? "torch.float8_e4m3fn" : "torch.uint8"));
    return args;
}

static json_t *weight_args(const struct as_fpq_weight *q) {
    switch (q->kind) {
    case AS_WQ_FP8_TENSOR:
        return qargs(8, "float", "tensor", 0, 0, json_false());
    case AS_WQ_FP8_CHANNEL:
        return qargs(8, "float", "channel", 0, 0, json_false());
    case AS_WQ_FP8_BLOCK:
        return qargs(8, "float", "block", 0, q->block_k, json_false());
    case AS_WQ_INT8_CHANNEL:
        return qargs(8, "int", "channel", 0, 0, json_false());
    case AS_WQ_NVFP4:
        return with_scale_dtype(qargs(4, "float", "tensor_group", 16, 0, json_false()),
                                AS_WQ_NVFP4);
    case AS_WQ_MXFP4:
        return with_scale_dtype(qargs(4, "float", "group", 32, 0, json_false()), AS_WQ_MXFP4);
    case AS_WQ_INT4_GROUP:
        return qargs(4, "int", "group", q->block_k, 0, json_false());
    default:
        return json_null();
    }
}

static json_t *act_args(enum as_aq_kind a) {
    switch (a) {
    case AS_AQ_FP8_STATIC:
        return qargs(8, "float", "tensor", 0, 0, json_false());
    case AS_AQ_FP8_TOKEN:
        return qargs(8, "float", "token", 0, 0, json_true());
    case AS_AQ_FP8_GROUP128:
        return qargs(8, "float", "group", 128, 0, json_true());
    case AS_AQ_INT8_STATIC:
        return qargs(8, "int", "tensor", 0, 0, json_false());
    case AS_AQ_INT8_TOKEN:
        return qargs(8, "int", "token", 0, 0, json_true());
    case AS_AQ_NVFP4:
        return with_scale_dtype(qargs(4, "float", "tensor_group", 16, 0, json_string("local")),
                                AS_WQ_NVFP4);
    case AS_AQ_MXFP4:
        return with_scale_dtype(qargs(4, "float", "group", 32, 0, json_true()), AS_WQ_MXFP4);
    default:
        return json_null();
    }
}

static json_t *quant_config(int f, const struct as_fplinear *l0, const char *const *skip,
                            int n_skip) {
    json_t *ign = json_array();
    if (f != F_DEEPSEEK && f != F_FAKEQUANT) json_array_append_new(ign, json_string("lm_head"));
    for (int i = 0; i < n_skip; i++)
        json_array_append_new(ign, json_string(skip[i]));
    if (f == F_DEEPSEEK) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:[i,i]}", "quant_method", "fp8", "fmt", "e4m3",
                              "activation_scheme", "dynamic", "weight_block_size", l0->w.block_n,
                              l0->w.block_k);
        if (n_skip) {
            json_object_set(o, "modules_to_not_convert", ign); /* transformers */
            json_object_set(o, "ignored_layers", ign);         /* vLLM */
        }
        json_decref(ign);
        return o;
    }
    if (f == F_FAKEQUANT) {
        json_decref(ign);
        return json_pack("{s:s, s:s, s:s}", "quant_method", "as-fakequant", "weights",
                         as_wq_names[l0->w.kind], "input_activations", as_aq_names[l0->act]);
    }
    static const char *const fmt_name[] = {"float-quantized", "int-quantized",
                                           "nvfp4-pack-quantized", "mxfp4-pack-quantized",
                                           "pack-quantized"};
    const char *fmt = fmt_name[f];
    json_t *g0 = json_object();
    json_object_set_new(g0, "targets", json_pack("[s]", "Linear"));
    json_object_set_new(g0, "weights", weight_args(&l0->w));
    json_object_set_new(g0, "input_activations", act_args(l0->act));
    json_object_set_new(g0, "output_activations", json_null());
    json_object_set_new(g0, "format", json_string(fmt));
    json_t *o = json_object();
    json_object_set_new(o, "quant_method", json_string("compressed-tensors"));
    json_object_set_new(o, "format", json_string(fmt));
    json_object_set_new(o, "config_groups", json_pack("{s:o}", "group_0", g0));
    json_object_set_new(o, "ignore", ign);
    json_object_set_new(o, "kv_cache_scheme", json_null());
    json_object_set_new(o, "quantization_status", json_string("compressed"));
    json_object_set_new(o, "sparsity_config", json_object());
    json_object_set_new(o, "global_compression_ratio", json_null());
    json_object_set_new(o, "version", json_string(AS_CT_VERSION));
    return o;
}

/* F32 scales rounded through the stored dtype (what a reader gets). */
static float *stored_scales(const struct as_fpq_weight *q, enum as_dtype sd) {
    size_t n = (size_t)q->sn * q->sk;
    float *s = as_xmalloc(sizeof(float) * n);
    memcpy(s, q->scale, sizeof(float) * n);
    if (sd != AS_F32) {
        uint16_t *h = as_xmalloc(2 * n);
        as_convert_from_f32(sd, q->scale, h, n);
        as_convert_to_f32(sd, h, s, n);
        free(h);
    }
    return s;
}

/* W_hat as the file holds it. */
static void expected_weights(const struct as_fpq_weight *q, enum as_dtype sd, float *out) {
    struct as_fpq_weight r = *q;
    float *s = NULL;
    if (q->scale) r.scale = s = stored_scales(q, sd);
    as_fpq_dequant(&r, out);
    free(s);
}

static int add(struct as_st_writer *w, const char *prefix, const char *suffix, enum as_dtype dt,
               int ndim, int64_t d0, int64_t d1, const void *data, uint64_t nbytes) {
    char name[1200];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    int64_t shape[2] = {d0, d1};
    return as_st_writer_add_copy(w, name, dt, ndim, shape, data, nbytes);
}

static int add_scales(struct as_st_writer *w, const char *prefix, const char *suffix,
                      const struct as_fpq_weight *q, enum as_dtype sd) {
    size_t n = (size_t)q->sn * q->sk;
    if (sd == AS_F32) return add(w, prefix, suffix, AS_F32, 2, q->sn, q->sk, q->scale, n * 4);
    uint16_t *h = as_xmalloc(2 * n);
    as_convert_from_f32(sd, q->scale, h, n);
    int rc = add(w, prefix, suffix, sd, 2, q->sn, q->sk, h, n * 2);
    free(h);
    return rc;
}

/* The tensors of one packed linear (docs/lepto.md). */
static int write_linear(struct as_st_writer *w, int f, const struct as_fplinear *l,
                        enum as_dtype sd) {
    const struct as_fpq_weight *q = &l->w;
    const char *p = l->prefix;
    int rc = 0;
    int64_t one = 1;
    float is = l->input_scale;
    switch (f) {
    case F_FLOAT:
    case F_INT:
        rc = add(w, p, "weight", f == F_INT ? AS_I8 : AS_F8_E4M3, 2, q->N, q->K, q->codes,
                 q->codes_bytes);
        if (!rc) {
            /* per tensor: [1]; per channel: [N, 1]; block: [ceil(N/bn), ceil(K/bk)] */
            if (q->kind == AS_WQ_FP8_TENSOR) {
                float *s = stored_scales(q, sd);
                uint16_t h[1];
                if (sd == AS_F32)
                    rc = add(w, p, "weight_scale", AS_F32, 1, 1, 0, s, 4);
                else {
                    as_convert_from_f32(sd, s, h, 1);
                    rc = add(w, p, "weight_scale", sd, 1, 1, 0, h, 2);
                }
                free(s);
            } else {
                rc = add_scales(w, p, "weight_scale", q, sd);
            }
        }
        if (!rc && is > 0) rc = add(w, p, "input_scale", AS_F32, 1, one, 0, &is, 4);
        return rc;
    case F_DEEPSEEK:
        rc = add(w, p, "weight", AS_F8_E4M3, 2, q->N, q->K, q->codes, q->codes_bytes);
        if (!rc) rc = add_scales(w, p, "weight_scale_inv", q, AS_F32);
        return rc;
    case F_NVFP4:
    case F_MXFP4:
        rc = add(w, p, "weight_packed", AS_U8, 2, q->N, q->K / 2, q->codes, q->codes_bytes);
        if (!rc)
            rc = add(w, p, "weight_scale", f == F_NVFP4 ? AS_F8_E4M3 : AS_U8, 2, q->sn, q->sk,
                     q->scale8, (uint64_t)q->sn * q->sk);
        if (!rc && f == F_NVFP4)
            rc = add(w, p, "weight_global_scale", AS_F32, 1, one, 0, &q->global_scale, 4);
        if (!rc && f == F_NVFP4 && is > 0)
            rc = add(w, p, "input_global_scale", AS_F32, 1, one, 0, &is, 4);
        return rc;
    case F_W4A8: {
        /* pack-quantized int4 (pack_ct.c): codes are offset binary, zero 8 */
        int G = q->sk;
        struct as_qlinear ql = {.N = q->N,
                                .K = q->K,
                                .bits = 4,
                                .group_size = q->block_k,
                                .sym = 1,
                                .q = q->codes,
                                .scale = q->scale};
        ql.zero = as_xmalloc(sizeof(int32_t) * q->N * G);
        ql.g_idx = as_xmalloc(sizeof(int32_t) * q->K);
        for (int i = 0; i < q->N * G; i++)
            ql.zero[i] = 8;
        for (int k = 0; k < q->K; k++)
            ql.g_idx[k] = k / q->block_k;
        rc = as_ct_write(w, p, &ql, sd, 0);
        free(ql.zero), free(ql.g_idx);
        if (!rc && is > 0) rc = add(w, p, "input_scale", AS_F32, 1, one, 0, &is, 4);
        return rc;
    }
    default:
        return as_fail("internal: format %d", f);
    }
}

static enum as_dtype model_dtype(const json_t *config) {
    const char *td = json_string_value(json_object_get(config, "torch_dtype"));
    if (td && !strcmp(td, "bfloat16")) return AS_BF16;
    if (td && !strcmp(td, "float16")) return AS_F16;
    return AS_F32;
}

/* Tensors the stream replaces (role "weight" records naming a model tensor, e.g. SmoothQuant's
 * rescaled norms). */
struct override {
    char *name;
    float *data;
};

struct pack_state {
    json_t *config;
    struct as_ckpt *ck;
    struct as_fpcollect *fc;
    struct override *ov;
    int n_ov;
    char **skipped;
    int n_skipped;
    char *tmp;
    struct as_st_writer *w;
    int n_layers;    /* config.json num_hidden_layers */
    float *kv_scale; /* [n_layers][2] (k, v); 0 = not in the stream */
    int n_kv;        /* kv-scale records taken */
};

static void pack_state_free(struct pack_state *s) {
    json_decref(s->config);
    as_ckpt_close(s->ck);
    as_fpcollect_free(s->fc);
    for (int i = 0; i < s->n_ov; i++)
        free(s->ov[i].name), free(s->ov[i].data);
    free(s->ov);
    for (int i = 0; i < s->n_skipped; i++)
        free(s->skipped[i]);
    free(s->skipped);
    free(s->kv_scale);
    if (s->w) as_st_writer_abort(s->w);
    if (s->tmp) as_atomic_dir_abort(s->tmp);
    free(s->tmp);
}

static int take_override(struct pack_state *s, struct as_stream_reader *r,
                         const struct as_rec *rec) {
    const struct as_st_tensor *t = as_ckpt_find(s->ck, rec->name);
    if (!t) return 0;
    if (rec->kind == AS_PAYLOAD_REF) return 0; /* a reference (the model's own bytes) */
    if (as_rec_numel(rec) != t->numel)
        return as_fail("stream %s: tensor %s: %llu elements, the model's has %llu",
                       as_stream_name(r), rec->name, (unsigned long long)as_rec_numel(rec),
                       (unsigned long long)t->numel);
    for (int i = 0; i < s->n_ov; i++)
        if (!strcmp(s->ov[i].name, rec->name))
            return as_fail("stream %s: tensor %s appears twice", as_stream_name(r), rec->name);
    const void *data = as_stream_payload(r);
    if (!data) return -1;
    float *f = as_xmalloc(sizeof(float) * t->numel);
    if (as_convert_to_f32(rec->dtype, data, f, t->numel)) {
        free(f);
        return as_fail_prefix("stream %s: tensor %s: ", as_stream_name(r), rec->name);
    }
    s->ov = as_xrealloc(s->ov, sizeof *s->ov * (s->n_ov + 1));
    s->ov[s->n_ov++] = (struct override){as_xstrdup(rec->name), f};
    return 1;
}

/* A role "kv-scale" record: model.layers.N.self_attn.{k,v}_scale, one positive finite value. */
static int take_kv_scale(struct pack_state *s, struct as_stream_reader *r,
                         const struct as_rec *rec) {
    int layer = -1, end = 0;
    char which = 0;
    if (sscanf(rec->name, "model.layers.%d.self_attn.%c_scale%n", &layer, &which, &end) != 2 ||
        rec->name[end] || (which != 'k' && which != 'v'))
        return as_fail("stream %s: tensor %s: a kv-scale record must be named "
                       "model.layers.N.self_attn.k_scale or v_scale",
                       as_stream_name(r), rec->name);
    if (layer < 0 || layer >= s->n_layers)
        return as_fail("stream %s: tensor %s: layer %d out of range (the model has %d)",
                       as_stream_name(r), rec->name, layer, s->n_layers);
    if (as_rec_numel(rec) != 1)
        return as_fail("stream %s: tensor %s: %llu elements, a KV-cache scale has one",
                       as_stream_name(r), rec->name, (unsigned long long)as_rec_numel(rec));
    const void *data = as_stream_payload(r);
    float v;
    if (!data) return -1;
    if (as_convert_to_f32(rec->dtype, data, &v, 1))
        return as_fail_prefix("stream %s: tensor %s: ", as_stream_name(r), rec->name);
    char what[600];
    snprintf(what, sizeof what, "stream %s: tensor %s", as_stream_name(r), rec->name);
    if (as_kv_scale_check(v, what)) return -1;
    float *slot = &s->kv_scale[layer * 2 + (which == 'v')];
    if (*slot > 0) return as_fail("%s appears twice", what);
    *slot = v;
    s->n_kv++;
    return 1;
}

static int same_scheme(const struct as_fplinear *a, const struct as_fplinear *b) {
    if (a->w.kind != b->w.kind || a->act != b->act) return 0;
    /* per-tensor and per-channel "blocks" are the layer's own shape; real blocks must agree */
    if (a->w.kind == AS_WQ_FP8_BLOCK)
        return a->w.block_n == b->w.block_n && a->w.block_k == b->w.block_k;
    if (a->w.kind == AS_WQ_INT4_GROUP) return a->w.block_k == b->w.block_k;
    return 1;
}

int as_pack_fp(const struct as_pack_fp_opts *o) {
    struct pack_state s = {0};
    char path[4200];
    int f = format_of(o->format);
    if (f < 0) return as_fail("format %s: not an FP/INT8 format", o->format);
    snprintf(path, sizeof path, "%s/config.json", o->model_dir);
    json_error_t jerr;
    s.config = json_load_file(path, 0, &jerr);
    if (!s.config) return as_fail("%s: line %d: %s", path, jerr.line, jerr.text);
    int rc = -1;
    if (json_object_get(s.config, "quantization_config")) {
        as_fail("%s: the model is already quantized; as-pack needs the original checkpoint", path);
        goto out;
    }
    enum as_dtype mdtype = model_dtype(s.config), sd = AS_F32;
    if (!o->scale_dtype || !strcmp(o->scale_dtype, "f32"))
        sd = AS_F32;
    else if (!strcmp(o->scale_dtype, "model"))
        sd = AS_F32; /* FP formats keep F32 scales */
    else if (!strcmp(o->scale_dtype, "f16"))
        sd = AS_F16;
    else if (!strcmp(o->scale_dtype, "bf16"))
        sd = AS_BF16;
    else {
        as_fail("--scale-dtype '%s': expected model, f32, f16 or bf16", o->scale_dtype);
        goto out;
    }
    if (!(s.ck = as_ckpt_open(o->model_dir))) goto out;
    s.fc = as_fpcollect_new();
    s.n_layers = (int)json_integer_value(json_object_get(s.config, "num_hidden_layers"));
    s.kv_scale = as_xcalloc((size_t)(s.n_layers > 0 ? s.n_layers : 1) * 2, sizeof(float));
    int n_in = o->n_inputs > 0 ? o->n_inputs : 1;
    for (int i = 0; i < n_in; i++) {
        struct as_stream_reader *r = as_stream_open(o->n_inputs > 0 ? o->inputs[i] : "-");
        if (!r) goto out;
        const struct as_rec *rec;
        int k;
        while ((k = as_stream_next(r, &rec)) == 1) {
            int took = as_fpcollect_offer(s.fc, r, rec);
            if (!took && rec->role && !strcmp(rec->role, "weight"))
                took = take_override(&s, r, rec);
            if (!took && rec->role && !strcmp(rec->role, "kv-scale"))
                took = take_kv_scale(&s, r, rec);
            if (took < 0) {
                k = -1;
                break;
            }
        }
        as_stream_close(r);
        if (k < 0) goto out;
    }
    if (as_fpcollect_check_complete(s.fc)) goto out;
    for (int l = 0; s.n_kv && l < s.n_layers; l++) /* a KV cache scheme covers every layer */
        for (int which = 0; which < 2; which++)
            if (!(s.kv_scale[l * 2 + which] > 0)) {
                as_fail("tensor model.layers.%d.self_attn.%c_scale: missing from the input "
                        "stream (FP8 KV-cache scales must cover all %d layers: as-lepto "
                        "--kv-cache fp8)",
                        l, which ? 'v' : 'k', s.n_layers);
                goto out;
            }
    int nq = as_fpcollect_count(s.fc);
    if (!nq) {
        as_fail("no FP/INT8 quantized linears in the input stream (expected weight_codes/"
                "weight_scale records from as-lepto)");
        goto out;
    }
    const struct as_fplinear *l0 = as_fpcollect_get(s.fc, 0);
    for (int i = 1; i < nq; i++) {
        const struct as_fplinear *l = as_fpcollect_get(s.fc, i);
        if (!same_scheme(l, l0)) {
            as_fail("tensor %s: weights %s act %s block %dx%d differ from the other layers' (%s "
                    "%s %dx%d); one scheme per checkpoint",
                    l->prefix, as_wq_names[l->w.kind], as_aq_names[l->act], l->w.block_n,
                    l->w.block_k, as_wq_names[l0->w.kind], as_aq_names[l0->act], l0->w.block_n,
                    l0->w.block_k);
            goto out;
        }
    }
    if (f == F_AUTO) f = format_for_weights(l0->w.kind);
    if (s.n_kv && f == F_DEEPSEEK) {
        as_fail("format fp8 (DeepSeek block) has no kv_cache_scheme: write the FP8 KV-cache "
                "scales with a compressed-tensors format (ct-fp, float-quantized, ...)");
        goto out;
    }
    if (!format_accepts(f, l0->w.kind, l0->act)) {
        as_fail("format %s cannot hold weights %s with activations %s", format_names[f],
                as_wq_names[l0->w.kind], as_aq_names[l0->act]);
        goto out;
    }
    if (f == F_DEEPSEEK && l0->act != AS_AQ_FP8_GROUP128)
        fprintf(stderr,
                "%s: note: the fp8 checkpoint declares activation_scheme dynamic, which "
                "consumers run per token and 128 columns\n",
                as_progname());

    if (!(s.tmp = as_atomic_dir_begin(o->out_dir))) goto out;
    snprintf(path, sizeof path, "%s/model.safetensors", s.tmp);
    if (!(s.w = as_st_writer_new(path))) goto out;
    s.skipped = as_xcalloc(nq + 1, sizeof *s.skipped);
    int n_packed = 0;
    char why[256];
    for (int i = 0; i < s.ck->n_tensors; i++) {
        const struct as_st_tensor *t = s.ck->tensors[i];
        size_t len = strlen(t->name);
        char prefix[1024];
        const struct as_fplinear *l = NULL;
        if (len > 7 && !strcmp(t->name + len - 7, ".weight") && len - 7 < sizeof prefix) {
            snprintf(prefix, sizeof prefix, "%.*s", (int)(len - 7), t->name);
            l = as_fpcollect_find(s.fc, prefix);
        }
        const struct override *ov = NULL;
        for (int j = 0; !l && j < s.n_ov; j++)
            if (!strcmp(s.ov[j].name, t->name)) ov = &s.ov[j];
        if (ov) {
            void *buf = as_xmalloc(t->nbytes);
            int e = as_convert_from_f32(t->dtype, ov->data, buf, t->numel);
            if (!e)
                e = as_st_writer_add_copy(s.w, t->name, t->dtype, t->ndim, t->shape, buf,
                                          t->nbytes);
            free(buf);
            if (e) goto out;
            continue;
        }
        if (!l) {
            if (as_st_writer_add(s.w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes))
                goto out;
            continue;
        }
        if (t->ndim != 2 || t->shape[0] != l->w.N || t->shape[1] != l->w.K) {
            as_fail("%s: tensor %s: shape [%lld, %lld] but the stream quantized it as [%d, %d]",
                    s.ck->tensor_file[i], t->name, (long long)t->shape[0],
                    (long long)(t->ndim > 1 ? t->shape[1] : 0), l->w.N, l->w.K);
            goto out;
        }
        if (f != F_FAKEQUANT && as_fp_packable(format_names[f], &l->w, why, sizeof why)) {
            if (write_linear(s.w, f, l, sd)) goto out;
            n_packed++;
            continue;
        }
        /* fakequant-fp, or a fallback: W_hat in the model dtype under the plain name */
        if (f != F_FAKEQUANT) {
            fprintf(stderr, "%s: tensor %s: kept as dequantized %s weights (%s)\n", as_progname(),
                    t->name, as_dtype_name(t->dtype), why);
            s.skipped[s.n_skipped++] = as_xstrdup(prefix);
        }
        float *wh = as_xmalloc(sizeof(float) * t->numel);
        as_fpq_dequant(&l->w, wh);
        void *buf = as_xmalloc(t->nbytes);
        as_convert_from_f32(t->dtype, wh, buf, t->numel);
        int e = as_st_writer_add_copy(s.w, t->name, t->dtype, 2, t->shape, buf, t->nbytes);
        free(wh), free(buf);
        float is = l->input_scale;
        if (!e && f == F_FAKEQUANT && is > 0)
            e = add(s.w, prefix, "input_scale", AS_F32, 1, 1, 0, &is, 4);
        if (e) goto out;
    }
    for (int l = 0; s.n_kv && l < s.n_layers; l++) /* FP8 KV cache: F32 [1] per layer */
        for (int which = 0; which < 2; which++) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "model.layers.%d.self_attn", l);
            if (add(s.w, prefix, which ? "v_scale" : "k_scale", AS_F32, 1, 1, 0,
                    &s.kv_scale[l * 2 + which], 4))
                goto out;
        }
    for (int i = 0; i < nq; i++) {
        char name[1100];
        snprintf(name, sizeof name, "%s.weight", as_fpcollect_get(s.fc, i)->prefix);
        if (!as_ckpt_find(s.ck, name)) {
            as_fail("tensor %s: quantized in the stream but not in the model %s", name,
                    o->model_dir);
            goto out;
        }
    }
    int e = as_st_writer_finish(s.w);
    s.w = NULL;
    if (e) goto out;
    json_t *qcfg = quant_config(f, l0, (const char *const *)s.skipped, s.n_skipped);
    if (s.n_kv) /* llm-compressor's FP8 KV cache: static per-tensor scales */
        json_object_set_new(qcfg, "kv_cache_scheme",
                            json_pack("{s:i, s:s, s:s, s:b, s:b}", "num_bits", 8, "type", "float",
                                      "strategy", "tensor", "dynamic", 0, "symmetric", 1));
    json_object_set_new(s.config, "quantization_config", qcfg);
    snprintf(path, sizeof path, "%s/config.json", s.tmp);
    if (json_dump_file(s.config, path, JSON_INDENT(2))) {
        as_fail("%s: cannot write", path);
        goto out;
    }
    static const char *const copied[] = {"tokenizer.json", "tokenizer_config.json",
                                         "special_tokens_map.json", "generation_config.json",
                                         "tokenizer.model"};
    for (size_t i = 0; i < sizeof copied / sizeof *copied; i++) {
        char src[4200], dst[4200];
        snprintf(src, sizeof src, "%s/%s", o->model_dir, copied[i]);
        snprintf(dst, sizeof dst, "%s/%s", s.tmp, copied[i]);
        if (as_copy_file(src, dst) < 0) goto out;
    }

    if (o->verify) { /* read back what the engine's loaders see; compare bit for bit */
        struct as_ckpt *back = as_ckpt_open(s.tmp);
        if (!back) goto out;
        int bad = 0;
        for (int i = 0; i < nq && !bad; i++) {
            const struct as_fplinear *l = as_fpcollect_get(s.fc, i);
            size_t nk = (size_t)l->w.N * l->w.K;
            float *got = as_xmalloc(sizeof(float) * nk), *want = as_xmalloc(sizeof(float) * nk);
            int k = as_fp_load_linear(back, qcfg, l->prefix, l->w.N, l->w.K, got);
            if (k == 0) k = as_quant_load_linear(back, qcfg, l->prefix, l->w.N, l->w.K, got);
            if (k == 0) { /* fallback or fakequant: W_hat in the model dtype */
                char name[1100];
                snprintf(name, sizeof name, "%s.weight", l->prefix);
                const struct as_st_tensor *t = as_ckpt_find(back, name);
                k = t ? as_ckpt_read_f32(back, t, got) : as_fail("tensor %s missing", name);
                as_fpq_dequant(&l->w, want);
                if (mdtype != AS_F32) {
                    uint16_t *h = as_xmalloc(2 * nk);
                    as_convert_from_f32(mdtype, want, h, nk);
                    as_convert_to_f32(mdtype, h, want, nk);
                    free(h);
                }
            } else {
                expected_weights(&l->w, f == F_DEEPSEEK ? AS_F32 : sd, want);
            }
            if (k < 0)
                bad = -1;
            else if (memcmp(got, want, sizeof(float) * nk)) {
                as_fail("verify: tensor %s: weights read back from %s differ from the "
                        "quantizer's output",
                        l->prefix, o->out_dir);
                bad = -1;
            }
            free(got), free(want);
        }
        as_ckpt_close(back);
        if (!bad && s.n_kv) { /* the KV scales as as-eval reads them */
            struct as_model_config mc = {.n_layers = s.n_layers};
            struct as_model mm = {.cfg = mc};
            struct as_kv_quant *kq = NULL;
            if (as_kv_quant_from_checkpoint(&mm, s.tmp, &kq) || !kq) {
                if (!kq && !bad) as_fail("verify: %s: no kv_cache_scheme read back", o->out_dir);
                bad = -1;
            }
            for (int l = 0; kq && !bad && l < s.n_layers; l++)
                if (kq->k_scale[l] != s.kv_scale[l * 2] || kq->v_scale[l] != s.kv_scale[l * 2 + 1])
                    bad = as_fail("verify: layer %d: KV-cache scales read back from %s differ", l,
                                  o->out_dir);
            as_kv_quant_free(kq);
        }
        if (bad) goto out;
    }
    if (as_atomic_dir_commit(s.tmp, o->out_dir)) goto out;
    free(s.tmp);
    s.tmp = NULL;
    if (o->json)
        printf("{\"out\":\"%s\",\"format\":\"%s\",\"weights\":\"%s\",\"act\":\"%s\","
               "\"quantized\":%d,\"packed\":%d,\"fallback\":%d,\"verified\":%s}\n",
               o->out_dir, format_names[f], as_wq_names[l0->w.kind], as_aq_names[l0->act], nq,
               n_packed, s.n_skipped, o->verify ? "true" : "false");
    else
        fprintf(stderr,
                "%s: wrote %s (%s, weights %s, activations %s%s): %d linears, %d packed, "
                "%d kept dequantized%s\n",
                as_progname(), o->out_dir, format_names[f], as_wq_names[l0->w.kind],
                as_aq_names[l0->act], s.n_kv ? ", FP8 KV cache" : "", nq, n_packed, s.n_skipped,
                o->verify ? ", verified" : "");
    rc = 0;
out:
    if (rc) {
        char msg[4096];
        snprintf(msg, sizeof msg, "%s", as_last_error());
        pack_state_free(&s);
        as_fail("%s", msg);
    } else {
        pack_state_free(&s);
    }
    return rc;
}
