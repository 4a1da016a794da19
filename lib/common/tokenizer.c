/* tokenizer: BPE tokenizers from Hugging Face tokenizer.json (SentencePiece-style and byte-level).
 *
 * Pipeline per encode (as the HF tokenizers library): split the input on added tokens (matched
 * verbatim, leftmost-longest) -> normalize each remaining segment (Prepend, Replace) ->
 * pre-tokenize (Metaspace, Split regex, Digits, ByteLevel) -> BPE on each pre-token -> ids.
 * BPE keeps the symbols of a pre-token in a linked list and candidate pairs in a binary heap keyed
 * (rank, position of the left symbol): O(n log n), so a 1 MB text without pre-tokenization (the
 * SentencePiece case) is one word and still fast. See docs/tokenizers.md for the rank rule. */
#include "tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "as_error.h"

#define TOK_MAX_ID (1 << 24)      /* ids above this are taken as a corrupt file, not a vocabulary */
#define META_SPACE "\xe2\x96\x81" /* U+2581 '▁', SentencePiece's visible space */

/* GPT-2's pre-tokenizer regex (ByteLevel with use_regex = true). */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ------------------------------------------------------------------------------------------ */
/* string -> id hash map (open addressing, linear probing, owns its keys) */

struct strmap {
    size_t cap, n; /* cap is a power of two, or 0 */
    char **key;
    uint32_t *klen;
    int32_t *val;
};

static uint64_t str_hash(const char *s, size_t n) {
    return XXH3_64bits(s, n);
}

static void strmap_grow(struct strmap *m) {
    size_t ncap = m->cap ? m->cap * 2 : 64;
    char **key = as_xcalloc(ncap, sizeof *key);
    uint32_t *klen = as_xcalloc(ncap, sizeof *klen);
    int32_t *val = as_xcalloc(ncap, sizeof *val);
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->key[i]) continue;
        size_t h = str_hash(m->key[i], m->klen[i]) & (ncap - 1);
        while (key[h])
            h = (h + 1) & (ncap - 1);
        key[h] = m->key[i], klen[h] = m->klen[i], val[h] = m->val[i];
    }
    free(m->key), free(m->klen), free(m->val);
    m->key = key, m->klen = klen, m->val = val, m->cap = ncap;
}

static int32_t strmap_get(const struct strmap *m, const char *s, size_t n) {
    if (!m->cap) return -1;
    size_t h = str_hash(s, n) & (m->cap - 1);
    while (m->key[h]) {
        if (m->klen[h] == n && memcmp(m->key[h], s, n) == 0) return m->val[h];
        h = (h + 1) & (m->cap - 1);
    }
    return -1;
}

/* Insert; keeps an existing entry (first one wins). Returns 1 if inserted. */
static int strmap_put(struct strmap *m, const char *s, size_t n, int32_t id) {
    if ((m->n + 1) * 2 > m->cap) strmap_grow(m);
    size_t h = str_hash(s, n) & (m->cap - 1);
    while (m->key[h]) {
        if (m->klen[h] == n && memcmp(m->key[h], s, n) == 0) return 0;
        h = (h + 1) & (m->cap - 1);
    }
    m->key[h] = as_xmalloc(n + 1);
    memcpy(m->key[h], s, n);
    m->key[h][n] = 0;
    m->klen[h] = (uint32_t)n, m->val[h] = id, m->n++;
    return 1;
}

static void strmap_free(struct strmap *m) {
    for (size_t i = 0; i < m->cap; i++)
        free(m->key[i]);
    free(m->key), free(m->klen), free(m->val);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------------------------------ */
/* (left id, right id) -> (rank, result id) hash map */

struct pairmap {
    size_t cap, n;
    uint64_t *key; /* UINT64_MAX = empty */
    int32_t *rank, *result;
};

static uint64_t pair_key(int32_t a, int32_t b) {
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}
static size_t pair_slot(uint64_t k, size_t cap) {
    return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static void pairmap_grow(struct pairmap *m) {
    size_t ncap = m->cap ? m->cap * 2 : 256;
    uint64_t *key = as_xmalloc(ncap * sizeof *key);
    int32_t *rank = as_xmalloc(ncap * sizeof *rank), *result = as_xmalloc(ncap * sizeof *result);
    memset(key, 0xff, ncap * sizeof *key);
    for (size_t i = 0; i < m->cap; i++) {
        if (m->key[i] == UINT64_MAX) continue;
        size_t h = pair_slot(m->key[i], ncap);
        while (key[h] != UINT64_MAX)
            h = (h + 1) & (ncap - 1);
        key[h] = m->key[i], rank[h] = m->rank[i], result[h] = m->result[i];
    }
    free(m->key), free(m->rank), free(m->result);
    m->key = key, m->rank = rank, m->result = result, m->cap = ncap;
}

/* Returns the slot of (a, b) or -1. */
static long pairmap_find(const struct pairmap *m, int32_t a, int32_t b) {
    if (!m->cap) return -1;
    uint64_t k = pair_key(a, b);
    size_t h = pair_slot(k, m->cap);
    while (m->key[h] != UINT64_MAX) {
        if (m->key[h] == k) return (long)h;
        h = (h + 1) & (m->cap - 1);
    }
    return -1;
}

static void pairmap_put(struct pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t result) {
    if ((m->n + 1) * 2 > m->cap) pairmap_grow(m);
    uint64_t k = pair_key(a, b);
    size_t h = pair_slot(k, m->cap);
    while (m->key[h] != UINT64_MAX) {
        if (m->key[h] == k) return; /* duplicate merge: the first (lowest rank) wins, as HF */
        h = (h + 1) & (m->cap - 1);
    }
    m->key[h] = k, m->rank[h] = rank, m->result[h] = result, m->n++;
}

/* ------------------------------------------------------------------------------------------ */
/* tokenizer state */

enum { NORM_PREPEND, NORM_REPLACE };
struct norm_step {
    int type;
    char *a, *b; /* PREPEND: a; REPLACE: a -> b */
    size_t alen, blen;
};

enum { PRE_METASPACE, PRE_SPLIT, PRE_BYTELEVEL };
enum { SCHEME_ALWAYS, SCHEME_FIRST, SCHEME_NEVER };
struct pre_step {
    int type;
    pcre2_code *re;       /* SPLIT pattern; BYTELEVEL GPT-2 pattern when use_regex */
    int add_prefix_space; /* BYTELEVEL */
    int scheme, split;    /* METASPACE */
    char repl[8];         /* METASPACE replacement (one UTF-8 char) */
    size_t repl_len;
};

struct added_tok {
    char *s;
    size_t len;
    int32_t id;
    int special;
};

struct dec_replace {
    char *from, *to;
    size_t flen, tlen;
};

struct as_tokenizer {
    char *path;
    enum as_tok_kind kind;
    int32_t n_ids;   /* max id + 1 */
    char **piece;    /* [n_ids] model text of each id (NULL for holes) */
    uint32_t *plen;  /* [n_ids] */
    uint8_t *flags;  /* [n_ids] TF_* */
    int16_t *byteof; /* [n_ids] byte value of a <0xXX> token, else -1 */
    struct strmap vocab, added_map;
    struct pairmap merges;
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t unk, bos, eos;
    int add_bos;          /* the model's own BOS rule (as_tokenizer_add_bos) */
    int32_t byte_id[256]; /* id of "<0xXX>" or -1 */
    struct norm_step *norm;
    int n_norm;
    struct pre_step *pre;
    int n_pre;
    struct added_tok *added;
    int n_added;
    int *added_by_byte[256]; /* indices into added[], longest first, -1 terminated */
    /* decoder */
    int dec_bytelevel, dec_byte_fallback, dec_strip_first;
    struct dec_replace *dec_rep;
    int n_dec_rep;
    /* GPT-2 bytes_to_unicode: byte -> UTF-8 of its printable stand-in, and back */
    char b2u[256][3];
    uint8_t b2u_len[256];
    int16_t u2b[324];
};

enum { TF_ADDED = 1, TF_SPECIAL = 2 };

/* GPT-2 bytes_to_unicode(): printable bytes map to themselves, the others to U+0100 + n in byte
 * order, so every byte has a visible, non-space stand-in character. */
static void init_byte_map(struct as_tokenizer *t) {
    int n = 0;
    for (int i = 0; i < 324; i++)
        t->u2b[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int cp = printable ? b : 256 + n++;
        t->u2b[cp] = (int16_t)b;
        if (cp < 0x80) {
            t->b2u[b][0] = (char)cp, t->b2u_len[b] = 1;
        } else {
            t->b2u[b][0] = (char)(0xC0 | (cp >> 6)), t->b2u[b][1] = (char)(0x80 | (cp & 0x3F));
            t->b2u_len[b] = 2;
        }
    }
}

/* Length of the UTF-8 character at s (1 for an invalid or truncated sequence). */
static size_t utf8_len(const char *s, size_t n) {
    unsigned char c = (unsigned char)s[0];
    size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (l > n) return 1;
    for (size_t i = 1; i < l; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) return 1;
    return l;
}

/* Decode one UTF-8 character (valid input assumed; invalid byte -> its value). */
static uint32_t utf8_cp(const char *s, size_t n, size_t *len) {
    size_t l = utf8_len(s, n);
    const unsigned char *u = (const unsigned char *)s;
    *len = l;
    switch (l) {
    case 2:
        return (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F);
    case 3:
        return (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F);
    case 4:
        return (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 |
               (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
    default:
        return u[0];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* loading */

void as_tokenizer_free(struct as_tokenizer *t) {
    if (!t) return;
    for (int32_t i = 0; i < t->n_ids; i++)
        free(t->piece[i]);
    free(t->piece), free(t->plen), free(t->flags), free(t->byteof);
    strmap_free(&t->vocab), strmap_free(&t->added_map);
    free(t->merges.key), free(t->merges.rank), free(t->merges.result);
    for (int i = 0; i < t->n_norm; i++)
        free(t->norm[i].a), free(t->norm[i].b);
    free(t->norm);
    for (int i = 0; i < t->n_pre; i++)
        pcre2_code_free(t->pre[i].re);
    free(t->pre);
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].s);
    free(t->added);
    for (int b = 0; b < 256; b++)
        free(t->added_by_byte[b]);
    for (int i = 0; i < t->n_dec_rep; i++)
        free(t->dec_rep[i].from), free(t->dec_rep[i].to);
    free(t->dec_rep);
    free(t->path);
    free(t);
}

static const char *jstr(const json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key));
}

/* Make room for ids up to id (vocab and added tokens share the id space). */
static void ensure_ids(struct as_tokenizer *t, int32_t id) {
    if (id < t->n_ids) return;
    int32_t n = id + 1;
    t->piece = as_xrealloc(t->piece, (size_t)n * sizeof *t->piece);
    t->plen = as_xrealloc(t->plen, (size_t)n * sizeof *t->plen);
    t->flags = as_xrealloc(t->flags, (size_t)n);
    for (int32_t i = t->n_ids; i < n; i++)
        t->piece[i] = NULL, t->plen[i] = 0, t->flags[i] = 0;
    t->n_ids = n;
}

static void set_piece(struct as_tokenizer *t, int32_t id, const char *s, size_t n) {
    ensure_ids(t, id);
    if (t->piece[id]) return; /* two strings for one id: keep the first */
    t->piece[id] = as_xmalloc(n + 1);
    memcpy(t->piece[id], s, n);
    t->piece[id][n] = 0;
    t->plen[id] = (uint32_t)n;
}

static int get_id(const json_t *v, int32_t *id) {
    if (!json_is_integer(v)) return -1;
    json_int_t x = json_integer_value(v);
    if (x < 0 || x >= TOK_MAX_ID) return -1;
    *id = (int32_t)x;
    return 0;
}

static pcre2_code *compile_regex(const char *pat, size_t len, uint32_t extra, const char *what) {
    int err;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP | extra, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        as_fail("%s: bad regex at offset %zu: %s", what, (size_t)off, (char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up; falls back to interpreter */
    return re;
}

static int load_normalizer(struct as_tokenizer *t, const json_t *n) {
    if (!n || json_is_null(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return as_fail("normalizer: missing type");
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list)) return as_fail("normalizer: Sequence without normalizers[]");
        for (size_t i = 0; i < json_array_size(list); i++)
            if (load_normalizer(t, json_array_get(list, i))) return -1;
        return 0;
    }
    if (!strcmp(type, "NFC")) return 0; /* input taken as already NFC (docs/tokenizers.md) */
    struct norm_step s = {0};
    if (!strcmp(type, "Prepend")) {
        const json_t *p = json_object_get(n, "prepend");
        if (!json_is_string(p)) return as_fail("normalizer: Prepend without prepend string");
        s.type = NORM_PREPEND;
        s.alen = json_string_length(p);
        s.a = as_xstrdup(json_string_value(p));
    } else if (!strcmp(type, "Replace")) {
        const json_t *pat = json_object_get(json_object_get(n, "pattern"), "String");
        const json_t *c = json_object_get(n, "content");
        if (!json_is_string(pat) || !json_is_string(c) || json_string_length(pat) == 0)
            return as_fail("normalizer: Replace: only a non-empty String pattern is supported");
        s.type = NORM_REPLACE;
        s.alen = json_string_length(pat), s.a = as_xstrdup(json_string_value(pat));
        s.blen = json_string_length(c), s.b = as_xstrdup(json_string_value(c));
    } else {
        return as_fail("unsupported normalizer '%s'", type);
    }
    if (t->n_norm >= 32) {
        free(s.a), free(s.b);
        return as_fail("normalizer: more than 32 steps");
    }
    t->norm = as_xrealloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *t->norm);
    t->norm[t->n_norm++] = s;
    return 0;
}

static int load_pretokenizer(struct as_tokenizer *t, const json_t *p) {
    if (!p || json_is_null(p)) return 0;
    const char *type = jstr(p, "type");
    if (!type) return as_fail("pre_tokenizer: missing type");
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list)) return as_fail("pre_tokenizer: Sequence without pretokenizers[]");
        for (size_t i = 0; i < json_array_size(list); i++)
            if (load_pretokenizer(t, json_array_get(list, i))) return -1;
        return 0;
    }
    struct pre_step s = {0};
    if (!strcmp(type, "Metaspace")) {
        const json_t *r = json_object_get(p, "replacement");
        const char *rs = json_string_value(r);
        if (!rs || json_string_length(r) == 0 || json_string_length(r) >= sizeof s.repl)
            return as_fail("pre_tokenizer: Metaspace: bad replacement");
        s.type = PRE_METASPACE;
        memcpy(s.repl, rs, json_string_length(r));
        s.repl_len = json_string_length(r);
        const char *scheme = jstr(p, "prepend_scheme");
        const json_t *aps = json_object_get(p, "add_prefix_space");
        if (scheme) {
            if (!strcmp(scheme, "always"))
                s.scheme = SCHEME_ALWAYS;
            else if (!strcmp(scheme, "first"))
                s.scheme = SCHEME_FIRST;
            else if (!strcmp(scheme, "never"))
                s.scheme = SCHEME_NEVER;
            else
                return as_fail("pre_tokenizer: Metaspace: unknown prepend_scheme '%s'", scheme);
        } else {
            s.scheme = (!aps || json_is_true(aps)) ? SCHEME_ALWAYS : SCHEME_NEVER;
        }
        const json_t *split = json_object_get(p, "split");
        s.split = split ? json_is_true(split) : 1; /* HF default: split = true */
    } else if (!strcmp(type, "ByteLevel")) {
        /* A second ByteLevel would re-encode the first one's stand-in characters (two bytes
         * each): the text doubles per step, so a hostile file with 20 of them makes a megabyte
         * of every word (found by fuzz_tokenizer). No real tokenizer has two. */
        for (int i = 0; i < t->n_pre; i++)
            if (t->pre[i].type == PRE_BYTELEVEL)
                return as_fail("pre_tokenizer: more than one ByteLevel step");
        s.type = PRE_BYTELEVEL;
        s.add_prefix_space = json_is_true(json_object_get(p, "add_prefix_space"));
        const json_t *ur = json_object_get(p, "use_regex");
        if (!ur || json_is_true(ur)) {
            s.re = compile_regex(GPT2_PATTERN, PCRE2_ZERO_TERMINATED, 0, "pre_tokenizer ByteLevel");
            if (!s.re) return -1;
        }
        t->kind = AS_TOK_BYTELEVEL;
    } else if (!strcmp(type, "Digits")) {
        /* HF Digits: numeric characters (Rust char::is_numeric, general category N) split off
         * as Isolated pieces, one per digit or one per run; \p{N} is the same category */
        const json_t *ind = json_object_get(p, "individual_digits");
        if (ind && !json_is_boolean(ind))
            return as_fail("pre_tokenizer: Digits: individual_digits must be true or false");
        s.type = PRE_SPLIT;
        s.re = compile_regex(json_is_true(ind) ? "\\p{N}" : "\\p{N}+", PCRE2_ZERO_TERMINATED, 0,
                             "pre_tokenizer Digits");
        if (!s.re) return -1;
    } else if (!strcmp(type, "Split")) {
        const json_t *pat = json_object_get(p, "pattern");
        const json_t *rx = json_object_get(pat, "Regex"), *str = json_object_get(pat, "String");
        const char *beh = jstr(p, "behavior");
        if (!beh || strcmp(beh, "Isolated"))
            return as_fail("pre_tokenizer: Split: unsupported behavior '%s' (only Isolated)",
                           beh ? beh : "(none)");
        if (json_is_true(json_object_get(p, "invert")))
            return as_fail("pre_tokenizer: Split: invert = true is not supported");
        s.type = PRE_SPLIT;
        if (json_is_string(rx))
            s.re = compile_regex(json_string_value(rx), json_string_length(rx), 0,
                                 "pre_tokenizer Split");
        else if (json_is_string(str))
            s.re = compile_regex(json_string_value(str), json_string_length(str), PCRE2_LITERAL,
                                 "pre_tokenizer Split");
        else
            return as_fail("pre_tokenizer: Split: pattern must be {\"Regex\": ...} or "
                           "{\"String\": ...}");
        if (!s.re) return -1;
    } else {
        return as_fail("unsupported pre_tokenizer '%s'", type);
    }
    if (t->n_pre >= 32) {
        if (s.re) pcre2_code_free(s.re);
        return as_fail("pre_tokenizer: more than 32 steps");
    }
    t->pre = as_xrealloc(t->pre, (size_t)(t->n_pre + 1) * sizeof *t->pre);
    t->pre[t->n_pre++] = s;
    return 0;
}

static int load_decoder(struct as_tokenizer *t, const json_t *d) {
    if (!d || json_is_null(d)) return 0;
    const char *type = jstr(d, "type");
    if (!type) return as_fail("decoder: missing type");
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(d, "decoders");
        if (!json_is_array(list)) return as_fail("decoder: Sequence without decoders[]");
        for (size_t i = 0; i < json_array_size(list); i++)
            if (load_decoder(t, json_array_get(list, i))) return -1;
    } else if (!strcmp(type, "ByteLevel")) {
        t->dec_bytelevel = 1;
    } else if (!strcmp(type, "ByteFallback")) {
        t->dec_byte_fallback = 1;
    } else if (!strcmp(type, "Fuse")) {
        /* joining pieces is what streaming decode does anyway */
    } else if (!strcmp(type, "Strip")) {
        const char *c = jstr(d, "content");
        json_int_t start = json_integer_value(json_object_get(d, "start"));
        json_int_t stop = json_integer_value(json_object_get(d, "stop"));
        if (!c || strcmp(c, " ") || start > 1 || stop != 0)
            return as_fail("decoder: Strip: only content ' ', start <= 1, stop 0 is supported");
        t->dec_strip_first = start == 1;
    } else if (!strcmp(type, "Replace") || !strcmp(type, "Metaspace")) {
        struct dec_replace r;
        if (!strcmp(type, "Replace")) {
            const json_t *pat = json_object_get(json_object_get(d, "pattern"), "String");
            const json_t *c = json_object_get(d, "content");
            if (!json_is_string(pat) || !json_is_string(c) || json_string_length(pat) == 0)
                return as_fail("decoder: Replace: only a non-empty String pattern is supported");
            r.flen = json_string_length(pat), r.from = as_xstrdup(json_string_value(pat));
            r.tlen = json_string_length(c), r.to = as_xstrdup(json_string_value(c));
        } else {
            const json_t *rep = json_object_get(d, "replacement");
            if (!json_is_string(rep) || json_string_length(rep) == 0)
                return as_fail("decoder: Metaspace: bad replacement");
            r.flen = json_string_length(rep), r.from = as_xstrdup(json_string_value(rep));
            r.tlen = 1, r.to = as_xstrdup(" ");
            const char *scheme = jstr(d, "prepend_scheme");
            const json_t *aps = json_object_get(d, "add_prefix_space");
            t->dec_strip_first =
                scheme ? strcmp(scheme, "never") != 0 : (!aps || json_is_true(aps));
        }
        t->dec_rep = as_xrealloc(t->dec_rep, (size_t)(t->n_dec_rep + 1) * sizeof *t->dec_rep);
        t->dec_rep[t->n_dec_rep++] = r;
    } else {
        return as_fail("unsupported decoder '%s'", type);
    }
    return 0;
}

static int load_merges(struct as_tokenizer *t, const json_t *merges) {
    size_t n = json_array_size(merges);
    /* rank of a merge = index of the first merge producing the same result token, so every split
     * of one token shares a rank and ties go leftmost: llama2.c / SentencePiece "merge the pair
     * whose result scores highest". Byte-level files use HF's rank = merge index. */
    int32_t *result_rank = NULL;
    if (t->kind == AS_TOK_SPM) {
        result_rank = as_xmalloc((size_t)t->n_ids * sizeof *result_rank);
        for (int32_t i = 0; i < t->n_ids; i++)
            result_rank[i] = INT32_MAX;
    }
    if (n > INT32_MAX / 2) n = INT32_MAX / 2;
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(merges, i);
        const char *a, *b;
        size_t alen, blen;
        if (json_is_string(m)) {
            a = json_string_value(m);
            const char *sp = memchr(a, ' ', json_string_length(m));
            if (!sp || memchr(sp + 1, ' ', json_string_length(m) - (size_t)(sp + 1 - a))) {
                free(result_rank);
                return as_fail("merges[%zu]: '%s' is not two tokens separated by one space", i, a);
            }
            alen = (size_t)(sp - a), b = sp + 1, blen = json_string_length(m) - alen - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            alen = json_string_length(json_array_get(m, 0));
            blen = json_string_length(json_array_get(m, 1));
        } else {
            free(result_rank);
            return as_fail("merges[%zu]: must be a string \"a b\" or a pair [\"a\", \"b\"]", i);
        }
        int32_t ia = strmap_get(&t->vocab, a, alen), ib = strmap_get(&t->vocab, b, blen);
        char *ab = as_xmalloc(alen + blen + 1);
        memcpy(ab, a, alen), memcpy(ab + alen, b, blen);
        int32_t ir = strmap_get(&t->vocab, ab, alen + blen);
        if (ia < 0 || ib < 0 || ir < 0) {
            const char *miss = ia < 0 ? a : ib < 0 ? b : ab;
            size_t mlen = ia < 0 ? alen : ib < 0 ? blen : alen + blen;
            as_fail("merges[%zu]: token '%.*s' not in vocab", i, (int)mlen, miss);
            free(ab), free(result_rank);
            return -1;
        }
        free(ab);
        int32_t rank = (int32_t)i;
        if (result_rank) {
            if (result_rank[ir] == INT32_MAX) result_rank[ir] = (int32_t)i;
            rank = result_rank[ir];
        }
        pairmap_put(&t->merges, ia, ib, rank, ir);
    }
    free(result_rank);
    return 0;
}

static int cmp_added_len(const void *x, const void *y, void *ctx) {
    const struct added_tok *a = ctx;
    size_t lx = a[*(const int *)x].len, ly = a[*(const int *)y].len;
    return lx > ly ? -1 : lx < ly ? 1 : *(const int *)x - *(const int *)y;
}

static int load_added(struct as_tokenizer *t, const json_t *list) {
    if (!list || json_is_null(list)) return 0;
    if (!json_is_array(list)) return as_fail("added_tokens: not an array");
    size_t n = json_array_size(list);
    t->added = as_xcalloc(n ? n : 1, sizeof *t->added);
    for (size_t i = 0; i < n; i++) {
        const json_t *a = json_array_get(list, i);
        const json_t *c = json_object_get(a, "content");
        int32_t id;
        if (!json_is_string(c) || json_string_length(c) == 0 ||
            get_id(json_object_get(a, "id"), &id))
            return as_fail("added_tokens[%zu]: needs a non-empty content and an id in [0, %d)", i,
                           TOK_MAX_ID);
        struct added_tok *at = &t->added[t->n_added++];
        at->len = json_string_length(c);
        at->s = as_xmalloc(at->len + 1);
        memcpy(at->s, json_string_value(c), at->len + 1);
        at->id = id;
        at->special = json_is_true(json_object_get(a, "special"));
        set_piece(t, id, at->s, at->len);
        t->flags[id] |= TF_ADDED | (at->special ? TF_SPECIAL : 0);
        strmap_put(&t->added_map, at->s, at->len, id);
    }
    /* index by first byte, longest first: leftmost-longest matching as HF's aho-corasick */
    for (int b = 0; b < 256; b++) {
        int cnt = 0;
        for (int i = 0; i < t->n_added; i++)
            cnt += (unsigned char)t->added[i].s[0] == b;
        if (!cnt) continue;
        int *idx = as_xmalloc((size_t)(cnt + 1) * sizeof *idx);
        cnt = 0;
        for (int i = 0; i < t->n_added; i++)
            if ((unsigned char)t->added[i].s[0] == b) idx[cnt++] = i;
        qsort_r(idx, (size_t)cnt, sizeof *idx, cmp_added_len, t->added);
        idx[cnt] = -1;
        t->added_by_byte[b] = idx;
    }
    return 0;
}

static int32_t lookup_any(const struct as_tokenizer *t, const char *s) {
    int32_t id = strmap_get(&t->added_map, s, strlen(s));
    return id >= 0 ? id : strmap_get(&t->vocab, s, strlen(s));
}

/* Token named by a config value: "text" or {"content": "text"}; -2 if absent, -1 if null. */
static int32_t config_token(const struct as_tokenizer *t, const json_t *cfg, const char *key) {
    const json_t *v = json_object_get(cfg, key);
    if (!v) return -2;
    if (json_is_null(v)) return -1;
    const char *s = json_is_string(v) ? json_string_value(v) : jstr(v, "content");
    return s ? lookup_any(t, s) : -2;
}

/* BOS/EOS: tokenizer_config.json next to the file, else the post-processor template's leading
 * special token (BOS), else conventional names. */
static void find_bos_eos(struct as_tokenizer *t, const json_t *root) {
    t->bos = t->eos = -2;
    char *dir = as_xstrdup(t->path), *slash = strrchr(dir, '/');
    char *cfgpath;
    if (slash) slash[1] = 0;
    if (asprintf(&cfgpath, "%stokenizer_config.json", slash ? dir : "") < 0) cfgpath = NULL;
    free(dir);
    json_t *cfg = cfgpath ? json_load_file(cfgpath, 0, NULL) : NULL;
    free(cfgpath);
    t->add_bos = -1;
    if (cfg) {
        t->bos = config_token(t, cfg, "bos_token");
        t->eos = config_token(t, cfg, "eos_token");
        const json_t *ab = json_object_get(cfg, "add_bos_token");
        if (json_is_boolean(ab)) t->add_bos = json_is_true(ab);
        json_decref(cfg);
    }
    if (t->bos == -2) { /* TemplateProcessing "single": [SpecialToken BOS, Sequence A, ...] */
        const json_t *pp = json_object_get(root, "post_processor");
        const json_t *procs = json_object_get(pp, "processors"); /* a Sequence of processors */
        size_t np = json_is_array(procs) ? json_array_size(procs) : 1;
        for (size_t i = 0; i < np && t->bos == -2; i++) {
            const json_t *p = json_is_array(procs) ? json_array_get(procs, i) : pp;
            const json_t *single = json_object_get(p, "single");
            const json_t *first = json_object_get(json_array_get(single, 0), "SpecialToken");
            if (jstr(first, "id")) t->bos = lookup_any(t, jstr(first, "id"));
        }
    }
    if (t->add_bos < 0) { /* HF adds BOS through the post-processor's template */
        const json_t *pp = json_object_get(root, "post_processor");
        const json_t *procs = json_object_get(pp, "processors");
        size_t np = json_is_array(procs) ? json_array_size(procs) : 1;
        for (size_t i = 0; i < np && t->add_bos < 0; i++) {
            const json_t *p = json_is_array(procs) ? json_array_get(procs, i) : pp;
            const json_t *single = json_object_get(p, "single");
            if (json_is_array(single))
                t->add_bos = json_object_get(json_array_get(single, 0), "SpecialToken") != NULL;
        }
    }
    static const char *bos_names[] = {"<s>", "<|begin_of_text|>", "<|startoftext|>", NULL};
    static const char *eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", NULL};
    for (int i = 0; t->bos == -2 && bos_names[i]; i++)
        if (lookup_any(t, bos_names[i]) >= 0) t->bos = lookup_any(t, bos_names[i]);
    for (int i = 0; t->eos == -2 && eos_names[i]; i++)
        if (lookup_any(t, eos_names[i]) >= 0) t->eos = lookup_any(t, eos_names[i]);
    if (t->bos < 0) t->bos = -1;
    if (t->eos < 0) t->eos = -1;
    /* neither says: SentencePiece (Llama-2) tokenizers add BOS, byte-level ones do not */
    if (t->add_bos < 0) t->add_bos = t->kind == AS_TOK_SPM;
}

static int load_model(struct as_tokenizer *t, const json_t *root) {
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return as_fail("no \"model\" object");
    const char *type = jstr(model, "type");
    const json_t *vocab = json_object_get(model, "vocab");
    const json_t *merges = json_object_get(model, "merges");
    if (type ? strcmp(type, "BPE") != 0 : !json_is_array(merges))
        return as_fail("unsupported tokenizer model type '%s' (only BPE)", type ? type : "(none)");
    if (!json_is_object(vocab)) return as_fail("model.vocab missing or not an object");
    if (!json_is_array(merges)) return as_fail("model.merges missing or not an array");
    const char *cs = jstr(model, "continuing_subword_prefix"),
               *ew = jstr(model, "end_of_word_suffix");
    if ((cs && *cs) || (ew && *ew))
        return as_fail("model: continuing_subword_prefix / end_of_word_suffix are not supported");
    t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));

    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)vocab, key, val) {
        int32_t id;
        if (get_id(val, &id))
            return as_fail("model.vocab['%s']: id must be an integer in [0, %d)", key, TOK_MAX_ID);
        strmap_put(&t->vocab, key, strlen(key), id);
        set_piece(t, id, key, strlen(key));
    }
    if (load_added(t, json_object_get(root, "added_tokens"))) return -1;
    const char *unk = jstr(model, "unk_token");
    t->unk = unk ? strmap_get(&t->vocab, unk, strlen(unk)) : -1;
    if (t->unk < 0 && unk) t->unk = strmap_get(&t->added_map, unk, strlen(unk));
    for (int b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        t->byte_id[b] = strmap_get(&t->vocab, hex, strlen(hex));
    }
    return 0;
}

static struct as_tokenizer *load_json(const char *path, json_t *root) {
    struct as_tokenizer *t = as_xcalloc(1, sizeof *t);
    t->path = as_xstrdup(path);
    t->kind = AS_TOK_SPM;
    init_byte_map(t);
    if (!json_is_object(root)) {
        as_fail("top level is not a JSON object");
        goto fail;
    }
    if (load_model(t, root) || load_normalizer(t, json_object_get(root, "normalizer")) ||
        load_pretokenizer(t, json_object_get(root, "pre_tokenizer")) ||
        load_decoder(t, json_object_get(root, "decoder")))
        goto fail;
    if (t->dec_bytelevel) t->kind = AS_TOK_BYTELEVEL;
    if (load_merges(t, json_object_get(json_object_get(root, "model"), "merges"))) goto fail;
    t->byteof = as_xmalloc((size_t)(t->n_ids ? t->n_ids : 1) * sizeof *t->byteof);
    for (int32_t i = 0; i < t->n_ids; i++)
        t->byteof[i] = -1;
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] >= 0) t->byteof[t->byte_id[b]] = (int16_t)b;
    find_bos_eos(t, root);
    return t;
fail:
    as_tokenizer_free(t);
    return NULL;
}

struct as_tokenizer *as_tokenizer_load(const char *path) {
    struct stat st;
    char *file = NULL;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (asprintf(&file, "%s/tokenizer.json", path) < 0) file = NULL;
    } else {
        file = as_xstrdup(path);
    }
    if (!file) {
        as_fail("%s: out of memory", path);
        return NULL;
    }
    FILE *f = fopen(file, "rb");
    if (!f) {
        as_fail("%s: cannot open: %s", file, strerror(errno));
        free(file);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadf(f, 0, &je);
    fclose(f);
    if (!root) {
        as_fail("%s: invalid JSON at line %d column %d: %s", file, je.line, je.column, je.text);
        free(file);
        return NULL;
    }
    struct as_tokenizer *t = load_json(file, root);
    json_decref(root);
    if (!t) as_fail_prefix("%s: ", file);
    free(file);
    return t;
}

/* ------------------------------------------------------------------------------------------ */
/* encoding */

struct ivec {
    int32_t *v;
    size_t n, cap;
};
static void ivec_push(struct ivec *a, int32_t x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->v = as_xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = x;
}

struct sbuf {
    char *s;
    size_t n, cap;
};
static void sbuf_add(struct sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 256;
        b->s = as_xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

/* A list of pre-tokens: contiguous text plus end offsets. */
struct pieces {
    struct sbuf text;
    size_t *end;
    size_t n, cap;
};
static void pieces_close(struct pieces *p) { /* end the current piece (drop it if empty) */
    size_t start = p->n ? p->end[p->n - 1] : 0;
    if (p->text.n == start) return;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->end = as_xrealloc(p->end, p->cap * sizeof *p->end);
    }
    p->end[p->n++] = p->text.n;
}
static void pieces_reset(struct pieces *p) {
    p->text.n = 0, p->n = 0;
}

struct bpe_sym {
    int32_t id, prev, next;
    uint32_t len;
};
struct bpe_cand {
    int32_t rank, left, right, result;
    uint32_t len;
};

struct work {
    struct bpe_sym *sym;
    size_t sym_cap;
    struct bpe_cand *heap;
    size_t heap_n, heap_cap;
    struct pieces pa, pb, pc;
    struct sbuf norm, tmp;
    pcre2_match_data *md;
};

static int cand_less(const struct bpe_cand *a, const struct bpe_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(struct work *w, struct bpe_cand c) {
    if (w->heap_n == w->heap_cap) {
        w->heap_cap = w->heap_cap ? w->heap_cap * 2 : 256;
        w->heap = as_xrealloc(w->heap, w->heap_cap * sizeof *w->heap);
    }
    size_t i = w->heap_n++;
    while (i > 0 && cand_less(&c, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = c;
}

static struct bpe_cand heap_pop(struct work *w) {
    struct bpe_cand top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!cand_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static void try_pair(const struct as_tokenizer *t, struct work *w, int32_t l, int32_t r) {
    long slot = pairmap_find(&t->merges, w->sym[l].id, w->sym[r].id);
    if (slot < 0) return;
    struct bpe_cand c = {t->merges.rank[slot], l, r, t->merges.result[slot],
                         w->sym[l].len + w->sym[r].len};
    heap_push(w, c);
}

static void add_sym(struct work *w, size_t *n, int32_t id, uint32_t len) {
    if (*n == w->sym_cap) {
        w->sym_cap = w->sym_cap ? w->sym_cap * 2 : 256;
        w->sym = as_xrealloc(w->sym, w->sym_cap * sizeof *w->sym);
    }
    w->sym[*n] = (struct bpe_sym){id, (int32_t)*n - 1, (int32_t)*n + 1, len};
    (*n)++;
}

/* BPE on one pre-token: characters -> symbols (byte fallback / unk) -> merges by (rank, left). */
static void bpe_word(const struct as_tokenizer *t, struct work *w, const char *s, size_t n,
                     struct ivec *out) {
    if (t->ignore_merges) { /* Llama-3: a pre-token that is a whole vocab entry maps directly */
        int32_t id = strmap_get(&t->vocab, s, n);
        if (id >= 0) {
            ivec_push(out, id);
            return;
        }
    }
    size_t ns = 0;
    int last_unk = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = utf8_len(s + i, n - i);
        int32_t id = strmap_get(&t->vocab, s + i, cl);
        if (id >= 0) {
            add_sym(w, &ns, id, (uint32_t)cl);
            last_unk = 0;
        } else {
            int ok = t->byte_fallback;
            for (size_t k = 0; ok && k < cl; k++)
                ok = t->byte_id[(unsigned char)s[i + k]] >= 0;
            if (ok) {
                for (size_t k = 0; k < cl; k++)
                    add_sym(w, &ns, t->byte_id[(unsigned char)s[i + k]], 1);
                last_unk = 0;
            } else if (t->unk >= 0) {
                if (t->fuse_unk && last_unk)
                    w->sym[ns - 1].len += (uint32_t)cl;
                else
                    add_sym(w, &ns, t->unk, (uint32_t)cl);
                last_unk = 1;
            } /* else: no way to represent the character; HF drops it as well */
        }
        i += cl;
    }
    if (ns == 0) return;
    w->sym[ns - 1].next = -1;
    w->heap_n = 0;
    for (size_t i = 0; i + 1 < ns; i++)
        try_pair(t, w, (int32_t)i, (int32_t)i + 1);
    while (w->heap_n) {
        struct bpe_cand c = heap_pop(w);
        struct bpe_sym *L = &w->sym[c.left];
        /* stale if either side was merged since (the left symbol absorbed or was absorbed) */
        if (L->len == 0 || L->next != c.right) continue;
        struct bpe_sym *R = &w->sym[c.right];
        if (L->len + R->len != c.len) continue;
        L->id = c.result;
        L->len += R->len;
        L->next = R->next;
        R->len = 0;
        if (L->next >= 0) w->sym[L->next].prev = c.left;
        if (L->prev >= 0) try_pair(t, w, L->prev, c.left);
        if (L->next >= 0) try_pair(t, w, c.left, L->next);
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next)
        ivec_push(out, w->sym[i].id);
}

/* Split s into regex matches and the gaps between them, all kept (HF Split "Isolated"). */
static int regex_split(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n,
                       struct pieces *out) {
    size_t pos = 0, last = 0;
    while (pos < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return as_fail("encode: regex match failed: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms > last) sbuf_add(&out->text, s + last, ms - last), pieces_close(out);
        if (me > ms) sbuf_add(&out->text, s + ms, me - ms), pieces_close(out), last = me;
        pos = me > ms ? me : ms + utf8_len(s + ms, n - ms);
        if (me == ms && ms > last) last = ms; /* an empty match splits nothing */
    }
    if (last < n) sbuf_add(&out->text, s + last, n - last), pieces_close(out);
    return 0;
}

static int pretokenize_step(const struct as_tokenizer *t, const struct pre_step *st, struct work *w,
                            const struct pieces *in, struct pieces *out, int at_start) {
    pieces_reset(out);
    for (size_t k = 0; k < in->n; k++) {
        size_t b = k ? in->end[k - 1] : 0, e = in->end[k];
        const char *s = in->text.s + b;
        size_t n = e - b;
        if (st->type == PRE_METASPACE) {
            /* HF Metaspace: spaces -> replacement; prepend one unless already there ("first":
             * only for the piece at offset 0 of the input); split keeps the '▁' with the next */
            struct sbuf *m = &w->tmp;
            m->n = 0;
            int starts = n >= 1 &&
                         (s[0] == ' ' || (n >= st->repl_len && !memcmp(s, st->repl, st->repl_len)));
            if (!starts &&
                (st->scheme == SCHEME_ALWAYS || (st->scheme == SCHEME_FIRST && k == 0 && at_start)))
                sbuf_add(m, st->repl, st->repl_len);
            for (size_t i = 0; i < n; i++) {
                if (s[i] == ' ')
                    sbuf_add(m, st->repl, st->repl_len);
                else
                    sbuf_add(m, s + i, 1);
            }
            for (size_t i = 0; i < m->n;) {
                if (st->split && i > 0 && m->n - i >= st->repl_len &&
                    !memcmp(m->s + i, st->repl, st->repl_len))
                    pieces_close(out);
                size_t cl = utf8_len(m->s + i, m->n - i);
                sbuf_add(&out->text, m->s + i, cl);
                i += cl;
            }
            pieces_close(out);
        } else if (st->type == PRE_SPLIT) {
            if (regex_split(st->re, w->md, s, n, out)) return -1;
        } else { /* PRE_BYTELEVEL: optional prefix space, optional GPT-2 regex, byte -> char */
            struct sbuf *m = &w->tmp;
            struct pieces *sub = &w->pc;
            m->n = 0;
            if (st->add_prefix_space && s[0] != ' ') sbuf_add(m, " ", 1);
            sbuf_add(m, s, n);
            pieces_reset(sub);
            if (st->re) {
                if (regex_split(st->re, w->md, m->s, m->n, sub)) return -1;
            } else {
                sbuf_add(&sub->text, m->s, m->n);
                pieces_close(sub);
            }
            for (size_t j = 0; j < sub->n; j++) {
                for (size_t i = j ? sub->end[j - 1] : 0; i < sub->end[j]; i++) {
                    unsigned char c = (unsigned char)sub->text.s[i];
                    sbuf_add(&out->text, t->b2u[c], t->b2u_len[c]);
                }
                pieces_close(out);
            }
        }
    }
    return 0;
}

/* Well-formed UTF-8 per Unicode Table 3-7: no overlong forms, no surrogates, nothing above
 * U+10FFFF. PCRE2 is called with PCRE2_NO_UTF_CHECK, which makes anything less strict undefined
 * behaviour inside the (JIT-compiled) matcher, so this check must match PCRE2's own exactly. */
static int valid_utf8(const char *s, size_t n, size_t *bad) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t l = c < 0x80                 ? 1
                   : c >= 0xC2 && c <= 0xDF ? 2
                   : c >= 0xE0 && c <= 0xEF ? 3
                   : c >= 0xF0 && c <= 0xF4 ? 4
                                            : 0;
        int ok = l != 0 && l <= n - i;
        if (ok && l > 1) {
            /* the second byte's range depends on the lead (Table 3-7) */
            unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
            unsigned hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
            ok = u[i + 1] >= lo && u[i + 1] <= hi;
            for (size_t k = 2; ok && k < l; k++)
                ok = (u[i + k] & 0xC0) == 0x80;
        }
        if (!ok) {
            *bad = i;
            return 0;
        }
        i += l;
    }
    return 1;
}

/* Encode one segment of text (between added tokens): normalize, pre-tokenize, BPE. */
static int encode_segment(const struct as_tokenizer *t, struct work *w, const char *s, size_t n,
                          int at_start, struct ivec *out) {
    if (n == 0) return 0;
    /* normalizers (Prepend acts on non-empty text; Replace replaces every occurrence) */
    if (t->n_norm) {
        struct sbuf *cur = &w->norm, *nxt = &w->tmp;
        cur->n = 0;
        sbuf_add(cur, s, n);
        for (int i = 0; i < t->n_norm; i++) {
            const struct norm_step *ns = &t->norm[i];
            nxt->n = 0;
            if (ns->type == NORM_PREPEND) {
                if (cur->n) sbuf_add(nxt, ns->a, ns->alen);
                sbuf_add(nxt, cur->s, cur->n);
            } else {
                for (size_t j = 0; j < cur->n;) {
                    if (cur->n - j >= ns->alen && !memcmp(cur->s + j, ns->a, ns->alen)) {
                        sbuf_add(nxt, ns->b, ns->blen);
                        j += ns->alen;
                    } else {
                        sbuf_add(nxt, cur->s + j, 1);
                        j++;
                    }
                }
            }
            struct sbuf tmp = *cur;
            *cur = *nxt, *nxt = tmp;
            /* Replace steps can chain into exponential growth ("a" -> "aa", 30 times); real
             * normalizers grow text by a few times at most */
            if (cur->n > 64 * n + 4096)
                return as_fail("normalizer step %d expands the text more than 64 times", i + 1);
        }
        s = w->norm.s, n = w->norm.n;
    }
    struct pieces *in = &w->pa, *o = &w->pb;
    pieces_reset(in);
    sbuf_add(&in->text, s, n);
    pieces_close(in);
    for (int i = 0; i < t->n_pre; i++) {
        if (pretokenize_step(t, &t->pre[i], w, in, o, at_start)) return -1;
        struct pieces *tmp = in;
        in = o, o = tmp;
    }
    for (size_t k = 0; k < in->n; k++) {
        size_t b = k ? in->end[k - 1] : 0;
        bpe_word(t, w, in->text.s + b, in->end[k] - b, out);
    }
    return 0;
}

static void work_free(struct work *w) {
    free(w->sym), free(w->heap);
    free(w->pa.text.s), free(w->pa.end), free(w->pb.text.s), free(w->pb.end);
    free(w->pc.text.s), free(w->pc.end);
    free(w->norm.s), free(w->tmp.s);
    if (w->md) pcre2_match_data_free(w->md);
}

int as_tokenizer_encode(const struct as_tokenizer *t, const char *text, size_t len, int add_bos,
                        int32_t **ids_out, size_t *n_out) {
    *ids_out = NULL, *n_out = 0;
    int has_regex = 0;
    for (int i = 0; i < t->n_pre; i++)
        has_regex |= t->pre[i].re != NULL;
    size_t bad;
    if (has_regex && !valid_utf8(text, len, &bad))
        return as_fail("%s: encode: invalid UTF-8 at byte %zu of the input", t->path, bad);
    struct work w = {0};
    struct ivec out = {0};
    if (has_regex) w.md = pcre2_match_data_create(16, NULL);
    if (add_bos && t->bos >= 0) ivec_push(&out, t->bos);
    size_t seg = 0;
    for (size_t i = 0; i < len;) {
        const int *cand = t->added_by_byte[(unsigned char)text[i]];
        int hit = -1;
        for (; cand && *cand >= 0; cand++) {
            const struct added_tok *a = &t->added[*cand];
            if (a->len <= len - i && !memcmp(text + i, a->s, a->len)) {
                hit = *cand;
                break;
            }
        }
        if (hit < 0) {
            i++;
            continue;
        }
        if (encode_segment(t, &w, text + seg, i - seg, seg == 0, &out)) goto fail;
        ivec_push(&out, t->added[hit].id);
        i += t->added[hit].len;
        seg = i;
    }
    if (encode_segment(t, &w, text + seg, len - seg, seg == 0, &out)) goto fail;
    work_free(&w);
    if (!out.v) out.v = as_xmalloc(sizeof *out.v);
    *ids_out = out.v, *n_out = out.n;
    return 0;
fail:
    as_fail_prefix("%s: ", t->path);
    work_free(&w);
    free(out.v);
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* decoding and lookups */

int as_tokenizer_decode_piece(const struct as_tokenizer *t, int32_t prev_id, int32_t id, char *buf,
                              size_t bufsize) {
    if (id < 0 || id >= t->n_ids || !t->piece[id])
        return as_fail("%s: decode: token id %d out of range [0, %d)", t->path, id, t->n_ids);
    struct sbuf o = {0};
    const char *p = t->piece[id];
    size_t n = t->plen[id];
    if (t->flags[id] & TF_SPECIAL) {
        /* special tokens are control symbols, not text (HF skip_special_tokens) */
    } else if (t->flags[id] & TF_ADDED) {
        sbuf_add(&o, p, n);
    } else if (t->dec_byte_fallback && t->byteof[id] >= 0) {
        char c = (char)t->byteof[id];
        sbuf_add(&o, &c, 1);
    } else if (t->dec_bytelevel) {
        for (size_t i = 0; i < n;) {
            size_t cl;
            uint32_t cp = utf8_cp(p + i, n - i, &cl);
            if (cp < 324 && t->u2b[cp] >= 0) {
                char c = (char)t->u2b[cp];
                sbuf_add(&o, &c, 1);
            } else {
                sbuf_add(&o, p + i, cl);
            }
            i += cl;
        }
    } else {
        sbuf_add(&o, p, n);
        for (int r = 0; r < t->n_dec_rep; r++) {
            const struct dec_replace *d = &t->dec_rep[r];
            struct sbuf x = {0};
            for (size_t i = 0; i < o.n;) {
                if (o.n - i >= d->flen && !memcmp(o.s + i, d->from, d->flen)) {
                    sbuf_add(&x, d->to, d->tlen);
                    i += d->flen;
                } else {
                    sbuf_add(&x, o.s + i, 1);
                    i++;
                }
            }
            free(o.s);
            o = x;
        }
        /* SentencePiece: the dummy-prefix space of the first piece is not text */
        if (t->dec_strip_first && (prev_id < 0 || prev_id == t->bos) && o.n && o.s[0] == ' ') {
            memmove(o.s, o.s + 1, o.n);
            o.n--;
        }
    }
    if (bufsize) {
        size_t c = o.n < bufsize - 1 ? o.n : bufsize - 1;
        if (c) memcpy(buf, o.s, c);
        buf[c] = 0;
    }
    free(o.s);
    return (int)o.n;
}

char *as_tokenizer_decode(const struct as_tokenizer *t, const int32_t *ids, size_t n,
                          size_t *len_out) {
    struct sbuf o = {0};
    char small[256];
    sbuf_add(&o, "", 0);
    for (size_t i = 0; i < n; i++) {
        int32_t prev = i ? ids[i - 1] : -1;
        int k = as_tokenizer_decode_piece(t, prev, ids[i], small, sizeof small);
        if (k < 0) {
            free(o.s);
            return NULL;
        }
        if ((size_t)k < sizeof small) {
            sbuf_add(&o, small, (size_t)k);
        } else {
            char *big = as_xmalloc((size_t)k + 1);
            as_tokenizer_decode_piece(t, prev, ids[i], big, (size_t)k + 1);
            sbuf_add(&o, big, (size_t)k);
            free(big);
        }
    }
    if (len_out) *len_out = o.n;
    return o.s;
}

enum as_tok_kind as_tokenizer_kind(const struct as_tokenizer *t) {
    return t->kind;
}
int32_t as_tokenizer_bos(const struct as_tokenizer *t) {
    return t->bos;
}
int32_t as_tokenizer_eos(const struct as_tokenizer *t) {
    return t->eos;
}
int as_tokenizer_add_bos(const struct as_tokenizer *t) {
    return t->add_bos && t->bos >= 0;
}
void as_tokenizer_set_add_bos(struct as_tokenizer *t, int add_bos) {
    t->add_bos = add_bos != 0;
}
int32_t as_tokenizer_vocab_size(const struct as_tokenizer *t) {
    return t->n_ids;
}

int32_t as_tokenizer_piece_to_id(const struct as_tokenizer *t, const char *piece) {
    return lookup_any(t, piece);
}

const char *as_tokenizer_id_to_piece(const struct as_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids ? t->piece[id] : NULL;
}

int as_tokenizer_is_special(const struct as_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->flags[id] & TF_SPECIAL);
}

/* ------------------------------------------------------------------------------------------ */
/* tokenizers rebuilt from other formats (GGUF metadata, gguf_load.c) */

struct as_tokenizer *as_tokenizer_from_json(const char *label, const struct json_t *root,
                                            int32_t bos, int32_t eos) {
    struct as_tokenizer *t = load_json(label, (json_t *)root);
    if (!t) {
        as_fail_prefix("%s: ", label);
        return NULL;
    }
    /* the caller's ids win over find_bos_eos's guesses (which may read a stray
     * tokenizer_config.json next to `label`) */
    if (bos >= -1) t->bos = bos < t->n_ids ? bos : -1;
    if (eos >= -1) t->eos = eos < t->n_ids ? eos : -1;
    return t;
}
