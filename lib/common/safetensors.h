/* safetensors: memory-mapped reader and atomic writer for Hugging Face safetensors checkpoints.
 *
 * Format (REFERENCE.md): u64 LE header length N, N bytes of JSON, then the data buffer. The reader
 * maps the file read-only and hands out pointers into the mapping (zero copy). Validation is
 * strict: header length vs file size, header <= 100 MB, JSON syntax, known dtype, byte size ==
 * numel * dtype size, offsets in bounds, contiguous from 0 without holes or overlap.
 * A checkpoint directory (single file or sharded via model.safetensors.index.json) opens as one
 * tensor namespace (as_ckpt). The writer lays out an 8-byte aligned header with
 * {"format":"pt"} metadata and writes through a temporary file, fsync and rename; its sharded
 * mode writes a checkpoint directory incrementally (each tensor written as it is added, shards
 * cut at a maximum size, Hugging Face names and index), so memory does not grow with the model. */
#ifndef AS_SAFETENSORS_H
#define AS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#define AS_MAX_DIMS 8

struct as_st_tensor {
    char *name;
    enum as_dtype dtype;
    int ndim;
    int64_t shape[AS_MAX_DIMS];
    uint64_t numel;
    uint64_t offset; /* absolute offset of the data in the file */
    uint64_t nbytes;
    const void *data; /* pointer into the mapping */
};

struct as_st_file {
    char *path;
    int fd;
    void *map;
    uint64_t map_size;
    uint64_t header_len;
    int n_tensors;
    struct as_st_tensor *tensors;  /* in data-offset order */
    char *metadata_json;           /* "__metadata__" object as JSON text, or NULL */
    struct as_st_tensor **by_name; /* internal: tensors sorted by name, for as_st_find */
};

/* Open and validate; NULL with as_fail("FILE: problem") on error. */
struct as_st_file *as_st_open(const char *path);
/* Validate a whole file image held in memory (header and data buffer, `size` bytes) with the same
 * rules as as_st_open; `name` stands for the path in messages. The buffer is borrowed: it must
 * outlive the result, and as_st_close does not free it (fd is -1). For fuzzing and tests. */
struct as_st_file *as_st_open_mem(const void *buf, uint64_t size, const char *name);
void as_st_close(struct as_st_file *f);
const struct as_st_tensor *as_st_find(const struct as_st_file *f, const char *name);

/* A checkpoint: a directory (model.safetensors or an index with shards) or a single file. */
struct as_ckpt {
    char *dir;
    int n_files;
    struct as_st_file **files;
    int n_tensors; /* all tensors across shards, sorted by name */
    const struct as_st_tensor **tensors;
    const char **tensor_file; /* path of the shard holding tensors[i] */
};

struct as_ckpt *as_ckpt_open(const char *path);
void as_ckpt_close(struct as_ckpt *c);
const struct as_st_tensor *as_ckpt_find(const struct as_ckpt *c, const char *name);
/* Find a tensor and check its shape; error names file, tensor and expected/actual shape. */
const struct as_st_tensor *as_ckpt_expect(const struct as_ckpt *c, const char *name, int ndim,
                                          const int64_t *shape);
/* Path of the shard file holding t (the checkpoint path if t is not one of c's tensors). */
const char *as_ckpt_file_of(const struct as_ckpt *c, const struct as_st_tensor *t);
/* Copy a tensor, converted to f32, into dst (numel floats); every dtype converts. */
int as_ckpt_read_f32(const struct as_ckpt *c, const struct as_st_tensor *t, float *dst);

/* Writer: collects tensors (data pointers must stay valid until as_st_writer_finish), then writes
 * PATH atomically: PATH.tmp.<pid>, fsync, rename, fsync of the directory. */
struct as_st_writer;
struct as_st_writer *as_st_writer_new(const char *path);
int as_st_writer_add(struct as_st_writer *w, const char *name, enum as_dtype dtype, int ndim,
                     const int64_t *shape, const void *data, uint64_t nbytes);
/* Same, but the writer copies the data (for buffers the caller frees). */
int as_st_writer_add_copy(struct as_st_writer *w, const char *name, enum as_dtype dtype, int ndim,
                          const int64_t *shape, const void *data, uint64_t nbytes);
int as_st_writer_set_metadata(struct as_st_writer *w, const char *key, const char *value);
int as_st_writer_finish(struct as_st_writer *w); /* writes and frees; -1 leaves no file behind */
void as_st_writer_abort(struct as_st_writer *w);

/* Sharded streaming writer: the Hugging Face layout in DIR (an existing directory, normally the
 * staged one of as_atomic_dir_begin). Each add writes the tensor now, into the current shard
 * (data pointers need not outlive the call); a shard takes tensors until the next would exceed
 * max_shard_bytes (a larger tensor gets a shard of its own; header bytes are not counted).
 * A shard is buffered in memory up to buffer_bytes and written at once with an exact header;
 * past that its file is created with header space reserved and tensors are written as they come,
 * the JSON header (padded with spaces, as the format allows) last. Each shard is read back when
 * it is closed (verify): the strict reader parses it and every tensor's dtype, shape and XXH3 of
 * its data must match what was written. finish renames the shards: one shard becomes
 * DIR/model.safetensors (an unsharded checkpoint, byte-identical to the plain writer's file
 * when it stayed buffered); several become model-0000i-of-0000n.safetensors with
 * model.safetensors.index.json (metadata.total_size, weight_map). Tensor names are unique
 * across shards ("added twice" error at add time). */
#define AS_ST_DEFAULT_SHARD 5000000000ull  /* "5GB", transformers' save_pretrained default */
#define AS_ST_DEFAULT_BUFFER (64ull << 20) /* shards up to 64 MiB are written in one piece */
struct as_st_shard_report {
    int n_shards, n_tensors;
    uint64_t total_bytes; /* tensor data bytes, the index's metadata.total_size */
};
struct as_st_shard_opts {
    uint64_t max_shard_bytes;          /* 0: AS_ST_DEFAULT_SHARD */
    uint64_t buffer_bytes;             /* AS_ST_DEFAULT_BUFFER; 0 writes every tensor at once */
    int verify;                        /* read each shard back when it is closed */
    struct as_st_shard_report *report; /* filled by a successful finish (may be NULL) */
};
/* opts NULL: the defaults, verify on. */
struct as_st_writer *as_st_writer_new_sharded(const char *dir, const struct as_st_shard_opts *o);
/* as_st_writer_add for data inside a read-only file mapping (a model tensor copied through): a
 * sharded writer drops each written chunk's pages (MADV_DONTNEED), so copying a 2 GB embedding
 * does not add 2 GB to the resident set. Plain writers treat it as as_st_writer_add. */
int as_st_writer_add_mapped(struct as_st_writer *w, const char *name, enum as_dtype dtype, int ndim,
                            const int64_t *shape, const void *data, uint64_t nbytes);
/* Add every tensor of the plain writer src to dst, in order, and empty src (src stays usable;
 * owned copies move to a plain dst without copying). -1 on the first error. */
int as_st_writer_add_all(struct as_st_writer *dst, struct as_st_writer *src);
/* A checkpoint view of the tensors added so far to a plain writer (zero copy: the view borrows
 * the writer's data; close it with as_ckpt_close before the writer goes). So a caller can read
 * tensors back through the loaders before they are written. NULL for a sharded writer. */
struct as_ckpt *as_st_writer_view(const struct as_st_writer *w);
/* "5GB", "2GiB", "500MB", "100kB", "1e9", "123" (bytes): KB/MB/GB/TB are powers of 1000 and
 * KiB/MiB/GiB/TiB powers of 1024 as in transformers' max_shard_size, case-insensitive. */
int as_st_parse_size(const char *s, uint64_t *out);

#endif
