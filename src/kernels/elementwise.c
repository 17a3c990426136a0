/* Elementwise ops of the training pass: the residual add and LoRA's input dropout (a mask
 * drawn from a counter-based hash, so the backward redraws the forward's mask instead of
 * storing it). Compiled in float here and in double by kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include <stdint.h>
#include "kernels/real.h"

void R(mt_add)(real *out, const real *a, const real *b, size_t n) {
#pragma omp parallel for if (n > MT_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* The dropout factor of element i under key: 0 (dropped) or 1/(1-p) (kept). */
static real R(dropout_factor)(uint64_t key, size_t i, double p) {
    double u = (double)(mt_mix64(key ^ mt_mix64(i)) >> 11) * (1.0 / 9007199254740992.0);
    return u < p ? 0 : (real)(1.0 / (1.0 - p));
}

void R(mt_dropout)(real *out, const real *x, size_t n, uint64_t key, double p, int accumulate) {
#pragma omp parallel for if (n > MT_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        real v = x[i] * R(dropout_factor)(key, i, p);
        out[i] = accumulate ? out[i] + v : v;
    }
}
