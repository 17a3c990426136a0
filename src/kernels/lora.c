/* The low-rank adapter term of a linear site, y += scale·(x·A^T)·B^T, next to its backward
 * and the merge W += scale·B·A. Two skinny GEMMs each way: r (the rank) is small, so the
 * cost is about 2r/min(K, N) of the base matmul. The backward recomputes h = x·A^T rather
 * than saving it, so adapters add no per-layer activation memory. Compiled in float here and
 * in double by kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include "kernels/real.h"

void R(mt_lora_forward)(real *out, real *h, const real *x, const real *a, const real *b,
                        double scale, int T, int K, int N, int r) {
    /* h[T, r] = x[T, K] · A[r, K]^T */
    r_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, r, K, 1, x, K, a, K, 0, h, r);
    /* out[T, N] += scale · h[T, r] · B[N, r]^T */
    r_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, r, (real)scale, h, r, b, r, 1, out, N);
}

void R(mt_lora_backward)(real *dx, real *da, real *db, real *h, real *dh, const real *dout,
                         const real *x, const real *a, const real *b, double scale, int T, int K,
                         int N, int r) {
    if (db) {
        r_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, r, K, 1, x, K, a, K, 0, h, r);
        /* dB[N, r] += scale · dout^T[N, T] · h[T, r] */
        r_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, r, T, (real)scale, dout, N, h, r, 1, db, r);
    }
    /* dh[T, r] = scale · dout[T, N] · B[N, r]  (the gradient of h = x·A^T) */
    r_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, r, N, (real)scale, dout, N, b, r, 0, dh, r);
    /* dA[r, K] += dh^T[r, T] · x[T, K] */
    if (da) r_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, K, T, 1, dh, r, x, K, 1, da, K);
    /* dx[T, K] += dh[T, r] · A[r, K] */
    if (dx) r_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, K, r, 1, dh, r, a, K, 1, dx, K);
}

void R(mt_lora_merge_weight)(real *w, const real *a, const real *b, double scale, int K, int N, int r) {
    r_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, K, r, (real)scale, b, r, a, K, 1, w, K);
}
