/* model_save: config.json from a config, and a whole in-memory model as a checkpoint. */
#include "model_save.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "safetensors.h"

static const char *torch_dtype_name(enum as_dtype dt) {
    return dt == AS_BF16 ? "bfloat16" : dt == AS_F16 ? "float16" : "float32";
}

static const char *arch_class(enum as_arch a) {
    switch (a) {
    case AS_ARCH_MISTRAL:
        return "MistralForCausalLM";
    case AS_ARCH_QWEN2:
        return "Qwen2ForCausalLM";
    case AS_ARCH_QWEN3:
        return "Qwen3ForCausalLM";
    default:
        return "LlamaForCausalLM";
    }
}

json_t *as_config_to_json(const struct as_model_config *c, enum as_dtype dt) {
    json_t *cfg = json_pack(
        "{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:s, s:s, s:b}",
        "architectures", arch_class(c->arch), "model_type", c->model_type, "hidden_size", c->hidden,
        "intermediate_size", c->intermediate, "num_hidden_layers", c->n_layers,
        "num_attention_heads", c->n_heads, "num_key_value_heads", c->n_kv_heads, "head_dim",
        c->head_dim, "vocab_size", c->vocab, "max_position_embeddings", c->max_pos, "rms_norm_eps",
        (double)c->rms_eps, "rope_theta", (double)c->rope_theta, "tie_word_embeddings",
        c->tie_embeddings, "hidden_act", "silu", "torch_dtype", torch_dtype_name(dt),
        "attention_bias", c->qkv_bias);
    if (c->bos_id >= 0) json_object_set_new(cfg, "bos_token_id", json_integer(c->bos_id));
    if (c->eos_id >= 0) json_object_set_new(cfg, "eos_token_id", json_integer(c->eos_id));
    if (c->rope_type != AS_ROPE_DEFAULT) {
        const char *names[] = {"default", "linear", "llama3", "yarn"};
        json_t *rs = json_pack("{s:s, s:f}", "rope_type", names[c->rope_type], "factor",
                               (double)c->rope_factor);
        if (c->rope_orig_max_pos)
            json_object_set_new(rs, "original_max_position_embeddings",
                                json_integer(c->rope_orig_max_pos));
        if (c->rope_type == AS_ROPE_LLAMA3) {
            json_object_set_new(rs, "low_freq_factor", json_real(c->rope_low_freq_factor));
            json_object_set_new(rs, "high_freq_factor", json_real(c->rope_high_freq_factor));
        }
        if (c->rope_type == AS_ROPE_YARN) {
            json_object_set_new(rs, "beta_fast", json_real(c->yarn_beta_fast));
            json_object_set_new(rs, "beta_slow", json_real(c->yarn_beta_slow));
            if (c->yarn_mscale > 0) json_object_set_new(rs, "mscale", json_real(c->yarn_mscale));
            if (c->yarn_mscale_all_dim > 0)
                json_object_set_new(rs, "mscale_all_dim", json_real(c->yarn_mscale_all_dim));
            if (c->yarn_attn_factor > 0)
                json_object_set_new(rs, "attention_factor", json_real(c->yarn_attn_factor));
        }
        json_object_set_new(cfg, "rope_scaling", rs);
    }
    return cfg;
}

int as_json_write_file(const json_t *obj, const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    /* 9 significant digits: every f32 (eps, theta) reads back as the same f32 */
    if (json_dump_file(obj, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)))
        return as_fail("file %s: cannot write", path);
    return 0;
}

/* One tensor in dt: F32 is added by reference (the model outlives the writer), others converted
 * into a copy. */
static int add_tensor(struct as_st_writer *w, const char *name, enum as_dtype dt, int ndim,
                      int64_t rows, int64_t cols, const float *src) {
    int64_t shape[2] = {rows, cols};
    size_t n = (size_t)rows * (size_t)(ndim == 2 ? cols : 1);
    if (dt == AS_F32) return as_st_writer_add(w, name, AS_F32, ndim, shape, src, (uint64_t)n * 4);
    uint16_t *h = as_xmalloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = dt == AS_BF16 ? as_f32_to_bf16(src[i]) : as_f32_to_f16(src[i]);
    int rc = as_st_writer_add_copy(w, name, dt, ndim, shape, h, (uint64_t)n * 2);
    free(h);
    return rc;
}

int as_model_save_hf(const struct as_model *m, const char *dir, enum as_dtype dt) {
    const struct as_model_config *c = &m->cfg;
    if (dt != AS_F32 && dt != AS_BF16 && dt != AS_F16)
        return as_fail("dtype %s cannot be written as a dense checkpoint (F32, BF16, F16)",
                       as_dtype_name(dt));
    json_t *cfg = as_config_to_json(c, dt);
    json_t *gen = json_pack("{s:b}", "_from_model_config", 1);
    if (c->bos_id >= 0) json_object_set_new(gen, "bos_token_id", json_integer(c->bos_id));
    if (c->eos_id >= 0) json_object_set_new(gen, "eos_token_id", json_integer(c->eos_id));
    int rc = as_json_write_file(cfg, dir, "config.json") ||
             as_json_write_file(gen, dir, "generation_config.json");
    json_decref(cfg), json_decref(gen);
    if (rc) return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct as_st_writer *w = as_st_writer_new(path);
    if (!w) return -1;
    int64_t H = c->hidden, hd = c->head_dim;
    int64_t qd = (int64_t)c->n_heads * hd, kvd = (int64_t)c->n_kv_heads * hd;
    char name[256];
    rc = add_tensor(w, "model.embed_tokens.weight", dt, 2, c->vocab, H, m->embed);
    for (int l = 0; l < c->n_layers && rc == 0; l++) {
        const struct as_layer_weights *L = &m->layers[l];
        const struct {
            const char *n;
            int ndim;
            int64_t r;
            const float *p;
        } vecs[] = {
            {"input_layernorm.weight", 1, H, L->attn_norm},
            {"post_attention_layernorm.weight", 1, H, L->ffn_norm},
            {"self_attn.q_proj.bias", 1, qd, L->bq},
            {"self_attn.k_proj.bias", 1, kvd, L->bk},
            {"self_attn.v_proj.bias", 1, kvd, L->bv},
            {"self_attn.q_norm.weight", 1, hd, L->q_norm},
            {"self_attn.k_norm.weight", 1, hd, L->k_norm},
        };
        for (size_t i = 0; i < sizeof vecs / sizeof vecs[0] && rc == 0; i++) {
            if (!vecs[i].p) continue;
            snprintf(name, sizeof name, "model.layers.%d.%s", l, vecs[i].n);
            rc = add_tensor(w, name, dt, 1, vecs[i].r, 0, vecs[i].p);
        }
        for (int k = 0; k < AS_LIN_COUNT && rc == 0; k++) {
            int rows, cols;
            as_model_linear_shape(m, (enum as_linear)k, &rows, &cols);
            as_linear_tensor_name(l, (enum as_linear)k, name, sizeof name);
            rc = add_tensor(w, name, dt, 2, rows, cols, L->w[k]);
        }
    }
    if (rc == 0) rc = add_tensor(w, "model.norm.weight", dt, 1, H, 0, m->norm);
    if (rc == 0 && !c->tie_embeddings)
        rc = add_tensor(w, "lm_head.weight", dt, 2, c->vocab, H, m->lm_head);
    if (rc != 0) {
        as_st_writer_abort(w);
        return -1;
    }
    return as_st_writer_finish(w);
}
