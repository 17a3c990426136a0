/* Vectorisation helpers shared by the kernels.
 *
 * MT_SIMD_CLONES: compile a hot function three times (x86-64-v4: AVX-512; v3: AVX2+FMA; baseline x86-64)
 * and pick one at load time by the CPU features (GCC's target_clones: an ifunc resolved once;
 * "arch=" levels are tested by feature, CPU model names would be tested by name). The
 * loops inside are written plainly, with restrict pointers and `#pragma omp simd`, so the
 * compiler vectorises each clone for its instruction set and the baseline build stays
 * portable. Other compilers and CPUs get the plain function. The Makefile's -fno-trapping-math
 * is what lets GCC 12 vectorise loops with comparisons such as mt_exp_approx's clamps.
 *
 * mt_exp_approx: expf for vectorised loops (glibc's expf is a call the vectoriser cannot
 * widen without -ffast-math). Cody-Waite range reduction x = n·ln2 + r, |r| <= ln2/2, then
 * Cephes' degree-6 polynomial for e^r and 2^n built in the exponent bits: relative error
 * about 2e-7 (2 ulp), over [-87.3, 88]; below that it returns ~1e-38 instead of 0, above it
 * e^88 = 1.65e38 (inputs here are logits minus their row maximum, <= 0). */
#ifndef MT_KERNELS_SIMD_H
#define MT_KERNELS_SIMD_H
#include <stdint.h>
#include <string.h>

/* Not when the whole build already targets AVX2 or better (-march=native): the clones would
 * then lack some of the build's own features, and GCC would refuse to inline the small
 * helpers (dot products, exp) into them. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX2__) && \
    !defined(MT_NO_CLONES)
#define MT_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MT_SIMD_CLONES
#endif

#pragma omp declare simd notinbranch
static inline float mt_exp_approx(float x) {
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float round_magic = 12582912.0f; /* 1.5·2^23: adding it rounds to an integer */
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = (x * log2e + round_magic) - round_magic;
    /* NaN passes the clamps above; this one keeps 2^n's exponent bits in range (no UB in
     * the conversion and shift below) and the NaN still reaches the result through r */
    n = n >= -126.0f ? n : -126.0f;
    float r = x - n * ln2_hi - n * ln2_lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#endif
