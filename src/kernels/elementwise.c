/* Elementwise ops of the training pass: the residual add and LoRA's input dropout (a mask
 * drawn from a counter-based hash, so the backward redraws the forward's mask instead of
 * storing it). Compiled in float here and in double by kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include "kernels/pool.h"
#include <stdint.h>
#include "kernels/real.h"

typedef struct {
    real *out;
    const real *a, *b;
    uint64_t key;
    double p;
    int accumulate;
} R(elementwise_job);

static void R(add_task)(void *p, size_t i0, size_t i1, int tid) {
    const R(elementwise_job) *j = p;
    (void)tid;
    real *out = j->out;
    const real *a = j->a, *b = j->b;
    for (size_t i = i0; i < i1; i++) out[i] = a[i] + b[i];
}

void R(mt_add)(real *out, const real *a, const real *b, size_t n) {
    R(elementwise_job) j = {.out = out, .a = a, .b = b};
    mt_parallel_range(n, n > MT_PARALLEL_MIN, R(add_task), &j);
}

/* The dropout factor of element i under key: 0 (dropped) or 1/(1-p) (kept). */
static real R(dropout_factor)(uint64_t key, size_t i, double p) {
    double u = (double)(mt_mix64(key ^ mt_mix64(i)) >> 11) * (1.0 / 9007199254740992.0);
    return u < p ? 0 : (real)(1.0 / (1.0 - p));
}

static void R(dropout_task)(void *p, size_t i0, size_t i1, int tid) {
    const R(elementwise_job) *j = p;
    (void)tid;
    for (size_t i = i0; i < i1; i++) {
        real v = j->a[i] * R(dropout_factor)(j->key, i, j->p);
        j->out[i] = j->accumulate ? j->out[i] + v : v;
    }
}

void R(mt_dropout)(real *out, const real *x, size_t n, uint64_t key, double p, int accumulate) {
    R(elementwise_job) j = {.out = out, .a = x, .key = key, .p = p, .accumulate = accumulate};
    mt_parallel_range(n, n > MT_PARALLEL_MIN, R(dropout_task), &j);
}
