/* quant_ternary: round-to-nearest ternary and 2-bit quantizers, so that there are codes to pack
 * (pack_ternary.h) before quantization-aware training (as-qat) produces better ones. Each fills
 * a struct as_qlinear in the scale granularity its target format stores:
 *   TQ1_0, TQ2_0  absmean ternary per 256-block (BitNet b1.58: alpha = mean |w|, code =
 *                 round(clamp(w / alpha, -1, 1)) + 1), alpha rounded to f16; group_size 256
 *   I2_S          absmean ternary with one alpha for the whole tensor; per channel, equal scales
 *   SEQ2          ParetoQ SEQ 2-bit per channel: alpha = max |w_row|, code =
 *                 round(clamp(w / alpha, -0.99, 0.99) * 2 - 0.5) + 2, value (code - 1.5) alpha/2
 *                 (scale = alpha / 2, minv = -1.5 scale: W_hat = scale * q + minv)
 *   SHERRY        3:4 sparse ternary per channel: in each contiguous quad the smallest |w| is
 *                 zeroed, the others keep their sign; alpha = mean |w| of the kept weights (the
 *                 Sparse-Absmean of the Sherry paper)
 * Ternary layers have zero 1 (value = scale * (code - 1)), bits 2, sym 0. A row of zeros gets
 * scale 1 (all codes zero; a zero scale is refused by the packer). */
#ifndef AS_QUANT_TERNARY_H
#define AS_QUANT_TERNARY_H

#include <jansson.h>

#include "pack_formats.h"
#include "pack_ternary.h"

/* Quantize W [N,K] (f32) for format f into l (arrays allocated here; free with
 * as_tern_qlinear_free). -1 with as_fail if K does not fit the format's scale blocks. */
int as_tern_rtn(enum as_tern_fmt f, const float *W, int N, int K, struct as_qlinear *l);
void as_tern_qlinear_free(struct as_qlinear *l);

/* Can layer l be stored as format f? 1, or 0 with the reason in why (shape not whole blocks,
 * scale granularity the format cannot hold, a float minimum other than SEQ2's -1.5 scale, zero
 * points other than the format's); the caller keeps such a layer dense and reports it. Codes out of
 * range, a violated 3:4 mask and zero / NaN scales are not reasons to fall back:
 * as_tern_from_qlinear (via as_tern_pack) refuses them as errors. */
int as_tern_packable(enum as_tern_fmt f, const struct as_qlinear *l, char *why, size_t why_len);
/* Codes [N*K] and scales (as_tern_scale_count) of a packable layer, checked and packed into out
 * (as_tern_packed_bytes). -1 with as_fail("tensor NAME: ...") on bad codes or scales. */
int as_tern_pack_qlinear(enum as_tern_fmt f, const char *name, const struct as_qlinear *l,
                         uint8_t *out);

/* as-pack -f FMT: adds PREFIX.weight_packed (U8 [as_tern_packed_bytes], the layout of
 * pack_ternary.h: rows, then the format's scales) and PREFIX.weight_shape (I32 [N, K]), after
 * reading the packed bytes back and checking every code and scale against l. -1 on error. */
struct as_st_writer;
int as_tern_write(struct as_st_writer *w, const char *prefix, enum as_tern_fmt f,
                  const struct as_qlinear *l);
/* {"quant_method": "as-ternary", "format": NAME, "bits_per_weight": B, "not_packed": [...]}:
 * the layers kept dense (fallbacks). New reference. */
json_t *as_tern_quant_config(enum as_tern_fmt f, const char *const *skip, int n_skip);

/* Register the model loader for quant_method "as-ternary" (as-pack -f tq1_0 ... sherry): a layer
 * with PREFIX.weight_packed is dequantized from its packed bytes (the values the kernels use,
 * scale * (code - 1) or (code - 1.5) * scale), any other the dense PREFIX.weight. Idempotent. */
void as_register_ternary_loader(void);

#endif
