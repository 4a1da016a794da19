/* model: a Llama-family decoder loaded from a Hugging Face checkpoint directory.
 *
 * config.json is parsed for model_type llama, mistral, qwen2 (q/k/v biases) and qwen3 (per-head
 * q/k RMSNorm); GQA, head_dim, RoPE theta and scaling (linear, llama3, yarn), tied embeddings.
 * Every weight is converted to f32 at load and kept in memory, one array per linear, so callers
 * (calibration, GPTQ true-sequential) can read and overwrite them. Linear weights of a checkpoint
 * with a "quantization_config" are dequantized at load: a loader registered for its quant_method
 * (as_weight_loader_register) if any, else quant_load.h (GPTQ, compressed-tensors), else the
 * dense loader, which reads F32/BF16/F16 safetensors. */
#ifndef AS_MODEL_H
#define AS_MODEL_H

#include <stdint.h>

#include "safetensors.h"

enum as_arch { AS_ARCH_LLAMA, AS_ARCH_MISTRAL, AS_ARCH_QWEN2, AS_ARCH_QWEN3 };
enum as_rope_type { AS_ROPE_DEFAULT, AS_ROPE_LINEAR, AS_ROPE_LLAMA3, AS_ROPE_YARN };

/* The seven linears of a decoder layer, in the order true-sequential quantization visits them. */
enum as_linear {
    AS_LIN_Q,
    AS_LIN_K,
    AS_LIN_V,
    AS_LIN_O,
    AS_LIN_GATE,
    AS_LIN_UP,
    AS_LIN_DOWN,
    AS_LIN_COUNT
};
/* Linears that share one input matrix (what a statistics collector sees). */
enum as_linear_group {
    AS_GROUP_ATTN_QKV,
    AS_GROUP_ATTN_O,
    AS_GROUP_MLP_GATE_UP,
    AS_GROUP_MLP_DOWN,
    AS_GROUP_COUNT
};

struct as_model_config {
    char model_type[32];
    enum as_arch arch;
    int hidden, intermediate, n_layers, n_heads, n_kv_heads, head_dim, vocab, max_pos;
    float rms_eps, rope_theta;
    int tie_embeddings;
    int qkv_bias;       /* qwen2 */
    int qk_norm;        /* qwen3 */
    int bos_id, eos_id; /* -1 when absent */
    /* rope_scaling */
    enum as_rope_type rope_type;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    float yarn_beta_fast, yarn_beta_slow, yarn_mscale, yarn_mscale_all_dim, yarn_attn_factor;
    char quant_method[32]; /* "" when the checkpoint is dense */
};

struct as_layer_weights {
    float *attn_norm, *ffn_norm; /* [hidden] */
    float *w[AS_LIN_COUNT];      /* [out, in] row-major (HF nn.Linear layout) */
    float *bq, *bk, *bv;         /* qwen2 biases, else NULL */
    float *q_norm, *k_norm;      /* qwen3 [head_dim], else NULL */
    /* as-ternary checkpoints: the packed layer (struct as_qlin, qlinear.h) or NULL; forward.c
     * multiplies it with the int8 kernels when AS_TERNARY_KERNELS=1, else uses w[] */
    void *packed[AS_LIN_COUNT];
};

struct as_model {
    struct as_model_config cfg;
    char *dir;
    struct json_t *quant_config; /* config.json "quantization_config" (jansson), or NULL */
    float *embed;                /* [vocab, hidden] */
    float *norm;                 /* [hidden] */
    float *lm_head;              /* [vocab, hidden]; == embed when tied */
    struct as_layer_weights *layers;
    float *inv_freq;   /* [head_dim/2] RoPE inverse frequencies after scaling */
    float attn_factor; /* yarn: multiplies cos and sin; 1 otherwise */
};

/* Parse config.json (path to the file). Errors name the file and the field. */
int as_config_parse(const char *path, struct as_model_config *cfg);
/* Compute the scaled RoPE inverse frequencies (HF _compute_*_parameters); returns attn factor. */
float as_rope_init(const struct as_model_config *cfg, float *inv_freq);

/* A weight loader reads the [rows, cols] matrix called `name` (the HF weight name, e.g.
 * "model.layers.0.self_attn.q_proj.weight") as f32 into dst. Quantized formats register one that
 * reads their packed tensors (name with ".weight" replaced as they need) and dequantizes. */
typedef int (*as_weight_loader)(const struct as_ckpt *c, const char *name, int64_t rows,
                                int64_t cols, float *dst);
int as_weight_load_dense(const struct as_ckpt *c, const char *name, int64_t rows, int64_t cols,
                         float *dst);
/* Register a loader for quantization_config.quant_method == method (up to 16); it takes
 * precedence over quant_load.h for that method. */
int as_weight_loader_register(const char *method, as_weight_loader fn);
as_weight_loader as_weight_loader_find(const char *method); /* NULL if unknown */

struct as_model *as_model_load(const char *dir);
void as_model_free(struct as_model *m);

/* The in-memory f32 weight of one linear, [rows, cols] = [out, in]; callers may overwrite it. */
float *as_model_linear_weight(struct as_model *m, int layer, enum as_linear which);
void as_model_linear_shape(const struct as_model *m, enum as_linear which, int *rows, int *cols);
const char *as_linear_name(enum as_linear which); /* "q_proj", ..., "down_proj" */
/* HF tensor name of a linear's weight: "model.layers.N.self_attn.q_proj.weight". */
void as_linear_tensor_name(int layer, enum as_linear which, char *buf, int n);
enum as_linear_group as_linear_group_of(enum as_linear which);

/* Write a checkpoint directory with random weights (uniform, scaled by 1/sqrt(fan_in); norms
 * near 1) for tests and benchmarks: config.json from cfg (model_type, sizes, rope, tie) and
 * model.safetensors in dtype (F32, BF16 or F16). Deterministic in seed. */
int as_model_write_random(const struct as_model_config *cfg, int dtype, uint64_t seed,
                          const char *dir);

#endif
