/* gguf_vocab: a GGUF file's tokenizer.ggml.* vocabulary as the equivalent tokenizer.json.
 *
 * "llama" (SentencePiece) vocabularies get merges derived from the scores exactly as the
 * llama2.c importer derives them (every split of a token into two vocabulary tokens, by the
 * token's score). "gpt2" (byte-level BPE) ones keep their merges and get the pre-tokenizer that
 * llama.cpp's llama-vocab.cpp selects by tokenizer.ggml.pre, written the way the model's own
 * tokenizer.json has it where that is known (pre_defs below; docs/tokenizers.md). */
#include "gguf_vocab.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "atomic_file.h"
#include "tokenizer.h"

/* ---- tokenizer ------------------------------------------------------------------------------ */

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

struct split {
    float score;
    int id, at;
};
static int cmp_split(const void *pa, const void *pb) {
    const struct split *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    return (a->at > b->at) - (a->at < b->at);
}

/* SentencePiece scores -> BPE merges: every split of a normal token t = a + b (at a UTF-8
 * character boundary) with a and b in the vocabulary, ordered by t's score (descending), then
 * id and split. A BPE taking the lowest-rank merge first (rank = first merge producing the
 * result) then merges the adjacent pair whose concatenation scores highest, as llama.cpp's
 * SentencePiece tokenizer does. */
static json_t *merges_from_scores(const struct as_gguf_kv *tok, const float *scores,
                                  const int32_t *types, const json_t *vocab) {
    size_t cap = 1024, n = 0;
    struct split *s = as_xmalloc(cap * sizeof *s);
    for (uint64_t id = 0; id < tok->n; id++) {
        if (types[id] != TT_NORMAL) continue;
        const char *p = tok->strs[id];
        size_t len = tok->lens[id];
        char *buf = as_xmalloc(len + 1);
        for (size_t k = 1; k < len; k++) {
            if (((unsigned char)p[k] & 0xC0) == 0x80) continue;
            memcpy(buf, p, k), buf[k] = 0;
            if (!json_object_get(vocab, buf) || !json_object_get(vocab, p + k)) continue;
            if (n == cap) s = as_xrealloc(s, (cap *= 2) * sizeof *s);
            s[n++] = (struct split){scores[id], (int)id, (int)k};
        }
        free(buf);
    }
    qsort(s, n, sizeof *s, cmp_split);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *p = tok->strs[s[i].id];
        char *m = as_xmalloc(tok->lens[s[i].id] + 2);
        memcpy(m, p, (size_t)s[i].at);
        m[s[i].at] = ' ';
        strcpy(m + s[i].at + 1, p + s[i].at);
        json_array_append_new(arr, json_string(m));
        free(m);
    }
    free(s);
    return arr;
}

/* ---- pre-tokenizers by GGUF name ---------------------------------------------------------- */

/* GPT-2's regex (HF ByteLevel use_regex). llama.cpp's copy lacks the final |\s+; the whitespace
 * it would match (one \t or \n before a non-space) is left between matches and becomes a piece
 * of its own all the same, so both split alike. */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
/* Llama 3's tokenizer.json (llama.cpp spells the (?i:...) group out case by case) */
#define RE_LLAMA3                                                                                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* Qwen2's: Llama 3's with single digits */
#define RE_QWEN2                                                                                   \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                          \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

enum pre_kind {
    PK_BYTELEVEL, /* ByteLevel with the GPT-2 regex */
    PK_DIGITS_BL, /* Digits (one per digit), then ByteLevel with the GPT-2 regex */
    PK_SPLIT,     /* Split (Isolated) by each regex in turn, then ByteLevel without regex */
};

struct pre_def {
    const char *name; /* tokenizer.ggml.pre */
    enum pre_kind kind;
    const char *re[4]; /* PK_SPLIT */
    /* llama.cpp's flags for the name: BPE ignore_merges, add_bos default, clean_spaces; nfc: the
     * family's own HF tokenizer.json normalizes to NFC. llama.cpp does not, and the GGUF's
     * tokenization is llama.cpp's, so the tokenizer.json written from a GGUF has no normalizer
     * (then tokenizers, tokenizer.c and llama.cpp agree on any text); nfc only helps name a
     * pipeline when writing a GGUF (as_gguf_pre_name_for). */
    int ignore_merges, add_bos, clean_spaces, nfc;
};

static const struct pre_def pre_defs[] = {
    /* llama.cpp's fallback set, also for a missing key */
    {"default",
     PK_SPLIT,
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"},
     0,
     0,
     1,
     0},
    {"gpt-2", PK_BYTELEVEL, {0}, 0, 0, 1, 0},
    {"gpt2", PK_BYTELEVEL, {0}, 0, 0, 1, 0}, /* what gguf_pack.c wrote for GPT-2 ByteLevel */
    {"phi-2", PK_BYTELEVEL, {0}, 0, 0, 1, 0},
    {"mpt", PK_BYTELEVEL, {0}, 0, 0, 1, 0},
    {"olmo", PK_BYTELEVEL, {0}, 0, 0, 1, 0},
    {"llama-bpe", PK_SPLIT, {RE_LLAMA3}, 1, 1, 1, 0},
    {"llama3", PK_SPLIT, {RE_LLAMA3}, 1, 1, 1, 0},
    {"llama-v3", PK_SPLIT, {RE_LLAMA3}, 1, 1, 1, 0},
    {"dbrx", PK_SPLIT, {RE_LLAMA3}, 0, 0, 1, 0},
    {"smaug-bpe", PK_SPLIT, {RE_LLAMA3}, 0, 0, 1, 0},
    {"starcoder", PK_DIGITS_BL, {0}, 0, 0, 1, 0},
    {"refact", PK_DIGITS_BL, {0}, 0, 0, 1, 0},
    {"codeshell", PK_DIGITS_BL, {0}, 0, 0, 1, 0},
    {"smollm", PK_DIGITS_BL, {0}, 0, 0, 0, 0},
    {"command-r", PK_DIGITS_BL, {0}, 0, 0, 0, 0},
    {"qwen2", PK_SPLIT, {RE_QWEN2}, 0, 0, 0, 1},
    {"deepseek-r1-qwen", PK_SPLIT, {RE_QWEN2}, 0, 0, 0, 1},
    {"stablelm2", PK_SPLIT, {RE_QWEN2}, 0, 0, 1, 0},
};
#define N_PRE_DEFS (sizeof pre_defs / sizeof pre_defs[0])

const char *as_gguf_pre_name(size_t i) {
    return i < N_PRE_DEFS ? pre_defs[i].name : NULL;
}

/* The vocabulary's kind: 1 SentencePiece ("llama"), 0 byte-level ("gpt2", *pre set), -1 with
 * as_fail for anything else. */
static int vocab_kind(const struct as_gguf *g, const struct pre_def **pre) {
    const char *model = as_gguf_get_str(g, "tokenizer.ggml.model");
    *pre = NULL;
    if (model && !strcmp(model, "llama")) return 1;
    if (!model || strcmp(model, "gpt2"))
        return as_fail("file %s: tokenizer.ggml.model \"%s\" is not supported (llama, gpt2)",
                       g->path, model ? model : "(missing)");
    const struct as_gguf_kv *kv = as_gguf_find_kv(g, "tokenizer.ggml.pre");
    if (kv && kv->type != AS_GGUF_STRING)
        return as_fail("file %s: tokenizer.ggml.pre is not a string", g->path);
    const char *name = kv ? kv->str : "default"; /* llama.cpp's choice for old files */
    for (size_t i = 0; i < N_PRE_DEFS; i++)
        if (!strcmp(pre_defs[i].name, name)) {
            *pre = &pre_defs[i];
            return 0;
        }
    return as_fail("file %s: tokenizer.ggml.pre \"%s\" is not supported (known: "
                   "docs/tokenizers.md, GGUF vocabularies)",
                   g->path, name);
}

static json_t *byte_level(int use_regex) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                     "trim_offsets", 1, "use_regex", use_regex);
}

/* The tokenizer.json pre_tokenizer for a pre name. */
static json_t *pre_tokenizer_json(const struct pre_def *d) {
    if (d->kind == PK_BYTELEVEL) return byte_level(1);
    json_t *seq = json_array();
    if (d->kind == PK_DIGITS_BL) {
        json_array_append_new(seq,
                              json_pack("{s:s, s:b}", "type", "Digits", "individual_digits", 1));
        json_array_append_new(seq, byte_level(1));
    } else {
        for (int i = 0; i < 4 && d->re[i]; i++)
            json_array_append_new(seq, json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split",
                                                 "pattern", "Regex", d->re[i], "behavior",
                                                 "Isolated", "invert", 0));
        json_array_append_new(seq, byte_level(0));
    }
    return json_pack("{s:s, s:o}", "type", "Sequence", "pretokenizers", seq);
}

/* One pre-tokenizer step reduced to what splits text: "B1"/"B0" ByteLevel with/without regex,
 * "D1"/"D0" Digits individual or not, "S<regex>" Split Isolated; NULL for anything else. */
static char *step_key(const json_t *st) {
    const char *type = json_string_value(json_object_get(st, "type"));
    if (!type) return NULL;
    char buf[1024];
    if (!strcmp(type, "ByteLevel")) {
        snprintf(buf, sizeof buf, "B%d", !json_is_false(json_object_get(st, "use_regex")));
    } else if (!strcmp(type, "Digits")) {
        snprintf(buf, sizeof buf, "D%d", json_is_true(json_object_get(st, "individual_digits")));
    } else if (!strcmp(type, "Split")) {
        const char *re =
            json_string_value(json_object_get(json_object_get(st, "pattern"), "Regex"));
        const char *beh = json_string_value(json_object_get(st, "behavior"));
        if (!re || !beh || strcmp(beh, "Isolated") || json_is_true(json_object_get(st, "invert")))
            return NULL;
        snprintf(buf, sizeof buf, "S%s", re);
    } else {
        return NULL;
    }
    return as_xstrdup(buf);
}

/* The steps of a pre_tokenizer as one "|"-joined key (Sequence flattened); NULL if unsupported. */
static char *pipeline_key(const json_t *pre) {
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (!type) return NULL;
    const json_t *list = json_object_get(pre, "pretokenizers");
    size_t n = strcmp(type, "Sequence") ? 1 : json_array_size(list);
    char *key = as_xstrdup("");
    for (size_t i = 0; i < n; i++) {
        char *k = step_key(strcmp(type, "Sequence") ? pre : json_array_get(list, i));
        if (!k) {
            free(key);
            return NULL;
        }
        char *both = as_xmalloc(strlen(key) + strlen(k) + 2);
        sprintf(both, "%s%s%s", key, i ? "|" : "", k);
        free(key), free(k);
        key = both;
    }
    return key;
}

const char *as_gguf_pre_name_for(const json_t *tokenizer_json, int clean_spaces) {
    char *want = pipeline_key(json_object_get(tokenizer_json, "pre_tokenizer"));
    if (!want) return NULL;
    const json_t *bpe = json_object_get(tokenizer_json, "model");
    int ignore = json_is_true(json_object_get(bpe, "ignore_merges"));
    const char *nt =
        json_string_value(json_object_get(json_object_get(tokenizer_json, "normalizer"), "type"));
    int nfc = nt && !strcmp(nt, "NFC");
    const char *found = NULL;
    for (size_t i = 0; i < N_PRE_DEFS; i++) {
        const struct pre_def *d = &pre_defs[i];
        json_t *pj = pre_tokenizer_json(d);
        char *k = pipeline_key(pj);
        json_decref(pj);
        int same = k && !strcmp(k, want) && d->ignore_merges == ignore;
        free(k);
        if (!same) continue;
        if (d->nfc != nfc) { /* splits alike; a name of the same family is preferred */
            if (!found) found = d->name;
            continue;
        }
        /* names that split alike differ in llama.cpp's detokenizer clean-up: take the one that
         * matches the model's own clean_up_tokenization_spaces when it says */
        if (!found) found = d->name;
        if (clean_spaces < 0 || d->clean_spaces == clean_spaces) {
            found = d->name;
            break;
        }
    }
    free(want);
    return found;
}

/* ---- the vocabulary ----------------------------------------------------------------------- */

static json_t *replace_step(const char *from, const char *to) {
    return json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", from, "content",
                     to);
}

/* Token id from key (u32), -1 if absent or out of the vocabulary. */
static int32_t token_key(const struct as_gguf *g, const char *key, uint64_t n) {
    uint32_t v;
    if (as_gguf_get_u32(g, key, &v) != 1 || v >= n) return -1;
    return (int32_t)v;
}

static int get_flag(const struct as_gguf *g, const char *key, int dflt) {
    int v = dflt;
    if (as_gguf_get_bool(g, key, &v) < 0) return -1;
    return v != 0;
}

int as_gguf_vocab_add_bos(const struct as_gguf *g) {
    const struct pre_def *pre;
    int spm = vocab_kind(g, &pre);
    if (spm < 0) return -1;
    return get_flag(g, "tokenizer.ggml.add_bos_token", spm ? 1 : pre->add_bos);
}

int as_gguf_vocab_add_eos(const struct as_gguf *g) {
    const struct pre_def *pre;
    if (vocab_kind(g, &pre) < 0) return -1;
    return get_flag(g, "tokenizer.ggml.add_eos_token", 0);
}

/* Byte-level merges as llama.cpp reads them: split at the first space after the first byte (a
 * token may itself be " "), both halves and their concatenation in the vocabulary. Written as
 * "a b", or as ["a", "b"] where a half holds a space. NULL with as_fail naming the merge. */
static json_t *bpe_merges(const struct as_gguf *g, const struct as_gguf_kv *mg,
                          const json_t *vocab) {
    json_t *arr = json_array();
    char *ab = NULL;
    for (uint64_t i = 0; i < mg->n; i++) {
        const char *m = mg->strs[i];
        size_t len = mg->lens[i];
        const char *sp = len > 1 ? memchr(m + 1, ' ', len - 1) : NULL;
        if (!sp || sp + 1 == m + len) {
            as_fail("file %s: tokenizer.ggml.merges[%llu] \"%s\" is not two tokens separated by a "
                    "space",
                    g->path, (unsigned long long)i, m);
            goto fail;
        }
        size_t alen = (size_t)(sp - m), blen = len - alen - 1;
        ab = as_xrealloc(ab, len);
        memcpy(ab, m, alen), memcpy(ab + alen, sp + 1, blen);
        const char *miss = NULL;
        size_t mlen = 0;
        if (!json_object_getn(vocab, m, alen))
            miss = m, mlen = alen;
        else if (!json_object_getn(vocab, sp + 1, blen))
            miss = sp + 1, mlen = blen;
        else if (!json_object_getn(vocab, ab, alen + blen))
            miss = ab, mlen = alen + blen;
        if (miss) {
            as_fail("file %s: tokenizer.ggml.merges[%llu] \"%s\": token \"%.*s\" is not in the "
                    "vocabulary",
                    g->path, (unsigned long long)i, m, (int)mlen, miss);
            goto fail;
        }
        json_t *e = memchr(m, ' ', alen) || memchr(sp + 1, ' ', blen)
                        ? json_pack("[s#, s#]", m, alen, sp + 1, blen)
                        : json_stringn(m, len);
        if (!e) { /* the halves are vocabulary tokens, so valid UTF-8; this is unreachable */
            as_fail("file %s: tokenizer.ggml.merges[%llu] is not valid UTF-8", g->path,
                    (unsigned long long)i);
            goto fail;
        }
        json_array_append_new(arr, e);
    }
    free(ab);
    return arr;
fail:
    free(ab);
    json_decref(arr);
    return NULL;
}

/* HF adds BOS/EOS through the post-processor: a template [BOS] $A [EOS]. */
static json_t *template_processor(const char *bos, int32_t bos_id, const char *eos,
                                  int32_t eos_id) {
    json_t *single = json_array(), *pair = json_array(), *special = json_object();
    for (int part = 0; part < 2; part++) {
        json_t *seq = part ? pair : single;
        for (int k = 0; k < 2; k++) {
            if (bos)
                json_array_append_new(
                    seq, json_pack("{s:{s:s, s:i}}", "SpecialToken", "id", bos, "type_id", k));
            json_array_append_new(
                seq, json_pack("{s:{s:s, s:i}}", "Sequence", "id", k ? "B" : "A", "type_id", k));
            if (eos)
                json_array_append_new(
                    seq, json_pack("{s:{s:s, s:i}}", "SpecialToken", "id", eos, "type_id", k));
            if (!part) break;
        }
    }
    if (bos)
        json_object_set_new(
            special, bos,
            json_pack("{s:s, s:[i], s:[s]}", "id", bos, "ids", bos_id, "tokens", bos));
    if (eos && (!bos || strcmp(bos, eos)))
        json_object_set_new(
            special, eos,
            json_pack("{s:s, s:[i], s:[s]}", "id", eos, "ids", eos_id, "tokens", eos));
    return json_pack("{s:s, s:o, s:o, s:o}", "type", "TemplateProcessing", "single", single, "pair",
                     pair, "special_tokens", special);
}

json_t *as_gguf_vocab_tokenizer_json(const struct as_gguf *g) {
    const char *path = g->path;
    json_t *root = NULL;
    int32_t *types = NULL;
    const struct pre_def *pre;
    int spm = vocab_kind(g, &pre);
    if (spm < 0) return NULL;
    const struct as_gguf_kv *tok = as_gguf_find_kv(g, "tokenizer.ggml.tokens");
    const struct as_gguf_kv *tt = as_gguf_find_kv(g, "tokenizer.ggml.token_type");
    const struct as_gguf_kv *sc = as_gguf_find_kv(g, "tokenizer.ggml.scores");
    const struct as_gguf_kv *mg = as_gguf_find_kv(g, "tokenizer.ggml.merges");
    if (!tok || tok->type != AS_GGUF_ARRAY || tok->arr_type != AS_GGUF_STRING) {
        as_fail("file %s: tokenizer.ggml.tokens missing or not an array of strings", path);
        goto out;
    }
    if (tt && (tt->type != AS_GGUF_ARRAY || tt->arr_type != AS_GGUF_I32 || tt->n != tok->n)) {
        as_fail("file %s: tokenizer.ggml.token_type must be %llu i32", path,
                (unsigned long long)tok->n);
        goto out;
    }
    if (spm &&
        (!sc || sc->type != AS_GGUF_ARRAY || sc->arr_type != AS_GGUF_F32 || sc->n != tok->n)) {
        as_fail("file %s: tokenizer.ggml.scores must be %llu f32 for a llama vocabulary", path,
                (unsigned long long)tok->n);
        goto out;
    }
    if (!spm && (!mg || mg->type != AS_GGUF_ARRAY || mg->arr_type != AS_GGUF_STRING)) {
        as_fail("file %s: tokenizer.ggml.merges missing for a gpt2 vocabulary", path);
        goto out;
    }
    int add_bos = as_gguf_vocab_add_bos(g), add_eos = as_gguf_vocab_add_eos(g);
    if (add_bos < 0 || add_eos < 0) goto out;
    types = as_xmalloc(sizeof(int32_t) * (size_t)(tok->n ? tok->n : 1));
    for (uint64_t i = 0; i < tok->n; i++) {
        types[i] = TT_NORMAL;
        if (tt) memcpy(&types[i], (const char *)tt->arr + 4 * i, 4);
    }
    int32_t bos = token_key(g, "tokenizer.ggml.bos_token_id", tok->n);
    int32_t eos = token_key(g, "tokenizer.ggml.eos_token_id", tok->n);
    int32_t unk = token_key(g, "tokenizer.ggml.unknown_token_id", tok->n);

    json_t *vocab = json_object(), *added = json_array();
    for (uint64_t i = 0; i < tok->n; i++) {
        if (types[i] == TT_UNUSED) continue;
        /* a duplicate string keeps its first id, as tokenizer.json's vocab can hold only one */
        if (!json_object_getn(vocab, tok->strs[i], tok->lens[i]) &&
            json_object_setn_new(vocab, tok->strs[i], tok->lens[i], json_integer((json_int_t)i))) {
            json_decref(vocab), json_decref(added);
            as_fail("file %s: tokenizer.ggml.tokens[%llu] is not valid UTF-8", path,
                    (unsigned long long)i);
            goto out;
        }
        if (types[i] == TT_CONTROL || types[i] == TT_UNKNOWN || types[i] == TT_USER)
            json_array_append_new(
                added, json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i,
                                 "content", tok->strs[i], "single_word", 0, "lstrip", 0, "rstrip",
                                 0, "normalized", 0, "special", types[i] != TT_USER));
    }
    json_t *merges =
        spm ? merges_from_scores(tok, sc->arr, types, vocab) : bpe_merges(g, mg, vocab);
    if (!merges) {
        json_decref(vocab), json_decref(added);
        goto out;
    }
    json_t *bpe = json_pack(
        "{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout", "unk_token",
        "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", spm, "byte_fallback", spm,
        "ignore_merges", pre ? pre->ignore_merges : 0, "vocab", vocab, "merges", merges);
    if (unk >= 0) json_object_set_new(bpe, "unk_token", json_string(tok->strs[unk]));
    root = json_pack("{s:s, s:n, s:n, s:o, s:n, s:n, s:n, s:n, s:o}", "version", "1.0",
                     "truncation", "padding", "added_tokens", added, "normalizer", "pre_tokenizer",
                     "post_processor", "decoder", "model", bpe);
    if (spm) {
        int prefix = 1;
        as_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &prefix);
        const char *meta = "\xe2\x96\x81";
        json_t *norm = json_array();
        if (prefix)
            json_array_append_new(norm,
                                  json_pack("{s:s, s:s}", "type", "Prepend", "prepend", meta));
        json_array_append_new(norm, replace_step(" ", meta));
        json_object_set_new(root, "normalizer",
                            json_pack("{s:s, s:o}", "type", "Sequence", "normalizers", norm));
        json_object_set_new(root, "decoder",
                            json_pack("{s:s, s:[o, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}", "type",
                                      "Sequence", "decoders", replace_step(meta, " "), "type",
                                      "ByteFallback", "type", "Fuse", "type", "Strip", "content",
                                      " ", "start", prefix ? 1 : 0, "stop", 0));
    } else {
        json_object_set_new(root, "pre_tokenizer", pre_tokenizer_json(pre));
        json_object_set_new(root, "decoder",
                            json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel",
                                      "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1));
    }
    if ((add_bos && bos >= 0) || (add_eos && eos >= 0))
        json_object_set_new(root, "post_processor",
                            template_processor(add_bos && bos >= 0 ? tok->strs[bos] : NULL, bos,
                                               add_eos && eos >= 0 ? tok->strs[eos] : NULL, eos));
out:
    free(types);
    return root;
}

json_t *as_gguf_vocab_config_json(const struct as_gguf *g) {
    const struct pre_def *pre;
    int spm = vocab_kind(g, &pre);
    if (spm < 0) return NULL;
    const struct as_gguf_kv *tok = as_gguf_find_kv(g, "tokenizer.ggml.tokens");
    if (!tok || tok->type != AS_GGUF_ARRAY || tok->arr_type != AS_GGUF_STRING) {
        as_fail("file %s: tokenizer.ggml.tokens missing or not an array of strings", g->path);
        return NULL;
    }
    int add_bos = as_gguf_vocab_add_bos(g), add_eos = as_gguf_vocab_add_eos(g);
    if (add_bos < 0 || add_eos < 0) return NULL;
    json_t *c = json_object();
    static const char *const keys[][2] = {{"bos_token", "tokenizer.ggml.bos_token_id"},
                                          {"eos_token", "tokenizer.ggml.eos_token_id"},
                                          {"unk_token", "tokenizer.ggml.unknown_token_id"},
                                          {"pad_token", "tokenizer.ggml.padding_token_id"}};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        int32_t id = token_key(g, keys[k][1], tok->n);
        json_object_set_new(c, keys[k][0], id >= 0 ? json_string(tok->strs[id]) : json_null());
    }
    json_object_set_new(c, "add_bos_token", json_boolean(add_bos));
    json_object_set_new(c, "add_eos_token", json_boolean(add_eos));
    const char *tmpl = as_gguf_get_str(g, "tokenizer.chat_template");
    if (tmpl) json_object_set_new(c, "chat_template", json_string(tmpl));
    const char *arch = as_gguf_get_str(g, "general.architecture");
    char key[128];
    uint32_t ctx;
    snprintf(key, sizeof key, "%s.context_length", arch ? arch : "");
    if (arch && as_gguf_get_u32(g, key, &ctx) == 1)
        json_object_set_new(c, "model_max_length", json_integer(ctx));
    json_object_set_new(c, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    json_object_set_new(c, "clean_up_tokenization_spaces",
                        json_boolean(spm ? 0 : pre->clean_spaces));
    return c;
}

/* Serialized JSON with a final newline, or NULL with as_fail. */
static char *dump(const json_t *j, const char *what) {
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    if (!s) {
        as_fail("%s: cannot serialize", what);
        return NULL;
    }
    size_t n = strlen(s);
    s = as_xrealloc(s, n + 2);
    s[n] = '\n', s[n + 1] = 0;
    return s;
}

int as_gguf_vocab_write_hf(const struct as_gguf *g, const char *dir) {
    json_t *tj = as_gguf_vocab_tokenizer_json(g);
    json_t *cj = tj ? as_gguf_vocab_config_json(g) : NULL;
    char *ts = cj ? dump(tj, "tokenizer.json") : NULL;
    char *cs = ts ? dump(cj, "tokenizer_config.json") : NULL;
    json_decref(tj), json_decref(cj);
    int rc = -1;
    char *tp = NULL, *cp = NULL;
    if (!cs) goto out;
    if (asprintf(&tp, "%s/tokenizer.json", dir) < 0 ||
        asprintf(&cp, "%s/tokenizer_config.json", dir) < 0) {
        as_fail("%s: out of memory", dir);
        goto out;
    }
    if (as_atomic_write_file(tp, ts, strlen(ts))) goto out;
    if (as_atomic_write_file(cp, cs, strlen(cs))) {
        remove(tp);
        goto out;
    }
    rc = 0;
out:
    free(ts), free(cs), free(tp), free(cp);
    return rc;
}

struct as_tokenizer *as_tokenizer_load_gguf(const char *path) {
    struct as_gguf *g = as_gguf_open(path);
    if (!g) return NULL;
    struct as_tokenizer *t = NULL;
    json_t *root = as_gguf_vocab_tokenizer_json(g);
    int add_bos = root ? as_gguf_vocab_add_bos(g) : -1;
    if (add_bos >= 0) {
        const struct as_gguf_kv *tok = as_gguf_find_kv(g, "tokenizer.ggml.tokens");
        t = as_tokenizer_from_json(path, root, token_key(g, "tokenizer.ggml.bos_token_id", tok->n),
                                   token_key(g, "tokenizer.ggml.eos_token_id", tok->n));
        if (t) as_tokenizer_set_add_bos(t, add_bos);
    }
    json_decref(root);
    as_gguf_close(g);
    return t;
}
