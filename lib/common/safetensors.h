/* safetensors: memory-mapped reader and atomic writer for Hugging Face safetensors checkpoints.
 *
 * Format (REFERENCE.md): u64 LE header length N, N bytes of JSON, then the data buffer. The reader
 * maps the file read-only and hands out pointers into the mapping (zero copy). Validation is
 * strict: header length vs file size, header <= 100 MB, JSON syntax, known dtype, byte size ==
 * numel * dtype size, offsets in bounds, contiguous from 0 without holes or overlap.
 * A checkpoint directory (single file or sharded via model.safetensors.index.json) opens as one
 * tensor namespace (as_ckpt). The writer lays out an 8-byte aligned header with
 * {"format":"pt"} metadata and writes through a temporary file, fsync and rename. */
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

#endif
