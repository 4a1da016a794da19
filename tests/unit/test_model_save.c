/* test_model_save: model_save.c against round trips that need no reference values.
 *  - for llama, qwen2 (biases), qwen3 (q/k norms), untied and tied, rope scaling: a random
 *    checkpoint loaded and saved again holds the same tensors, byte for byte, in the same dtype
 *    (F32, BF16, F16: the loader's widening and the saver's narrowing must be exact inverses on
 *    values that came from that dtype), and its config parses back to the same config;
 *  - a dtype that cannot hold a dense checkpoint is refused with a message naming it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "model.h"
#include "model_save.h"
#include "safetensors.h"

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static struct as_model_config base_config(const char *type) {
    struct as_model_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.model_type, sizeof c.model_type, "%s", type);
    c.hidden = 32, c.intermediate = 48, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
    c.head_dim = 8, c.vocab = 40, c.max_pos = 64, c.rms_eps = 1e-6f, c.rope_theta = 50000.0f;
    c.bos_id = 1, c.eos_id = 2;
    return c;
}

/* Every tensor of a/model.safetensors equals b's: same names, dtype, shape, bytes. */
static void assert_same_tensors(const char *a, const char *b) {
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    struct as_st_file *fa = as_st_open(pa), *fb = as_st_open(pb);
    assert_non_null(fa);
    assert_non_null(fb);
    assert_int_equal(fa->n_tensors, fb->n_tensors);
    for (int i = 0; i < fa->n_tensors; i++) {
        const struct as_st_tensor *ta = &fa->tensors[i];
        const struct as_st_tensor *tb = as_st_find(fb, ta->name);
        if (!tb) fail_msg("%s missing from %s", ta->name, pb);
        assert_int_equal(ta->dtype, tb->dtype);
        assert_int_equal(ta->ndim, tb->ndim);
        for (int d = 0; d < ta->ndim; d++)
            assert_int_equal(ta->shape[d], tb->shape[d]);
        assert_int_equal(ta->nbytes, tb->nbytes);
        if (memcmp(ta->data, tb->data, ta->nbytes)) fail_msg("%s: bytes differ", ta->name);
    }
    as_st_close(fa), as_st_close(fb);
}

static void assert_same_config(const struct as_model_config *x, const struct as_model_config *y) {
    assert_string_equal(x->model_type, y->model_type);
    assert_int_equal(x->arch, y->arch);
    assert_int_equal(x->hidden, y->hidden);
    assert_int_equal(x->intermediate, y->intermediate);
    assert_int_equal(x->n_layers, y->n_layers);
    assert_int_equal(x->n_heads, y->n_heads);
    assert_int_equal(x->n_kv_heads, y->n_kv_heads);
    assert_int_equal(x->head_dim, y->head_dim);
    assert_int_equal(x->vocab, y->vocab);
    assert_int_equal(x->max_pos, y->max_pos);
    assert_true(x->rms_eps == y->rms_eps);
    assert_true(x->rope_theta == y->rope_theta);
    assert_int_equal(x->tie_embeddings, y->tie_embeddings);
    assert_int_equal(x->qkv_bias, y->qkv_bias);
    assert_int_equal(x->qk_norm, y->qk_norm);
    assert_int_equal(x->bos_id, y->bos_id);
    assert_int_equal(x->eos_id, y->eos_id);
    assert_int_equal(x->rope_type, y->rope_type);
    assert_true(x->rope_factor == y->rope_factor);
    assert_int_equal(x->rope_orig_max_pos, y->rope_orig_max_pos);
    assert_true(x->yarn_beta_fast == y->yarn_beta_fast);
    assert_true(x->yarn_beta_slow == y->yarn_beta_slow);
}

static void round_trip(struct as_model_config c, enum as_dtype dt) {
    char src[] = "/tmp/as_test_msave.XXXXXX", dst[] = "/tmp/as_test_msave.XXXXXX";
    assert_non_null(mkdtemp(src));
    assert_non_null(mkdtemp(dst));
    assert_int_equal(as_model_write_random(&c, dt, 11, src), 0);
    struct as_model *m = as_model_load(src);
    assert_non_null(m);
    assert_int_equal(as_model_save_hf(m, dst, dt), 0);
    assert_same_tensors(src, dst);
    struct as_model *m2 = as_model_load(dst);
    assert_non_null(m2);
    assert_same_config(&m->cfg, &m2->cfg);
    as_model_free(m), as_model_free(m2);
    nftw(src, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    nftw(dst, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

static void test_llama_dtypes(void **state) {
    (void)state;
    struct as_model_config c = base_config("llama");
    round_trip(c, AS_F32);
    round_trip(c, AS_BF16);
    round_trip(c, AS_F16);
    c.tie_embeddings = 1;
    round_trip(c, AS_BF16);
}

static void test_qwen_and_rope(void **state) {
    (void)state;
    struct as_model_config c = base_config("qwen2");
    c.qkv_bias = 1;
    round_trip(c, AS_F32);
    c = base_config("qwen3");
    c.qk_norm = 1;
    round_trip(c, AS_BF16);
    c = base_config("llama");
    c.rope_type = AS_ROPE_LINEAR, c.rope_factor = 4;
    round_trip(c, AS_F32);
    c.rope_type = AS_ROPE_YARN, c.rope_factor = 8, c.rope_orig_max_pos = 32;
    c.yarn_beta_fast = 32, c.yarn_beta_slow = 1;
    round_trip(c, AS_F32);
}

static void test_bad_dtype(void **state) {
    (void)state;
    char src[] = "/tmp/as_test_msave.XXXXXX", dst[] = "/tmp/as_test_msave.XXXXXX";
    assert_non_null(mkdtemp(src));
    assert_non_null(mkdtemp(dst));
    struct as_model_config c = base_config("llama");
    assert_int_equal(as_model_write_random(&c, AS_F32, 3, src), 0);
    struct as_model *m = as_model_load(src);
    assert_non_null(m);
    assert_int_equal(as_model_save_hf(m, dst, AS_I8), -1);
    assert_string_equal(as_last_error(),
                        "dtype I8 cannot be written as a dense checkpoint (F32, BF16, F16)");
    char p[4096];
    snprintf(p, sizeof p, "%s/model.safetensors", dst);
    FILE *f = fopen(p, "rb");
    assert_null(f);
    as_model_free(m);
    nftw(src, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    nftw(dst, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_dtypes),
        cmocka_unit_test(test_qwen_and_rope),
        cmocka_unit_test(test_bad_dtype),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
