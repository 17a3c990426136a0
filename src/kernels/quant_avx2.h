/* AVX2+FMA row dot products on quantized blocks (quant_avx2.c): Σ row[i]·x[i] for one row of n
 * values of the type (n a multiple of its block). Called by mt_quant_matvec only when
 * mt_quant_avx2_usable() says the CPU has AVX2 and FMA. */
#ifndef MT_KERNELS_QUANT_AVX2_H
#define MT_KERNELS_QUANT_AVX2_H
#include <stddef.h>
#include <stdint.h>

int mt_quant_avx2_usable(void);
float mt_row_dot_q8_0_avx2(const uint8_t *row, const float *x, size_t n);
float mt_row_dot_q4_0_avx2(const uint8_t *row, const float *x, size_t n);
float mt_row_dot_q5_0_avx2(const uint8_t *row, const float *x, size_t n);
/* xsum[i] = Σ x[32i .. 32i+31] */
float mt_row_dot_q4_k_avx2(const uint8_t *row, const float *x, const float *xsum, size_t n);
float mt_row_dot_q6_k_avx2(const uint8_t *row, const float *x, size_t n);
#endif
