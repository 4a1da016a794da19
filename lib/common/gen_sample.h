/* gen_sample: how the generators pick the next token (as-gen, its batched mode, speculative
 * decoding): argmax, or a draw from softmax(logits / temp) by inverse CDF with xorshift64*
 * uniforms. One definition, so every path that generates "as as-gen does" draws the same tokens
 * from the same seed. */
#ifndef AS_GEN_SAMPLE_H
#define AS_GEN_SAMPLE_H

#include <stdint.h>

/* xorshift64* (llama2.c's random_u32), uniform in [0, 1); *state must not be 0 */
float as_sample_uniform(uint64_t *state);
int as_sample_argmax(const float *x, int n);
/* e[i] = exp((logits[i] - max) / temp), unnormalised; returns their sum (e may alias logits) */
float as_sample_exps(const float *logits, int n, float temp, float *e);
/* a draw from e / sum (e as as_sample_exps leaves it, possibly with entries zeroed) */
int as_sample_from(const float *e, int n, float sum, uint64_t *state);
/* argmax at temp <= 0, else a draw at temp; e: n floats of scratch (may alias logits) */
int as_sample_token(const float *logits, int n, float temp, float *e, uint64_t *state);

#endif
