/* GGUF block quantization (ggml's formats, bit for bit): the block layouts, dequantization
 * of every common type, and the quantizers memtune writes with. Types use ggml's numbering
 * so a tensor's type in a GGUF file is passed through as is.
 *
 * A block holds `block` values in `bytes` bytes; a row of n values (n a multiple of block)
 * takes n / block * bytes. Blocks are read and written through memcpy: GGUF places tensors
 * at 32-byte offsets but blocks are 18, 34, 210... bytes, so nothing inside is aligned.
 *
 *   type  values bytes  layout (scale fields are IEEE f16)
 *   Q4_0   32     18    d, 16 bytes of 4-bit q (low nibbles: values 0-15, high: 16-31); x = d(q-8)
 *   Q4_1   32     20    d, m, 16 bytes of 4-bit q; x = d q + m
 *   Q5_0   32     22    d, 32 high bits (u32), 16 bytes of low nibbles; x = d(q-16)
 *   Q5_1   32     24    d, m, 32 high bits, 16 bytes of low nibbles; x = d q + m
 *   Q8_0   32     34    d, 32 int8; x = d q
 *   Q2_K  256     84    16 bytes of 4-bit scale|4-bit min per 16 values, 64 bytes of 2-bit q, d, dmin
 *   Q3_K  256    110    32 bytes of high bits, 64 bytes of low 2 bits, 12 bytes of 6-bit scales, d
 *   Q4_K  256    144    d, dmin, 12 bytes of 6-bit scale/min per 32 values, 128 bytes of 4-bit q
 *   Q5_K  256    176    d, dmin, 12 bytes of scales/mins, 32 bytes of high bits, 128 bytes of low nibbles
 *   Q6_K  256    210    128 bytes of low nibbles, 64 bytes of high 2 bits, 16 int8 scales, d
 *
 * Tests: tests/test_quant.c checks every type against tests/fixtures/quant/, which ggml's own
 * code made (tests/reference/make_quant_fixtures.sh). */
#ifndef MT_KERNELS_QUANT_H
#define MT_KERNELS_QUANT_H
#include <stddef.h>
#include <stdint.h>

enum {
    MT_QTYPE_F32 = 0, MT_QTYPE_F16 = 1, MT_QTYPE_Q4_0 = 2, MT_QTYPE_Q4_1 = 3, MT_QTYPE_Q5_0 = 6,
    MT_QTYPE_Q5_1 = 7, MT_QTYPE_Q8_0 = 8, MT_QTYPE_Q2_K = 10, MT_QTYPE_Q3_K = 11, MT_QTYPE_Q4_K = 12,
    MT_QTYPE_Q5_K = 13, MT_QTYPE_Q6_K = 14, MT_QTYPE_BF16 = 30
};

typedef struct {
    uint32_t block; /* values per block */
    uint32_t bytes; /* bytes per block */
} mt_qtype_size;

/* Block size of a type memtune dequantizes (F32, F16, BF16 and the ten block types above);
 * {0, 0} for any other. */
mt_qtype_size mt_qtype_size_of(uint32_t type);
/* Bytes of n values of the type; n must be a multiple of its block. */
size_t mt_qtype_bytes(uint32_t type, size_t n);

/* dst[n] = the values of n quantized values at src (n a multiple of the block size; the
 * type one mt_qtype_size_of knows). Exactly ggml's dequantize_row_* results. */
void mt_dequantize(uint32_t type, const uint8_t *src, float *dst, size_t n);

/* Can memtune write this type (mt_quantize)? Q8_0, Q4_0, Q5_0, Q4_K and Q6_K, plus F32/F16/BF16. */
int mt_qtype_can_quantize(uint32_t type);
/* Quantizes n values (a multiple of the block) as ggml's reference quantizers do
 * (quantize_row_*_ref: what llama-quantize writes when given no importance matrix). */
void mt_quantize(uint32_t type, const float *src, uint8_t *dst, size_t n);
/* The same for rows x cols values (cols a multiple of the block), rows in parallel. */
void mt_quantize_rows(uint32_t type, const float *src, uint8_t *dst, size_t rows, size_t cols);

/* out[N] = W[N, K]·x for W stored as N rows of K values of a block type (K a multiple of its
 * block): decoding straight from the blocks, threaded over rows, AVX2/FMA by runtime dispatch
 * (kernels/simd.h). Equals the dot products with mt_dequantize's values up to summation order. */
void mt_quant_matvec(uint32_t type, float *out, const float *x, const uint8_t *w, int K, int N);

#endif
