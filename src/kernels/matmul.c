/* Linear layers through OpenBLAS, with the transposes chosen so no weight is copied: the
 * forward out = x·W^T (+ b) and its backward dx += dy·W, dW += dy^T·x, db += Σ dy. Also the
 * thread settings shared by every kernel. Compiled in float here and in double by
 * kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include <omp.h>
#include <unistd.h>
#include "kernels/real.h"
#include "kernels/simd.h"

#ifndef MT_REAL_DOUBLE
static int kernel_threads = 0;

void mt_kernels_set_threads(int n) {
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0) n = 1;
    if (n > MT_MAX_THREADS) n = MT_MAX_THREADS; /* a void setter: clamp what the options check refuses */
    kernel_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int mt_kernels_threads(void) {
    if (kernel_threads == 0) mt_kernels_set_threads(0);
    return kernel_threads;
}

void mt_set_threads(int n) { mt_kernels_set_threads(n); }

int mt_kernels_enter(void) {
    int n = mt_kernels_threads();
    if (omp_get_max_threads() != n) omp_set_num_threads(n);
    return n;
}
#endif

#ifndef MT_REAL_DOUBLE
/* Decoding's matrix-vector products go to mt_matvec (decode.c) when the matrix is too big to
 * stay in cache; on smaller ones OpenBLAS's serial sgemv did better. */
#define MATVEC_MIN 65536

static void matvec(float *out, const float *x, const float *w, int K, int N) {
    if ((size_t)N * K < MATVEC_MIN)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1, w, K, x, 1, 0, out, 1);
    else
        mt_matvec(out, x, w, K, N);
}
#else
static void matvec(double *out, const double *x, const double *w, int K, int N) {
    cblas_dgemv(CblasRowMajor, CblasNoTrans, N, K, 1, w, K, x, 1, 0, out, 1);
}
#endif

void R(mt_matmul_forward)(real *out, const real *x, const real *w, const real *bias, int T, int K, int N) {
    if (T == 1)
        matvec(out, x, w, K, N);
    else
        r_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1, x, K, w, K, 0, out, N);
    if (bias)
        for (int t = 0; t < T; t++)
            for (int n = 0; n < N; n++) out[(size_t)t * N + n] += bias[n];
}

#ifndef MT_REAL_DOUBLE
void mt_matmul_forward_rows(float *const *out, const float *const *x, const float *w, const float *bias, int B,
                            int K, int N) {
    if ((size_t)N * K < MATVEC_MIN) /* small: cached anyway; the same sgemv as matvec() */
        for (int b = 0; b < B; b++) cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1, w, K, x[b], 1, 0, out[b], 1);
    else
        mt_matvec_rows(out, x, w, K, N, B);
    if (bias)
        for (int b = 0; b < B; b++)
            for (int n = 0; n < N; n++) out[b][n] += bias[n];
}
#endif

void R(mt_matmul_backward)(real *dx, real *dw, real *db, const real *dout, const real *x,
                           const real *w, int T, int K, int N) {
    /* dx[T, K] += dout[T, N] · W[N, K] */
    if (dx) r_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, K, N, 1, dout, N, w, K, 1, dx, K);
    /* dW[N, K] += dout^T[N, T] · x[T, K] */
    if (dw) r_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, T, 1, dout, N, x, K, 1, dw, K);
    if (db) {
#pragma omp parallel for if ((size_t)T * N > MT_PARALLEL_MIN)
        for (int n = 0; n < N; n++) {
            real sum = 0;
            for (int t = 0; t < T; t++) sum += dout[(size_t)t * N + n];
            db[n] += sum;
        }
    }
}
