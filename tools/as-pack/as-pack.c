/* as-pack: write a deployable checkpoint from a quantized tensor stream and the original model.
 *
 * Formats: gptq (GPTQ v1: qweight/qzeros/scales/g_idx, what AutoGPTQ, transformers and vLLM load
 * as "gptq"), compressed-tensors (pack-quantized, vLLM's main format) and fakequant (the
 * dequantized weights W_hat as plain tensors: exact evaluation of the quantizer, no packing).
 * Every tensor of the model that is not a quantized linear is copied through unchanged;
 * config.json gains the format's quantization_config; tokenizer files are copied. A layer a
 * format cannot store faithfully (docs/formats.md) is written as W_hat in the model dtype and
 * reported. The output directory appears atomically (staged, fsynced, renamed).
 * gguf writes one llama.cpp FILE.gguf instead (gguf_pack.c, docs/gguf.md): group-32 codes as
 * Q4_0 / Q4_1 / Q8_0 blocks, everything else as floats, written and verified atomically. */
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
#include "quant_load.h"
#include "safetensors.h"
#include "stream.h"

enum pack_format { FMT_GPTQ, FMT_CT, FMT_FAKEQUANT, FMT_GGUF, FMT_AWQ };

/* Tensors the stream replaces (role "weight" records for a tensor of the model, e.g. norms that
 * as-awq rescaled), kept as f32 and written in the model tensor's dtype. */
struct override {
    char *name;
    int64_t numel;
    float *data;
};

static int take_override(struct as_stream_reader *r, const struct as_rec *rec,
                         const struct as_ckpt *ck, struct override **ov, int *n_ov) {
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
    const void *data = as_stream_payload(r);
    if (!data) return -1;
    for (int i = 0; i < *n_ov; i++)
        if (!strcmp((*ov)[i].name, rec->name))
            return as_fail("stream %s: tensor %s appears twice", as_stream_name(r), rec->name);
    float *f = as_xmalloc(sizeof(float) * numel);
    if (as_convert_to_f32(rec->dtype, data, f, numel)) {
        free(f);
        return as_fail_prefix("stream %s: tensor %s: ", as_stream_name(r), rec->name);
    }
    *ov = as_xrealloc(*ov, (*n_ov + 1) * sizeof **ov);
    (*ov)[(*n_ov)++] = (struct override){as_xstrdup(rec->name), (int64_t)numel, f};
    return 1;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: as-pack -m MODEL -f FORMAT -o OUT [options] [STREAM...]\n"
            "Gather quantized linears from the stream(s) (default stdin) into a checkpoint.\n"
            "  -m, --model DIR        the original checkpoint (unquantized tensors, config, tokenizer)\n"
            "  -f, --format F         gptq | compressed-tensors | fakequant | gguf | awq\n"
            "                         as-lepto records: ct-fp (by scheme) | float-quantized |\n"
            "                         int-quantized | nvfp4-pack-quantized | mxfp4-pack-quantized\n"
            "                         | w4a8 | fp8 (DeepSeek block) | fakequant-fp (docs/lepto.md)\n"
            "  -o, --out DIR          output checkpoint directory (replaced atomically);\n"
            "                         for gguf the output FILE.gguf\n"
            "      --gguf-float T     gguf: type of unquantized matrices: f32 (default), f16, bf16\n"
            "      --gguf-q4-1        gguf: store 4-bit symmetric layers as Q4_1 (default Q4_0)\n"
            "      --gguf-fallback S  gguf: layers that fit no block type: dequant (default, the\n"
            "                         quantizer's W_hat) or original (the checkpoint's weights)\n"
            "      --scale-dtype T    compressed-tensors scale dtype: model (default), f32, f16, bf16\n"
            "      --no-verify        skip reading the written checkpoint back\n"
            "      --json             JSON report on stdout\n"
            "  -h, --help\n");
}


/* What main holds, freed at exit on every path (as_die included), so a failed run leaks nothing. */
static struct {
    json_t *config;
    struct as_ckpt *ck;
    struct as_qcollect *qc;
} held;

static void free_held(void) {
    json_decref(held.config);
    as_ckpt_close(held.ck);
    as_qcollect_free(held.qc);
}

/* optimum (what transformers uses to load GPTQ) ignores the "dynamic" exclusions; it takes
 * "modules_in_block_to_quantize" instead. That can only say "these modules in every block", so
 * it is written when every block packed the same modules. */
static void add_modules_in_block(json_t *qcfg, const struct as_qcollect *qc,
                                 const char *const *skipped, int n_skipped) {
    enum { MAXL = 4096 };
    static unsigned char packed[MAXL]; /* bit i: linear i of the layer was packed */
    int max_layer = -1;
    memset(packed, 0, sizeof packed);
    for (int i = 0; i < as_qcollect_count(qc); i++) {
        const char *pfx;
        as_qcollect_get(qc, i, &pfx, NULL);
        int layer, skip = 0;
        enum as_linear which;
        if (as_linear_parse(pfx, &layer, &which) || layer >= MAXL) return;
        for (int j = 0; j < n_skipped; j++) skip |= !strcmp(skipped[j], pfx);
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

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    const char *model_dir = NULL, *out_dir = NULL, *fmt_name = NULL, *scale_name = "model";
    int verify = 1, json = 0;
    struct as_gguf_pack_opts gopt = {.float_type = AS_GGML_F32};
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'}, {"format", required_argument, 0, 'f'},
        {"out", required_argument, 0, 'o'},   {"scale-dtype", required_argument, 0, 1},
        {"no-verify", no_argument, 0, 2},     {"json", no_argument, 0, 3},
        {"gguf-float", required_argument, 0, 4}, {"gguf-q4-1", no_argument, 0, 5},
        {"gguf-fallback", required_argument, 0, 6},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:f:o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'f': fmt_name = optarg; break;
        case 'o': out_dir = optarg; break;
        case 1: scale_name = optarg; break;
        case 2: verify = 0; break;
        case 3: json = 1; break;
        case 4:
            if (!strcmp(optarg, "f32")) gopt.float_type = AS_GGML_F32;
            else if (!strcmp(optarg, "f16")) gopt.float_type = AS_GGML_F16;
            else if (!strcmp(optarg, "bf16")) gopt.float_type = AS_GGML_BF16;
            else as_die("--gguf-float '%s': expected f32, f16 or bf16", optarg);
            break;
        case 5: gopt.prefer_q4_1 = 1; break;
        case 6:
            if (!strcmp(optarg, "original")) gopt.fallback_original = 1;
            else if (strcmp(optarg, "dequant")) as_die("--gguf-fallback '%s': expected dequant or original", optarg);
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!model_dir || !out_dir || !fmt_name) {
        usage(stderr);
        return 2;
    }
    if (as_pack_fp_handles(fmt_name)) { /* FP8/INT8/FP4/W4A8 records from as-lepto: pack_fp.c */
        struct as_pack_fp_opts po = {model_dir, out_dir, fmt_name, scale_name, verify, json,
                                     argc - optind, argv + optind};
        if (as_pack_fp(&po)) as_die_last();
        return 0;
    }
    enum pack_format fmt;
    if (!strcmp(fmt_name, "gptq")) fmt = FMT_GPTQ;
    else if (!strcmp(fmt_name, "compressed-tensors")) fmt = FMT_CT;
    else if (!strcmp(fmt_name, "fakequant")) fmt = FMT_FAKEQUANT;
    else if (!strcmp(fmt_name, "gguf")) fmt = FMT_GGUF;
    else if (!strcmp(fmt_name, "awq")) fmt = FMT_AWQ; /* AutoAWQ GEMM layout, pack_awq.c */
    else as_die("--format '%s': expected gptq, compressed-tensors, fakequant, gguf or awq", fmt_name);

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
    if (!strcmp(scale_name, "f32")) scale_dtype = AS_F32;
    else if (!strcmp(scale_name, "f16")) scale_dtype = AS_F16;
    else if (!strcmp(scale_name, "bf16")) scale_dtype = AS_BF16;
    else if (strcmp(scale_name, "model")) as_die("--scale-dtype '%s': expected model, f32, f16 or bf16", scale_name);
    if (fmt == FMT_GPTQ || fmt == FMT_AWQ) scale_dtype = AS_F16; /* both store fp16 scales */

    struct as_ckpt *ck = held.ck = as_ckpt_open(model_dir);
    if (!ck) as_die_last();

    /* Gather the quantized layers. */
    struct as_qcollect *qc = held.qc = as_qcollect_new();
    struct override *ov = NULL;
    int n_ov = 0;
    int n_inputs = optind < argc ? argc - optind : 1;
    for (int i = 0; i < n_inputs; i++) {
        struct as_stream_reader *r = as_stream_open(optind < argc ? argv[optind + i] : "-");
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
    if (!nq && !n_ov) as_die("no quantized layers in the input stream (expected qweight/scale/zero/g_idx records from as-gptq)");

    if (fmt == FMT_GGUF) { /* one file, per-tensor types: no common scheme needed */
        gopt.verify = verify;
        gopt.n_override = n_ov;
        const char **ov_name = as_xcalloc(n_ov + 1, sizeof *ov_name);
        const float **ov_data = as_xcalloc(n_ov + 1, sizeof *ov_data);
        for (int i = 0; i < n_ov; i++) ov_name[i] = ov[i].name, ov_data[i] = ov[i].data;
        gopt.override_name = ov_name, gopt.override_data = ov_data;
        struct as_gguf_pack_report rep;
        if (as_gguf_pack(model_dir, qc, out_dir, &gopt, &rep)) as_die_last();
        if (json)
            printf("{\"out\":\"%s\",\"format\":\"gguf\",\"quantized\":%d,\"packed\":%d,"
                   "\"fallback\":%d,\"tensors\":%d,\"bytes\":%llu,\"file_type\":%d,"
                   "\"verified\":%s}\n",
                   out_dir, rep.n_quant, rep.n_blocks, rep.n_fallback, rep.n_tensors,
                   (unsigned long long)rep.file_bytes, rep.file_type, verify ? "true" : "false");
        else
            fprintf(stderr, "%s: wrote %s (gguf, %llu bytes): %d linears quantized, %d as blocks, "
                    "%d as floats%s\n",
                    as_progname(), out_dir, (unsigned long long)rep.file_bytes, rep.n_quant,
                    rep.n_blocks, rep.n_fallback, verify ? ", verified" : "");
        for (int i = 0; i < n_ov; i++) free(ov[i].name), free(ov[i].data);
        free(ov), free(ov_name), free(ov_data);
        (void)config;
        return 0;
    }

    /* All layers must share one scheme: these formats describe one config group. */
    const json_t *a0 = NULL;
    static const struct as_qlinear no_layer = {0};
    const struct as_qlinear *l0 = nq ? as_qcollect_get(qc, 0, NULL, &a0) : &no_layer;
    if (!nq && fmt != FMT_FAKEQUANT)
        as_die("no quantized layers in the input stream: only -f fakequant writes a model whose "
               "tensors the stream merely replaces");
    for (int i = 1; i < nq; i++) {
        const char *pfx;
        const struct as_qlinear *l = as_qcollect_get(qc, i, &pfx, NULL);
        if (l->bits != l0->bits || l->group_size != l0->group_size || l->sym != l0->sym)
            as_die("tensor %s: %d-bit group %d %s differs from the other layers (%d-bit group %d "
                   "%s); one scheme per checkpoint",
                   pfx, l->bits, l->group_size, l->sym ? "sym" : "asym", l0->bits,
                   l0->group_size, l0->sym ? "sym" : "asym");
    }

    /* compressed-tensors "group" actorder is one config flag: then every layer carries g_idx. */
    int any_perm = 0;
    for (int i = 0; i < nq; i++)
        any_perm |= !as_qlinear_gidx_is_trivial(as_qcollect_get(qc, i, NULL, NULL));

    char *tmp = as_atomic_dir_begin(out_dir);
    if (!tmp) as_die_last();
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    struct as_st_writer *w = as_st_writer_new(path);
    if (!w) goto fail;
    const char **skipped = as_xcalloc(nq + 1, sizeof *skipped);
    int n_skipped = 0, n_packed = 0;
    char why[256];
    for (int i = 0; i < ck->n_tensors; i++) {
        const struct as_st_tensor *t = ck->tensors[i];
        size_t len = strlen(t->name);
        char prefix[1024];
        const struct as_qlinear *l = NULL;
        if (len > 7 && !strcmp(t->name + len - 7, ".weight") && len - 7 < sizeof prefix) {
            snprintf(prefix, sizeof prefix, "%.*s", (int)(len - 7), t->name);
            l = as_qcollect_find(qc, prefix);
        }
        const struct override *o = NULL;
        for (int j = 0; !l && j < n_ov; j++)
            if (!strcmp(ov[j].name, t->name)) o = &ov[j];
        if (o) { /* replaced by the stream, stored in the model tensor's dtype */
            void *buf = as_xmalloc(t->nbytes);
            int rc = as_convert_from_f32(t->dtype, o->data, buf, (size_t)o->numel);
            if (!rc) rc = as_st_writer_add_copy(w, t->name, t->dtype, t->ndim, t->shape, buf, t->nbytes);
            free(buf);
            if (rc) goto fail_w;
            continue;
        }
        if (!l) { /* copied through, straight from the mapping */
            if (as_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes))
                goto fail_w;
            continue;
        }
        if (t->ndim != 2 || t->shape[0] != l->N || t->shape[1] != l->K) {
            as_fail("%s: tensor %s: shape [%lld,%lld] but the stream quantized it as [%d,%d]",
                    ck->tensor_file[i], t->name, (long long)t->shape[0],
                    (long long)(t->ndim > 1 ? t->shape[1] : 0), l->N, l->K);
            goto fail_w;
        }
        int packable = fmt == FMT_GPTQ ? as_gptq_packable(l, why, sizeof why)
                       : fmt == FMT_CT ? as_ct_packable(l, why, sizeof why)
                       : fmt == FMT_AWQ ? as_awq_packable(l, why, sizeof why)
                                       : 0;
        if (packable) {
            int rc = fmt == FMT_GPTQ ? as_gptq_write(w, prefix, l)
                     : fmt == FMT_AWQ ? as_awq_write(w, prefix, l)
                                     : as_ct_write(w, prefix, l, scale_dtype, any_perm);
            if (rc) goto fail_w;
            n_packed++;
            continue;
        }
        /* Fallback (and fakequant): W_hat in the model's dtype under the plain name. */
        if (fmt != FMT_FAKEQUANT) {
            fprintf(stderr, "%s: tensor %s: kept as dequantized %s weights (%s)\n", as_progname(),
                    t->name, as_dtype_name(t->dtype), why);
            skipped[n_skipped++] = as_xstrdup(prefix);
        }
        float *wh = as_xmalloc(sizeof(float) * l->N * l->K);
        as_qlinear_dequant(l, wh);
        void *buf = as_xmalloc(t->nbytes);
        as_convert_from_f32(t->dtype, wh, buf, (size_t)l->N * l->K);
        int rc = as_st_writer_add_copy(w, t->name, t->dtype, 2, t->shape, buf, t->nbytes);
        free(wh);
        free(buf);
        if (rc) goto fail_w;
    }
    for (int i = 0; i < nq; i++) {
        const char *pfx;
        as_qcollect_get(qc, i, &pfx, NULL);
        char name[1100];
        snprintf(name, sizeof name, "%s.weight", pfx);
        if (!as_ckpt_find(ck, name)) {
            as_fail("tensor %s: quantized in the stream but not in the model %s", name, model_dir);
            goto fail_w;
        }
    }
    if (as_st_writer_finish(w)) {
        w = NULL;
        goto fail;
    }
    w = NULL;

    /* config.json (+ quantize_config.json for GPTQ) */
    json_t *qcfg = NULL;
    if (fmt == FMT_GPTQ) {
        struct as_gptq_params p = {
            .bits = l0->bits, .group_size = l0->group_size <= 0 ? -1 : l0->group_size,
            .sym = l0->sym, .desc_act = l0->has_act_order,
            .static_groups = json_is_true(json_object_get(a0, "static_groups")),
            .true_sequential = json_is_true(json_object_get(a0, "true_sequential")),
            .damp_percent = json_is_number(json_object_get(a0, "percdamp"))
                                ? json_number_value(json_object_get(a0, "percdamp"))
                                : 0.01};
        qcfg = as_gptq_quant_config(&p, skipped, n_skipped);
        if (n_skipped) add_modules_in_block(qcfg, qc, skipped, n_skipped);
    } else if (fmt == FMT_AWQ) {
        qcfg = as_awq_quant_config(l0->group_size, skipped, n_skipped);
    } else if (fmt == FMT_CT) {
        const char **ignore = as_xcalloc(n_skipped + 1, sizeof *ignore);
        ignore[0] = "lm_head";
        for (int i = 0; i < n_skipped; i++) ignore[i + 1] = skipped[i];
        struct as_ct_params p = {.bits = l0->bits, .group_size = l0->group_size, .sym = l0->sym,
                                 .actorder = any_perm ? AS_CT_ACTORDER_GROUP
                                             : l0->has_act_order ? AS_CT_ACTORDER_WEIGHT
                                                                 : AS_CT_ACTORDER_NONE,
                                 .ignore = ignore, .n_ignore = n_skipped + 1};
        qcfg = as_ct_quant_config(&p);
        free(ignore);
    }
    if (qcfg) {
        json_object_set(config, "quantization_config", qcfg);
        if (fmt == FMT_GPTQ) {
            snprintf(path, sizeof path, "%s/quantize_config.json", tmp);
            if (json_dump_file(qcfg, path, JSON_INDENT(2))) {
                as_fail("%s: cannot write", path);
                goto fail;
            }
        }
        json_decref(qcfg);
    }
    snprintf(path, sizeof path, "%s/config.json", tmp);
    if (json_dump_file(config, path, JSON_INDENT(2))) {
        as_fail("%s: cannot write", path);
        goto fail;
    }
    static const char *const copied[] = {"tokenizer.json", "tokenizer_config.json",
                                         "special_tokens_map.json", "generation_config.json",
                                         "tokenizer.model"};
    for (size_t i = 0; i < sizeof copied / sizeof *copied; i++) {
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", model_dir, copied[i]);
        snprintf(dst, sizeof dst, "%s/%s", tmp, copied[i]);
        if (as_copy_file(src, dst) < 0) goto fail;
    }

    /* Read back what a loader sees and compare with the quantizer's output, bit for bit. */
    if (verify && fmt != FMT_FAKEQUANT) {
        struct as_ckpt *back = as_ckpt_open(tmp);
        if (!back) goto fail;
        json_t *bq = json_object_get(config, "quantization_config");
        for (int i = 0; i < nq; i++) {
            const char *pfx;
            const struct as_qlinear *l = as_qcollect_get(qc, i, &pfx, NULL);
            float *got = as_xmalloc(sizeof(float) * l->N * l->K);
            float *want = as_xmalloc(sizeof(float) * l->N * l->K);
            int rc = as_quant_load_linear(back, bq, pfx, l->N, l->K, got);
            if (rc == 0) { /* fallback layer: W_hat in the model dtype */
                char name[1100];
                snprintf(name, sizeof name, "%s.weight", pfx);
                const struct as_st_tensor *t = as_ckpt_find(back, name);
                rc = t ? as_ckpt_read_f32(back, t, got) : as_fail("tensor %s missing", name);
                as_qlinear_dequant(l, want);
                uint16_t *h = as_xmalloc(2 * (size_t)l->N * l->K);
                if (mdtype != AS_F32) { /* rounded like the stored tensor */
                    as_convert_from_f32(mdtype, want, h, (size_t)l->N * l->K);
                    as_convert_to_f32(mdtype, h, want, (size_t)l->N * l->K);
                }
                free(h);
            } else {
                expected_dequant(l, scale_dtype, want);
            }
            int bad = rc < 0 ? -1 : memcmp(got, want, sizeof(float) * l->N * l->K) != 0;
            free(got);
            free(want);
            if (bad < 0) {
                as_ckpt_close(back);
                goto fail;
            }
            if (bad) {
                as_ckpt_close(back);
                as_fail("verify: tensor %s: weights read back from %s differ from the quantizer's "
                        "output", pfx, out_dir);
                goto fail;
            }
        }
        as_ckpt_close(back);
    }
    if (as_atomic_dir_commit(tmp, out_dir)) goto fail;
    if (json)
        printf("{\"out\":\"%s\",\"format\":\"%s\",\"quantized\":%d,\"packed\":%d,\"fallback\":%d,"
               "\"verified\":%s}\n",
               out_dir, fmt_name, nq, n_packed, n_skipped,
               verify && fmt != FMT_FAKEQUANT ? "true" : "false");
    else
        fprintf(stderr, "%s: wrote %s (%s): %d linears quantized, %d packed, %d kept dequantized%s\n",
                as_progname(), out_dir, fmt_name, nq, n_packed, n_skipped,
                verify && fmt != FMT_FAKEQUANT ? ", verified" : "");
    for (int i = 0; i < n_ov; i++) {
        free(ov[i].name);
        free(ov[i].data);
    }
    free(ov);
    for (int i = 0; i < n_skipped; i++) free((void *)skipped[i]);
    free(skipped);
    free(tmp);
    (void)config;
    return 0;

fail_w:
    as_st_writer_abort(w);
fail: {
    char msg[4096];
    snprintf(msg, sizeof msg, "%s", as_last_error());
    as_atomic_dir_abort(tmp);
    as_die("%s", msg);
}
}
