/* gguf_vocab: a GGUF file's tokenizer.ggml.* vocabulary as the equivalent tokenizer.json.
 *
 * "llama" (SentencePiece) vocabularies get merges derived from the scores exactly as the
 * llama2.c importer derives them (every split of a token into two vocabulary tokens, by the
 * token's score); "gpt2" (byte-level BPE) ones their merges. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "gguf.h"
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

static json_t *replace_step(const char *from, const char *to) {
    return json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", from, "content",
                     to);
}

struct as_tokenizer *as_tokenizer_load_gguf(const char *path) {
    struct as_gguf *g = as_gguf_open(path);
    if (!g) return NULL;
    struct as_tokenizer *t = NULL;
    json_t *root = NULL;
    int32_t *types = NULL;
    const char *model = as_gguf_get_str(g, "tokenizer.ggml.model");
    const struct as_gguf_kv *tok = as_gguf_find_kv(g, "tokenizer.ggml.tokens");
    const struct as_gguf_kv *tt = as_gguf_find_kv(g, "tokenizer.ggml.token_type");
    const struct as_gguf_kv *sc = as_gguf_find_kv(g, "tokenizer.ggml.scores");
    const struct as_gguf_kv *mg = as_gguf_find_kv(g, "tokenizer.ggml.merges");
    int spm = model && !strcmp(model, "llama");
    if (!model || (!spm && strcmp(model, "gpt2"))) {
        as_fail("file %s: tokenizer.ggml.model \"%s\" is not supported (llama, gpt2)", path,
                model ? model : "(missing)");
        goto out;
    }
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
    const char *pre = as_gguf_get_str(g, "tokenizer.ggml.pre");
    if (!spm && pre && strcmp(pre, "gpt2") && strcmp(pre, "default")) {
        as_fail("file %s: tokenizer.ggml.pre \"%s\" is not supported (gpt2)", path, pre);
        goto out;
    }
    types = as_xmalloc(sizeof(int32_t) * (size_t)(tok->n ? tok->n : 1));
    for (uint64_t i = 0; i < tok->n; i++) {
        types[i] = TT_NORMAL;
        if (tt) memcpy(&types[i], (const char *)tt->arr + 4 * i, 4);
    }
    uint32_t v;
    int32_t bos = -1, eos = -1, unk = -1;
    if (as_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &v) == 1) bos = (int32_t)v;
    if (as_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &v) == 1) eos = (int32_t)v;
    if (as_gguf_get_u32(g, "tokenizer.ggml.unknown_token_id", &v) == 1) unk = (int32_t)v;

    json_t *vocab = json_object(), *added = json_array();
    for (uint64_t i = 0; i < tok->n; i++) {
        if (types[i] == TT_UNUSED) continue;
        /* a duplicate string keeps its first id, as tokenizer.json's vocab can hold only one */
        if (!json_object_get(vocab, tok->strs[i]) &&
            json_object_setn_new(vocab, tok->strs[i], tok->lens[i], json_integer((json_int_t)i))) {
            json_decref(vocab), json_decref(added);
            as_fail("file %s: tokenizer.ggml.tokens[%llu] is not valid UTF-8", path,
                    (unsigned long long)i);
            goto out;
        }
        if (types[i] == TT_CONTROL || types[i] == TT_UNKNOWN || types[i] == TT_USER)
            json_array_append_new(added, json_pack("{s:I, s:s, s:b, s:b}", "id", (json_int_t)i,
                                                   "content", tok->strs[i], "normalized", 0,
                                                   "special", types[i] != TT_USER));
    }
    json_t *merges;
    if (spm) {
        merges = merges_from_scores(tok, sc->arr, types, vocab);
    } else {
        merges = json_array();
        for (uint64_t i = 0; i < mg->n; i++)
            json_array_append_new(merges, json_string(mg->strs[i]));
    }
    json_t *bpe = json_pack("{s:s, s:o, s:o, s:b, s:b}", "type", "BPE", "vocab", vocab, "merges",
                            merges, "byte_fallback", spm, "fuse_unk", spm);
    if (unk >= 0 && (uint64_t)unk < tok->n)
        json_object_set_new(bpe, "unk_token", json_string(tok->strs[unk]));
    root = json_pack("{s:o, s:o}", "model", bpe, "added_tokens", added);
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
        json_object_set_new(root, "pre_tokenizer",
                            json_pack("{s:s, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                      "use_regex", 1));
        json_object_set_new(root, "decoder", json_pack("{s:s}", "type", "ByteLevel"));
    }
    t = as_tokenizer_from_json(path, root, bos, eos);
out:
    free(types);
    json_decref(root);
    as_gguf_close(g);
    return t;
}
