/* SwiGLU, silu(gate)·up with silu(g) = g·sigmoid(g), and its backward
 * (silu'(g) = s·(1 + g·(1 - s)) with s = sigmoid(g)); plus the float softmax helpers used by
 * inference and sampling. SwiGLU is compiled in float here and in double by kernels_f64.c
 * (see real.h). */
#include "kernels/kernels.h"
#include "kernels/pool.h"
#include <math.h>
#include "kernels/real.h"

/* elements per work item: big enough to amortise a thread hand-off, small enough to share */
#define SWIGLU_CHUNK 16384

/* One chunk of each pass. omp simd: each element is independent (out may be gate). */
MT_SIMD_CLONES
static void swiglu_forward_chunk(real *out, const real *gate, const real *up, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        real g = gate[i];
        out[i] = g / (1 + r_expv(-g)) * up[i];
    }
}

MT_SIMD_CLONES
static void swiglu_backward_chunk(real *dgate, real *dup, const real *dout, const real *gate,
                                  const real *up, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        real g = gate[i], sig = 1 / (1 + r_expv(-g));
        dgate[i] += dout[i] * up[i] * sig * (1 + g * (1 - sig));
        dup[i] += dout[i] * g * sig;
    }
}

typedef struct {
    real *out, *dgate, *dup;
    const real *dout, *gate, *up;
    size_t n;
} R(swiglu_job);

static void R(swiglu_forward_task)(void *p, size_t c0, size_t c1, int tid) {
    const R(swiglu_job) *j = p;
    (void)tid;
    for (size_t c = c0; c < c1; c++) {
        size_t i = c * SWIGLU_CHUNK, m = j->n - i < SWIGLU_CHUNK ? j->n - i : SWIGLU_CHUNK;
        swiglu_forward_chunk(j->out + i, j->gate + i, j->up + i, m);
    }
}

static void R(swiglu_backward_task)(void *p, size_t c0, size_t c1, int tid) {
    const R(swiglu_job) *j = p;
    (void)tid;
    for (size_t c = c0; c < c1; c++) {
        size_t i = c * SWIGLU_CHUNK, m = j->n - i < SWIGLU_CHUNK ? j->n - i : SWIGLU_CHUNK;
        swiglu_backward_chunk(j->dgate + i, j->dup + i, j->dout + i, j->gate + i, j->up + i, m);
    }
}

void R(mt_swiglu_forward)(real *out, const real *gate, const real *up, size_t n) {
    size_t n_chunks = (n + SWIGLU_CHUNK - 1) / SWIGLU_CHUNK;
    R(swiglu_job) j = {.out = out, .gate = gate, .up = up, .n = n};
    mt_parallel_range(n_chunks, n_chunks > 1, R(swiglu_forward_task), &j);
}

void R(mt_swiglu_backward)(real *dgate, real *dup, const real *dout, const real *gate,
                           const real *up, size_t n) {
    size_t n_chunks = (n + SWIGLU_CHUNK - 1) / SWIGLU_CHUNK;
    R(swiglu_job) j = {.dgate = dgate, .dup = dup, .dout = dout, .gate = gate, .up = up, .n = n};
    mt_parallel_range(n_chunks, n_chunks > 1, R(swiglu_backward_task), &j);
}

#ifndef MT_REAL_DOUBLE
double mt_softmax_inplace(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
    return log(sum) + mx;
}

double mt_logsumexp(const float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    return log(sum) + mx;
}
#endif
