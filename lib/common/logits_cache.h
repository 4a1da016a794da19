/* logits_cache: a base model's logits at the scored positions of one evaluation, kept in a file,
 * so that comparing many quantized models against one base costs one forward pass each instead
 * of two (llama.cpp's perplexity --kl-divergence-base, for as-eval --base-logits).
 *
 * File (little-endian): a 64-byte header {char magic[8] "ASLOGIT1"; u32 vocab, ctx, first,
 * windows; u64 XXH3-64 of the evaluated token ids; u64 payload bytes; 24 zero bytes}, then for
 * each window (ctx - 1 - first) rows of vocab f32 logits: positions first .. ctx-2, the ones
 * whose next token is scored. The raw logits are kept (not log-probabilities) so that a cached
 * evaluation computes exactly what an uncached one does. Written atomically (atomic_file.h);
 * read through mmap. A file made for another text, window length, scoring or vocabulary is
 * refused with a message saying which. */
#ifndef AS_LOGITS_CACHE_H
#define AS_LOGITS_CACHE_H

#include <stdint.h>

struct as_logits_key {
    uint32_t vocab, ctx, first, windows;
    uint64_t ids_hash; /* as_logits_ids_hash of the windows' token ids */
};

uint64_t as_logits_ids_hash(const int32_t *ids, uint64_t n);

struct as_logits_cache;
/* Writing: create, put one window's rows at a time (windows in order), commit (or abort). */
struct as_logits_cache *as_logits_cache_create(const char *path, const struct as_logits_key *k);
int as_logits_cache_put(struct as_logits_cache *c, const float *rows);
int as_logits_cache_commit(struct as_logits_cache *c); /* frees c; -1 leaves no file */
void as_logits_cache_abort(struct as_logits_cache *c);
/* Reading: open checks the header against k; window w's rows, (ctx-1-first) x vocab. */
struct as_logits_cache *as_logits_cache_open(const char *path, const struct as_logits_key *k);
const float *as_logits_cache_window(const struct as_logits_cache *c, uint32_t w);
void as_logits_cache_close(struct as_logits_cache *c);

#endif
