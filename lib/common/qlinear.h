/* qlinear: a packed ternary / 2-bit linear layer (pack_ternary.h) applied to f32 activations
 * through the int8 kernels (kernel_ternary.h): tokens quantized per token, 4 at a time through
 * as_tern_gemm, bias added. The engine (forward.c) uses it for the layers of an "as-ternary"
 * checkpoint when AS_TERNARY_KERNELS=1; otherwise it multiplies the dequantized f32 weights the
 * model loader made from the same bytes (docs/ternary.md). */
#ifndef AS_QLINEAR_H
#define AS_QLINEAR_H

#include "kernel_ternary.h"
#include "safetensors.h"

struct as_qlin {
    struct as_tern_matrix W; /* W.data owned */
    enum as_isa isa;
};

/* The packed layer NAME (a ".weight" name: its NAME_packed sibling) of an as-ternary checkpoint,
 * or NULL when the checkpoint keeps it dense (or on a size mismatch: the loader reports those). */
struct as_qlin *as_qlin_open(const struct as_ckpt *ck, const char *name, int rows, int cols);
void as_qlin_free(struct as_qlin *q);
/* 1 when AS_TERNARY_KERNELS=1 (read once). */
int as_qlin_enabled(void);
/* out[T, N] = x[T, K] W^T (+ bias[N]). */
void as_qlin_apply(const struct as_qlin *q, const float *x, int T, float *out, const float *bias);

#endif
