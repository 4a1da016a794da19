#include "model_loaders.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "as_error.h"
#include "model.h"
#include "pack_fp.h"
#include "quant_load.h"
#include "quant_ternary.h"
#include "safetensors.h"

/* The loader signature carries no config, so the quantization_config of the checkpoint's
 * config.json is read once per checkpoint directory and cached. */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static char cached_dir[4096];
static json_t *cached_qc;

static json_t *quant_config_for(const struct as_ckpt *c) {
    pthread_mutex_lock(&cache_lock);
    if (!cached_qc || strcmp(cached_dir, c->dir)) {
        json_decref(cached_qc);
        cached_qc = NULL;
        char path[4200];
        snprintf(path, sizeof path, "%s/config.json", c->dir);
        json_error_t err;
        json_t *cfg = json_load_file(path, 0, &err);
        if (cfg) {
            cached_qc = json_incref(json_object_get(cfg, "quantization_config"));
            json_decref(cfg);
        }
        snprintf(cached_dir, sizeof cached_dir, "%s", c->dir);
    }
    json_t *qc = cached_qc;
    pthread_mutex_unlock(&cache_lock);
    return qc;
}

static int load_quantized_or_dense(const struct as_ckpt *c, const char *name, int64_t rows,
                                   int64_t cols, float *dst) {
    char prefix[1024];
    size_t n = strlen(name);
    const char *suffix = ".weight";
    if (n > strlen(suffix) && !strcmp(name + n - strlen(suffix), suffix) && n < sizeof prefix) {
        memcpy(prefix, name, n - strlen(suffix));
        prefix[n - strlen(suffix)] = 0;
        int rc = as_quant_load_linear(c, quant_config_for(c), prefix, rows, cols, dst);
        if (rc != 0) return rc < 0 ? -1 : 0;
    }
    return as_weight_load_dense(c, name, rows, cols, dst);
}

void as_register_model_loaders(void) {
    static int done;
    if (done) return;
    done = 1;
    as_weight_loader_register("gptq", load_quantized_or_dense);
    as_weight_loader_register("compressed-tensors", load_quantized_or_dense);
    as_weight_loader_register("awq", load_quantized_or_dense);
    as_register_fp_loaders(); /* FP8/INT8/FP4 (pack_fp.h); wraps the compressed-tensors loader */
    as_register_ternary_loader(); /* as-pack -f tq1_0 ... sherry (quant_ternary.h) */
}
