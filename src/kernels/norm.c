/* RMSNorm: y = x / sqrt(mean(x^2) + eps) * w, and its backward. With r = rstd and g = dy·w,
 * dx = r·g - x·r^3·mean(g·x) and dw = Σ_rows dy·x·r. Compiled in float here and in double by
 * kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include <math.h>
#include "kernels/real.h"

/* columns per work item of the weight gradient (a reduction over rows) */
#define NORM_COL_BLOCK 64

void R(mt_rmsnorm_forward_save)(real *out, real *rstd, const real *x, const real *w, int T, int C,
                                float eps) {
#pragma omp parallel for if (T > 1)
    for (int t = 0; t < T; t++) {
        const real *xr = x + (size_t)t * C;
        real *o = out + (size_t)t * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)xr[i] * xr[i];
        real inv = (real)(1.0 / sqrt(ss / C + eps));
        if (rstd) rstd[t] = inv;
        for (int i = 0; i < C; i++) o[i] = xr[i] * inv * w[i];
    }
}

void R(mt_rmsnorm_forward)(real *out, const real *x, const real *w, int T, int C, float eps) {
    R(mt_rmsnorm_forward_save)(out, NULL, x, w, T, C, eps);
}

void R(mt_rmsnorm_backward)(real *dx, real *dw, const real *dout, const real *x, const real *w,
                            const real *rstd, int T, int C) {
    if (dx) {
#pragma omp parallel for if (T > 1)
        for (int t = 0; t < T; t++) {
            const real *xr = x + (size_t)t * C, *dy = dout + (size_t)t * C;
            real *dxr = dx + (size_t)t * C, r = rstd[t];
            double gx = 0.0; /* Σ g·x, with g = dy·w */
            for (int i = 0; i < C; i++) gx += (double)dy[i] * w[i] * xr[i];
            real coef = (real)(gx / C) * r * r;
            for (int i = 0; i < C; i++) dxr[i] += r * (dy[i] * w[i] - xr[i] * coef);
        }
    }
    if (dw) {
        /* a thread owns a block of columns and walks every row, so no two threads add into
         * the same dw[i] */
#pragma omp parallel for if ((size_t)T * C > 65536)
        for (int c0 = 0; c0 < C; c0 += NORM_COL_BLOCK) {
            int c1 = c0 + NORM_COL_BLOCK < C ? c0 + NORM_COL_BLOCK : C;
            for (int t = 0; t < T; t++) {
                const real *xr = x + (size_t)t * C, *dy = dout + (size_t)t * C;
                for (int i = c0; i < c1; i++) dw[i] += dy[i] * xr[i] * rstd[t];
            }
        }
    }
}
