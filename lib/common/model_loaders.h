/* model_loaders: plugs the packed-checkpoint readers (quant_load.h) into the engine's weight
 * loading (model.h as_weight_loader), one registration per quant_method, so every tool that
 * loads a model (as-eval, as-gen, as-calib) reads every format the toolkit writes. */
#ifndef AS_MODEL_LOADERS_H
#define AS_MODEL_LOADERS_H

/* Register loaders for "gptq" and "compressed-tensors". Idempotent. */
void as_register_model_loaders(void);

#endif
