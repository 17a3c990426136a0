/* The optimizer's ops over flat float arrays: one AdamW update of a range (the arithmetic of
 * train/optimizer.c, which owns the state and the step count), the sum of squares a
 * gradient norm takes, and the in-place scaling that clips a gradient. */
#include "kernels/kernels.h"
#include "kernels/pool.h"
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

typedef struct {
    float *params, *m, *v;
    const float *grads;
    size_t begin, end;
    float b1, b2, eps, decay, step_size, sqrt_bc2;
} adamw_job;

static void adamw_task(void *p, size_t c0, size_t c1, int tid) {
    const adamw_job *j = p;
    (void)tid;
    for (size_t c = c0; c < c1; c++) {
        size_t i = j->begin + c * ADAMW_CHUNK, len = j->end - i < ADAMW_CHUNK ? j->end - i : ADAMW_CHUNK;
        adamw_chunk(j->params + i, j->grads + i, j->m + i, j->v + i, len, j->b1, j->b2, j->eps, j->decay,
                    j->step_size, j->sqrt_bc2);
    }
}

void mt_adamw_kernel(float *params, const float *grads, float *m, float *v, size_t begin, size_t end,
                     float b1, float b2, float eps, float decay, float step_size, float sqrt_bc2) {
    size_t n = end > begin ? end - begin : 0, n_chunks = (n + ADAMW_CHUNK - 1) / ADAMW_CHUNK;
    adamw_job j = {params, m, v, grads, begin, end, b1, b2, eps, decay, step_size, sqrt_bc2};
    mt_parallel_range(n_chunks, n_chunks > 4, adamw_task, &j);
}

/* Σ x² in pieces (mt_parallel_pieces: fixed by n and the thread count), added in piece order */
#define SUM_PIECES_MAX 64
typedef struct {
    const float *x;
    size_t n;
    int pieces;
    double part[SUM_PIECES_MAX];
} sum_squares_job;

static void sum_squares_task(void *p, int i, int tid) {
    sum_squares_job *j = p;
    (void)tid;
    size_t a = mt_piece(j->n, j->pieces, i), b = mt_piece(j->n, j->pieces, i + 1);
    double ss = 0.0;
    const float *x = j->x;
#pragma omp simd reduction(+ : ss)
    for (size_t k = a; k < b; k++) ss += (double)x[k] * x[k];
    j->part[i] = ss;
}

double mt_sum_squares(const float *x, size_t n) {
    sum_squares_job j = {.x = x, .n = n, .pieces = mt_parallel_pieces(n, n > MT_PARALLEL_MIN)};
    if (j.pieces > SUM_PIECES_MAX) j.pieces = SUM_PIECES_MAX;
    mt_parallel(j.pieces, sum_squares_task, &j);
    double ss = 0.0;
    for (int i = 0; i < j.pieces; i++) ss += j.part[i];
    return ss;
}

typedef struct {
    float *x;
    float f;
} scale_job;

static void scale_task(void *p, size_t i0, size_t i1, int tid) {
    const scale_job *j = p;
    (void)tid;
    for (size_t i = i0; i < i1; i++) j->x[i] *= j->f;
}

void mt_scale(float *x, size_t n, float f) {
    scale_job j = {x, f};
    mt_parallel_range(n, n > MT_PARALLEL_MIN, scale_task, &j);
}
