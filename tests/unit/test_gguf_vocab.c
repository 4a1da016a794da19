/* test_gguf_vocab: GGUF vocabularies -> tokenizer.json / tokenizer_config.json (gguf_vocab.c) and
 * the Digits pre-tokenizer (tokenizer.c), on hand-made vocabularies whose ids are worked out by
 * hand below. Also a small CLI for tests/tools/gguf_tokenizer.bats:
 *   test_gguf_vocab encode FILE.gguf TEXT [--special]   ids, one per line (BOS by the model's rule)
 *   test_gguf_vocab encode-dir DIR TEXT [--special]     the same through DIR/tokenizer.json
 *   test_gguf_vocab write FILE.gguf DIR                 tokenizer.json + tokenizer_config.json
 *   test_gguf_vocab add-bos FILE.gguf                   0 or 1 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_error.h"
#include "gguf.h"
#include "gguf_vocab.h"
#include "tokenizer.h"

static char tmpdir[] = "/tmp/test_gguf_vocab.XXXXXX";

/* A byte-level vocabulary: ids 0 "<|endoftext|>" (control), then the pieces below. Merge ranks:
 * "1 2" 0, "2 3" 1, "a b" 2, "Ġ a" 3, "Ġa b" 4. "123" is in the vocabulary but no merge makes it,
 * so only ignore_merges (Llama 3) can produce it. */
static const char *const bl_tokens[] = {"<|endoftext|>",
                                        "1",
                                        "2",
                                        "3",
                                        "12",
                                        "23",
                                        "123",
                                        "a",
                                        "b",
                                        "ab",
                                        "\xc4\xa0",
                                        "\xc4\xa0"
                                        "a",
                                        "\xc4\xa0"
                                        "ab",
                                        ".",
                                        "4"};
enum { T_EOT, T_1, T_2, T_3, T_12, T_23, T_123, T_A, T_B, T_AB, T_SP, T_SPA, T_SPAB, T_DOT, T_4 };
#define N_BL (sizeof bl_tokens / sizeof bl_tokens[0])
static const char *const bl_merges[] = {"1 2", "2 3", "a b", "\xc4\xa0 a",
                                        "\xc4\xa0"
                                        "a b"};

struct vopts {
    const char *model, *pre; /* NULL pre: key absent */
    const char *bad_merge;   /* replaces merge 2 */
    int add_bos;             /* -1: key absent */
};

static char *write_bl(const char *name, const struct vopts *o) {
    char *path;
    assert_true(asprintf(&path, "%s/%s.gguf", tmpdir, name) > 0);
    struct as_gguf_writer *w = as_gguf_writer_new();
    as_gguf_set_str(w, "general.architecture", "llama");
    as_gguf_set_u32(w, "llama.context_length", 4096);
    as_gguf_set_str(w, "tokenizer.ggml.model", o->model ? o->model : "gpt2");
    if (o->pre) as_gguf_set_str(w, "tokenizer.ggml.pre", o->pre);
    as_gguf_set_arr_str(w, "tokenizer.ggml.tokens", bl_tokens, N_BL);
    int32_t types[N_BL];
    for (size_t i = 0; i < N_BL; i++)
        types[i] = i == 0 ? 3 : 1;
    as_gguf_set_arr(w, "tokenizer.ggml.token_type", AS_GGUF_I32, types, N_BL);
    const char *merges[5];
    memcpy(merges, bl_merges, sizeof merges);
    if (o->bad_merge) merges[2] = o->bad_merge;
    as_gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, 5);
    as_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 0);
    as_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 0);
    if (o->add_bos >= 0) as_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", o->add_bos);
    as_gguf_set_str(w, "tokenizer.chat_template", "{{ messages }}\n");
    if (as_gguf_writer_write(w, path)) fail_msg("%s", as_last_error());
    as_gguf_writer_free(w);
    return path;
}

static struct as_tokenizer *load_pre(const char *pre) {
    struct vopts o = {.pre = pre, .add_bos = -1};
    char *p = write_bl(pre ? pre : "nopre", &o);
    struct as_tokenizer *t = as_tokenizer_load_gguf(p);
    if (!t) fail_msg("%s", as_last_error());
    free(p);
    return t;
}

static void check_ids(const struct as_tokenizer *t, const char *text, const int32_t *want,
                      size_t nwant) {
    int32_t *ids;
    size_t n;
    assert_int_equal(as_tokenizer_encode(t, text, strlen(text), 0, &ids, &n), 0);
    if (n != nwant || memcmp(ids, want, n * sizeof *ids)) {
        fprintf(stderr, "# text '%s': got", text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    assert_int_equal(n, nwant);
    assert_memory_equal(ids, want, n * sizeof *ids);
    free(ids);
}
#define CHECK(t, text, ...)                                                                        \
    do {                                                                                           \
        const int32_t w_[] = {__VA_ARGS__};                                                        \
        check_ids(t, text, w_, sizeof w_ / sizeof w_[0]);                                          \
    } while (0)

/* "123": GPT-2's regex keeps the run, merge "1 2" (rank 0) beats "2 3" -> 12 3. Digits (smollm,
 * starcoder) and Qwen2's \p{N} split it into single digits. Llama 3's \p{N}{1,3} keeps the run and
 * ignore_merges maps it straight to "123"; dbrx has the same regex without ignore_merges. */
static void test_pre_digits(void **state) {
    (void)state;
    static const struct {
        const char *pre;
        int32_t ids[3];
        size_t n;
    } cases[] = {
        {"gpt-2", {T_12, T_3}, 2},      {"gpt2", {T_12, T_3}, 2},
        {"smollm", {T_1, T_2, T_3}, 3}, {"starcoder", {T_1, T_2, T_3}, 3},
        {"qwen2", {T_1, T_2, T_3}, 3},  {"llama-bpe", {T_123}, 1},
        {"dbrx", {T_12, T_3}, 2},       {"default", {T_12, T_3}, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct as_tokenizer *t = load_pre(cases[i].pre);
        fprintf(stderr, "# pre %s\n", cases[i].pre);
        check_ids(t, "123", cases[i].ids, cases[i].n);
        as_tokenizer_free(t);
    }
    /* "1234": Llama 3 splits digit runs in threes: "123" "4" */
    struct as_tokenizer *t = load_pre("llama-bpe");
    CHECK(t, "1234", T_123, T_4);
    as_tokenizer_free(t);
    /* llama.cpp's default set isolates punctuation runs and 3-digit groups: "122" "3" gives
     * 12 2 3 where GPT-2's one piece "1223" merges on to 12 23 */
    t = load_pre("default");
    CHECK(t, "ab.1223", T_AB, T_DOT, T_12, T_2, T_3);
    as_tokenizer_free(t);
    t = load_pre(NULL); /* no key: llama.cpp falls back to "default" */
    CHECK(t, "ab.1223", T_AB, T_DOT, T_12, T_2, T_3);
    as_tokenizer_free(t);
    t = load_pre("gpt-2");
    CHECK(t, "ab.1223", T_AB, T_DOT, T_12, T_23);
    CHECK(t, " ab", T_SP, T_AB); /* "a b" (rank 2) before "Ġ a" (3): Ġab is out of reach */
    CHECK(t, "<|endoftext|>ab", T_EOT, T_AB);
    as_tokenizer_free(t);
    t = load_pre("llama-bpe"); /* ignore_merges: the pre-token Ġab is a vocabulary entry */
    CHECK(t, " ab", T_SPAB);
    as_tokenizer_free(t);
}

/* BOS rule: byte-level adds none unless the pre name is Llama 3's or the key says so. */
static void test_add_bos(void **state) {
    (void)state;
    static const struct {
        const char *pre;
        int key, want;
    } cases[] = {{"gpt-2", -1, 0},
                 {"smollm", -1, 0},
                 {"llama-bpe", -1, 1},
                 {"llama-bpe", 0, 0},
                 {"smollm", 1, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct vopts o = {.pre = cases[i].pre, .add_bos = cases[i].key};
        char *p = write_bl("bos", &o);
        struct as_gguf *g = as_gguf_open(p);
        assert_non_null(g);
        assert_int_equal(as_gguf_vocab_add_bos(g), cases[i].want);
        assert_int_equal(as_gguf_vocab_add_eos(g), 0);
        as_gguf_close(g);
        struct as_tokenizer *t = as_tokenizer_load_gguf(p);
        assert_non_null(t);
        assert_int_equal(as_tokenizer_add_bos(t), cases[i].want);
        as_tokenizer_free(t);
        free(p);
    }
}

static void expect_error(const struct vopts *o, const char *name, const char *msg) {
    char *p = write_bl(name, o);
    struct as_tokenizer *t = as_tokenizer_load_gguf(p);
    assert_null(t);
    char *want;
    assert_true(asprintf(&want, "file %s: %s", p, msg) > 0);
    if (strcmp(as_last_error(), want)) fail_msg("got '%s', want '%s'", as_last_error(), want);
    /* nothing written on failure */
    struct as_gguf *g = as_gguf_open(p);
    assert_non_null(g);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/out_%s", tmpdir, name);
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(as_gguf_vocab_write_hf(g, dir), -1);
    assert_string_equal(as_last_error(), want);
    char f[600];
    snprintf(f, sizeof f, "%s/tokenizer.json", dir);
    assert_int_not_equal(access(f, F_OK), 0);
    snprintf(f, sizeof f, "%s/tokenizer_config.json", dir);
    assert_int_not_equal(access(f, F_OK), 0);
    as_gguf_close(g);
    free(want), free(p);
}

static void test_errors(void **state) {
    (void)state;
    struct vopts o = {.pre = "nonesuch", .add_bos = -1};
    expect_error(&o, "unknown_pre",
                 "tokenizer.ggml.pre \"nonesuch\" is not supported (known: docs/tokenizers.md, "
                 "GGUF vocabularies)");
    o = (struct vopts){.pre = "smollm", .bad_merge = "ab", .add_bos = -1};
    expect_error(&o, "merge_nospace",
                 "tokenizer.ggml.merges[2] \"ab\" is not two tokens separated by a space");
    o = (struct vopts){.pre = "smollm", .bad_merge = "a ", .add_bos = -1};
    expect_error(&o, "merge_trailing",
                 "tokenizer.ggml.merges[2] \"a \" is not two tokens separated by a space");
    o = (struct vopts){.pre = "smollm", .bad_merge = "a zz", .add_bos = -1};
    expect_error(&o, "merge_oov",
                 "tokenizer.ggml.merges[2] \"a zz\": token \"zz\" is not in the vocabulary");
    o = (struct vopts){.pre = "smollm", .bad_merge = "b a", .add_bos = -1};
    expect_error(&o, "merge_result",
                 "tokenizer.ggml.merges[2] \"b a\": token \"ba\" is not in the vocabulary");
    o = (struct vopts){.model = "bert", .pre = "smollm", .add_bos = -1};
    expect_error(&o, "bert", "tokenizer.ggml.model \"bert\" is not supported (llama, gpt2)");
}

/* write_hf: both files, the pipeline of the pre name, the config from the metadata. */
static void test_write_hf(void **state) {
    (void)state;
    struct vopts o = {.pre = "llama-bpe", .add_bos = -1};
    char *p = write_bl("write", &o);
    struct as_gguf *g = as_gguf_open(p);
    assert_non_null(g);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/hf", tmpdir);
    assert_int_equal(mkdir(dir, 0755), 0);
    if (as_gguf_vocab_write_hf(g, dir)) fail_msg("%s", as_last_error());
    as_gguf_close(g);
    char f[600];
    snprintf(f, sizeof f, "%s/tokenizer_config.json", dir);
    json_t *c = json_load_file(f, 0, NULL);
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "bos_token")), "<|endoftext|>");
    assert_true(json_is_null(json_object_get(c, "pad_token")));
    assert_true(json_is_true(json_object_get(c, "add_bos_token")));
    assert_true(json_is_false(json_object_get(c, "add_eos_token")));
    assert_string_equal(json_string_value(json_object_get(c, "chat_template")), "{{ messages }}\n");
    assert_int_equal(json_integer_value(json_object_get(c, "model_max_length")), 4096);
    assert_string_equal(json_string_value(json_object_get(c, "tokenizer_class")),
                        "PreTrainedTokenizerFast");
    json_decref(c);
    snprintf(f, sizeof f, "%s/tokenizer.json", dir);
    json_t *t = json_load_file(f, 0, NULL);
    assert_non_null(t);
    const json_t *model = json_object_get(t, "model");
    assert_true(json_is_true(json_object_get(model, "ignore_merges")));
    assert_int_equal(json_array_size(json_object_get(model, "merges")), 5);
    const json_t *seq = json_object_get(json_object_get(t, "pre_tokenizer"), "pretokenizers");
    assert_int_equal(json_array_size(seq), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(seq, 0), "type")),
                        "Split");
    assert_true(json_is_false(json_object_get(json_array_get(seq, 1), "use_regex")));
    json_decref(t);
    /* our own loader reads the directory back with the same BOS rule */
    struct as_tokenizer *tk = as_tokenizer_load(dir);
    assert_non_null(tk);
    assert_int_equal(as_tokenizer_add_bos(tk), 1);
    CHECK(tk, "1234", T_123, T_4);
    as_tokenizer_free(tk);
    free(p);
}

/* tokenizer.c's Digits on its own: individual or contiguous, strict about the flag's type. */
static void test_digits_pretokenizer(void **state) {
    (void)state;
    const char *fmt = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"1\":0,\"2\":1,\"12\":2,\"a\":3,"
                      "\"a1\":4},\"merges\":[\"1 2\",\"a 1\"]},"
                      "\"pre_tokenizer\":{\"type\":\"Digits\"%s}}";
    static const struct {
        const char *flag;
        int32_t ids[4];
        size_t n;
    } cases[] = {{",\"individual_digits\":true", {3, 0, 1}, 3},
                 {",\"individual_digits\":false", {3, 2}, 2},
                 {"", {3, 2}, 2}}; /* HF default: contiguous */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char js[512];
        snprintf(js, sizeof js, fmt, cases[i].flag);
        json_t *root = json_loads(js, 0, NULL);
        assert_non_null(root);
        struct as_tokenizer *t = as_tokenizer_from_json("digits", root, -1, -1);
        json_decref(root);
        if (!t) fail_msg("%s", as_last_error());
        /* "a12": "a" and the digits are separate pieces, so "a 1" never merges */
        check_ids(t, "a12", cases[i].ids, cases[i].n);
        as_tokenizer_free(t);
    }
    char js[512];
    snprintf(js, sizeof js, fmt, ",\"individual_digits\":1");
    json_t *root = json_loads(js, 0, NULL);
    assert_null(as_tokenizer_from_json("digits", root, -1, -1));
    assert_string_equal(as_last_error(),
                        "digits: pre_tokenizer: Digits: individual_digits must be true or false");
    json_decref(root);
}

/* Every name in the table loads and tokenizes. */
static void test_all_names(void **state) {
    (void)state;
    size_t n = 0;
    for (const char *name; (name = as_gguf_pre_name(n)); n++) {
        struct as_tokenizer *t = load_pre(name);
        int32_t *ids;
        size_t k;
        assert_int_equal(as_tokenizer_encode(t, " ab.12", 6, 0, &ids, &k), 0);
        assert_true(k >= 3);
        free(ids);
        as_tokenizer_free(t);
    }
    assert_true(n >= 16);
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = as_xmalloc((size_t)n + 1);
    *len = fread(s, 1, (size_t)n, f);
    s[*len] = 0;
    fclose(f);
    return s;
}

static int cli(int argc, char **argv) {
    as_set_progname("test_gguf_vocab");
    if (argc == 4 && !strcmp(argv[1], "write")) {
        struct as_gguf *g = as_gguf_open(argv[2]);
        if (!g || as_gguf_vocab_write_hf(g, argv[3])) as_die_last();
        as_gguf_close(g);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "add-bos")) {
        struct as_gguf *g = as_gguf_open(argv[2]);
        int r = g ? as_gguf_vocab_add_bos(g) : -1;
        if (r < 0) as_die_last();
        printf("%d\n", r);
        as_gguf_close(g);
        return 0;
    }
    if (argc < 4 || (strcmp(argv[1], "encode") && strcmp(argv[1], "encode-dir")))
        as_die("usage: test_gguf_vocab encode|encode-dir|write|add-bos ...");
    struct as_tokenizer *t =
        !strcmp(argv[1], "encode") ? as_tokenizer_load_gguf(argv[2]) : as_tokenizer_load(argv[2]);
    if (!t) as_die_last();
    size_t len;
    char *text = slurp(argv[3], &len);
    if (!text) as_die("%s: cannot read", argv[3]);
    int special = argc > 4 && !strcmp(argv[4], "--special");
    int32_t *ids;
    size_t n;
    if (as_tokenizer_encode(t, text, len, special && as_tokenizer_add_bos(t), &ids, &n))
        as_die_last();
    for (size_t i = 0; i < n; i++)
        printf("%d\n", ids[i]);
    free(ids), free(text);
    as_tokenizer_free(t);
    return 0;
}

static int setup(void **state) {
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}
static int teardown(void **state) {
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc > 1) return cli(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pre_digits),
        cmocka_unit_test(test_add_bos),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_write_hf),
        cmocka_unit_test(test_digits_pretokenizer),
        cmocka_unit_test(test_all_names),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
