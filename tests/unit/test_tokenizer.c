/* tokenizer: hand-computed encodings of tiny tokenizer.json files (SentencePiece-style and
 * byte-level), the llama2.c rank rule (result-token rank, leftmost ties), decode conventions,
 * round trips, and one-line errors for bad files.
 *
 * Also a small CLI used by tests/tools/tokenizer.bats to compare against Python oracles:
 *   test_tokenizer encode TOKENIZER.json FILE [--bos]   ids, one per line
 *   test_tokenizer roundtrip TOKENIZER.json FILE        exit 0 iff decode(encode(text)) == text
 *   test_tokenizer decode TOKENIZER.json IDS            text of the ids (whitespace separated) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_error.h"
#include "tokenizer.h"

static char tmpdir[] = "/tmp/test_tokenizer.XXXXXX";

static char *write_file(const char *name, const char *text) {
    char *path;
    assert_true(asprintf(&path, "%s/%s", tmpdir, name) > 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static struct as_tokenizer *load_text(const char *json) {
    char *p = write_file("tokenizer.json", json);
    struct as_tokenizer *t = as_tokenizer_load(p);
    if (!t) fprintf(stderr, "# %s\n", as_last_error());
    free(p);
    return t;
}

/* Encode and compare to the expected ids. */
static void check_ids(const struct as_tokenizer *t, const char *text, int bos, const int32_t *want,
                      size_t nwant) {
    int32_t *ids;
    size_t n;
    assert_int_equal(as_tokenizer_encode(t, text, strlen(text), bos, &ids, &n), 0);
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
#define CHECK(t, text, bos, ...)                                                                   \
    do {                                                                                           \
        const int32_t w_[] = {__VA_ARGS__};                                                        \
        check_ids(t, text, bos, w_, sizeof w_ / sizeof w_[0]);                                     \
    } while (0)

static char *decode_all(const struct as_tokenizer *t, const int32_t *ids, size_t n) {
    char *s = as_tokenizer_decode(t, ids, n, NULL);
    assert_non_null(s);
    return s;
}

/* ---- SentencePiece-style ------------------------------------------------------------------ */

/* Ranks by result token: bc 0, ab 1, abc 2 (both splits), bca 3, ▁a 5, aa 6. Plain HF
 * (rank = merge index) would rank "a bc" 4, after "bc a". */
#define SPM_VOCAB                                                                                  \
    "\"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0xC3>\":3,\"<0xA9>\":4,\"<0x0A>\":5,"         \
    "\"\\u2581\":6,\"a\":7,\"b\":8,\"c\":9,\"bc\":10,\"ab\":11,\"abc\":12,\"bca\":13,"             \
    "\"\\u2581a\":14,\"aa\":15}"
#define SPM_MODEL_HEAD                                                                             \
    "\"model\": "                                                                                  \
    "{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
#define SPM_ADDED                                                                                  \
    "\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"                         \
    "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</"                   \
    "s>\",\"special\":true}],"

static const char spm_json[] =
    "{" SPM_ADDED "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":["
    "{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},"
    "\"pre_tokenizer\":null,"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":["
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},\"content\":\" \"},"
    "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
    "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}," SPM_MODEL_HEAD SPM_VOCAB
    ",\"merges\":[\"b c\",\"a b\",\"ab c\",\"bc a\",\"a bc\",\"\\u2581 a\",\"a a\"]}}";

static void test_spm_encode(void **state) {
    (void)state;
    struct as_tokenizer *t = load_text(spm_json);
    assert_non_null(t);
    assert_int_equal(as_tokenizer_kind(t), AS_TOK_SPM);
    /* ▁ a b c a: bc (0) -> a bc a: "a bc" shares abc's rank 2 and beats "bc a" (3) */
    CHECK(t, "abca", 0, 6, 12, 7);
    /* equal ranks merge leftmost first: b a a a -> b aa a */
    CHECK(t, "baaa", 0, 6, 8, 15, 7);
    /* byte fallback per UTF-8 byte */
    CHECK(t, "\xc3\xa9\n", 0, 6, 3, 4, 5);
    /* Prepend always adds the dummy prefix, even before a space: ▁ ▁a */
    CHECK(t, " a", 0, 6, 14);
    /* unknown character without byte token: one fused <unk> for "xy" */
    CHECK(t, "xy", 0, 6, 0);
    /* added tokens split the text; each segment is normalized on its own */
    CHECK(t, "<s>ab</s>", 0, 1, 6, 11, 2);
    CHECK(t, "ab", 1, 1, 6, 11);
    CHECK(t, "", 1, 1);
    int32_t *ids;
    size_t n;
    assert_int_equal(as_tokenizer_encode(t, "", 0, 0, &ids, &n), 0);
    assert_int_equal(n, 0);
    free(ids);
    assert_int_equal(as_tokenizer_bos(t), 1);
    assert_int_equal(as_tokenizer_eos(t), 2);
    assert_int_equal(as_tokenizer_vocab_size(t), 16);
    assert_int_equal(as_tokenizer_piece_to_id(t, "\xe2\x96\x81"
                                                 "a"),
                     14);
    assert_int_equal(as_tokenizer_piece_to_id(t, "zz"), -1);
    assert_string_equal(as_tokenizer_id_to_piece(t, 13), "bca");
    assert_null(as_tokenizer_id_to_piece(t, 16));
    assert_true(as_tokenizer_is_special(t, 1));
    assert_false(as_tokenizer_is_special(t, 7));
    as_tokenizer_free(t);
}

static void test_spm_pair_merges_same(void **state) {
    (void)state;
    const char *json = "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":["
                       "{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
                       "{\"type\":\"Replace\",\"pattern\":{\"String\":\" "
                       "\"},\"content\":\"\\u2581\"}]}," SPM_MODEL_HEAD SPM_VOCAB
                       ",\"merges\":[[\"b\",\"c\"],[\"a\",\"b\"],[\"ab\",\"c\"],"
                       "[\"bc\",\"a\"],[\"a\",\"bc\"],[\"\\u2581\",\"a\"],[\"a\",\"a\"]]}}";
    struct as_tokenizer *t = load_text(json);
    assert_non_null(t);
    CHECK(t, "abca", 0, 6, 12, 7);
    CHECK(t, "baaa abca", 0, 6, 8, 15, 7, 6, 12, 7);
    as_tokenizer_free(t);
}

static void test_spm_decode(void **state) {
    (void)state;
    struct as_tokenizer *t = load_text(spm_json);
    assert_non_null(t);
    char buf[16];
    /* first piece after BOS loses the dummy-prefix space; later ones keep it */
    assert_int_equal(as_tokenizer_decode_piece(t, 1, 14, buf, sizeof buf), 1);
    assert_string_equal(buf, "a");
    assert_int_equal(as_tokenizer_decode_piece(t, 7, 14, buf, sizeof buf), 2);
    assert_string_equal(buf, " a");
    assert_int_equal(as_tokenizer_decode_piece(t, 7, 5, buf, sizeof buf), 1);
    assert_string_equal(buf, "\n");
    assert_int_equal(as_tokenizer_decode_piece(t, 7, 2, buf, sizeof buf), 0);
    assert_string_equal(buf, "");
    /* truncation like snprintf */
    assert_int_equal(as_tokenizer_decode_piece(t, 7, 14, buf, 2), 2);
    assert_string_equal(buf, " ");
    assert_int_equal(as_tokenizer_decode_piece(t, 7, 99, buf, sizeof buf), -1);
    assert_non_null(strstr(as_last_error(), "out of range"));
    /* round trip through encode/decode, with and without BOS */
    const char *texts[] = {"abca baaa", " a  b\n\xc3\xa9", "<s>ab"};
    const char *want[] = {"abca baaa", " a  b\n\xc3\xa9", "ab"};
    for (int i = 0; i < 3; i++) {
        for (int bos = 0; bos < 2; bos++) {
            int32_t *ids;
            size_t n;
            assert_int_equal(as_tokenizer_encode(t, texts[i], strlen(texts[i]), bos, &ids, &n), 0);
            char *s = decode_all(t, ids, n);
            assert_string_equal(s, want[i]);
            free(s), free(ids);
        }
    }
    as_tokenizer_free(t);
}

static void test_spm_metaspace(void **state) {
    (void)state;
    const char *json_first =
        "{" SPM_ADDED "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\","
        "\"prepend_scheme\":\"first\",\"split\":false},"
        "\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":"
        "\"first\",\"split\":false}," SPM_MODEL_HEAD SPM_VOCAB
        ",\"merges\":[\"b c\",\"a b\",\"ab c\",\"bc a\",\"a bc\",\"\\u2581 a\",\"a a\"]}}";
    struct as_tokenizer *t = load_text(json_first);
    assert_non_null(t);
    CHECK(t, " a", 0, 14); /* Metaspace does not prepend when the text starts with a space */
    CHECK(t, "ab", 0, 6, 11);
    CHECK(t, "<s>ab", 0, 1, 11); /* "first": only the segment at offset 0 gets the prefix */
    int32_t ids[] = {1, 14, 14};
    char *s = decode_all(t, ids, 3);
    assert_string_equal(s, "a a");
    free(s);
    as_tokenizer_free(t);
    /* legacy add_prefix_space = true (always) and split = true (pieces start at each ▁) */
    const char *json_always =
        "{" SPM_ADDED "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\","
        "\"add_prefix_space\":true}," SPM_MODEL_HEAD SPM_VOCAB
        ",\"merges\":[\"b c\",\"a b\",\"ab c\",\"bc a\",\"a bc\",\"\\u2581 a\",\"a a\",\"a "
        "\\u2581\"]"
        "}}";
    /* add "a▁" to the vocab so that "a ▁" could merge across words if there were no split */
    char *j2 = strdup(json_always);
    char *pos = strstr(j2, "\"aa\":15}");
    assert_non_null(pos);
    char *j3;
    assert_true(asprintf(&j3, "%.*s\"aa\":15,\"a\\u2581\":16}%s", (int)(pos - j2), j2,
                         pos + strlen("\"aa\":15}")) > 0);
    t = load_text(j3);
    assert_non_null(t);
    CHECK(t, "a a", 0, 14, 14); /* split: "▁a" "▁a"; without split "a▁" would merge */
    CHECK(t, "<s>a", 0, 1, 14); /* always: every segment gets the prefix */
    as_tokenizer_free(t);
    free(j2), free(j3);
}

/* ---- byte-level --------------------------------------------------------------------------- */

/* GPT-2 bytes_to_unicode, written out independently of the library: printable Latin-1 bytes
 * stand for themselves, the other 68 bytes take U+0100.. in byte order. */
static int b2u(int b) {
    static int map[256], init;
    if (!init) {
        int n = 0;
        for (int i = 0; i < 256; i++) {
            int keep = (i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174);
            map[i] = keep ? i : 256 + n++;
        }
        init = 1;
    }
    return map[b];
}

static void put_utf8(char **p, int cp) {
    if (cp < 0x80)
        *(*p)++ = (char)cp;
    else
        *(*p)++ = (char)(0xC0 | (cp >> 6)), *(*p)++ = (char)(0x80 | (cp & 0x3F));
}

/* ids 0..255 = bytes, 256 Ġt, 257 he, 258 Ġthe, 259 Ġcat (no merge), 260 ĠĠ, 261 <|endoftext|> */
static char *bytelevel_json(const char *pre, int ignore_merges) {
    char *v = malloc(256 * 24 + 1), *p = v;
    for (int b = 0; b < 256; b++) {
        char ch[4] = {0}, *q = ch;
        int cp = b2u(b);
        if (cp == '"' || cp == '\\') *q++ = '\\';
        put_utf8(&q, cp);
        p += sprintf(p, "%s\"%s\":%d", b ? "," : "", ch, b);
    }
    char *json;
    assert_true(
        asprintf(&json,
                 "{\"added_tokens\":[{\"id\":261,\"content\":\"<|endoftext|>\",\"special\":true}],"
                 "\"normalizer\":null,\"pre_tokenizer\":%s,"
                 "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true},"
                 "\"model\":{\"type\":\"BPE\",\"ignore_merges\":%s,\"vocab\":{%s,"
                 "\"\\u0120t\":256,\"he\":257,\"\\u0120the\":258,\"\\u0120cat\":259,"
                 "\"\\u0120\\u0120\":260},"
                 "\"merges\":[[\"\\u0120\",\"t\"],[\"h\",\"e\"],[\"\\u0120t\",\"he\"],"
                 "[\"\\u0120\",\"\\u0120\"]]}}",
                 pre, ignore_merges ? "true" : "false", v) > 0);
    free(v);
    return json;
}

static const char GPT2_PRE[] =
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}";

static void test_bytelevel_encode(void **state) {
    (void)state;
    char *json = bytelevel_json(GPT2_PRE, 0);
    struct as_tokenizer *t = load_text(json);
    free(json);
    assert_non_null(t);
    assert_int_equal(as_tokenizer_kind(t), AS_TOK_BYTELEVEL);
    CHECK(t, " the cat", 0, 258, ' ', 'c', 'a', 't');
    CHECK(t, "the<|endoftext|> the", 0, 't', 257, 261, 258);
    /* GPT-2 regex: \s+(?!\S) leaves the last space of a run to the next word: "a", "   ", " b" */
    CHECK(t, "a    b", 0, 'a', 260, ' ', ' ', 'b');
    /* every byte is a symbol: UTF-8 é = C3 A9 */
    CHECK(t, "\xc3\xa9", 0, 0xC3, 0xA9);
    assert_int_equal(as_tokenizer_bos(t), -1);
    assert_int_equal(as_tokenizer_eos(t), 261);
    /* round trip of arbitrary UTF-8 */
    const char *text =
        "na\xc3\xafve \xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac  x\t\n y<|endoftext|>";
    int32_t *ids;
    size_t n;
    assert_int_equal(as_tokenizer_encode(t, text, strlen(text), 0, &ids, &n), 0);
    char *s = decode_all(t, ids, n);
    assert_string_equal(s, "na\xc3\xafve \xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac  x\t\n y");
    free(s), free(ids);
    /* regex pre-tokenizers need valid UTF-8 */
    assert_int_equal(as_tokenizer_encode(t, "a\xff", 2, 0, &ids, &n), -1);
    assert_non_null(strstr(as_last_error(), "invalid UTF-8 at byte 1"));
    /* ill-formed per Unicode Table 3-7, each of which a lax lead-byte check lets through and
     * which crashed PCRE2's JIT (fuzz_tokenizer crash d2a567db): code point above U+10FFFF (F4 90,
     * F6), overlong (C0 80, E0 80 80, F0 80 80 80), surrogate (ED A0 80), truncated sequence */
    static const char *const ill_formed[] = {
        "ab\xf4\x90\x80\x80", "ab\xf6\x93\x8c\x9d", "ab\xc0\x80", "ab\xe0\x80\x80",
        "ab\xf0\x80\x80\x80", "ab\xed\xa0\x80",     "ab\xe2\x96",
    };
    for (size_t k = 0; k < sizeof ill_formed / sizeof *ill_formed; k++) {
        assert_int_equal(as_tokenizer_encode(t, ill_formed[k], strlen(ill_formed[k]), 0, &ids, &n),
                         -1);
        assert_non_null(strstr(as_last_error(), "invalid UTF-8 at byte 2"));
    }
    /* the largest code point and the last BMP character before the surrogates are well formed */
    assert_int_equal(as_tokenizer_encode(t, "\xf4\x8f\xbf\xbf\xed\x9f\xbf", 7, 0, &ids, &n), 0);
    free(ids);
    as_tokenizer_free(t);
}

static void test_bytelevel_variants(void **state) {
    (void)state;
    /* without the regex the run of spaces is one word: ĠĠ ĠĠ */
    char *json =
        bytelevel_json("{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":false}", 0);
    struct as_tokenizer *t = load_text(json);
    free(json);
    assert_non_null(t);
    CHECK(t, "a    b", 0, ' ', 'a', 260, 260, 'b');
    CHECK(t, " the", 0, 258); /* no second prefix space when one is there */
    /* every byte 1..255 maps to its own stand-in character (ids = byte values here); without a
     * regex the text need not be UTF-8 */
    char all[256];
    int32_t want[256];
    want[0] = ' ';
    for (int b = 1; b < 256; b++)
        all[b - 1] = (char)b, want[b] = b;
    all[255] = 0;
    check_ids(t, all, 0, want, 256);
    char *s = decode_all(t, want, 256);
    assert_int_equal(s[0], ' ');
    assert_string_equal(s + 1, all);
    free(s);
    as_tokenizer_free(t);
    /* ignore_merges: a pre-token found in the vocab maps directly */
    json = bytelevel_json(GPT2_PRE, 1);
    t = load_text(json);
    free(json);
    assert_non_null(t);
    CHECK(t, " the cat", 0, 258, 259);
    as_tokenizer_free(t);
    /* Llama-3 style: Split(regex, Isolated) then ByteLevel(use_regex = false); \p{N}{1,3} */
    json = bytelevel_json(
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
        "\"\\\\p{N}{1,3}|\\\\s+(?!\\\\S)|\\\\s+|[^\\\\s\\\\p{N}]+\"},\"behavior\":\"Isolated\","
        "\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]"
        "}",
        0);
    t = load_text(json);
    free(json);
    assert_non_null(t);
    CHECK(t, "12345  x", 0, '1', '2', '3', '4', '5', ' ', ' ', 'x');
    CHECK(t, "    ", 0, 260, 260);
    as_tokenizer_free(t);
}

static void test_directory_and_config(void **state) {
    (void)state;
    char *json = bytelevel_json(GPT2_PRE, 0);
    char *p = write_file("tokenizer.json", json);
    free(json), free(p);
    p = write_file("tokenizer_config.json",
                   "{\"bos_token\":{\"content\":\"<|endoftext|>\"},\"eos_token\":\"he\"}");
    struct as_tokenizer *t = as_tokenizer_load(tmpdir);
    assert_non_null(t);
    assert_int_equal(as_tokenizer_bos(t), 261);
    assert_int_equal(as_tokenizer_eos(t), 257);
    CHECK(t, "the", 1, 261, 't', 257);
    as_tokenizer_free(t);
    unlink(p);
    free(p);
}

/* ---- bad input ---------------------------------------------------------------------------- */

/* Loading must fail with one line that names the file and contains `want`. */
static void expect_load_error(const char *json, const char *want) {
    char *p = write_file("bad.json", json);
    as_clear_error();
    struct as_tokenizer *t = as_tokenizer_load(p);
    const char *e = as_last_error();
    if (t || !strstr(e, want)) fprintf(stderr, "# want '%s', got '%s'\n", want, e);
    assert_null(t);
    assert_non_null(strstr(e, p));
    assert_non_null(strstr(e, want));
    assert_null(strchr(e, '\n'));
    free(p);
}

static void test_bad_files(void **state) {
    (void)state;
    as_clear_error();
    assert_null(as_tokenizer_load("/nonexistent/tokenizer.json"));
    assert_non_null(strstr(as_last_error(), "/nonexistent/tokenizer.json: cannot open"));
    expect_load_error("{\"model\": {\"type\": \"BPE\",", "invalid JSON at line 1");
    expect_load_error("[1, 2]", "top level is not a JSON object");
    expect_load_error("{}", "no \"model\" object");
    expect_load_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}",
                      "unsupported tokenizer model type 'WordPiece'");
    expect_load_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}",
                      "unsupported tokenizer model type 'Unigram'");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":{}}}",
                      "model.merges missing or not an array");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}",
                      "model.vocab['a']: id must be an integer");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"0\"},\"merges\":[]}}",
                      "model.vocab['a']: id must be an integer");
    const char *v = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":";
    char *j;
    struct {
        const char *merges, *want;
    } bad_merges[] = {
        {"[\"ab\"]", "merges[0]: 'ab' is not two tokens separated by one space"},
        {"[\"a b\", \"a b c\"]", "merges[1]: 'a b c' is not two tokens"},
        {"[[1, 2]]", "merges[0]: must be a string \"a b\" or a pair"},
        {"[[\"a\"]]", "merges[0]: must be a string"},
        {"[\"a c\"]", "merges[0]: token 'c' not in vocab"},
        {"[\"b a\"]", "merges[0]: token 'ba' not in vocab"},
    };
    for (size_t i = 0; i < sizeof bad_merges / sizeof bad_merges[0]; i++) {
        assert_true(asprintf(&j, "%s%s}}", v, bad_merges[i].merges) > 0);
        expect_load_error(j, bad_merges[i].want);
        free(j);
    }
    struct {
        const char *extra, *want;
    } bad_parts[] = {
        {"\"pre_tokenizer\":{\"type\":\"Whitespace\"}", "unsupported pre_tokenizer 'Whitespace'"},
        {"\"normalizer\":{\"type\":\"Lowercase\"}", "unsupported normalizer 'Lowercase'"},
        {"\"decoder\":{\"type\":\"WordPiece\"}", "unsupported decoder 'WordPiece'"},
        {"\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":"
         "\"Removed\"}",
         "Split: unsupported behavior 'Removed'"},
        {"\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},\"behavior\":"
         "\"Isolated\"}",
         "pre_tokenizer Split: bad regex at offset"},
        {"\"added_tokens\":[{\"id\":\"x\",\"content\":\"<s>\"}]", "added_tokens[0]: needs"},
        /* resource exhaustion (fuzz_tokenizer timeout 3f6e605b): a second ByteLevel doubles the
         * text per step */
        {"\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
         "\"ByteLevel\"},{\"type\":\"ByteLevel\"}]}",
         "pre_tokenizer: more than one ByteLevel step"},
    };
    for (size_t i = 0; i < sizeof bad_parts / sizeof bad_parts[0]; i++) {
        assert_true(asprintf(&j, "{%s,%s[\"a b\"]}}", bad_parts[i].extra, v + 1) > 0);
        expect_load_error(j, bad_parts[i].want);
        free(j);
    }
    /* Replace chains: "a" -> "aa" twenty times would make 2^20 a's of each; refused at encode
     * once the text grows past 64x (step 7: 199 * 2^7 > 64 * 199 + 4096); two steps (4x) are fine
     */
    char norm[4096], *q = norm;
    q += sprintf(q, "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[");
    for (int k = 0; k < 20; k++)
        q += sprintf(q,
                     "%s{\"type\":\"Replace\",\"pattern\":{\"String\":\"a\"},\"content\":"
                     "\"aa\"}",
                     k ? "," : "");
    sprintf(q, "]},%s[\"a b\"]}}", v + 1);
    struct as_tokenizer *t = load_text(norm);
    assert_non_null(t);
    int32_t *ids;
    size_t n;
    char text[200];
    memset(text, 'a', sizeof text - 1), text[sizeof text - 1] = 0;
    assert_int_equal(as_tokenizer_encode(t, text, strlen(text), 0, &ids, &n), -1);
    assert_non_null(strstr(
        as_last_error(), "tokenizer.json: normalizer step 7 expands the text more than 64 times"));
    as_tokenizer_free(t);
    /* more than 32 steps */
    q = norm + sprintf(norm, "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[");
    for (int k = 0; k < 33; k++)
        q += sprintf(q, "%s{\"type\":\"Prepend\",\"prepend\":\"a\"}", k ? "," : "");
    sprintf(q, "]},%s[\"a b\"]}}", v + 1);
    expect_load_error(norm, "normalizer: more than 32 steps");
}

static int group_setup(void **state) {
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- CLI for the bats comparisons ----------------------------------------------------------- */

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)sz + 1);
    *n = fread(s, 1, (size_t)sz, f);
    s[*n] = 0;
    fclose(f);
    return s;
}

static int cli(int argc, char **argv) {
    as_set_progname("test_tokenizer");
    if (argc < 4) as_die("usage: test_tokenizer encode|roundtrip|decode TOKENIZER.json FILE");
    struct as_tokenizer *t = as_tokenizer_load(argv[2]);
    if (!t) as_die_last();
    size_t len;
    char *text = slurp(argv[3], &len);
    if (!text) as_die("%s: cannot read", argv[3]);
    if (!strcmp(argv[1], "decode")) {
        size_t n = 0, cap = 1024, dn;
        int32_t *ids = malloc(cap * sizeof *ids);
        char *p = text, *end;
        for (long v; (v = strtol(p, &end, 10)), end != p; p = end) {
            if (n == cap) ids = realloc(ids, (cap *= 2) * sizeof *ids);
            ids[n++] = (int32_t)v;
        }
        char *s = as_tokenizer_decode(t, ids, n, &dn);
        if (!s) as_die_last();
        fwrite(s, 1, dn, stdout);
        free(s), free(ids), free(text);
        as_tokenizer_free(t);
        return 0;
    }
    int bos = argc > 4 && !strcmp(argv[4], "--bos");
    int32_t *ids;
    size_t n;
    if (as_tokenizer_encode(t, text, len, bos, &ids, &n)) as_die_last();
    int rc = 0;
    if (!strcmp(argv[1], "encode")) {
        for (size_t i = 0; i < n; i++)
            printf("%d\n", ids[i]);
    } else {
        size_t dn;
        char *back = as_tokenizer_decode(t, ids, n, &dn);
        if (!back) as_die_last();
        size_t i = 0;
        while (i < dn && i < len && back[i] == text[i])
            i++;
        if (dn != len || i < len) {
            fprintf(stderr, "roundtrip differs at byte %zu (lengths %zu vs %zu)\n", i, dn, len);
            rc = 1;
        }
        free(back);
    }
    free(ids), free(text);
    as_tokenizer_free(t);
    return rc;
}

int main(int argc, char **argv) {
    if (argc > 1) return cli(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_encode),           cmocka_unit_test(test_spm_pair_merges_same),
        cmocka_unit_test(test_spm_decode),           cmocka_unit_test(test_spm_metaspace),
        cmocka_unit_test(test_bytelevel_encode),     cmocka_unit_test(test_bytelevel_variants),
        cmocka_unit_test(test_directory_and_config), cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
