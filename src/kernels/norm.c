/* RMSNorm: y = x / sqrt(mean(x^2) + eps) * w, and its backward. With r = rstd and g = dy·w,
 * dx = r·g - x·r^3·mean(g·x) and dw = Σ_rows dy·x·r. Compiled in float here and in double by
 * kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include "kernels/pool.h"
#include <math.h>
#include "kernels/real.h"

/* columns per work item of the weight gradient (a reduction over rows) */
#define NORM_COL_BLOCK 64

/* One row: out = x·r·w with r = 1/sqrt(mean(x^2) + eps), returned. out may be x. */
MT_SIMD_CLONES
static real rmsnorm_row(real *out, const real *x, const real *w, int C, float eps) {
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
    real inv = (real)(1.0 / sqrt(ss / C + eps));
#pragma omp simd
    for (int i = 0; i < C; i++) out[i] = x[i] * inv * w[i];
    return inv;
}

/* One row of the input gradient: dx += r·(dy·w - x·r^2·mean(dy·w·x)). */
MT_SIMD_CLONES
static void rmsnorm_row_backward(real *restrict dx, const real *restrict dy, const real *restrict x,
                                 const real *restrict w, real r, int C) {
    double gx = 0.0; /* Σ g·x, with g = dy·w */
#pragma omp simd reduction(+ : gx)
    for (int i = 0; i < C; i++) gx += (double)dy[i] * w[i] * x[i];
    real coef = (real)(gx / C) * r * r;
#pragma omp simd
    for (int i = 0; i < C; i++) dx[i] += r * (dy[i] * w[i] - x[i] * coef);
}

/* dw[c0..c1) += Σ_t dy·x·r over every row */
MT_SIMD_CLONES
static void rmsnorm_weight_block(real *restrict dw, const real *dout, const real *x, const real *rstd,
                                 int T, int C, int c0, int c1) {
    for (int t = 0; t < T; t++) {
        const real *restrict xr = x + (size_t)t * C, *restrict dy = dout + (size_t)t * C;
        real r = rstd[t];
#pragma omp simd
        for (int i = c0; i < c1; i++) dw[i] += dy[i] * xr[i] * r;
    }
}

typedef struct {
    real *out, *rstd_out;
    const real *x, *w, *dout, *rstd;
    int T, C;
    float eps;
} R(norm_job);

static void R(rmsnorm_forward_task)(void *p, size_t t0, size_t t1, int tid) {
    const R(norm_job) *j = p;
    (void)tid;
    size_t C = (size_t)j->C;
    for (size_t t = t0; t < t1; t++) {
        real inv = rmsnorm_row(j->out + t * C, j->x + t * C, j->w, j->C, j->eps);
        if (j->rstd_out) j->rstd_out[t] = inv;
    }
}

static void R(rmsnorm_backward_task)(void *p, size_t t0, size_t t1, int tid) {
    const R(norm_job) *j = p;
    (void)tid;
    size_t C = (size_t)j->C;
    for (size_t t = t0; t < t1; t++)
        rmsnorm_row_backward(j->out + t * C, j->dout + t * C, j->x + t * C, j->w, j->rstd[t], j->C);
}

/* a piece owns blocks of columns and walks every row, so no two add into the same dw[i] */
static void R(rmsnorm_weight_task)(void *p, size_t b0, size_t b1, int tid) {
    const R(norm_job) *j = p;
    (void)tid;
    for (int c0 = (int)b0 * NORM_COL_BLOCK; c0 < (int)b1 * NORM_COL_BLOCK && c0 < j->C; c0 += NORM_COL_BLOCK)
        rmsnorm_weight_block(j->out, j->dout, j->x, j->rstd, j->T, j->C, c0,
                             c0 + NORM_COL_BLOCK < j->C ? c0 + NORM_COL_BLOCK : j->C);
}

void R(mt_rmsnorm_forward_save)(real *out, real *rstd, const real *x, const real *w, int T, int C,
                                float eps) {
    R(norm_job) j = {.out = out, .rstd_out = rstd, .x = x, .w = w, .T = T, .C = C, .eps = eps};
    mt_parallel_range((size_t)T, T > 1, R(rmsnorm_forward_task), &j);
}

void R(mt_rmsnorm_forward)(real *out, const real *x, const real *w, int T, int C, float eps) {
    R(mt_rmsnorm_forward_save)(out, NULL, x, w, T, C, eps);
}

void R(mt_rmsnorm_backward)(real *dx, real *dw, const real *dout, const real *x, const real *w,
                            const real *rstd, int T, int C) {
    if (dx) {
        R(norm_job) j = {.out = dx, .dout = dout, .x = x, .w = w, .rstd = rstd, .T = T, .C = C};
        mt_parallel_range((size_t)T, T > 1, R(rmsnorm_backward_task), &j);
    }
    if (dw) {
        R(norm_job) j = {.out = dw, .dout = dout, .x = x, .rstd = rstd, .T = T, .C = C};
        size_t blocks = ((size_t)C + NORM_COL_BLOCK - 1) / NORM_COL_BLOCK;
        mt_parallel_range(blocks, (size_t)T * C > MT_PARALLEL_MIN, R(rmsnorm_weight_task), &j);
    }
}
