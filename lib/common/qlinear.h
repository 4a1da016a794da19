/* qlinear: a packed ternary / 2-bit linear layer (pack_ternary.h) applied to f32 activations
 * through the int8 kernels (kernel_ternary.h): tokens quantized per token, 4 at a time through
 * as_tern_gemm, bias added. The engine (forward.c) uses it for the layers of an "as-ternary"
 * checkpoint when AS_TERNARY_KERNELS=1; otherwise it multiplies the dequantized f32 weights the
 * model loader made from the same bytes (docs/ternary.md). */
#ifndef AS_QLINEAR_H
#define AS_QLINEAR_H

#include "kernel_lut.h"
#include "kernel_ternary.h"
#include "safetensors.h"

struct as_qlin {
    struct as_tern_matrix W; /* W.data owned */
    enum as_isa isa;
    struct as_lut_matrix *lut; /* SHERRY / TQ1_0 on AVX-512: the table-lookup copy for one token
                                * (as_qlin_use_lut), or NULL */
};

/* The packed layer NAME (a ".weight" name: its NAME_packed sibling) of an as-ternary checkpoint,
 * or NULL when the checkpoint keeps it dense (or on a size mismatch: the loader reports those). */
struct as_qlin *as_qlin_open(const struct as_ckpt *ck, const char *name, int rows, int cols);
void as_qlin_free(struct as_qlin *q);
/* Prepare q->lut when the format and ISA have a LUT path (kernel_lut.h) and AS_TERNARY_LUT is not
 * 0: single tokens (decode) then go through as_lut_gemv, several through as_tern_gemm; same
 * outputs bit for bit. The copy costs 1.35 (SHERRY) / 1.94 (TQ1_0) bits per weight more memory.
 * as_qlin_open calls it. */
void as_qlin_use_lut(struct as_qlin *q);
/* Whether the engine multiplies packed layers with the int8 kernels (1) or uses the dequantized
 * f32 weights (0): AS_TERNARY_KERNELS=1 / =0 when set (read once), else the program's default
 * (as_qlin_set_default; 0 unless set: as-gen sets 1, as-eval keeps 0 so its PPL is the
 * fakequant checkpoint's). */
int as_qlin_enabled(void);
void as_qlin_set_default(int on);
/* out[T, N] = x[T, K] W^T (+ bias[N]). */
void as_qlin_apply(const struct as_qlin *q, const float *x, int T, float *out, const float *bias);
/* The same, the rows split into parts run by `run` (the engine's thread pool: run(fn, arg, max)
 * calls fn(arg, part, n) for part 0..n-1, n <= max, possibly in parallel); NULL runs one part.
 * Every row is computed by the same kernel call sequence whatever the split, so the result does
 * not depend on the number of threads. */
typedef void (*as_qlin_part_fn)(void *arg, int part, int n_parts);
typedef void (*as_qlin_runner)(as_qlin_part_fn fn, void *arg, int max_parts);
void as_qlin_apply_par(const struct as_qlin *q, const float *x, int T, float *out,
                       const float *bias, as_qlin_runner run);

#endif
