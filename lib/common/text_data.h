/* text_data: reading text for evaluation and calibration.
 *
 * as_text_read loads a file (or the first max_bytes of it), as llama.cpp's perplexity reads its
 * input. as_calib_sample draws calibration windows deterministically: every regular file of a
 * directory (sorted by name) or the single file is tokenized on its own, the token arrays are
 * concatenated, and `samples` start positions are drawn uniformly with a splitmix64 generator
 * seeded by `seed` (the GPTQ reference draws random slices the same way). With add_bos each
 * window is BOS followed by seqlen-1 text tokens, so position 0 behaves as at inference. */
#ifndef AS_TEXT_DATA_H
#define AS_TEXT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Reads up to max_bytes (0 = all) of a file into a malloc'ed NUL-terminated buffer. */
int as_text_read(const char *path, size_t max_bytes, char **buf_out, size_t *len_out);

/* tokens_out: malloc'ed [samples * seqlen]. Errors: unreadable path, empty text, fewer tokens
 * than one window. */
int as_calib_sample(const struct as_tokenizer *tok, const char *path, int samples, int seqlen,
                    uint64_t seed, int add_bos, int32_t **tokens_out);

#endif
