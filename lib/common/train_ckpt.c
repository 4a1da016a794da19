/* train_ckpt: parameters + AdamW state in one safetensors file (see train_ckpt.h). */
#include "train_ckpt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "safetensors.h"

int as_train_ckpt_save(const char *path, const struct as_params *ps, const struct as_adamw *o,
                       const char *const *keys, const char *const *vals, int n) {
    struct as_st_writer *w = as_st_writer_new(path);
    if (!w) return -1;
    char name[200];
    for (int i = 0; i < ps->n; i++) {
        const struct as_param *p = &ps->p[i];
        int64_t shape[2] = {p->rows, p->cols};
        uint64_t nb = p->n * sizeof(float);
        int bad = as_st_writer_add(w, p->name, AS_F32, 2, shape, p->w, nb);
        if (o && !bad) {
            snprintf(name, sizeof name, "%s@adam_m", p->name);
            bad = as_st_writer_add(w, name, AS_F32, 2, shape, o->m[i], nb);
            snprintf(name, sizeof name, "%s@adam_v", p->name);
            if (!bad) bad = as_st_writer_add(w, name, AS_F32, 2, shape, o->v[i], nb);
        }
        if (bad) {
            as_st_writer_abort(w);
            return -1;
        }
    }
    char step[32];
    snprintf(step, sizeof step, "%" PRId64, o ? o->step : 0);
    int bad = as_st_writer_set_metadata(w, "adam_step", step);
    for (int i = 0; i < n && !bad; i++)
        bad = as_st_writer_set_metadata(w, keys[i], vals[i]);
    if (bad) {
        as_st_writer_abort(w);
        return -1;
    }
    return as_st_writer_finish(w);
}

static int restore(const struct as_st_file *f, const char *name, float *dst, size_t n) {
    const struct as_st_tensor *t = as_st_find(f, name);
    if (!t) return as_fail("%s: tensor %s: not found", f->path, name);
    if (t->dtype != AS_F32 || t->numel != n)
        return as_fail("%s: tensor %s: %" PRIu64 " values, expected %zu F32", f->path, name,
                       t->numel, n);
    memcpy(dst, t->data, n * sizeof(float));
    return 0;
}

json_t *as_train_ckpt_load(const char *path, struct as_params *ps, struct as_adamw *o) {
    struct as_st_file *f = as_st_open(path);
    if (!f) return NULL;
    json_t *meta = f->metadata_json ? json_loads(f->metadata_json, 0, NULL) : NULL;
    if (!json_is_object(meta) || !json_is_string(json_object_get(meta, "adam_step"))) {
        as_fail("%s: not a training checkpoint (no adam_step in the metadata)", path);
        goto fail;
    }
    char name[200];
    for (int i = 0; i < ps->n; i++) {
        struct as_param *p = &ps->p[i];
        if (restore(f, p->name, p->w, p->n)) goto fail;
        if (!o) continue;
        snprintf(name, sizeof name, "%s@adam_m", p->name);
        if (restore(f, name, o->m[i], p->n)) goto fail;
        snprintf(name, sizeof name, "%s@adam_v", p->name);
        if (restore(f, name, o->v[i], p->n)) goto fail;
    }
    if (o) o->step = strtoll(json_string_value(json_object_get(meta, "adam_step")), NULL, 10);
    as_st_close(f);
    return meta;
fail:
    json_decref(meta);
    as_st_close(f);
    return NULL;
}
