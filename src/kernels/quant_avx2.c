/* Row dot products on quantized blocks with AVX2 and FMA, for the types llama.cpp's common
 * files hold most (Q8_0, Q4_0, Q5_0: the 32-value blocks; Q4_K, Q6_K: Q4_K_M's pair).
 *
 * The activations stay f32 (llama.cpp instead rounds them to 8 bits and multiplies in
 * integers): each block's small integers are widened to floats in registers, 8 at a time,
 * and multiplied into vector accumulators, so the result is the dot product with
 * mt_dequantize's values up to the order of summation and fused multiply-adds (the same
 * contract as the portable kernel in quant.c, tested against it in tests/test_quant.c).
 * Where a block's values are d·q - m (Q4_K), the offset is applied once per 32 values as
 * m·Σx with the sums of x taken once per product (xsum), not once per weight.
 *
 * Compiled for AVX2+FMA by function attribute whatever the build's -march; quant.c calls
 * these only when the CPU has both (mt_quant_avx2_usable). */
#include "kernels/quant_avx2.h"
#include "formats/dtype.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX2_INLINE static inline __attribute__((target("avx2,fma"), always_inline))

int mt_quant_avx2_usable(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static inline float half_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return mt_f16_to_f32(h);
}

AVX2_INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Σ q[j]·x[j] for 16 signed bytes in a 128-bit register, into two accumulators */
AVX2_INLINE void dot16_i8(__m128i q, const float *x, __m256 *a0, __m256 *a1) {
    *a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_loadu_ps(x), *a0);
    *a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8))), _mm256_loadu_ps(x + 8), *a1);
}

/* the same for 32 signed bytes: the vector of the 32 products' partial sums */
AVX2_INLINE __m256 dot32_i8(__m256i q, const float *x) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    dot16_i8(_mm256_castsi256_si128(q), x, &a0, &a1);
    dot16_i8(_mm256_extracti128_si256(q, 1), x + 16, &a0, &a1);
    return _mm256_add_ps(a0, a1);
}

/* ---- 32-value blocks: scale d per block ---- */

AVX2 float mt_row_dot_q8_0_avx2(const uint8_t *row, const float *x, size_t n) {
    __m256 acc = _mm256_setzero_ps();
    for (size_t b = 0; b < n / 32; b++, row += 34, x += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int j = 0; j < 32; j += 16) { /* widened straight from memory: no shuffles */
            __m128i q0 = _mm_loadl_epi64((const __m128i *)(row + 2 + j)), q1 = _mm_loadl_epi64((const __m128i *)(row + 10 + j));
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q0)), _mm256_loadu_ps(x + j), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q1)), _mm256_loadu_ps(x + j + 8), a1);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half_at(row)), _mm256_add_ps(a0, a1), acc);
    }
    return hsum(acc);
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles (values 0-15), then high nibbles (16-31) */
AVX2_INLINE __m256i nibbles32(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

AVX2 float mt_row_dot_q4_0_avx2(const uint8_t *row, const float *x, size_t n) {
    __m256 acc = _mm256_setzero_ps();
    for (size_t b = 0; b < n / 32; b++, row += 18, x += 32) {
        __m256i q = _mm256_sub_epi8(nibbles32(row + 2), _mm256_set1_epi8(8));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half_at(row)), dot32_i8(q, x), acc);
    }
    return hsum(acc);
}

/* The 32 bits of h as 32 bytes, 0x10 where bit j is set and 0 elsewhere: byte j takes byte
 * j/8 of h (a shuffle within each 128-bit lane, h broadcast), keeps bit j%8 and compares. */
AVX2_INLINE __m256i fifth_bits(uint32_t h) {
    const __m256i pick = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), pick);
    __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

AVX2 float mt_row_dot_q5_0_avx2(const uint8_t *row, const float *x, size_t n) {
    __m256 acc = _mm256_setzero_ps();
    for (size_t b = 0; b < n / 32; b++, row += 22, x += 32) {
        uint32_t h;
        memcpy(&h, row + 2, 4);
        __m256i q = _mm256_or_si256(nibbles32(row + 6), fifth_bits(h));
        q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half_at(row)), dot32_i8(q, x), acc);
    }
    return hsum(acc);
}

/* ---- 256-value super-blocks ---- */

/* Q4_K's eight 6-bit scales and mins from their 12 packed bytes (quant.h's layout) */
static inline void q4_k_scales(const uint8_t *p, uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = p[j] & 63;
        mn[j] = p[j + 4] & 63;
        sc[j + 4] = (uint8_t)((p[j + 8] & 0x0f) | ((p[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((p[j + 8] >> 4) | ((p[j + 4] >> 6) << 4));
    }
}

/* 32 unsigned bytes (values 0-15 here) times x: the partial-sum vector */
AVX2_INLINE __m256 dot32_u8(__m256i q, const float *x) {
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    __m256 a0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), _mm256_loadu_ps(x));
    __m256 a1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(x + 8));
    a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), _mm256_loadu_ps(x + 16), a0);
    a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(x + 24), a1);
    return _mm256_add_ps(a0, a1);
}

/* value = d·sc·q - dmin·m for each 32 values: Σ = d·sc·Σq·x - dmin·m·Σx (xsum: Σx per 32) */
AVX2 float mt_row_dot_q4_k_avx2(const uint8_t *row, const float *x, const float *xsum, size_t n) {
    __m256 acc = _mm256_setzero_ps();
    float offset = 0;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (size_t b = 0; b < n / 256; b++, row += 144, x += 256, xsum += 8) {
        float d = half_at(row), dmin = half_at(row + 2);
        uint8_t sc[8], mn[8];
        q4_k_scales(row + 4, sc, mn);
        const uint8_t *q = row + 16;
        for (int j = 0; j < 8; j += 2, q += 32) {
            __m256i v = _mm256_loadu_si256((const __m256i *)q);
            __m256 lo = dot32_u8(_mm256_and_si256(v, m4), x + 32 * j);
            __m256 hi = dot32_u8(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), x + 32 * j + 32);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc[j]), lo, acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc[j + 1]), hi, acc);
            offset += dmin * (float)mn[j] * xsum[j] + dmin * (float)mn[j + 1] * xsum[j + 1];
        }
    }
    return hsum(acc) - offset;
}

/* Q6_K: per 128 values, 64 bytes of low nibbles (ql), 32 bytes of 2-bit pairs (qh) and 8
 * signed scales, one per 16 values; value = d·sc·(q - 32) with q = low | high << 4. */
AVX2 float mt_row_dot_q6_k_avx2(const uint8_t *row, const float *x, size_t n) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3), c32 = _mm256_set1_epi8(32);
    for (size_t b = 0; b < n / 256; b++, row += 210) {
        const uint8_t *ql = row, *qh = row + 128;
        const int8_t *sc = (const int8_t *)(row + 192);
        float d = half_at(row + 208);
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, x += 128) {
            __m256i a = _mm256_loadu_si256((const __m256i *)ql), c = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i h = _mm256_loadu_si256((const __m256i *)qh);
            __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(a, m4), _mm256_slli_epi16(_mm256_and_si256(h, m2), 4)),
                _mm256_or_si256(_mm256_and_si256(c, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m2), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m2), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c, 4), m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m2), 4)),
            };
            for (int k = 0; k < 4; k++) {
                __m256i v = _mm256_sub_epi8(q[k], c32);
                __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(),
                       b1 = _mm256_setzero_ps();
                dot16_i8(_mm256_castsi256_si128(v), x + 32 * k, &a0, &a1);
                dot16_i8(_mm256_extracti128_si256(v, 1), x + 32 * k + 16, &b0, &b1);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc[2 * k]), _mm256_add_ps(a0, a1), acc);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc[2 * k + 1]), _mm256_add_ps(b0, b1), acc);
            }
        }
    }
    return hsum(acc);
}

#else
int mt_quant_avx2_usable(void) { return 0; }
#endif
