/* train_ckpt: a training checkpoint of any parameter set (train_optim.h) as one safetensors
 * file, written atomically (temporary, fsync, rename): each parameter's value as NAME, AdamW's
 * moments as NAME@adam_m and NAME@adam_v, the optimizer's step and the caller's key/value
 * strings (schedule position, data position, RNG state, configuration) in the metadata. Loading
 * restores values and moments bit for bit, so a resumed run continues exactly. */
#ifndef AS_TRAIN_CKPT_H
#define AS_TRAIN_CKPT_H

#include <jansson.h>

#include "train_optim.h"

/* keys/vals: n metadata strings (may be 0). Returns 0, or -1 with as_fail (PATH untouched). */
int as_train_ckpt_save(const char *path, const struct as_params *ps, const struct as_adamw *o,
                       const char *const *keys, const char *const *vals, int n);
/* Restore every parameter of ps and the moments and step of o (may be NULL) from PATH; every
 * name must be present with the same size. Returns the metadata object (new reference: the
 * caller's keys plus "adam_step"), or NULL with as_fail naming the file and tensor. */
json_t *as_train_ckpt_load(const char *path, struct as_params *ps, struct as_adamw *o);

#endif
