/* The online softmax step that flash-style attention walks keys with, shared by the
 * training kernels (attention.c, in both precisions) and decoding (decode.c). Include after
 * kernels/real.h, which defines `real`. */
#ifndef MT_KERNELS_ONLINE_SOFTMAX_H
#define MT_KERNELS_ONLINE_SOFTMAX_H
#include "kernels/real.h"

/* One chunk of an online softmax: p[n] holds scaled scores whose maximum is cm; the running
 * max m and sum l (and the unnormalised output o) are rescaled when cm exceeds m, then p
 * becomes exp(p - m) and is added to l. */
MT_SIMD_CLONES
static void online_softmax_chunk(real *restrict p, int n, real cm, real *m, real *l, real *restrict o, int head_dim) {
    if (cm > *m) {
        real correction = *m == -INFINITY ? 0 : r_exp(*m - cm);
        *l *= correction;
#pragma omp simd
        for (int d = 0; d < head_dim; d++) o[d] *= correction;
        *m = cm;
    }
    real mx = *m, sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
        p[j] = r_expv(p[j] - mx);
        sum += p[j];
    }
    *l += sum;
}

#endif
