/* test_import: the llama2.c reader and the importer (llama2c.c).
 *  - reference encoder: token counts of the data README (computed by an independent
 *    implementation), decode round trip;
 *  - the llama2.c encoder, and the tokenizer.json written by the importer read by the toolkit's
 *    tokenizer (tokenizer.h) and by Hugging Face `tokenizers`, all give the ids of an
 *    independent Python transcription of llama2.c's encode() (tests/tools/tokenizer_oracle.py
 *    spm-encode) on the first 20 KB of wiki.test.raw and of Austen novels; a missing python3,
 *    oracle or `tokenizers` package is a failure, not a skip;
 *  - q/k permutation: the imported rows under rotate-half RoPE equal llama2.c's rows under
 *    interleaved RoPE, element for element;
 *  - bad input: unreadable, truncated and corrupt checkpoints/tokenizers, unwritable output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_error.h"
#include "llama2c.h"
#include "safetensors.h"
#include "tokenizer.h"

static char data_dir[2048];
static char tmp_root[64];
static char hf_dir[128];
static struct as_l2c_model l2c;
static struct as_l2c_tokenizer tok;

static const char *data_path(const char *rel) {
    static char buf[4][4096];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", data_dir, rel);
    return buf[i];
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static char *read_prefix(const char *path, size_t n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *b = calloc(n + 1, 1);
    size_t got = fread(b, 1, n, f);
    b[got] = 0;
    fclose(f);
    return b;
}

static int setup(void **state) {
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/as_test_import.XXXXXX");
    if (!mkdtemp(tmp_root)) return -1;
    snprintf(hf_dir, sizeof hf_dir, "%s/hf", tmp_root);
    if (as_l2c_load(data_path("models/stories260K/stories260K.bin"), &l2c) != 0) return -1;
    if (as_l2c_tokenizer_load(data_path("models/stories260K/tok512.bin"), 512, &tok) != 0)
        return -1;
    if (as_l2c_export_hf(&l2c, &tok, hf_dir) != 0) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    as_l2c_free(&l2c);
    as_l2c_tokenizer_free(&tok);
    nftw(tmp_root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void test_header(void **state) {
    (void)state;
    const struct as_l2c_config *c = &l2c.cfg;
    assert_int_equal(c->dim, 64);
    assert_int_equal(c->hidden_dim, 172);
    assert_int_equal(c->n_layers, 5);
    assert_int_equal(c->n_heads, 8);
    assert_int_equal(c->n_kv_heads, 4);
    assert_int_equal(c->vocab_size, 512);
    assert_int_equal(c->seq_len, 512);
    assert_true(c->shared_classifier);
    /* the pieces the README describes */
    assert_int_equal(as_l2c_lookup(&tok, " the", 4), 265);
    assert_int_equal(as_l2c_lookup(&tok, "<0x0A>", 6), 3 + 10);
}

static void test_reference_encoder_counts(void **state) {
    (void)state;
    /* data/README.md: the first 20,000 bytes of wiki.test.raw are 12,349 tokens, BOS first */
    char *text = read_prefix(data_path("text/wikitext-2-raw/wiki.test.raw"), 20000);
    int *ids = malloc((strlen(text) + 3) * sizeof(int));
    int n = as_l2c_encode(&tok, text, 1, 0, ids);
    assert_int_equal(n, 12349);
    assert_int_equal(ids[0], 1);
    /* decoding gives the text back (pieces concatenated; the dummy-prefix space stripped) */
    char *out = malloc((size_t)n * 65 + 1);
    size_t len = 0;
    for (int i = 1; i < n; i++)
        len += (size_t)as_l2c_decode(&tok, ids[i - 1], ids[i], out + len);
    out[len] = 0;
    assert_string_equal(out, text);
    free(out);
    free(ids);
    free(text);
    int few[8];
    assert_int_equal(as_l2c_encode(&tok, "", 1, 1, few), 2); /* no dummy prefix for "" */
    assert_int_equal(few[0], 1);
    assert_int_equal(few[1], 2);
    /* a character outside the vocabulary falls back to its UTF-8 bytes (+3) */
    n = as_l2c_encode(&tok, "\xe4\xb8\xad", 0, 0, few); /* U+4E2D */
    assert_int_equal(n, 4);
    assert_int_equal(few[1], 0xe4 + 3);
    assert_int_equal(few[2], 0xb8 + 3);
    assert_int_equal(few[3], 0xad + 3);
}

/* Reads whitespace-separated ids from the output of CMD (exit status 0 required); BOS first if
 * bos. Returns the count; fails the test if the command fails. */
static int ids_from_command(const char *cmd, int bos, int *ids, int cap) {
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    int n = 0, v;
    if (bos) ids[n++] = 1;
    while (fscanf(p, "%d", &v) == 1) {
        if (n >= cap) fail_msg("%s: more than %d ids", cmd, cap);
        ids[n++] = v;
    }
    if (pclose(p) != 0) fail_msg("oracle failed (python3, numpy, tokenizers installed?): %s", cmd);
    return n;
}

/* Expected ids (BOS first) from the independent oracle; the llama2.c encoder, tokenizer.h on the
 * imported tokenizer.json, and HF `tokenizers` on the same file must all give them. */
static void compare_tokenizers(const char *path, size_t nbytes) {
    char *text = read_prefix(path, nbytes);
    size_t len = strlen(text);
    int cap = (int)len + 3;
    int *want = malloc((size_t)cap * sizeof(int)), *got = malloc((size_t)cap * sizeof(int));
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "python3 tests/tools/tokenizer_oracle.py spm-encode '%s' '%s' %zu",
             data_path("models/stories260K/tok512.bin"), path, len);
    int n = ids_from_command(cmd, 1, want, cap);
    assert_true(n > (int)len / 4); /* a real encoding, not an empty output */
    int m0 = as_l2c_encode(&tok, text, 1, 0, got);
    assert_int_equal(m0, n);
    for (int i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("%s: token %d: llama2.c encoder gives %d, oracle %d", path, i, got[i],
                     want[i]);
    struct as_tokenizer *t = as_tokenizer_load(hf_dir);
    if (!t) fail_msg("%s", as_last_error());
    int32_t *ids;
    size_t m;
    assert_int_equal(as_tokenizer_encode(t, text, len, 1, &ids, &m), 0);
    assert_int_equal((int)m, n);
    for (int i = 0; i < n; i++)
        if (ids[i] != want[i])
            fail_msg("%s: token %d: tokenizer.json gives %d, oracle %d", path, i, ids[i], want[i]);
    free(ids);
    as_tokenizer_free(t);
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import sys, tokenizers\n"
             "t = tokenizers.Tokenizer.from_file(sys.argv[1])\n"
             "s = open(sys.argv[2], \"rb\").read()[:int(sys.argv[3])].decode(\"utf-8\")\n"
             "print(\" \".join(map(str, t.encode(s).ids)))' '%s/tokenizer.json' '%s' %zu",
             hf_dir, path, len);
    int h = ids_from_command(cmd, 0, got, cap);
    assert_int_equal(h, n);
    for (int i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("%s: token %d: HF tokenizers gives %d, oracle %d", path, i, got[i], want[i]);
    print_message("# %s: %d ids equal (oracle, llama2.c encoder, tokenizer.h, HF tokenizers)\n",
                  path, n);
    free(want);
    free(got);
    free(text);
}

static void test_tokenizer_json_wiki(void **state) {
    (void)state;
    compare_tokenizers(data_path("text/wikitext-2-raw/wiki.test.raw"), 20000);
}

static void test_tokenizer_json_austen(void **state) {
    (void)state;
    compare_tokenizers(data_path("text/austen/pride_and_prejudice.txt"), 20000);
    compare_tokenizers(data_path("text/austen/emma.txt"), 8000);
}

static void test_tokenizer_json_decode(void **state) {
    (void)state;
    struct as_tokenizer *t = as_tokenizer_load(hf_dir);
    assert_non_null(t);
    assert_int_equal(as_tokenizer_bos(t), 1);
    assert_int_equal(as_tokenizer_eos(t), 2);
    assert_int_equal(as_tokenizer_piece_to_id(t, "\xe2\x96\x81the"), 265);
    assert_int_equal(as_tokenizer_piece_to_id(t, "<0x0A>"), 13);
    /* every piece decodes like llama2.c's decode */
    for (int id = 3; id < 512; id++) {
        char a[80], b[80];
        int la = as_l2c_decode(&tok, 5, id, a);
        int lb = as_tokenizer_decode_piece(t, 5, id, b, sizeof b);
        assert_int_equal(la, lb);
        assert_memory_equal(a, b, (size_t)la);
    }
    as_tokenizer_free(t);
}

static void rope_interleaved(float *v, int n, int hs, int pos) {
    for (int i = 0; i < n; i += 2) {
        float f = 1.0f / powf(10000.0f, (float)(i % hs) / hs), a = pos * f;
        float v0 = v[i], v1 = v[i + 1];
        v[i] = v0 * cosf(a) - v1 * sinf(a);
        v[i + 1] = v0 * sinf(a) + v1 * cosf(a);
    }
}

static void rope_half(float *v, int n, int hs, int pos) {
    for (int h = 0; h < n / hs; h++)
        for (int i = 0; i < hs / 2; i++) {
            float f = 1.0f / powf(10000.0f, 2.0f * i / hs), a = pos * f;
            float *x = v + h * hs, x1 = x[i], x2 = x[i + hs / 2];
            x[i] = x1 * cosf(a) - x2 * sinf(a);
            x[i + hs / 2] = x2 * cosf(a) + x1 * sinf(a);
        }
}

static void test_qk_permutation(void **state) {
    (void)state;
    /* hand-computed map for head_dim 8 */
    const int expect[16] = {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15};
    for (int r = 0; r < 16; r++)
        assert_int_equal(as_l2c_hf_row(r, 8), expect[r]);
    /* q and k of layer 3 for a fixed input at position 5: HF rotate-half on the imported rows
     * gives llama2.c's interleaved result with the same permutation, and q.k dot products per
     * head (what attention sees) are equal. */
    struct as_ckpt *c = as_ckpt_open(hf_dir);
    assert_non_null(c);
    int D = 64, kvd = 32, hs = 8, l = 3, pos = 5;
    float *wq = malloc((size_t)D * D * 4), *wk = malloc((size_t)kvd * D * 4);
    int64_t shq[2] = {D, D}, shk[2] = {kvd, D};
    const struct as_st_tensor *tq =
        as_ckpt_expect(c, "model.layers.3.self_attn.q_proj.weight", 2, shq);
    const struct as_st_tensor *tk =
        as_ckpt_expect(c, "model.layers.3.self_attn.k_proj.weight", 2, shk);
    assert_non_null(tq);
    assert_non_null(tk);
    assert_int_equal(as_ckpt_read_f32(c, tq, wq), 0);
    assert_int_equal(as_ckpt_read_f32(c, tk, wk), 0);
    float x[64], qh[64], ql[64], kh[32], kl[32];
    for (int i = 0; i < D; i++)
        x[i] = sinf(0.37f * i + 1.0f);
    for (int r = 0; r < D; r++) {
        qh[r] = ql[r] = 0;
        for (int j = 0; j < D; j++) {
            qh[r] += wq[r * D + j] * x[j];
            ql[r] += l2c.w.wq[(size_t)l * D * D + r * D + j] * x[j];
        }
    }
    for (int r = 0; r < kvd; r++) {
        kh[r] = kl[r] = 0;
        for (int j = 0; j < D; j++) {
            kh[r] += wk[r * D + j] * x[j];
            kl[r] += l2c.w.wk[(size_t)l * kvd * D + r * D + j] * x[j];
        }
    }
    rope_half(qh, D, hs, pos), rope_half(kh, kvd, hs, pos);
    rope_interleaved(ql, D, hs, pos), rope_interleaved(kl, kvd, hs, pos);
    for (int h = 0; h < 8; h++)
        for (int i = 0; i < hs / 2; i++) {
            assert_true(fabsf(qh[h * hs + i] - ql[h * hs + 2 * i]) < 1e-5f);
            assert_true(fabsf(qh[h * hs + i + hs / 2] - ql[h * hs + 2 * i + 1]) < 1e-5f);
        }
    for (int h = 0; h < 8; h++) {
        float dh = 0, dl = 0;
        for (int i = 0; i < hs; i++) {
            dh += qh[h * hs + i] * kh[(h / 2) * hs + i];
            dl += ql[h * hs + i] * kl[(h / 2) * hs + i];
        }
        assert_true(fabsf(dh - dl) < 1e-4f * fmaxf(1.0f, fabsf(dl)));
    }
    /* unpermuted tensors are copied verbatim: w2 -> down_proj */
    float *down = malloc((size_t)D * 172 * 4);
    int64_t shd[2] = {D, 172};
    const struct as_st_tensor *td =
        as_ckpt_expect(c, "model.layers.3.mlp.down_proj.weight", 2, shd);
    assert_non_null(td);
    assert_int_equal(as_ckpt_read_f32(c, td, down), 0);
    assert_memory_equal(down, l2c.w.w2 + (size_t)l * D * 172, (size_t)D * 172 * 4);
    assert_null(as_ckpt_find(c, "lm_head.weight")); /* shared classifier: tied */
    free(down), free(wq), free(wk);
    as_ckpt_close(c);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void test_bad_inputs(void **state) {
    (void)state;
    struct as_l2c_model m;
    char p[256];
    assert_int_equal(as_l2c_load("/nonexistent/stories.bin", &m), -1);
    assert_non_null(strstr(as_last_error(), "/nonexistent/stories.bin"));
    assert_non_null(strstr(as_last_error(), "cannot open"));
    /* truncated: the header and part of the weights */
    char *head = read_prefix(data_path("models/stories260K/stories260K.bin"), 100000);
    snprintf(p, sizeof p, "%s/trunc.bin", tmp_root);
    write_bytes(p, head, 100000);
    assert_int_equal(as_l2c_load(p, &m), -1);
    assert_non_null(strstr(as_last_error(), "trunc.bin"));
    assert_non_null(strstr(as_last_error(), "truncated"));
    write_bytes(p, head, 10);
    assert_int_equal(as_l2c_load(p, &m), -1);
    assert_non_null(strstr(as_last_error(), "truncated"));
    /* corrupt header: heads do not divide dim */
    int32_t h[7] = {64, 172, 5, 7, 4, 512, 512};
    write_bytes(p, h, sizeof h);
    assert_int_equal(as_l2c_load(p, &m), -1);
    assert_non_null(strstr(as_last_error(), "not a llama2.c checkpoint"));
    free(head);
    /* truncated tokenizer */
    struct as_l2c_tokenizer t;
    char *tk = read_prefix(data_path("models/stories260K/tok512.bin"), 3000);
    write_bytes(p, tk, 3000);
    assert_int_equal(as_l2c_tokenizer_load(p, 512, &t), -1);
    assert_non_null(strstr(as_last_error(), "truncated"));
    free(tk);
    /* unwritable output: parent is a regular file; nothing is left behind */
    snprintf(p, sizeof p, "%s/trunc.bin/out", tmp_root);
    assert_int_equal(as_l2c_export_hf(&l2c, &tok, p), -1);
    assert_true(strlen(as_last_error()) > 0);
    struct stat st;
    assert_int_equal(stat(p, &st), -1);
}

static void test_export_replaces_atomically(void **state) {
    (void)state;
    /* exporting over an existing directory replaces it whole (no stale files) */
    char p[256], stale[300];
    snprintf(p, sizeof p, "%s/again", tmp_root);
    assert_int_equal(as_l2c_export_hf(&l2c, NULL, p), 0);
    snprintf(stale, sizeof stale, "%s/stale.txt", p);
    write_bytes(stale, "x", 1);
    assert_int_equal(as_l2c_export_hf(&l2c, &tok, p), 0);
    struct stat st;
    assert_int_equal(stat(stale, &st), -1);
    snprintf(stale, sizeof stale, "%s/tokenizer.json", p);
    assert_int_equal(stat(stale, &st), 0);
}

int main(void) {
    const char *d = getenv("AS_DATA");
    snprintf(data_dir, sizeof data_dir, "%s", d ? d : "../shared/data");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_reference_encoder_counts),
        cmocka_unit_test(test_tokenizer_json_wiki),
        cmocka_unit_test(test_tokenizer_json_austen),
        cmocka_unit_test(test_tokenizer_json_decode),
        cmocka_unit_test(test_qk_permutation),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_export_replaces_atomically),
    };
    return cmocka_run_group_tests_name("import", tests, setup, teardown);
}
