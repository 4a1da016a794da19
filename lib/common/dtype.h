/* dtype: the element types of safetensors and the tensor stream, and exact codecs between them.
 *
 * A traits table indexed by enum as_dtype gives each type's safetensors name and bit width.
 * Codecs convert arrays to and from f32 with the rounding rules of REFERENCE.md: round to nearest,
 * ties to even; FP8 E4M3FN saturates to +-448 (NaN stays NaN); E5M2 overflows to inf like a cast;
 * FP4 E2M1 codes are sign<<3 | index into {0,0.5,1,1.5,2,3,4,6}; E8M0 is 2^(e-127), 0xFF = NaN.
 * Scalar reference functions and array kernels live side by side; tests compare them. */
#ifndef AS_DTYPE_H
#define AS_DTYPE_H

#include <stddef.h>
#include <stdint.h>

enum as_dtype {
    AS_DTYPE_INVALID = 0,
    AS_F32,
    AS_F16,
    AS_BF16,
    AS_F64,
    AS_I8,
    AS_U8,
    AS_I16,
    AS_U16,
    AS_I32,
    AS_U32,
    AS_I64,
    AS_U64,
    AS_BOOL,
    AS_F8_E4M3,
    AS_F8_E5M2,
    AS_F8_E8M0,
    AS_F4, /* FP4 E2M1, two per byte, element 2i in the low nibble */
    AS_DTYPE_COUNT
};

struct as_dtype_traits {
    const char *name; /* safetensors spelling: "F32", "BF16", "F8_E4M3", ... */
    int bits;         /* bits per element (4 for F4) */
    int is_float;
};

extern const struct as_dtype_traits as_dtype_traits[AS_DTYPE_COUNT];

/* Parse a safetensors dtype string; AS_DTYPE_INVALID if unknown. */
enum as_dtype as_dtype_from_name(const char *name);
const char *as_dtype_name(enum as_dtype t);
/* Bytes for n elements (rounded up for sub-byte types); 0 and *overflow = 1 on overflow. */
uint64_t as_dtype_nbytes(enum as_dtype t, uint64_t numel, int *overflow);

/* Scalar reference codecs. */
float as_f16_to_f32(uint16_t h);
uint16_t as_f32_to_f16(float f);
float as_bf16_to_f32(uint16_t h);
uint16_t as_f32_to_bf16(float f);
float as_fp8_e4m3_to_f32(uint8_t c);
uint8_t as_f32_to_fp8_e4m3(float f);
float as_fp8_e5m2_to_f32(uint8_t c);
uint8_t as_f32_to_fp8_e5m2(float f);
float as_fp4_e2m1_to_f32(uint8_t code); /* code in 0..15 */
uint8_t as_f32_to_fp4_e2m1(float f);
float as_e8m0_to_f32(uint8_t c);
uint8_t as_f32_to_e8m0(float f); /* exponent of f rounded up to a power of two, see dtype.c */

/* Array conversions to/from f32. `src` holds n elements of type t (for F4, n elements packed two
 * per byte). Return 0, or -1 with as_fail() for a type that cannot convert. */
int as_convert_to_f32(enum as_dtype t, const void *src, float *dst, size_t n);
int as_convert_from_f32(enum as_dtype t, const float *src, void *dst, size_t n);

#endif
