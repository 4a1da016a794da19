/* fpquant: FP8 / INT8 / NVFP4 / MXFP4 / W4A8 weight encoders and activation fake-quantization.
 *
 * Weights (REFERENCE.md "Numerics", "FP8 and LeptoQuant"): a linear W [N out, K in] becomes codes
 * plus scales, with the encoding rule of compressed-tensors: code = ENC(clamp(w / s, -max, max))
 * (a true f32 division, ties to even) and W_hat = DEC(code) * s.
 *   fp8 tensor   s = max(absmax(W) / 448, eps), one scale            (F8_E4M3 codes)
 *   fp8 channel  s[n] = max(absmax(W[n,:]) / 448, eps)
 *   fp8 block    s[i,j] over the 128x128 block (ragged edge blocks allowed)
 *   int8 channel s[n] = max(absmax(W[n,:]) / 127, eps), q = clamp(rint(w / s), -128, 127)
 *   nvfp4        global g = 448*6 / amax(W) (shared across fused q/k/v, gate/up when given);
 *                block of 16: bs = E4M3(g * amax16 / 6), s = DEC(bs) / g, FP4 E2M1 codes
 *   mxfp4        block of 32: s = 2^(floor(log2 amax32) - 2) stored as E8M0, FP4 E2M1 codes
 *   int4 group   GPTQ's symmetric rule: s = 2*absmax/15, zero 8, q = clamp(rint(w/s)+8, 0, 15)
 * eps = 2^-23 (float32 eps, compressed-tensors' scale clamp); an all-zero block has codes 0.
 *
 * Activations: as_act_fake_quant() applies the deployment's input quantization to X [T, dim]
 * (static per-tensor FP8/INT8, dynamic per-token FP8/INT8, NVFP4, MXFP4), and struct
 * as_act_quant holds one such quantizer per decoder layer and group of linears sharing an input;
 * as_act_quant_attach() plugs it into a run state's forward passes (forward.h). */
#ifndef AS_FPQUANT_H
#define AS_FPQUANT_H

#include <stddef.h>
#include <stdint.h>

#include "forward.h"

#define AS_FP8_MAX 448.0f
#define AS_FP4_MAX 6.0f
#define AS_SCALE_EPS 0x1p-23f

/* ---- scalar and array codecs (bit-identical to dtype.h's reference codecs) ---- */
uint8_t as_fp8_enc(float x); /* E4M3FN, saturating to +-448, RNE; NaN -> 0x7F */
float as_fp8_dec(uint8_t c); /* table lookup */
uint8_t as_fp4_enc(float x); /* E2M1 code, RNE, saturating to +-6 */
float as_fp4_dec(uint8_t c); /* c in 0..15 */
float as_absmax(const float *x, size_t n);
float as_absmax_bf16(const uint16_t *x, size_t n);
/* codes[i] = E4M3(clamp(x[i] / scale)); the bf16 variant reads bf16 weights directly. */
void as_fp8_encode(const float *x, size_t n, float scale, uint8_t *codes);
void as_fp8_encode_bf16(const uint16_t *x, size_t n, float scale, uint8_t *codes);
/* Scalar reference kernels (dtype.c's codec per element): what the fast kernels must equal. */
void as_fp8_encode_ref(const float *x, size_t n, float scale, uint8_t *codes);
void as_fp8_encode_bf16_ref(const uint16_t *x, size_t n, float scale, uint8_t *codes);
/* Kernel level in use: 2 = AVX2 (x86-64 CPUs that have it), 1 = portable 4-lane vector code.
 * as_fpq_set_simd_level() forces a lower level (tests, bench; -1 restores the CPU's best) and
 * returns the level now in use. Not thread-safe: call before starting threads. */
int as_fpq_simd_level(void);
int as_fpq_set_simd_level(int level);
/* y = DEC(ENC(x / scale)) * scale; y may alias x. */
void as_fp8_qdq(const float *x, size_t n, float scale, float *y);
/* Scale for an absmax: max(amax / qmax, eps). */
float as_scale_for(float amax, float qmax);
/* OCP MX shared scale of a block with this absmax, as its E8M0 byte. */
uint8_t as_mx_scale_e8m0(float amax);

/* ---- weight schemes ---- */
enum as_wq_kind {
    AS_WQ_FP8_TENSOR,
    AS_WQ_FP8_CHANNEL,
    AS_WQ_FP8_BLOCK,
    AS_WQ_INT8_CHANNEL,
    AS_WQ_NVFP4,
    AS_WQ_MXFP4,
    AS_WQ_INT4_GROUP,
    AS_WQ_COUNT
};
extern const char *const as_wq_names[AS_WQ_COUNT]; /* "fp8-tensor", ... */
int as_wq_from_name(const char *name);             /* -1 if unknown */

struct as_fpq_weight {
    enum as_wq_kind kind;
    int N, K;
    int block_n, block_k; /* FP8 block: 128 x 128; groups (nvfp4 16, mxfp4 32, int4 g): 1 x g */
    int sn, sk;           /* scale grid: [sn, sk] (tensor 1x1, channel Nx1, block ceil x ceil) */
    uint8_t *codes;       /* fp8: E4M3 [N,K]; int8: two's complement [N,K]; fp4: [N, K/2]
                             (element 2i in the low nibble); int4: codes 0..15 [N,K] */
    size_t codes_bytes;
    float *scale;       /* f32 [sn*sk] (fp8, int8, int4) */
    uint8_t *scale8;    /* nvfp4: E4M3 [sn*sk]; mxfp4: E8M0 [sn*sk] */
    float global_scale; /* nvfp4 weight_global_scale */
};

/* Quantize W [N,K] (finite values, checked: -1 with as_fail naming `name`). block: FP8 block
 * edge (<= 0: 128), int4 group size (<= 0: 128); ignored otherwise. nvfp4_global: the shared
 * global scale of a fused group (<= 0: computed from this W). */
int as_fpq_quantize(const float *w, int N, int K, enum as_wq_kind kind, int block,
                    float nvfp4_global, const char *name, struct as_fpq_weight *q);
/* W_hat [N,K] = DEC(code) * scale, the same f32 expression every reader uses. */
void as_fpq_dequant(const struct as_fpq_weight *q, float *w_hat);
void as_fpq_free(struct as_fpq_weight *q);
/* NVFP4 rows of W [N,K] (K even) under global scale g: codes [N, K/2] (even column in the low
 * nibble), E4M3 block scales [N, ceil(K/16)]. The kernel of as_fpq_quantize, for streaming use. */
void as_nvfp4_encode(const float *w, int N, int K, float global_scale, uint8_t *codes,
                     uint8_t *scale8);
/* The same from bf16 weights: byte for byte what as_nvfp4_encode gives on the weights widened to
 * f32 (any K; the AVX2 kernel, K % 16 == 0, compares bf16 bits with per-block thresholds). */
void as_nvfp4_encode_bf16(const uint16_t *w, int N, int K, float global_scale, uint8_t *codes,
                          uint8_t *scale8);
/* Global NVFP4 scale 448*6/amax (1 when amax == 0). */
float as_nvfp4_global_scale(float amax);

/* ---- activations ---- */
enum as_aq_kind {
    AS_AQ_NONE,
    AS_AQ_FP8_STATIC,     /* per-tensor, scale = input_scale */
    AS_AQ_FP8_TOKEN,      /* dynamic per token: s = max(absmax(row)/448, eps) */
    AS_AQ_FP8_TENSOR_DYN, /* dynamic per tensor (the whole [T, dim] call) */
    AS_AQ_FP8_GROUP128,   /* dynamic per token and 128 columns (DeepSeek block FP8) */
    AS_AQ_INT8_STATIC,    /* per-tensor, scale = input_scale, rint, clamp -128..127 */
    AS_AQ_INT8_TOKEN,     /* dynamic per token: s = absmax(row)/127 */
    AS_AQ_NVFP4,          /* scale = input_global_scale; dynamic E4M3 block scales of 16 */
    AS_AQ_MXFP4,          /* dynamic E8M0 block scales of 32 */
    AS_AQ_COUNT
};
extern const char *const as_aq_names[AS_AQ_COUNT]; /* "none", "fp8-static", ... */
int as_aq_from_name(const char *name);

/* y[T, dim] = fake-quantized x (y may alias x). `scale` is the static scale (FP8/INT8 static) or
 * the NVFP4 input global scale; ignored by the dynamic kinds. */
void as_act_fake_quant(enum as_aq_kind kind, float scale, const float *x, float *y, int T, int dim);

/* One quantizer per (layer, group of linears sharing an input). Linears of one group with
 * different static scales share their maximum, as vLLM does for its fused qkv/gate_up layers. */
struct as_act_quant {
    int n_layers;
    enum as_aq_kind *kind; /* [n_layers * AS_GROUP_COUNT] */
    float *scale;          /* [n_layers * AS_GROUP_COUNT] */
    float *buf;            /* scratch for the quantized copy */
    size_t cap;
};
struct as_act_quant *as_act_quant_new(int n_layers);
void as_act_quant_free(struct as_act_quant *aq);
/* Set every group to `kind` (scale 0 for dynamic kinds). */
void as_act_quant_set_all(struct as_act_quant *aq, enum as_aq_kind kind);
/* 1 if any group quantizes. */
int as_act_quant_active(const struct as_act_quant *aq);
/* The forward.h callback: returns x unchanged for unquantized groups, else a quantized copy. */
const float *as_act_quant_apply(void *aq, int layer, enum as_linear_group g, const float *x, int T,
                                int dim);
/* Make s's forward passes quantize linear inputs with aq (forward.h quant_linear_input); aq NULL
 * or inactive detaches (the pass is then bit-identical to an unquantized one). Returns 1 if
 * attached. */
int as_act_quant_attach(struct as_act_quant *aq, struct as_run_state *s);

/* ---- FP8 KV cache (static per-tensor scales, compressed-tensors kv_cache_scheme) ----
 * Per attention layer k_scale = max(absmax(K) / 448, eps) and v_scale likewise, over the keys
 * after RoPE (as the cache stores them) and the values of the calibration tokens. A deployment
 * stores E4M3(k / k_scale) in the cache; the simulation writes DEC(ENC(k / k_scale)) * k_scale. */
struct as_kv_quant {
    int n_layers;
    float *k_scale, *v_scale; /* [n_layers] */
};
struct as_kv_quant *as_kv_quant_new(int n_layers);
void as_kv_quant_free(struct as_kv_quant *kq);
/* 0 if `s` is a usable KV scale, else -1 with as_fail("WHAT: scale %g is not ...") where WHAT
 * names the file and tensor (or stream record). */
int as_kv_scale_check(float s, const char *what);
/* The forward.h on_kv callback: FP8 quantize-dequantize of the new cache rows in place. */
void as_kv_quant_apply(void *kq, int layer, float *k, float *v, int T, int kv_dim);
/* Make s's forward passes store FP8 keys/values (kq NULL detaches). Returns 1 if attached. */
int as_kv_quant_attach(struct as_kv_quant *kq, struct as_run_state *s);

#endif
