/* as-pack: write a deployable checkpoint from a quantized tensor stream and the original model.
 *
 * Formats: gptq (GPTQ v1: qweight/qzeros/scales/g_idx, what AutoGPTQ, transformers and vLLM load
 * as "gptq"), compressed-tensors (pack-quantized, vLLM's main format), awq (AutoAWQ GEMM) and
 * fakequant (the dequantized weights W_hat as plain tensors: exact evaluation of the quantizer, no
 * packing). Every tensor of the model that is not a quantized linear is copied through unchanged;
 * config.json gains the format's quantization_config; tokenizer files are copied. A layer a
 * format cannot store faithfully (docs/formats.md) is written as W_hat in the model dtype and
 * reported. The output directory appears atomically (staged, fsynced, renamed).
 *
 * Memory is bounded by one linear, not by the model: each quantized linear is packed, checked
 * through the loaders and written as soon as its four records have arrived, then freed; tensors
 * the stream replaces are written when they arrive; the untouched model tensors are copied from
 * the mapped input at the end, their pages dropped as they go. The output is sharded as
 * Hugging Face does (--max-shard-size, safetensors.h as_st_writer_new_sharded): one shard is a
 * plain model.safetensors, several come with model.safetensors.index.json. Each shard is read
 * back when it is closed (docs/cluster.md "Memory").
 * gguf writes one llama.cpp FILE.gguf instead (gguf_pack.c, docs/gguf.md): group-32 codes as
 * Q4_0 / Q4_1 / Q8_0 blocks, everything else as floats, written and verified atomically; it
 * gathers every layer first (as_gguf_pack takes the whole collection). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "as_error.h"
#include "atomic_file.h"
#include "dtype.h"
#include "gguf.h"
#include "pack_formats.h"
#include "pack_fp.h"
#include "qstream.h"
#include "quant_ternary.h"
#include "quant_load.h"
#include "safetensors.h"
#include "stream.h"

/* FMT_TERN: the ternary / 2-bit layouts of pack_ternary.h (tq1_0 ... sherry, docs/ternary.md) */
enum pack_format { FMT_GPTQ, FMT_CT, FMT_FAKEQUANT, FMT_GGUF, FMT_AWQ, FMT_TERN };

/* What happened to each tensor of the model (index in ck->tensors). */
enum { T_PENDING = 0, T_QUANTIZED, T_REPLACED };

/* A linear whose records are arriving: one collector each, freed once the linear is written. */
struct pending {
    char *prefix;
    struct as_qcollect *qc;
};

/* What main holds, freed at exit on every path (as_die included), so a failed run leaks nothing;
 * a failure after the staging directory exists removes it (die_staged). */
static struct {
    json_t *config, *a0;
    struct as_ckpt *ck;
    struct as_qcollect *qc; /* gguf: every layer */
    struct pending *pend;
    int n_pend;
    struct as_st_writer *w;
    char *tmp;
    unsigned char *status;
    char **quantized, **skipped, **ct_no_gidx; /* prefixes */
    int n_quantized, n_skipped, n_ct_no_gidx;
    char **notes; /* fallback layers, reported at the end */
    int n_notes;
    int *ct_no_gidx_k;
} held;

static void free_strs(char **v, int n) {
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_held(void) {
    json_decref(held.config);
    json_decref(held.a0);
    as_ckpt_close(held.ck);
    as_qcollect_free(held.qc);
    for (int i = 0; i < held.n_pend; i++)
        free(held.pend[i].prefix), as_qcollect_free(held.pend[i].qc);
    free(held.pend);
    as_st_writer_abort(held.w);
    free(held.tmp);
    free(held.status);
    free_strs(held.quantized, held.n_quantized);
    free_strs(held.skipped, held.n_skipped);
    free_strs(held.ct_no_gidx, held.n_ct_no_gidx);
    free_strs(held.notes, held.n_notes);
    free(held.ct_no_gidx_k);
}

/* Report the last error and exit, removing the staged output (the old OUT stays intact). */
static void die_staged(void) {
    char msg[4096];
    snprintf(msg, sizeof msg, "%s", as_last_error());
    as_st_writer_abort(held.w);
    held.w = NULL;
    if (held.tmp) as_atomic_dir_abort(held.tmp);
    as_die("%s", msg);
}

static void push_str(char ***v, int *n, const char *s) {
    *v = as_xrealloc(*v, sizeof **v * (size_t)(*n + 1));
    (*v)[(*n)++] = as_xstrdup(s);
}

static int tensor_index(const struct as_ckpt *ck, const char *name) {
    int lo = 0, hi = ck->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(ck->tensors[mid]->name, name);
        if (!c) return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* A role "weight" record naming a tensor of the model (e.g. norms as-awq rescaled) replaces it;
 * 0 when it does not (not a model tensor, or a reference to the model's own bytes). */
static int is_replacement(struct as_stream_reader *r, const struct as_rec *rec,
                          const struct as_ckpt *ck, const struct as_st_tensor **out) {
    const struct as_st_tensor *t = as_ckpt_find(ck, rec->name);
    if (!t) return 0; /* not a tensor of the model: nothing to replace */
    if (rec->kind == AS_PAYLOAD_REF && rec->offset == t->offset) {
        /* a reference to the model's own bytes is not a replacement */
        const char *f = as_ckpt_file_of(ck, t);
        char a[4096], b[4096];
        if (f && realpath(f, a) && realpath(rec->file, b) && !strcmp(a, b)) return 0;
    }
    uint64_t numel = as_rec_numel(rec);
    if (numel != t->numel)
        return as_fail("stream %s: tensor %s: %llu elements, the model's has %llu",
                       as_stream_name(r), rec->name, (unsigned long long)numel,
                       (unsigned long long)t->numel);
    *out = t;
    return 1;
}

/* The replacement in the model tensor's dtype, converted in blocks (no f32 copy of it all). */
static void *replacement_bytes(struct as_stream_reader *r, const struct as_rec *rec,
                               const struct as_st_tensor *t) {
    const uint8_t *data = as_stream_payload(r);
    if (!data) return NULL;
    uint8_t *buf = as_xmalloc(t->nbytes ? t->nbytes : 1);
    enum { BLOCK = 1 << 20 }; /* elements: a whole number of bytes in every dtype */
    float *f = as_xmalloc(sizeof(float) * BLOCK);
    int rc = 0;
    for (uint64_t i = 0; i < t->numel && !rc; i += BLOCK) {
        uint64_t n = t->numel - i < BLOCK ? t->numel - i : BLOCK;
        rc = as_convert_to_f32(rec->dtype, data + as_dtype_nbytes(rec->dtype, i, NULL), f, n);
        if (!rc) rc = as_convert_from_f32(t->dtype, f, buf + as_dtype_nbytes(t->dtype, i, NULL), n);
    }
    free(f);
    if (rc) {
        free(buf);
        as_fail_prefix("stream %s: tensor %s: ", as_stream_name(r), rec->name);
        return NULL;
    }
    return buf;
}

/* gguf: replacements gathered as f32 (as_gguf_pack takes them all at once). */
struct override {
    char *name;
    int64_t numel;
    float *data;
};

static int take_override(struct as_stream_reader *r, const struct as_rec *rec,
                         const struct as_ckpt *ck, struct override **ov, int *n_ov) {
    const struct as_st_tensor *t;
    int is = is_replacement(r, rec, ck, &t);
    if (is <= 0) return is;
    const void *data = as_stream_payload(r);
    if (!data) return -1;
    for (int i = 0; i < *n_ov; i++)
        if (!strcmp((*ov)[i].name, rec->name))
            return as_fail("stream %s: tensor %s appears twice", as_stream_name(r), rec->name);
    float *f = as_xmalloc(sizeof(float) * t->numel);
    if (as_convert_to_f32(rec->dtype, data, f, t->numel)) {
        free(f);
        return as_fail_prefix("stream %s: tensor %s: ", as_stream_name(r), rec->name);
    }
    *ov = as_xrealloc(*ov, (*n_ov + 1) * sizeof **ov);
    (*ov)[(*n_ov)++] = (struct override){as_xstrdup(rec->name), (int64_t)t->numel, f};
    return 1;
}

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: as-pack -m MODEL -f FORMAT -o OUT [options] [STREAM...]\n"
        "Gather quantized linears from the stream(s) (default stdin) into a checkpoint.\n"
        "  -m, --model DIR        the original checkpoint (unquantized tensors, config, "
        "tokenizer)\n"
        "  -f, --format F         gptq | compressed-tensors | fakequant | gguf | awq\n"
        "                         | tq1_0 | tq2_0 | i2_s | seq2 | sherry (docs/ternary.md)\n"
        "                         as-lepto records: ct-fp (by scheme) | float-quantized |\n"
        "                         int-quantized | nvfp4-pack-quantized | mxfp4-pack-quantized\n"
        "                         | w4a8 | fp8 (DeepSeek block) | fakequant-fp (docs/lepto.md)\n"
        "  -o, --out DIR          output checkpoint directory (replaced atomically);\n"
        "                         for gguf the output FILE.gguf\n"
        "      --max-shard-size S safetensors shards of at most S (default 5GB; 2GB, 500MB,\n"
        "                         1GiB, bytes; as transformers): model-0000i-of-0000n +\n"
        "                         model.safetensors.index.json, or one model.safetensors\n"
        "      --gguf-float T     gguf: type of unquantized matrices: f32 (default), f16, bf16\n"
        "      --gguf-q4-1        gguf: store 4-bit symmetric layers as Q4_1 (default Q4_0)\n"
        "      --gguf-fallback S  gguf: layers that fit no block type: dequant (default, the\n"
        "                         quantizer's W_hat) or original (the checkpoint's weights)\n"
        "      --gguf-ternary T   gguf: ternary layers (as-gptq --ternary tq1_0|tq2_0) as T\n"
        "                         blocks, tq1_0 or tq2_0 (docs/ternary.md)\n"
        "      --scale-dtype T    compressed-tensors scale dtype: model (default), f32, f16, bf16\n"
        "      --no-verify        skip reading the written checkpoint back\n"
        "      --json             JSON report on stdout\n"
        "  -h, --help\n");
}

/* optimum (what transformers uses to load GPTQ) ignores the "dynamic" exclusions; it takes
 * "modules_in_block_to_quantize" instead. That can only say "these modules in every block", so
 * it is written when every block packed the same modules. */
static void add_modules_in_block(json_t *qcfg, char *const *quantized, int n_quantized,
                                 char *const *skipped, int n_skipped) {
    enum { MAXL = 4096 };
    static unsigned char packed[MAXL]; /* bit i: linear i of the layer was packed */
    int max_layer = -1;
    memset(packed, 0, sizeof packed);
    for (int i = 0; i < n_quantized; i++) {
        const char *pfx = quantized[i];
        int layer, skip = 0;
        enum as_linear which;
        if (as_linear_parse(pfx, &layer, &which) || layer >= MAXL) return;
        for (int j = 0; j < n_skipped; j++)
            skip |= !strcmp(skipped[j], pfx);
        if (!skip) packed[layer] |= (unsigned char)(1u << which);
        if (layer > max_layer) max_layer = layer;
    }
    for (int l = 1; l <= max_layer; l++)
        if (packed[l] != packed[0]) return;
    json_t *block = json_array();
    for (int i = 0; i < AS_LIN_COUNT; i++)
        if (packed[0] & (1u << i)) {
            char name[256];
            as_linear_prefix(0, (enum as_linear)i, name, sizeof name);
            json_array_append_new(block, json_string(name + strlen("model.layers.0.")));
        }
    json_object_set_new(qcfg, "modules_in_block_to_quantize", json_pack("[o]", block));
}

static enum as_dtype model_dtype(const json_t *config) {
    const char *td = json_string_value(json_object_get(config, "torch_dtype"));
    if (td && !strcmp(td, "bfloat16")) return AS_BF16;
    if (td && !strcmp(td, "float16")) return AS_F16;
    return AS_F32;
}

/* Rows [n0, n0 + rows) of a qlinear as a qlinear of its own (shares the arrays). */
static struct as_qlinear qlinear_rows(const struct as_qlinear *l, int n0, int rows) {
    int G = as_qlinear_groups(l);
    struct as_qlinear r = *l;
    r.N = rows;
    r.q = l->q + (size_t)n0 * l->K;
    r.scale = l->scale + (size_t)n0 * G;
    r.zero = l->zero + (size_t)n0 * G;
    if (l->minv) r.minv = l->minv + (size_t)n0 * G; /* float-minimum layers (pack_formats.h) */
    return r;
}

/* The dequantized weights a reader of the file gets: scale rounded to the stored dtype. */
static void expected_dequant(const struct as_qlinear *l, enum as_dtype scale_dtype, float *out) {
    int G = as_qlinear_groups(l);
    struct as_qlinear r = *l;
    float *s = as_xmalloc(sizeof(float) * l->N * G);
    if (scale_dtype == AS_F32) {
        memcpy(s, l->scale, sizeof(float) * l->N * G);
    } else {
        uint16_t *h = as_xmalloc(sizeof(uint16_t) * l->N * G);
        as_convert_from_f32(scale_dtype, l->scale, h, (size_t)l->N * G);
        as_convert_to_f32(scale_dtype, h, s, (size_t)l->N * G);
        free(h);
    }
    r.scale = s;
    as_qlinear_dequant(&r, out);
    free(s);
}

enum { ROW_BLOCK = 256 }; /* rows dequantized at a time: the f32 copy of W stays small */

struct packer {
    enum pack_format fmt;
    const char *model_dir;
    struct as_ckpt *ck;
    struct as_st_writer *w;
    enum as_dtype mdtype, scale_dtype;
    int verify;
    int have_l0;
    struct as_qlinear l0;  /* the scheme of the first layer (no arrays) */
    int any_perm;          /* compressed-tensors: some layer has a permuted g_idx */
    enum as_tern_fmt tern; /* FMT_TERN */
    int n_packed, n_fallback;
};

/* The quantization_config the loaders need to read one packed layer back (no exclusions). */
static json_t *verify_config(const struct packer *p) {
    const struct as_qlinear *l0 = &p->l0;
    if (p->fmt == FMT_GPTQ) {
        struct as_gptq_params gp = {.bits = l0->bits,
                                    .group_size = l0->group_size <= 0 ? -1 : l0->group_size,
                                    .sym = l0->sym,
                                    .desc_act = l0->has_act_order,
                                    .damp_percent = 0.01};
        return as_gptq_quant_config(&gp, NULL, 0);
    }
    if (p->fmt == FMT_AWQ) return as_awq_quant_config(l0->group_size, NULL, 0);
    static const char *const ignore[] = {"lm_head"};
    struct as_ct_params cp = {.bits = l0->bits,
                              .group_size = l0->group_size,
                              .sym = l0->sym,
                              .actorder = p->any_perm ? AS_CT_ACTORDER_GROUP : AS_CT_ACTORDER_NONE,
                              .ignore = ignore,
                              .n_ignore = 1};
    return as_ct_quant_config(&cp);
}

/* Read the packed tensors of one layer back through quant_load and compare with the quantizer's
 * output bit for bit, a block of rows at a time. */
static int verify_packed(const struct packer *p, struct as_st_writer *cap, const char *prefix,
                         const struct as_qlinear *l) {
    struct as_ckpt *view = as_st_writer_view(cap);
    if (!view) return -1;
    json_t *qcfg = verify_config(p);
    float *got = as_xmalloc(sizeof(float) * l->N * l->K);
    int rc = as_quant_load_linear(view, qcfg, prefix, l->N, l->K, got);
    if (rc == 0)
        rc = as_fail("verify: tensor %s: the loader does not read the packed layer", prefix);
    float *want = as_xmalloc(sizeof(float) * ROW_BLOCK * l->K);
    for (int n0 = 0; rc > 0 && n0 < l->N; n0 += ROW_BLOCK) {
        int rows = l->N - n0 < ROW_BLOCK ? l->N - n0 : ROW_BLOCK;
        struct as_qlinear r = qlinear_rows(l, n0, rows);
        expected_dequant(&r, p->scale_dtype, want);
        if (memcmp(got + (size_t)n0 * l->K, want, sizeof(float) * rows * l->K))
            rc = as_fail("verify: tensor %s: weights read back differ from the quantizer's output",
                         prefix);
    }
    free(want);
    free(got);
    json_decref(qcfg);
    as_ckpt_close(view);
    return rc < 0 ? -1 : 0;
}

/* One complete quantized linear: check it against the model and the scheme, pack (or keep as
 * W_hat), write. */
static int pack_linear(struct packer *p, const char *prefix, const struct as_qlinear *l,
                       const json_t *attrs) {
    char name[1100], why[256] = "";
    snprintf(name, sizeof name, "%s.weight", prefix);
    int ti = tensor_index(p->ck, name);
    if (ti < 0)
        return as_fail("tensor %s: quantized in the stream but not in the model %s", name,
                       p->model_dir);
    const struct as_st_tensor *t = p->ck->tensors[ti];
    if (held.status[ti] == T_REPLACED)
        return as_fail("tensor %s: quantized in the stream after a weight record replaced it",
                       name);
    if (t->ndim != 2 || t->shape[0] != l->N || t->shape[1] != l->K)
        return as_fail("%s: tensor %s: shape [%lld,%lld] but the stream quantized it as [%d,%d]",
                       p->ck->tensor_file[ti], t->name, (long long)t->shape[0],
                       (long long)(t->ndim > 1 ? t->shape[1] : 0), l->N, l->K);
    /* All layers must share one scheme: these formats describe one config group. */
    const struct as_qlinear *l0 = &p->l0;
    if (!p->have_l0) {
        p->have_l0 = 1;
        p->l0 = *l;
        p->l0.q = NULL, p->l0.scale = NULL, p->l0.zero = NULL, p->l0.g_idx = NULL;
        held.a0 = attrs ? json_deep_copy(attrs) : json_object();
    } else if (p->fmt != FMT_TERN && /* ternary: per-layer scale blocks (docs/ternary.md) */
               (l->bits != l0->bits || l->group_size != l0->group_size || l->sym != l0->sym)) {
        return as_fail("tensor %s: %d-bit group %d %s differs from the other layers (%d-bit group "
                       "%d %s); one scheme per checkpoint",
                       prefix, l->bits, l->group_size, l->sym ? "sym" : "asym", l0->bits,
                       l0->group_size, l0->sym ? "sym" : "asym");
    }
    held.status[ti] = T_QUANTIZED;
    push_str(&held.quantized, &held.n_quantized, prefix);
    int trivial = as_qlinear_gidx_is_trivial(l);
    int packable = p->fmt == FMT_GPTQ   ? as_gptq_packable(l, why, sizeof why)
                   : p->fmt == FMT_CT   ? as_ct_packable(l, why, sizeof why)
                   : p->fmt == FMT_AWQ  ? as_awq_packable(l, why, sizeof why)
                   : p->fmt == FMT_TERN ? as_tern_packable(p->tern, l, why, sizeof why)
                                        : 0;
    if (packable) {
        /* compressed-tensors "group" actorder is one config flag: then every layer carries
         * g_idx. Layers written before the first permuted one get theirs at the end. */
        if (p->fmt == FMT_CT && !trivial) p->any_perm = 1;
        struct as_st_writer *cap = as_st_writer_new("(packed layer)");
        int rc = p->fmt == FMT_GPTQ   ? as_gptq_write(cap, prefix, l)
                 : p->fmt == FMT_AWQ  ? as_awq_write(cap, prefix, l)
                 : p->fmt == FMT_TERN ? as_tern_write(cap, prefix, p->tern, l) /* reads back */
                                      : as_ct_write(cap, prefix, l, p->scale_dtype, p->any_perm);
        if (!rc && p->verify && p->fmt != FMT_TERN) rc = verify_packed(p, cap, prefix, l);
        if (!rc) rc = as_st_writer_add_all(p->w, cap);
        as_st_writer_abort(cap);
        if (rc) return -1;
        if (p->fmt == FMT_CT && !p->any_perm) {
            push_str(&held.ct_no_gidx, &held.n_ct_no_gidx, prefix);
            held.ct_no_gidx_k = as_xrealloc(held.ct_no_gidx_k, sizeof(int) * held.n_ct_no_gidx);
            held.ct_no_gidx_k[held.n_ct_no_gidx - 1] = l->K;
        }
        p->n_packed++;
        return 0;
    }
    /* Fallback (and fakequant): W_hat in the model's dtype under the plain name. */
    if (p->fmt != FMT_FAKEQUANT) {
        /* reported once the checkpoint is complete: a failed run prints one line, its error */
        char note[1400];
        snprintf(note, sizeof note, "tensor %s: kept as dequantized %s weights (%s)", t->name,
                 as_dtype_name(t->dtype), why);
        push_str(&held.notes, &held.n_notes, note);
        push_str(&held.skipped, &held.n_skipped, prefix);
        p->n_fallback++;
    }
    uint8_t *buf = as_xmalloc(t->nbytes);
    float *wh = as_xmalloc(sizeof(float) * ROW_BLOCK * l->K);
    for (int n0 = 0; n0 < l->N; n0 += ROW_BLOCK) {
        int rows = l->N - n0 < ROW_BLOCK ? l->N - n0 : ROW_BLOCK;
        struct as_qlinear r = qlinear_rows(l, n0, rows);
        as_qlinear_dequant(&r, wh);
        as_convert_from_f32(t->dtype, wh,
                            buf + as_dtype_nbytes(t->dtype, (uint64_t)n0 * l->K, NULL),
                            (size_t)rows * l->K);
    }
    free(wh);
    int rc = as_st_writer_add(p->w, t->name, t->dtype, 2, t->shape, buf, t->nbytes);
    free(buf);
    return rc;
}

/* Offer a record to the collector of its linear (PREFIX = the name up to its last dot); a
 * linear whose four records are in is packed, written and freed at once. 1 taken, 0 not a
 * quantized-linear record, -1 error. */
static int offer_record(struct packer *p, struct as_stream_reader *r, const struct as_rec *rec) {
    const char *dot = strrchr(rec->name, '.');
    size_t plen = dot ? (size_t)(dot - rec->name) : strlen(rec->name);
    int i = 0;
    while (i < held.n_pend &&
           (strlen(held.pend[i].prefix) != plen || strncmp(held.pend[i].prefix, rec->name, plen)))
        i++;
    struct as_qcollect *qc = i < held.n_pend ? held.pend[i].qc : as_qcollect_new();
    int took = as_qcollect_offer(qc, r, rec);
    if (i == held.n_pend) { /* a new linear, or not a quantized-linear record at all */
        if (took <= 0) {
            as_qcollect_free(qc);
            return took;
        }
        char wname[1100];
        snprintf(wname, sizeof wname, "%.*s.weight", (int)plen, rec->name);
        int ti = tensor_index(p->ck, wname);
        if (ti >= 0 && held.status[ti] == T_QUANTIZED) {
            as_qcollect_free(qc);
            return as_fail("stream %s: tensor %s appears twice", as_stream_name(r), rec->name);
        }
        held.pend = as_xrealloc(held.pend, sizeof *held.pend * (size_t)(held.n_pend + 1));
        held.pend[held.n_pend].prefix = as_xmalloc(plen + 1);
        memcpy(held.pend[held.n_pend].prefix, rec->name, plen);
        held.pend[held.n_pend].prefix[plen] = 0;
        held.pend[held.n_pend++].qc = qc;
    }
    if (took <= 0) return took;
    if (as_qcollect_count(qc) == 0) return 1;
    const char *prefix;
    const json_t *attrs;
    const struct as_qlinear *l = as_qcollect_get(qc, 0, &prefix, &attrs);
    if (pack_linear(p, prefix, l, attrs)) return -1;
    free(held.pend[i].prefix);
    as_qcollect_free(qc);
    held.pend[i] = held.pend[--held.n_pend];
    return 1;
}

/* A tensor the stream replaces is written now, in the model tensor's dtype. */
static int replace_tensor(struct packer *p, struct as_stream_reader *r, const struct as_rec *rec) {
    const struct as_st_tensor *t;
    int is = is_replacement(r, rec, p->ck, &t);
    if (is <= 0) return is;
    int ti = tensor_index(p->ck, t->name);
    if (held.status[ti] == T_QUANTIZED) return 1; /* the quantized linear wins */
    if (held.status[ti] == T_REPLACED)
        return as_fail("stream %s: tensor %s appears twice", as_stream_name(r), rec->name);
    void *buf = replacement_bytes(r, rec, t);
    if (!buf) return -1;
    int rc = as_st_writer_add(p->w, t->name, t->dtype, t->ndim, t->shape, buf, t->nbytes);
    free(buf);
    held.status[ti] = T_REPLACED;
    return rc ? -1 : 1;
}

/* gguf: gather everything, then as_gguf_pack. */
static int pack_gguf(const char *model_dir, struct as_ckpt *ck, const char *out,
                     struct as_gguf_pack_opts *gopt, int n_inputs, char **inputs, int json) {
    struct as_qcollect *qc = held.qc = as_qcollect_new();
    struct override *ov = NULL;
    int n_ov = 0;
    for (int i = 0; i < n_inputs; i++) {
        struct as_stream_reader *r = as_stream_open(inputs ? inputs[i] : "-");
        if (!r) as_die_last();
        const struct as_rec *rec;
        int rc;
        while ((rc = as_stream_next(r, &rec)) == 1) {
            int took = as_qcollect_offer(qc, r, rec);
            if (took == 0 && rec->role && !strcmp(rec->role, "weight"))
                took = take_override(r, rec, ck, &ov, &n_ov);
            if (took < 0) as_die_last();
        }
        if (rc < 0) as_die_last();
        as_stream_close(r);
    }
    if (as_qcollect_check_complete(qc)) as_die_last();
    int nq = as_qcollect_count(qc);
    if (!nq && !n_ov)
        as_die("no quantized layers in the input stream (expected qweight/scale/zero/g_idx records "
               "from as-gptq)");
    gopt->n_override = n_ov;
    const char **ov_name = as_xcalloc(n_ov + 1, sizeof *ov_name);
    const float **ov_data = as_xcalloc(n_ov + 1, sizeof *ov_data);
    for (int i = 0; i < n_ov; i++)
        ov_name[i] = ov[i].name, ov_data[i] = ov[i].data;
    gopt->override_name = ov_name, gopt->override_data = ov_data;
    struct as_gguf_pack_report rep;
    if (as_gguf_pack(model_dir, qc, out, gopt, &rep)) as_die_last();
    if (json)
        printf("{\"out\":\"%s\",\"format\":\"gguf\",\"quantized\":%d,\"packed\":%d,"
               "\"fallback\":%d,\"tensors\":%d,\"bytes\":%llu,\"file_type\":%d,"
               "\"verified\":%s}\n",
               out, rep.n_quant, rep.n_blocks, rep.n_fallback, rep.n_tensors,
               (unsigned long long)rep.file_bytes, rep.file_type, gopt->verify ? "true" : "false");
    else
        fprintf(stderr,
                "%s: wrote %s (gguf, %llu bytes): %d linears quantized, %d as blocks, "
                "%d as floats%s\n",
                as_progname(), out, (unsigned long long)rep.file_bytes, rep.n_quant, rep.n_blocks,
                rep.n_fallback, gopt->verify ? ", verified" : "");
    for (int i = 0; i < n_ov; i++)
        free(ov[i].name), free(ov[i].data);
    free(ov), free(ov_name), free(ov_data);
    return 0;
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    const char *model_dir = NULL, *out_dir = NULL, *fmt_name = NULL, *scale_name = "model";
    int verify = 1, json = 0;
    uint64_t max_shard = AS_ST_DEFAULT_SHARD;
    struct as_gguf_pack_opts gopt = {.float_type = AS_GGML_F32};
    static const struct option longopts[] = {{"model", required_argument, 0, 'm'},
                                             {"format", required_argument, 0, 'f'},
                                             {"out", required_argument, 0, 'o'},
                                             {"scale-dtype", required_argument, 0, 1},
                                             {"no-verify", no_argument, 0, 2},
                                             {"json", no_argument, 0, 3},
                                             {"gguf-float", required_argument, 0, 4},
                                             {"gguf-q4-1", no_argument, 0, 5},
                                             {"gguf-fallback", required_argument, 0, 6},
                                             {"max-shard-size", required_argument, 0, 7},
                                             {"gguf-ternary", required_argument, 0, 8},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:f:o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model_dir = optarg;
            break;
        case 'f':
            fmt_name = optarg;
            break;
        case 'o':
            out_dir = optarg;
            break;
        case 1:
            scale_name = optarg;
            break;
        case 2:
            verify = 0;
            break;
        case 3:
            json = 1;
            break;
        case 4:
            if (!strcmp(optarg, "f32"))
                gopt.float_type = AS_GGML_F32;
            else if (!strcmp(optarg, "f16"))
                gopt.float_type = AS_GGML_F16;
            else if (!strcmp(optarg, "bf16"))
                gopt.float_type = AS_GGML_BF16;
            else
                as_die("--gguf-float '%s': expected f32, f16 or bf16", optarg);
            break;
        case 5:
            gopt.prefer_q4_1 = 1;
            break;
        case 6:
            if (!strcmp(optarg, "original"))
                gopt.fallback_original = 1;
            else if (strcmp(optarg, "dequant"))
                as_die("--gguf-fallback '%s': expected dequant or original", optarg);
            break;
        case 7:
            if (as_st_parse_size(optarg, &max_shard)) {
                char msg[512]; /* as_die formats into the buffer as_last_error returns */
                snprintf(msg, sizeof msg, "%s", as_last_error());
                as_die("--max-shard-size: %s", msg);
            }
            break;
        case 8:
            if (!strcmp(optarg, "tq1_0"))
                gopt.tern_type = AS_GGML_TQ1_0;
            else if (!strcmp(optarg, "tq2_0"))
                gopt.tern_type = AS_GGML_TQ2_0;
            else
                as_die("--gguf-ternary '%s': expected tq1_0 or tq2_0", optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!model_dir || !out_dir || !fmt_name) {
        usage(stderr);
        return 2;
    }
    if (as_pack_fp_handles(fmt_name)) { /* FP8/INT8/FP4/W4A8 records from as-lepto: pack_fp.c */
        struct as_pack_fp_opts po = {model_dir, out_dir, fmt_name,      scale_name,
                                     verify,    json,    argc - optind, argv + optind};
        if (as_pack_fp(&po)) as_die_last();
        return 0;
    }
    enum pack_format fmt;
    int tern = as_tern_fmt_parse(fmt_name);
    if (tern >= 0)
        fmt = FMT_TERN;
    else if (!strcmp(fmt_name, "gptq"))
        fmt = FMT_GPTQ;
    else if (!strcmp(fmt_name, "compressed-tensors"))
        fmt = FMT_CT;
    else if (!strcmp(fmt_name, "fakequant"))
        fmt = FMT_FAKEQUANT;
    else if (!strcmp(fmt_name, "gguf"))
        fmt = FMT_GGUF;
    else if (!strcmp(fmt_name, "awq"))
        fmt = FMT_AWQ; /* AutoAWQ GEMM layout, pack_awq.c */
    else
        as_die("--format '%s': expected gptq, compressed-tensors, fakequant, gguf, awq, tq1_0, "
               "tq2_0, i2_s, seq2 or sherry",
               fmt_name);
    /* Testing knob: shard bytes held in memory before the file is written (default 64 MiB). */
    uint64_t shard_buffer = AS_ST_DEFAULT_BUFFER;
    const char *sb = getenv("AS_PACK_SHARD_BUFFER");
    if (sb && *sb && strcmp(sb, "0") && as_st_parse_size(sb, &shard_buffer)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", as_last_error());
        as_die("AS_PACK_SHARD_BUFFER: %s", msg);
    }
    if (sb && !strcmp(sb, "0")) shard_buffer = 0;

    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    json_error_t jerr;
    atexit(free_held);
    json_t *config = held.config = json_load_file(path, 0, &jerr);
    if (!config) as_die("%s: line %d: %s", path, jerr.line, jerr.text);
    if (json_object_get(config, "quantization_config"))
        as_die("%s: the model is already quantized; as-pack needs the original checkpoint", path);
    enum as_dtype mdtype = model_dtype(config);
    enum as_dtype scale_dtype = fmt == FMT_GPTQ ? AS_F16 : mdtype;
    if (!strcmp(scale_name, "f32"))
        scale_dtype = AS_F32;
    else if (!strcmp(scale_name, "f16"))
        scale_dtype = AS_F16;
    else if (!strcmp(scale_name, "bf16"))
        scale_dtype = AS_BF16;
    else if (strcmp(scale_name, "model"))
        as_die("--scale-dtype '%s': expected model, f32, f16 or bf16", scale_name);
    if (fmt == FMT_GPTQ || fmt == FMT_AWQ) scale_dtype = AS_F16; /* both store fp16 scales */

    struct as_ckpt *ck = held.ck = as_ckpt_open(model_dir);
    if (!ck) as_die_last();
    int n_inputs = optind < argc ? argc - optind : 1;
    if (fmt == FMT_GGUF) { /* one file, per-tensor types: no common scheme needed */
        gopt.verify = verify;
        return pack_gguf(model_dir, ck, out_dir, &gopt, n_inputs,
                         optind < argc ? argv + optind : NULL, json);
    }

    /* Stream: each linear is written as soon as it is complete, then freed. */
    held.status = as_xcalloc((size_t)(ck->n_tensors ? ck->n_tensors : 1), 1);
    char *tmp = held.tmp = as_atomic_dir_begin(out_dir);
    if (!tmp) as_die_last();
    struct as_st_shard_report srep = {0};
    struct as_st_shard_opts so = {.max_shard_bytes = max_shard,
                                  .buffer_bytes = shard_buffer,
                                  .verify = verify,
                                  .report = &srep};
    struct packer p = {.fmt = fmt,
                       .model_dir = model_dir,
                       .ck = ck,
                       .mdtype = mdtype,
                       .scale_dtype = scale_dtype,
                       .verify = verify,
                       .tern = tern >= 0 ? (enum as_tern_fmt)tern : AS_TF_TQ1_0};
    p.w = held.w = as_st_writer_new_sharded(tmp, &so);
    int n_replaced = 0;
    for (int i = 0; i < n_inputs; i++) {
        struct as_stream_reader *r = as_stream_open(optind < argc ? argv[optind + i] : "-");
        if (!r) die_staged();
        const struct as_rec *rec;
        int rc;
        while ((rc = as_stream_next(r, &rec)) == 1) {
            int took = offer_record(&p, r, rec);
            if (took == 0 && rec->role && !strcmp(rec->role, "weight")) {
                took = replace_tensor(&p, r, rec);
                n_replaced += took > 0;
            }
            if (took < 0) {
                as_stream_close(r);
                die_staged();
            }
        }
        as_stream_close(r);
        if (rc < 0) die_staged();
    }
    for (int i = 0; i < held.n_pend; i++)
        if (as_qcollect_check_complete(held.pend[i].qc)) die_staged();
    int nq = held.n_quantized;
    if (!nq && !n_replaced) {
        as_fail("no quantized layers in the input stream (expected qweight/scale/zero/g_idx "
                "records from as-gptq)");
        die_staged();
    }
    if (!nq && fmt != FMT_FAKEQUANT) {
        as_fail("no quantized layers in the input stream: only -f fakequant writes a model whose "
                "tensors the stream merely replaces");
        die_staged();
    }

    /* The model tensors the stream left alone, copied from the mapping (pages dropped). */
    for (int i = 0; i < ck->n_tensors; i++) {
        const struct as_st_tensor *t = ck->tensors[i];
        if (held.status[i] != T_PENDING) continue;
        if (as_st_writer_add_mapped(p.w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes))
            die_staged();
    }
    /* compressed-tensors actorder "group": layers packed before the first permuted one carry
     * their (trivial) g_idx too, g = k / group_size. */
    for (int i = 0; p.any_perm && i < held.n_ct_no_gidx; i++) {
        int K = held.ct_no_gidx_k[i];
        int32_t *g = as_xmalloc(sizeof(int32_t) * K);
        for (int k = 0; k < K; k++)
            g[k] = p.l0.group_size > 0 ? k / p.l0.group_size : 0;
        char name[1100];
        snprintf(name, sizeof name, "%s.weight_g_idx", held.ct_no_gidx[i]);
        int64_t shape[1] = {K};
        int rc = as_st_writer_add(p.w, name, AS_I32, 1, shape, g, sizeof(int32_t) * K);
        free(g);
        if (rc) die_staged();
    }
    int rc = as_st_writer_finish(p.w);
    held.w = NULL;
    if (rc) die_staged();

    /* config.json (+ quantize_config.json for GPTQ) */
    json_t *qcfg = NULL;
    const struct as_qlinear *l0 = &p.l0;
    const json_t *a0 = held.a0;
    char *const *skipped = held.skipped;
    int n_skipped = held.n_skipped;
    if (fmt == FMT_GPTQ) {
        struct as_gptq_params gp = {
            .bits = l0->bits,
            .group_size = l0->group_size <= 0 ? -1 : l0->group_size,
            .sym = l0->sym,
            .desc_act = l0->has_act_order,
            .static_groups = json_is_true(json_object_get(a0, "static_groups")),
            .true_sequential = json_is_true(json_object_get(a0, "true_sequential")),
            .damp_percent = json_is_number(json_object_get(a0, "percdamp"))
                                ? json_number_value(json_object_get(a0, "percdamp"))
                                : 0.01};
        qcfg = as_gptq_quant_config(&gp, (const char *const *)skipped, n_skipped);
        if (n_skipped)
            add_modules_in_block(qcfg, held.quantized, held.n_quantized, skipped, n_skipped);
    } else if (fmt == FMT_AWQ && p.n_packed == 0) {
        /* An AWQ config with every linear excluded crashes transformers' loader (5.24:
         * UnboundLocalError 'has_been_replaced'); the fallbacks already hold the quantizer's
         * dequantized weights, so without a quantization_config this is a dense checkpoint. */
        fprintf(stderr,
                "%s: no linear fits the AWQ GEMM layout: wrote %s as a dense checkpoint (the "
                "quantizer's weights, no quantization_config)\n",
                as_progname(), out_dir);
    } else if (fmt == FMT_TERN) {
        qcfg = as_tern_quant_config(p.tern, (const char *const *)skipped, n_skipped);
    } else if (fmt == FMT_AWQ) {
        qcfg = as_awq_quant_config(l0->group_size, (const char *const *)skipped, n_skipped);
    } else if (fmt == FMT_CT) {
        const char **ignore = as_xcalloc(n_skipped + 1, sizeof *ignore);
        ignore[0] = "lm_head";
        for (int i = 0; i < n_skipped; i++)
            ignore[i + 1] = skipped[i];
        struct as_ct_params cp = {.bits = l0->bits,
                                  .group_size = l0->group_size,
                                  .sym = l0->sym,
                                  .actorder = p.any_perm          ? AS_CT_ACTORDER_GROUP
                                              : l0->has_act_order ? AS_CT_ACTORDER_WEIGHT
                                                                  : AS_CT_ACTORDER_NONE,
                                  .ignore = ignore,
                                  .n_ignore = n_skipped + 1};
        qcfg = as_ct_quant_config(&cp);
        free(ignore);
    }
    if (qcfg) {
        json_object_set(config, "quantization_config", qcfg);
        if (fmt == FMT_GPTQ) {
            snprintf(path, sizeof path, "%s/quantize_config.json", tmp);
            if (json_dump_file(qcfg, path, JSON_INDENT(2))) {
                json_decref(qcfg);
                as_fail("%s: cannot write", path);
                die_staged();
            }
        }
        json_decref(qcfg);
    }
    snprintf(path, sizeof path, "%s/config.json", tmp);
    if (json_dump_file(config, path, JSON_INDENT(2))) {
        as_fail("%s: cannot write", path);
        die_staged();
    }
    static const char *const copied[] = {"tokenizer.json", "tokenizer_config.json",
                                         "special_tokens_map.json", "generation_config.json",
                                         "tokenizer.model"};
    for (size_t i = 0; i < sizeof copied / sizeof *copied; i++) {
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", model_dir, copied[i]);
        snprintf(dst, sizeof dst, "%s/%s", tmp, copied[i]);
        if (as_copy_file(src, dst) < 0) die_staged();
    }
    if (as_atomic_dir_commit(tmp, out_dir)) die_staged();
    for (int i = 0; i < held.n_notes; i++)
        fprintf(stderr, "%s: %s\n", as_progname(), held.notes[i]);
    if (json)
        printf("{\"out\":\"%s\",\"format\":\"%s\",\"quantized\":%d,\"packed\":%d,\"fallback\":%d,"
               "\"shards\":%d,\"bytes\":%llu,\"verified\":%s}\n",
               out_dir, fmt_name, nq, p.n_packed, n_skipped, srep.n_shards,
               (unsigned long long)srep.total_bytes,
               verify && fmt != FMT_FAKEQUANT ? "true" : "false");
    else
        fprintf(stderr,
                "%s: wrote %s (%s, %d shard%s): %d linears quantized, %d packed, %d kept "
                "dequantized%s\n",
                as_progname(), out_dir, fmt_name, srep.n_shards, srep.n_shards == 1 ? "" : "s", nq,
                p.n_packed, n_skipped, verify && fmt != FMT_FAKEQUANT ? ", verified" : "");
    return 0;
}
