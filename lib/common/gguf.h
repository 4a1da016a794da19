/* gguf: llama.cpp's GGUF v3 file format: writer, reader, block codecs, packing and loading.
 *
 * File layout (docs/gguf.md, REFERENCE.md "GGUF"), all little-endian: magic "GGUF", u32 version 3,
 * u64 tensor count, u64 metadata count; metadata KVs (gguf string key = u64 length + bytes, u32
 * value type, value; arrays = u32 element type, u64 count, elements); tensor infos (name, u32
 * n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64 offset relative to the data section);
 * zero padding to general.alignment (default 32); the data section, each tensor padded to the
 * alignment in info order (llama.cpp's gguf.cpp insists on exactly these offsets).
 * Tensor types, blocks and their dequantizers: ggml_types.h (the type-traits table).
 *
 * gguf.c       writer (as_gguf_writer_*), reader (as_gguf_open, validates everything it maps),
 *              exact encoding of as_qlinear group-32 codes into Q4_0/Q4_1/Q8_0
 * gguf_pack.c  HF checkpoint + quantized linears -> llama-architecture GGUF (names, q/k rows,
 *              tokenizer metadata), written atomically
 * gguf_load.c  GGUF -> engine model (struct as_model, HF layout) and tokenizer */
#ifndef AS_GGUF_H
#define AS_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "ggml_types.h"
#include "pack_formats.h"

#define AS_GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define AS_GGUF_VERSION 3
#define AS_GGUF_DEFAULT_ALIGNMENT 32

/* Metadata value types (gguf.h enum gguf_type). */
enum as_gguf_vtype {
    AS_GGUF_U8 = 0,
    AS_GGUF_I8 = 1,
    AS_GGUF_U16 = 2,
    AS_GGUF_I16 = 3,
    AS_GGUF_U32 = 4,
    AS_GGUF_I32 = 5,
    AS_GGUF_F32 = 6,
    AS_GGUF_BOOL = 7,
    AS_GGUF_STRING = 8,
    AS_GGUF_ARRAY = 9,
    AS_GGUF_U64 = 10,
    AS_GGUF_I64 = 11,
    AS_GGUF_F64 = 12,
    AS_GGUF_VTYPE_COUNT
};

/* llama.cpp's general.file_type (enum llama_ftype) for the dominant tensor type. */
enum as_llama_ftype {
    AS_FTYPE_ALL_F32 = 0,
    AS_FTYPE_MOSTLY_F16 = 1,
    AS_FTYPE_MOSTLY_Q4_0 = 2,
    AS_FTYPE_MOSTLY_Q4_1 = 3,
    AS_FTYPE_MOSTLY_Q8_0 = 7,
    AS_FTYPE_MOSTLY_BF16 = 32,
    AS_FTYPE_MOSTLY_TQ1_0 = 36,
    AS_FTYPE_MOSTLY_TQ2_0 = 37,
};

/* Encode f32 into F32/F16/BF16 (round to nearest even). Quantized types go through
 * as_gguf_encode_qlinear, never through a re-rounding f32 path. -1 for a block type. */
int as_ggml_from_f32(enum as_ggml_type t, const float *src, void *dst, size_t n);

/* ---- exact encoding of integer-quantized linears (gguf.c) ---- */

/* The block type that holds the layer's codes exactly: Q4_0 for 4-bit sym (zero 8), Q4_1 for 4-bit
 * asym, Q8_0 for 8-bit sym (zero 128); group size 32, K % 32 == 0, groups in column order (trivial
 * g_idx), scales finite in fp16. Else -1 with the reason in why[]. `prefer_q4_1` stores a 4-bit
 * symmetric layer as Q4_1 (m = -8d) instead of Q4_0. */
int as_gguf_qlinear_type(const struct as_qlinear *l, int prefer_q4_1, char *why, size_t why_len);
/* Blocks of type t for the rows of l in the order row_perm[0..N) (NULL = identity): output row r
 * is l's row row_perm[r]. Codes are copied, never re-rounded: Q4_0 d = fp16(scale), qs = q;
 * Q4_1 d = fp16(scale), m = fp16(-fp16(scale) * zero), qs = q; Q8_0 d = fp16(scale), qs = q - 128.
 * out holds N * K/32 blocks. */
void as_gguf_encode_qlinear(const struct as_qlinear *l, enum as_ggml_type t, const int *row_perm,
                            void *out);
/* What a GGUF reader gets for l stored as t (HF row order): Q4_0 / Q8_0 exactly the GPTQ dequant
 * fp16(scale) * (q - zero); Q4_1 fp16(d) * q + fp16(m), which differs from fp16(d) * (q - zero)
 * by the fp16 rounding of m (at most half an ulp of |m|, docs/gguf.md). */
void as_gguf_qlinear_expected(const struct as_qlinear *l, enum as_ggml_type t, float *out);

/* ---- writer (gguf.c) ---- */

struct as_gguf_writer;
struct as_gguf_writer *as_gguf_writer_new(void);
void as_gguf_writer_free(struct as_gguf_writer *w);
/* Scalars; a key set twice keeps its first position and takes the new value. */
void as_gguf_set_u32(struct as_gguf_writer *w, const char *key, uint32_t v);
void as_gguf_set_i32(struct as_gguf_writer *w, const char *key, int32_t v);
void as_gguf_set_u64(struct as_gguf_writer *w, const char *key, uint64_t v);
void as_gguf_set_f32(struct as_gguf_writer *w, const char *key, float v);
void as_gguf_set_f64(struct as_gguf_writer *w, const char *key, double v);
void as_gguf_set_bool(struct as_gguf_writer *w, const char *key, int v);
void as_gguf_set_str(struct as_gguf_writer *w, const char *key, const char *v);
/* Arrays: numeric elements (any scalar vtype but STRING/ARRAY, data little-endian packed) or
 * strings (copied). */
void as_gguf_set_arr(struct as_gguf_writer *w, const char *key, enum as_gguf_vtype elem,
                     const void *data, uint64_t n);
void as_gguf_set_arr_str(struct as_gguf_writer *w, const char *key, const char *const *v,
                         uint64_t n);
/* Add a tensor: ne[0] innermost (row length), data of as_ggml_row_size(t, ne[0]) * rows bytes.
 * The writer takes ownership of `data` (malloc'ed). -1 with as_fail on a bad shape or name. */
int as_gguf_add_tensor(struct as_gguf_writer *w, const char *name, enum as_ggml_type t, int n_dims,
                       const int64_t *ne, void *data);
/* Write the file atomically (PATH.tmp, fsync, rename). general.alignment, if set (u32, a power
 * of two), overrides the default 32. Does not free w. */
int as_gguf_writer_write(struct as_gguf_writer *w, const char *path);

/* ---- reader (gguf.c) ---- */

struct as_gguf_kv {
    char *key;
    enum as_gguf_vtype type;
    enum as_gguf_vtype arr_type; /* for ARRAY */
    uint64_t n;                  /* ARRAY: element count */
    union {
        uint64_t u;
        int64_t i;
        double f;
    } v;          /* scalar numbers and bools (converted) */
    char *str;    /* STRING */
    void *arr;    /* numeric ARRAY: n elements of arr_type, packed */
    char **strs;  /* STRING ARRAY: n NUL-terminated strings */
    size_t *lens; /* STRING ARRAY: their byte lengths */
};

struct as_gguf_tensor {
    char *name;
    int n_dims;
    int64_t ne[4];
    enum as_ggml_type type;
    uint64_t offset, nbytes; /* relative to the data section */
    const void *data;        /* into the mapping */
};

struct as_gguf {
    char *path;
    uint32_t version;
    int n_kv, n_tensors;
    struct as_gguf_kv *kv;
    struct as_gguf_tensor *tensors;
    uint32_t alignment;
    uint64_t data_offset;
    void *map;
    size_t map_size;
};

/* Map and validate a GGUF file: magic, version 2 or 3, every length and count within the file,
 * known value and tensor types, general.alignment a u32 power of two, tensor offsets where the
 * alignment puts them, data inside the file, unique keys and names. NULL with
 * as_fail("file F: problem") on any violation. */
struct as_gguf *as_gguf_open(const char *path);
void as_gguf_close(struct as_gguf *g);
const struct as_gguf_kv *as_gguf_find_kv(const struct as_gguf *g, const char *key);
const struct as_gguf_tensor *as_gguf_find_tensor(const struct as_gguf *g, const char *name);
/* Typed getters: 1 found, 0 absent (out untouched), -1 present with an incompatible type
 * (as_fail names file and key). Integers accept any integer type in range. */
int as_gguf_get_u32(const struct as_gguf *g, const char *key, uint32_t *out);
int as_gguf_get_f32(const struct as_gguf *g, const char *key, float *out);
int as_gguf_get_bool(const struct as_gguf *g, const char *key, int *out);
const char *as_gguf_get_str(const struct as_gguf *g, const char *key); /* NULL if absent */
/* Dequantize a whole tensor to f32 (numel floats). */
void as_gguf_tensor_to_f32(const struct as_gguf_tensor *t, float *dst);
uint64_t as_gguf_tensor_numel(const struct as_gguf_tensor *t);

/* ---- q/k rows (gguf_pack.c) ---- */

/* llama.cpp's converter (convert_hf_to_gguf.py LlamaModel.permute) reorders q_proj / k_proj rows
 * from HF's rotate-half RoPE layout to the interleaved one ggml's rope (mode 0) uses: within each
 * of n_head heads of head_dim rows, GGUF row 2i+j = HF row j*head_dim/2 + i. perm[r] = the HF
 * row that lands at GGUF row r. */
void as_gguf_qk_perm(int n_head, int head_dim, int *perm);

/* ---- packing (gguf_pack.c) ---- */

struct as_qcollect;
struct as_gguf_pack_opts {
    enum as_ggml_type float_type; /* F32 (default), F16 or BF16: matrices not stored as blocks */
    int prefer_q4_1;              /* store 4-bit sym layers as Q4_1 */
    int fallback_original;        /* non-block layers: the checkpoint's weights, not W_hat */
    int verify;                   /* read the file back and compare every linear bit for bit */
    int tern_type;                /* 0, or AS_GGML_TQ1_0 / TQ2_0: ternary layers as TQ blocks */
    /* Tensors the stream replaces (as-awq's rescaled norms...): HF names and f32 data with the
     * model tensor's element count; used instead of the checkpoint's. */
    int n_override;
    const char *const *override_name;
    const float *const *override_data;
};
struct as_gguf_pack_report {
    int n_quant, n_blocks, n_fallback; /* quantized linears; stored as blocks; kept as floats */
    int n_tensors;
    uint64_t file_bytes;
    int file_type; /* enum as_llama_ftype written */
};
/* Write the llama-architecture GGUF of the HF checkpoint model_dir with the quantized linears of
 * qc (may be NULL: a float conversion). Each fallback is reported on stderr with its reason.
 * -1 with as_fail; no file is left behind on failure. */
int as_gguf_pack(const char *model_dir, const struct as_qcollect *qc, const char *out_path,
                 const struct as_gguf_pack_opts *o, struct as_gguf_pack_report *rep);

/* ---- loading (gguf_load.c) ---- */

struct as_model;
struct as_tokenizer;
/* A llama-architecture GGUF as an engine model in the HF layout: dequantized to f32, q/k rows
 * put back in rotate-half order, config from the llama.* keys. NULL with as_fail. */
struct as_model *as_model_load_gguf(const char *path);
/* The tokenizer from the GGUF's tokenizer.ggml.* keys ("llama" with scores, or "gpt2" with
 * merges), rebuilt as the equivalent tokenizer.json. NULL with as_fail. */
struct as_tokenizer *as_tokenizer_load_gguf(const char *path);
/* 1 if path names a GGUF file (ends in ".gguf"). */
int as_path_is_gguf(const char *path);

#endif
