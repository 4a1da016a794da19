/* sparse_attn_config: the per-layer / per-head sparse-attention configuration (JSON), with the
 * model fingerprint of the reference doc (model_type, rope_theta, heads, kv_heads, hidden,
 * layers); a file made for another model is refused. Format (docs/sparse-attention.md):
 *   {"schema_version": 1, "model_fingerprint": {...}, "block": 64,
 *    "default": {"method": "xattention", "threshold": 0.9},       every head not named below
 *    "layers": {"3": {"method": "dense"}},                         every head of a layer
 *    "heads": {"5": {"2": {"method": "a_shape", "n_local": 512}}}, one head
 *    "best_pattern": {"5": {"2": ["vertical_and_slash", 1000, 6096, 0.97]}}}  MInference's form
 * Later sections override earlier ones. Parameters not given take the table's defaults. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "atomic_file.h"
#include "sparse_attn.h"

static void defaults(struct as_sparse_head *h, enum as_sparse_method m) {
    h->method = m;
    for (int i = 0; i < AS_SP_MAXP; i++)
        h->p[i] = i < as_sparse_methods[m].n_params ? as_sparse_methods[m].def[i] : 0;
}

static int preferred_block(enum as_sparse_method m) {
    return m == AS_SP_XATTN || m == AS_SP_FLEX || m == AS_SP_STEM ? 128 : 64;
}

static struct as_sparse_config *alloc_cfg(const struct as_model_config *c) {
    struct as_sparse_config *cfg = as_xcalloc(1, sizeof *cfg);
    cfg->n_layers = c->n_layers, cfg->n_heads = c->n_heads, cfg->max_pos = c->max_pos;
    cfg->heads = as_xcalloc((size_t)c->n_layers * c->n_heads, sizeof *cfg->heads);
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", c->model_type);
    cfg->rope_theta = c->rope_theta;
    cfg->fp_heads = c->n_heads, cfg->fp_kv_heads = c->n_kv_heads, cfg->fp_hidden = c->hidden;
    cfg->fp_layers = c->n_layers;
    return cfg;
}

struct as_sparse_config *as_sparse_config_uniform(const struct as_model_config *c,
                                                  enum as_sparse_method method, const double *p,
                                                  int block) {
    struct as_sparse_config *cfg = alloc_cfg(c);
    cfg->block = block > 0 ? block : preferred_block(method);
    for (int i = 0; i < c->n_layers * c->n_heads; i++) {
        defaults(&cfg->heads[i], method);
        if (p) memcpy(cfg->heads[i].p, p, sizeof cfg->heads[i].p);
    }
    return cfg;
}

void as_sparse_config_free(struct as_sparse_config *cfg) {
    if (!cfg) return;
    free(cfg->heads), free(cfg->mask.keep), free(cfg->stats), free(cfg);
}

/* {"method": NAME, PARAM: number...} -> h */
static int parse_method(const char *path, const char *where, json_t *o, struct as_sparse_head *h) {
    const char *name = json_string_value(json_object_get(o, "method"));
    if (!json_is_object(o) || !name)
        return as_fail("%s: %s: expected an object with a \"method\" string", path, where);
    int m = as_sparse_method_find(name);
    if (m < 0) return as_fail("%s: %s: unknown method '%s'", path, where, name);
    defaults(h, m);
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val) {
        if (!strcmp(key, "method")) continue;
        int i = 0;
        while (i < as_sparse_methods[m].n_params && strcmp(key, as_sparse_methods[m].param[i]))
            i++;
        if (i == as_sparse_methods[m].n_params)
            return as_fail("%s: %s: method %s has no parameter '%s'", path, where, name, key);
        if (!json_is_number(val) || !isfinite(json_number_value(val)) || json_number_value(val) < 0)
            return as_fail("%s: %s: %s must be a non-negative number", path, where, key);
        h->p[i] = json_number_value(val);
    }
    return 0;
}

static int index_in(const char *path, const char *what, const char *key, int n) {
    char *end;
    long v = strtol(key, &end, 10);
    if (!*key || *end || v < 0 || v >= n)
        return as_fail("%s: %s '%s' out of range (model has %d)", path, what, key, n);
    return (int)v;
}

static int check_fingerprint(const char *path, json_t *fp, const struct as_model_config *c) {
    if (!json_is_object(fp)) return as_fail("%s: missing model_fingerprint", path);
    const char *mt = json_string_value(json_object_get(fp, "model_type"));
    if (!mt || strcmp(mt, c->model_type))
        return as_fail("%s: model fingerprint mismatch: model_type %s, model is %s", path,
                       mt ? mt : "(none)", c->model_type);
    json_t *rt = json_object_get(fp, "rope_theta");
    if (!json_is_number(rt) ||
        fabs(json_number_value(rt) - c->rope_theta) > 1e-6 * fabs((double)c->rope_theta))
        return as_fail("%s: model fingerprint mismatch: rope_theta %g, model has %g", path,
                       json_is_number(rt) ? json_number_value(rt) : NAN, (double)c->rope_theta);
    static const char *names[] = {"heads", "kv_heads", "hidden", "layers"};
    int want[] = {c->n_heads, c->n_kv_heads, c->hidden, c->n_layers};
    for (int i = 0; i < 4; i++) {
        json_t *v = json_object_get(fp, names[i]);
        if (!json_is_integer(v) || json_integer_value(v) != want[i])
            return as_fail("%s: model fingerprint mismatch: %s %lld, model has %d", path, names[i],
                           json_is_integer(v) ? (long long)json_integer_value(v) : -1LL, want[i]);
    }
    return 0;
}

struct as_sparse_config *as_sparse_config_load(const char *path, const struct as_model_config *c) {
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root) {
        as_fail("%s: %s (line %d)", path, err.text, err.line);
        return NULL;
    }
    struct as_sparse_config *cfg = alloc_cfg(c);
    char where[96];
    const char *key, *k2;
    json_t *val, *v2;
    if (!json_is_object(root)) {
        as_fail("%s: expected a JSON object", path);
        goto fail;
    }
    if (json_integer_value(json_object_get(root, "schema_version")) != 1) {
        as_fail("%s: schema_version must be 1", path);
        goto fail;
    }
    if (check_fingerprint(path, json_object_get(root, "model_fingerprint"), c)) goto fail;
    json_t *blk = json_object_get(root, "block");
    cfg->block = blk ? (int)json_integer_value(blk) : 64;
    if (!json_is_integer(blk) && blk) cfg->block = -1;
    if (cfg->block < 8 || cfg->block > 256) {
        as_fail("%s: block must be an integer in 8..256", path);
        goto fail;
    }
    struct as_sparse_head d;
    defaults(&d, AS_SP_DENSE);
    json_t *def = json_object_get(root, "default");
    if (def && parse_method(path, "default", def, &d)) goto fail;
    for (int i = 0; i < c->n_layers * c->n_heads; i++)
        cfg->heads[i] = d;
    json_object_foreach(json_object_get(root, "layers"), key, val) {
        int l = index_in(path, "layer", key, c->n_layers);
        snprintf(where, sizeof where, "layer %s", key);
        if (l < 0 || parse_method(path, where, val, &d)) goto fail;
        for (int h = 0; h < c->n_heads; h++)
            cfg->heads[(size_t)l * c->n_heads + h] = d;
    }
    json_object_foreach(json_object_get(root, "heads"), key, val) {
        int l = index_in(path, "layer", key, c->n_layers);
        if (l < 0) goto fail;
        json_object_foreach(val, k2, v2) {
            int h = index_in(path, "head", k2, c->n_heads);
            snprintf(where, sizeof where, "layer %s head %s", key, k2);
            if (h < 0 || parse_method(path, where, v2, &cfg->heads[(size_t)l * c->n_heads + h]))
                goto fail;
        }
    }
    json_object_foreach(json_object_get(root, "best_pattern"), key, val) {
        int l = index_in(path, "layer", key, c->n_layers);
        if (l < 0) goto fail;
        json_object_foreach(val, k2, v2) {
            int h = index_in(path, "head", k2, c->n_heads);
            if (h < 0) goto fail;
            const char *type = json_string_value(json_array_get(v2, 0));
            double a = json_number_value(json_array_get(v2, 1));
            double b = json_number_value(json_array_get(v2, 2));
            struct as_sparse_head *hd = &cfg->heads[(size_t)l * c->n_heads + h];
            if (!type || !json_is_number(json_array_get(v2, 1)) ||
                !json_is_number(json_array_get(v2, 2)) || a < 0 || b < 0) {
                as_fail("%s: best_pattern layer %s head %s: expected [type, v, s, score]", path,
                        key, k2);
                goto fail;
            }
            if (!strcmp(type, "vertical_and_slash")) {
                defaults(hd, AS_SP_VS);
                hd->p[0] = a, hd->p[1] = b;
            } else if (!strcmp(type, "stream_llm")) { /* MInference: (n_init, n_local) */
                defaults(hd, AS_SP_ASHAPE);
                hd->p[0] = a, hd->p[1] = b;
            } else if (!strcmp(type, "block_sparse")) {
                defaults(hd, AS_SP_BLOCKTOP);
                hd->p[0] = a;
            } else {
                as_fail("%s: best_pattern layer %s head %s: unknown type '%s'", path, key, k2,
                        type);
                goto fail;
            }
        }
    }
    json_decref(root);
    return cfg;
fail:
    json_decref(root);
    as_sparse_config_free(cfg);
    return NULL;
}

static json_t *method_json(const struct as_sparse_head *h) {
    const struct as_sparse_method_info *mi = &as_sparse_methods[h->method];
    json_t *o = json_pack("{s:s}", "method", mi->name);
    for (int i = 0; i < mi->n_params; i++)
        json_object_set_new(o, mi->param[i], json_real(h->p[i]));
    return o;
}

int as_sparse_config_save(const struct as_sparse_config *cfg, const char *path) {
    json_t *root =
        json_pack("{s:i,s:{s:s,s:f,s:i,s:i,s:i,s:i},s:i}", "schema_version", 1, "model_fingerprint",
                  "model_type", cfg->model_type, "rope_theta", cfg->rope_theta, "heads",
                  cfg->fp_heads, "kv_heads", cfg->fp_kv_heads, "hidden", cfg->fp_hidden, "layers",
                  cfg->fp_layers, "block", cfg->block);
    json_t *heads = json_object();
    for (int l = 0; l < cfg->n_layers; l++) {
        json_t *lo = json_object();
        char k[16];
        for (int h = 0; h < cfg->n_heads; h++) {
            snprintf(k, sizeof k, "%d", h);
            json_object_set_new(lo, k, method_json(&cfg->heads[(size_t)l * cfg->n_heads + h]));
        }
        snprintf(k, sizeof k, "%d", l);
        json_object_set_new(heads, k, lo);
    }
    json_object_set_new(root, "heads", heads);
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_REAL_PRECISION(10));
    json_decref(root);
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps leaves room for the NUL, which becomes a newline */
    int rc = as_atomic_write_file(path, text, n + 1);
    free(text);
    return rc;
}

int as_sparse_config_check(const struct as_sparse_config *cfg, int L) {
    if (cfg->max_pos > 0 && L > cfg->max_pos)
        return as_fail("sparse attention: sequence of %d tokens exceeds the model's context (%d)",
                       L, cfg->max_pos);
    int nb = (L + cfg->block - 1) / cfg->block;
    for (int l = 0; l < cfg->n_layers; l++)
        for (int h = 0; h < cfg->n_heads; h++) {
            const struct as_sparse_head *hc = &cfg->heads[(size_t)l * cfg->n_heads + h];
            const char *name = as_sparse_methods[hc->method].name;
            double budget = 0, limit = L;
            const char *what = "";
            if (hc->method == AS_SP_VS) {
                budget = hc->p[0] > hc->p[1] ? hc->p[0] : hc->p[1];
                what = hc->p[0] > hc->p[1] ? "vertical" : "slash";
            } else if (hc->method == AS_SP_FLEX) {
                budget = hc->p[2], what = "min_budget";
            } else if (hc->method == AS_SP_BLOCKTOP) {
                budget = hc->p[0], limit = nb, what = "top_k (blocks)";
            }
            if (budget > limit)
                return as_fail("sparse attention: layer %d head %d: %s %s %g larger than the "
                               "sequence (%g)",
                               l, h, name, what, budget, limit);
            if ((hc->method == AS_SP_XATTN || hc->method == AS_SP_STEM) &&
                (hc->p[0] < 1 || cfg->block % (int)hc->p[0]))
                return as_fail("sparse attention: layer %d head %d: %s stride %g does not divide "
                               "block %d",
                               l, h, name, hc->p[0], cfg->block);
        }
    return 0;
}

struct as_sparse_config *as_sparse_config_from_spec(const char *spec,
                                                    const struct as_model_config *c) {
    if (strchr(spec, '/') || strstr(spec, ".json")) return as_sparse_config_load(spec, c);
    char name[64];
    size_t n = strcspn(spec, ":");
    snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1), spec);
    int m = as_sparse_method_find(name);
    if (m < 0) {
        as_fail("--sparse-attn '%s': neither a JSON file nor a method (dense, a_shape, tri_shape, "
                "dilated, strided, vertical_and_slash, block_sparse, xattention, flexprefill, "
                "stem)",
                spec);
        return NULL;
    }
    struct as_sparse_head h;
    defaults(&h, m);
    int block = 0;
    const char *p = spec + n;
    while (*p == ':' || *p == ',') {
        p++;
        char key[32];
        double val;
        int used = 0;
        if (sscanf(p, "%31[a-z_]=%lf%n", key, &val, &used) != 2 || val < 0) {
            as_fail("--sparse-attn '%s': expected METHOD[:PARAM=VALUE,...]", spec);
            return NULL;
        }
        int i = 0;
        while (i < as_sparse_methods[m].n_params && strcmp(key, as_sparse_methods[m].param[i]))
            i++;
        if (!strcmp(key, "block"))
            block = (int)val;
        else if (i == as_sparse_methods[m].n_params) {
            as_fail("--sparse-attn '%s': method %s has no parameter '%s'", spec, name, key);
            return NULL;
        } else
            h.p[i] = val;
        p += used;
    }
    if (*p) {
        as_fail("--sparse-attn '%s': expected METHOD[:PARAM=VALUE,...]", spec);
        return NULL;
    }
    if (block && (block < 8 || block > 256)) {
        as_fail("--sparse-attn '%s': block must be in 8..256", spec);
        return NULL;
    }
    return as_sparse_config_uniform(c, m, h.p, block);
}

void as_sparse_attach(struct as_sparse_engine *e, struct as_run_state *s) {
    s->attn_mask = as_sparse_engine_mask;
    s->attn_mask_ctx = e;
}

double as_sparse_mean_density(const struct as_sparse_config *cfg) {
    if (!cfg->stats) return 1.0;
    double d = 0;
    for (int i = 0; i < cfg->n_layers * cfg->n_heads; i++)
        d += cfg->stats[i].density;
    return d / (cfg->n_layers * cfg->n_heads);
}
