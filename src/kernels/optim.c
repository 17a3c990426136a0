/* The optimizer's ops over flat float arrays: one AdamW update of a range (the arithmetic of
 * train/optimizer.c, which owns the state and the step count), the sum of squares a
 * gradient norm takes, and the in-place scaling that clips a gradient. */
#include "kernels/kernels.h"
#include <math.h>
#include "kernels/simd.h"

/* parameters per work item */
#define ADAMW_CHUNK 16384

/* One chunk of the update; restrict and omp simd make it one vector pass over the four
 * arrays (sqrtf vectorises because the build uses -fno-math-errno). */
MT_SIMD_CLONES
static void adamw_chunk(float *restrict p, const float *restrict g, float *restrict m,
                        float *restrict v, size_t n, float b1, float b2, float eps, float decay,
                        float step_size, float sqrt_bc2) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        p[i] = p[i] * decay - step_size * m[i] / (sqrtf(v[i]) / sqrt_bc2 + eps);
    }
}

void mt_adamw_kernel(float *params, const float *grads, float *m, float *v, size_t begin, size_t end,
                     float b1, float b2, float eps, float decay, float step_size, float sqrt_bc2) {
    size_t n = end > begin ? end - begin : 0, n_chunks = (n + ADAMW_CHUNK - 1) / ADAMW_CHUNK;
#pragma omp parallel for if (n_chunks > 4)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t i = begin + c * ADAMW_CHUNK, len = end - i < ADAMW_CHUNK ? end - i : ADAMW_CHUNK;
        adamw_chunk(params + i, grads + i, m + i, v + i, len, b1, b2, eps, decay, step_size,
                    sqrt_bc2);
    }
}

double mt_sum_squares(const float *x, size_t n) {
    double ss = 0.0;
#pragma omp parallel for simd reduction(+ : ss) if (n > MT_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    return ss;
}

void mt_scale(float *x, size_t n, float f) {
#pragma omp parallel for if (n > MT_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) x[i] *= f;
}
