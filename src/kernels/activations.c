/* SwiGLU, silu(gate)·up with silu(g) = g·sigmoid(g), and its backward
 * (silu'(g) = s·(1 + g·(1 - s)) with s = sigmoid(g)); plus the float softmax helpers used by
 * inference and sampling. SwiGLU is compiled in float here and in double by kernels_f64.c
 * (see real.h). */
#include "kernels/kernels.h"
#include <math.h>
#include "kernels/real.h"

void R(mt_swiglu_forward)(real *out, const real *gate, const real *up, size_t n) {
#pragma omp parallel for if (n > 4096)
    for (size_t i = 0; i < n; i++) {
        real g = gate[i];
        out[i] = g / (1 + r_exp(-g)) * up[i];
    }
}

void R(mt_swiglu_backward)(real *dgate, real *dup, const real *dout, const real *gate,
                           const real *up, size_t n) {
#pragma omp parallel for if (n > 4096)
    for (size_t i = 0; i < n; i++) {
        real g = gate[i], sig = 1 / (1 + r_exp(-g));
        dgate[i] += dout[i] * up[i] * sig * (1 + g * (1 - sig));
        dup[i] += dout[i] * g * sig;
    }
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
