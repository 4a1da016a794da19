/* model_save: an in-memory model written as a Hugging Face checkpoint directory.
 *
 * as_config_to_json is the inverse of as_config_parse (model.h): every field the engine reads
 * (sizes, heads, RoPE theta and scaling, eps, tied embeddings, biases, bos/eos), so a config
 * written and parsed again is the same config. as_model_save_hf writes config.json and
 * model.safetensors (HF tensor names, F32 / BF16 / F16) into an existing directory; callers make
 * that directory atomic (atomic_file.h as_atomic_dir_begin/commit). */
#ifndef AS_MODEL_SAVE_H
#define AS_MODEL_SAVE_H

#include "dtype.h"
#include "model.h"

struct json_t;
/* config.json object (new reference); torch_dtype from dt. */
struct json_t *as_config_to_json(const struct as_model_config *c, enum as_dtype dt);
/* Write `obj` to DIR/NAME as indented JSON; -1 with as_fail naming the file on error. */
int as_json_write_file(const struct json_t *obj, const char *dir, const char *name);
/* config.json, generation_config.json and model.safetensors of m into dir (dt: F32, BF16, F16;
 * other types are refused). Returns 0, or -1 with as_fail; a failed call may leave files in dir. */
int as_model_save_hf(const struct as_model *m, const char *dir, enum as_dtype dt);

#endif
