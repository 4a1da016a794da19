/* stream: the tensor stream, the data plane between as-* tools (byte format:
 * docs/stream-format.md).
 *
 * A stream is a sequence of self-delimiting records: a 32-byte prefix (magic "ASTR", version,
 * kind, lengths, header checksum), a JSON header (name, dtype, shape, role, layer, attrs, payload
 * description) and, for inline payloads, the payload bytes, 64-byte aligned in the stream. A
 * payload travels inline (with its XXH3-64) or by reference to a region of a file that the consumer
 * maps (zero copy). An end record closes each segment with its record count, so `cat a b | tool`
 * works and a stream cut short by a killed producer is an error, never a silently shorter stream.
 *
 * Reader: as_stream_open / as_stream_next / as_stream_payload / as_stream_close.
 * Writer: as_stream_writer_fd / as_stream_write / as_stream_write_end / as_stream_writer_free.
 * Producers of large intermediate data write it to an arena file (as_arena_*) and send references;
 * checkpoints become by-reference records without touching their data (as_stream_write_ckpt). */
#ifndef AS_STREAM_H
#define AS_STREAM_H

#include <jansson.h>
#include <stdint.h>

#include "dtype.h"
#include "safetensors.h"

#define AS_STREAM_MAGIC "ASTR"
#define AS_STREAM_VERSION 1
#define AS_STREAM_PREFIX_BYTES 32
#define AS_STREAM_ALIGN 64 /* writers align headers and inline payloads to this in the stream */

enum as_rec_kind { AS_REC_TENSOR = 1, AS_REC_END = 2 };
enum as_payload_kind { AS_PAYLOAD_INLINE = 1, AS_PAYLOAD_REF = 2 };

/* One tensor record. Writers fill it (strings and attrs are borrowed, never freed by the library);
 * readers hand out a record that stays valid until the next as_stream_next(). */
struct as_rec {
    const char *name;
    enum as_dtype dtype;
    int ndim;
    int64_t shape[AS_MAX_DIMS];
    const char
        *role;     /* weight, hessian, act-mean-abs, act-absmax, qweight, scale, zero, g_idx, ... */
    int layer;     /* decoder layer index, -1 if none */
    json_t *attrs; /* a JSON object, or NULL for {} */

    enum as_payload_kind kind;
    uint64_t nbytes; /* payload bytes == as_dtype_nbytes(dtype, numel) */
    int has_xxh3;    /* checksum present (always for inline; optional for references) */
    uint64_t xxh3;   /* XXH3-64 (seed 0) of the nbytes payload bytes */

    /* by-reference payloads: bytes [offset, offset + nbytes) of `file` */
    const char *file; /* absolute path */
    uint64_t offset;
    int has_file_stat; /* the file is immutable: its size and mtime were recorded */
    uint64_t file_size;
    int64_t file_mtime_ns;
};

/* Fill an inline record (no attrs, layer as given, nbytes from dtype and shape). */
void as_rec_init(struct as_rec *r, const char *name, const char *role, int layer,
                 enum as_dtype dtype, int ndim, const int64_t *shape);
uint64_t as_rec_numel(const struct as_rec *r);
/* Layer index from a tensor name: the N of the first "layers.N." component, e.g.
 * "model.layers.12.mlp.up_proj.weight" -> 12; -1 if none. */
int as_layer_from_name(const char *name);
/* The record's JSON header object (what as-ls prints); new reference. */
json_t *as_rec_to_json(const struct as_rec *r);

/* ---- reader ---- */
struct as_stream_reader;

/* Read from fd (not closed by the reader); `name` appears in every error ("stream NAME: ..."). */
struct as_stream_reader *as_stream_open_fd(int fd, const char *name);
/* Open PATH, or stdin for "-" (displayed as "stdin"). NULL with as_fail() on error. */
struct as_stream_reader *as_stream_open(const char *path);
/* Next tensor record: 1 and *rec set; 0 at the complete end of the stream (the last thing read was
 * an end record); -1 with as_fail() on any error (truncation, corruption, I/O). End records
 * between segments are consumed silently. An unread inline payload is skipped (not verified). */
int as_stream_next(struct as_stream_reader *r, const struct as_rec **rec);
/* Same, but an end record is reported instead of consumed silently: returns 2 at each segment
 * boundary, so a consumer in a request/response protocol (as-calib's quantizer coprocess) can act
 * at the end of each segment without blocking for the next one. */
int as_stream_next_segmented(struct as_stream_reader *r, const struct as_rec **rec);
/* 1 if the end record just reported by as_stream_next_segmented asked for a response: a
 * request/response producer (as-calib --sequential) marks the end of each request so, and a
 * filter (as-gptq) must then finish all it can, fail on what it cannot, and answer with an end
 * record of its own (as_stream_write_end_flush). */
int as_stream_end_flush(const struct as_stream_reader *r);
/* The current record's payload, verified: inline bytes are read into a reusable 64-byte aligned
 * buffer (valid until the next as_stream_next) and checked against their XXH3; references are
 * mapped (valid until as_stream_close), checked against the recorded file size/mtime and bounds,
 * and against their XXH3 when one is present. NULL with as_fail() naming stream, record, problem.
 * A zero-byte payload returns a valid non-NULL pointer. */
const void *as_stream_payload(struct as_stream_reader *r);
/* Tensor records read so far (across segments). */
uint64_t as_stream_count(const struct as_stream_reader *r);
const char *as_stream_name(const struct as_stream_reader *r);
void as_stream_close(struct as_stream_reader *r);

/* ---- writer ---- */
struct as_stream_writer;

/* Write to fd (not closed by the writer; a pipe is enlarged to 1 MiB when allowed). */
struct as_stream_writer *as_stream_writer_fd(int fd, const char *name);
/* Write one record. Inline: `data` holds rec->nbytes bytes (written straight from it, no copy);
 * its XXH3 is computed unless rec->has_xxh3 (a pass-through of an already verified payload).
 * Reference: `data` is ignored. -1 with as_fail() on a bad record or a failed write (EPIPE etc.).
 */
int as_stream_write(struct as_stream_writer *w, const struct as_rec *rec, const void *data);
/* Convenience for producers: an inline tensor record. attrs may be NULL. */
int as_stream_write_tensor(struct as_stream_writer *w, const char *name, const char *role,
                           int layer, enum as_dtype dtype, int ndim, const int64_t *shape,
                           json_t *attrs, const void *data);
/* End the segment: an end record carrying the number of records written since the last one.
 * A producer that fails must NOT call this, so that consumers detect the incomplete stream. */
int as_stream_write_end(struct as_stream_writer *w);
/* An end record marked {"flush": true}: "answer everything up to here now" (see above). */
int as_stream_write_end_flush(struct as_stream_writer *w);
uint64_t as_stream_writer_count(const struct as_stream_writer *w); /* records written in total */
void as_stream_writer_free(struct as_stream_writer *w);

/* ---- checkpoints as by-reference records ---- */
/* Absolute paths and stat (size, mtime) of each shard of an open checkpoint, computed once. */
struct as_ckpt_refs;
struct as_ckpt_refs *as_ckpt_refs_new(const struct as_ckpt *c);
/* The i-th tensor in natural name order (digit runs compare as numbers, so layers come out
 * 0, 1, 2, ..., 10 rather than 0, 1, 10, 2) as a by-reference record: role "weight", layer from
 * the name, no checksum (nothing is read), file size and mtime recorded. Valid while `cr` lives. */
void as_ckpt_refs_rec(const struct as_ckpt_refs *cr, int i, struct as_rec *r);
/* The natural-order index (as taken by as_ckpt_refs_rec) of the tensor named `name`, or -1.
 * Not the index into the checkpoint's own tensor list, which is in byte (strcmp) order. */
int as_ckpt_refs_find(const struct as_ckpt_refs *cr, const char *name);
const struct as_st_tensor *as_ckpt_refs_tensor(const struct as_ckpt_refs *cr, int i);
/* strcmp, except that runs of digits compare by value. */
int as_natural_cmp(const char *a, const char *b);
void as_ckpt_refs_free(struct as_ckpt_refs *cr);
/* Every tensor of the checkpoint as by-reference records (no end record). */
int as_stream_write_ckpt(struct as_stream_writer *w, const struct as_ckpt *c);

/* ---- sources: a stream or a checkpoint, read through one interface ---- */
/* PATH is "-" (stdin), a stream file (starts with "ASTR"), a checkpoint directory or a safetensors
 * file. Checkpoint tensors come out as by-reference records (as_ckpt_refs_rec) and their payload
 * is the checkpoint's own mapping. Tools that accept "streams or checkpoints" use this. */
struct as_source;
struct as_source *as_source_open(const char *path);
int as_source_next(struct as_source *s, const struct as_rec **rec); /* as as_stream_next */
const void *as_source_payload(struct as_source *s);                 /* as as_stream_payload */
int as_source_is_stream(const struct as_source *s);
const char *as_source_name(const struct as_source *s);
void as_source_close(struct as_source *s);

/* ---- arenas: scratch files that producers append payloads to, and send references into ---- */
struct as_arena;
/* Create a new arena file DIR/as-arena.<pid>.<n> (DIR: e.g. /dev/shm, $TMPDIR, a shared FS).
 * The arena file outlives the producer: the pipeline that chose DIR removes it when done. */
struct as_arena *as_arena_create(const char *dir);
/* Append data (rec->nbytes bytes, at a 64-byte aligned offset) and turn *rec into a reference to
 * it with its XXH3 (computed unless rec->has_xxh3). rec->file points into the arena object. */
int as_arena_put(struct as_arena *a, struct as_rec *rec, const void *data);
const char *as_arena_path(const struct as_arena *a);
/* Close the file (an arena that received nothing is removed; others stay for the consumers). */
void as_arena_close(struct as_arena *a);

#endif
