/* ggml_types: ggml's tensor types (ggml.h enum ggml_type) as one type-traits table, in ggml's
 * style: indexed by the type number, each entry with its name, block size in elements, block size
 * in bytes and the reference dequantizer (ggml-quants.c dequantize_row_*, same arithmetic in the
 * same order, so the f32 results are bit for bit ggml's; docs/gguf.md "ggml types").
 *
 * Blocks are declared byte for byte as ggml-common.h does (f16 fields are IEEE binary16 bit
 * patterns) and their sizes _Static_assert'ed. The dequantizers read the fields through memcpy at
 * their offsetof(), because a GGUF file may put a tensor at any general.alignment (even 1). */
#ifndef AS_GGML_TYPES_H
#define AS_GGML_TYPES_H

#include <stddef.h>
#include <stdint.h>

/* The types we read (and, for F32/F16/BF16/Q4_0/Q4_1/Q8_0/TQ1_0/TQ2_0, write), with ggml's numbers.
 */
enum as_ggml_type {
    AS_GGML_F32 = 0,
    AS_GGML_F16 = 1,
    AS_GGML_Q4_0 = 2,
    AS_GGML_Q4_1 = 3,
    AS_GGML_Q5_0 = 6,
    AS_GGML_Q5_1 = 7,
    AS_GGML_Q8_0 = 8,
    AS_GGML_Q2_K = 10,
    AS_GGML_Q3_K = 11,
    AS_GGML_Q4_K = 12,
    AS_GGML_Q5_K = 13,
    AS_GGML_Q6_K = 14,
    AS_GGML_BF16 = 30,
    AS_GGML_TQ1_0 = 34, /* blocks: as_block_tq1_0 / as_block_tq2_0 in pack_ternary.h */
    AS_GGML_TQ2_0 = 35,
};
/* One past the highest number ggml has assigned (Q1_0 = 41): the table names every one of them
 * so that an unsupported type is reported by name. */
#define AS_GGML_TYPE_COUNT 42

#define AS_QK 32    /* elements per block of the legacy types (Q4_0 ... Q8_0) */
#define AS_QK_K 256 /* elements per super-block of the k-quants (Q2_K ... Q6_K) */
#define AS_K_SCALE_SIZE 12

typedef struct {
    uint16_t d;
    uint8_t qs[AS_QK / 2];
} as_block_q4_0;
typedef struct {
    uint16_t d, m;
    uint8_t qs[AS_QK / 2];
} as_block_q4_1;
typedef struct {
    uint16_t d;
    uint8_t qh[4]; /* bit j: the fifth bit of element j */
    uint8_t qs[AS_QK / 2];
} as_block_q5_0;
typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[AS_QK / 2];
} as_block_q5_1;
typedef struct {
    uint16_t d;
    int8_t qs[AS_QK];
} as_block_q8_0;
typedef struct {
    uint8_t scales[AS_QK_K / 16]; /* per 16 elements: low nibble scale, high nibble min */
    uint8_t qs[AS_QK_K / 4];      /* 2-bit codes */
    uint16_t d, dmin;
} as_block_q2_K;
typedef struct {
    uint8_t hmask[AS_QK_K / 8]; /* third bit of each code, set = no -4 offset */
    uint8_t qs[AS_QK_K / 4];    /* low 2 bits */
    uint8_t scales[12];         /* 16 6-bit scales, offset by 32 */
    uint16_t d;
} as_block_q3_K;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[AS_K_SCALE_SIZE]; /* 8 6-bit scales and 8 6-bit mins */
    uint8_t qs[AS_QK_K / 2];
} as_block_q4_K;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[AS_K_SCALE_SIZE];
    uint8_t qh[AS_QK_K / 8]; /* fifth bit: bit s of qh[l] for element 32 s + l */
    uint8_t qs[AS_QK_K / 2];
} as_block_q5_K;
typedef struct {
    uint8_t ql[AS_QK_K / 2];     /* low 4 bits */
    uint8_t qh[AS_QK_K / 4];     /* high 2 bits */
    int8_t scales[AS_QK_K / 16]; /* per 16 elements */
    uint16_t d;
} as_block_q6_K;
_Static_assert(sizeof(as_block_q4_0) == 2 + AS_QK / 2, "wrong q4_0 block size/padding");
_Static_assert(sizeof(as_block_q4_1) == 4 + AS_QK / 2, "wrong q4_1 block size/padding");
_Static_assert(sizeof(as_block_q5_0) == 2 + 4 + AS_QK / 2, "wrong q5_0 block size/padding");
_Static_assert(sizeof(as_block_q5_1) == 4 + 4 + AS_QK / 2, "wrong q5_1 block size/padding");
_Static_assert(sizeof(as_block_q8_0) == 2 + AS_QK, "wrong q8_0 block size/padding");
_Static_assert(sizeof(as_block_q2_K) == 4 + AS_QK_K / 16 + AS_QK_K / 4, "wrong q2_K block size");
_Static_assert(sizeof(as_block_q3_K) == 2 + AS_QK_K / 4 + AS_QK_K / 8 + 12, "wrong q3_K size");
_Static_assert(sizeof(as_block_q4_K) == 4 + AS_K_SCALE_SIZE + AS_QK_K / 2, "wrong q4_K size");
_Static_assert(sizeof(as_block_q5_K) == 4 + AS_K_SCALE_SIZE + AS_QK_K / 8 + AS_QK_K / 2,
               "wrong q5_K block size");
_Static_assert(sizeof(as_block_q6_K) == 2 + AS_QK_K / 2 + AS_QK_K / 4 + AS_QK_K / 16,
               "wrong q6_K block size");

struct as_ggml_type_traits {
    const char *name; /* ggml's name; NULL for a number ggml retired (4, 5, 31..33, 36..38) */
    int blck_size;    /* elements per block (0: not supported here) */
    size_t type_size; /* bytes per block */
    /* n elements (a multiple of blck_size) to f32; NULL: not supported here */
    void (*to_float)(const void *src, float *dst, size_t n);
};

/* The entry for type number t, or NULL past the table. */
const struct as_ggml_type_traits *as_ggml_get_type_traits(uint32_t t);

const char *as_ggml_type_name(uint32_t t);     /* "Q4_K", "IQ2_XXS", ...; NULL if ggml has none */
int as_ggml_type_known(uint32_t t);            /* 1 if we read (dequantize) type t */
int as_ggml_blck_size(enum as_ggml_type t);    /* elements per block: 1, 32 or 256 */
size_t as_ggml_type_size(enum as_ggml_type t); /* bytes per block */
/* Bytes of a row of ne0 elements; 0 if ne0 is not a multiple of the block size. */
size_t as_ggml_row_size(enum as_ggml_type t, int64_t ne0);
/* Dequantize n elements (n a multiple of the block size) of a supported type t to f32. */
void as_ggml_to_f32(enum as_ggml_type t, const void *src, float *dst, size_t n);

#endif
