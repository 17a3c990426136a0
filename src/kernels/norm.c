/* RMSNorm: y = x / sqrt(mean(x^2) + eps) * w. */
#include "kernels/kernels.h"
#include <math.h>

void mt_rmsnorm_forward(float *out, const float *x, const float *w, int T, int C, float eps) {
#pragma omp parallel for if (T > 1)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C;
        float *o = out + (size_t)t * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / C + eps));
        for (int i = 0; i < C; i++) o[i] = xr[i] * inv * w[i];
    }
}
