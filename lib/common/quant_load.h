/* quant_load: dequantizing loaders for packed integer checkpoints, so the engine can evaluate
 * GPTQ v1 and compressed-tensors pack-quantized models (docs/formats.md).
 *
 * The engine's weight loader calls as_quant_load_linear() for every linear layer before it looks
 * for PREFIX.weight. The function reads the config's quant_method and the layer's tensors and
 * writes W_hat = scale * (q - zero) as f32 [N, K] row-major, exactly as vLLM/transformers would
 * dequantize the file (GPTQ v1: stored zero + 1 with no wrap-around; compressed-tensors: offset
 * binary). Shapes and dtypes are checked strictly; errors name file, tensor and problem. */
#ifndef AS_QUANT_LOAD_H
#define AS_QUANT_LOAD_H

#include <jansson.h>
#include <stdint.h>

struct as_ckpt;

/* quant_config: the "quantization_config" object of config.json (a whole config.json holding one
 * is accepted too), or NULL for an unquantized model. prefix: module name without ".weight",
 * e.g. "model.layers.3.self_attn.q_proj". dst: N*K floats.
 * Returns 1 when the layer was loaded from quantized tensors; 0 when it is not quantized here
 * (no quant_config, a quant_method/format this module does not read, a module listed in
 * "ignore" / GPTQ "dynamic" exclusions, or a fallback layer stored as PREFIX.weight): the caller
 * then loads PREFIX.weight itself; -1 on error (as_fail). */
int as_quant_load_linear(const struct as_ckpt *c, const json_t *quant_config, const char *prefix,
                         int64_t N, int64_t K, float *dst);

#endif
