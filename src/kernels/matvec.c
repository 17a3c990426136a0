/* Decoding's matrix-vector products, out[N] = W[N, K]·x: every weight is read once per
 * token, so the kernel's only job is to keep the memory system streaming. Each thread takes
 * a contiguous block of rows; a row is dotted in four 8-float vector accumulators kept in
 * registers (GCC/Clang vector extensions, so each clone of MT_SIMD_CLONES gets its own
 * instruction set), then reduced once. This file is compiled with -ffp-contract=fast (the
 * Makefile), so the v3/v4 clones fuse each multiply-add into one FMA.
 *
 * The earlier kernel summed into a 32-float array; GCC zeroed it with `rep stosq` and reduced
 * it through the stack on every row, which for smollm-135m's 576-float rows cost 15-20% of
 * the streaming rate (bench/RESULTS.md, section on decode). */
#include "kernels/kernels.h"
#include <omp.h>
#include <string.h>
#include "kernels/simd.h"

#if defined(__GNUC__)
typedef float v8f __attribute__((vector_size(32)));

static inline float row_dot(const float *restrict r, const float *restrict x, int K) {
    v8f a = {0}, b = {0}, c = {0}, d = {0};
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        v8f r0, r1, r2, r3, x0, x1, x2, x3;
        memcpy(&r0, r + k, 32), memcpy(&r1, r + k + 8, 32);
        memcpy(&r2, r + k + 16, 32), memcpy(&r3, r + k + 24, 32);
        memcpy(&x0, x + k, 32), memcpy(&x1, x + k + 8, 32);
        memcpy(&x2, x + k + 16, 32), memcpy(&x3, x + k + 24, 32);
        a += r0 * x0, b += r1 * x1, c += r2 * x2, d += r3 * x3;
    }
    for (; k + 8 <= K; k += 8) {
        v8f r0, x0;
        memcpy(&r0, r + k, 32), memcpy(&x0, x + k, 32);
        a += r0 * x0;
    }
    float sum = 0;
    for (; k < K; k++) sum += r[k] * x[k];
    a = (a + b) + (c + d);
    return sum + (((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])));
}
#else
static inline float row_dot(const float *restrict r, const float *restrict x, int K) {
    float sum = 0;
    for (int k = 0; k < K; k++) sum += r[k] * x[k];
    return sum;
}
#endif

/* out[n] = W[n]·x for the rows n0 <= n < n1 */
MT_SIMD_CLONES
static void rows_dot(float *out, const float *w, const float *x, int K, int n0, int n1) {
    for (int n = n0; n < n1; n++) out[n] = row_dot(w + (size_t)n * K, x, K);
}

void mt_matvec(float *out, const float *x, const float *w, int K, int N) {
#pragma omp parallel
    {
        int id = omp_get_thread_num(), nth = omp_get_num_threads();
        rows_dot(out, w, x, K, (int)((long)N * id / nth), (int)((long)N * (id + 1) / nth));
    }
}
