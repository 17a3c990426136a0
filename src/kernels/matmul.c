/* Linear layers through OpenBLAS, with the transposes chosen so no weight is copied: the
 * forward out = x·W^T (+ b) and its backward dx += dy·W, dW += dy^T·x, db += Σ dy. Also the
 * thread settings shared by every kernel. Compiled in float here and in double by
 * kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include <omp.h>
#include <sched.h>
#include <unistd.h>
#include "kernels/pool.h"
#include "kernels/real.h"
#include "kernels/simd.h"

#ifndef MT_REAL_DOUBLE
static int kernel_threads = 0;

/* the CPUs this process may run on (taskset, cgroup cpusets), else the online ones */
static int cores_available(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

void mt_kernels_set_threads(int n) {
    if (n <= 0) n = cores_available();
    if (n <= 0) n = 1;
    if (n > MT_MAX_THREADS) n = MT_MAX_THREADS; /* a void setter: clamp what the options check refuses */
    kernel_threads = n;
    mt_blas_serial();
}

/* OpenBLAS runs serial: r_gemm splits GEMMs over our pool (pool.c), one set of threads.
 * Debian's OpenMP build of OpenBLAS takes its thread count from the calling thread's
 * omp_get_max_threads() (and resets its global count to it), so every thread that calls BLAS
 * (the pool's workers, a context's thread) sets its own to 1 first; otherwise OpenBLAS opens
 * libgomp teams from our threads, which spin. */
void mt_blas_serial(void) {
    static _Thread_local int done;
    if (done) return;
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    done = 1;
}

int mt_kernels_threads(void) {
    if (kernel_threads == 0) mt_kernels_set_threads(0);
    return kernel_threads;
}

void mt_set_threads(int n) { mt_kernels_set_threads(n); }

int mt_kernels_enter(void) { return mt_kernels_threads(); }
#endif

/* ---- GEMMs split over the pool ----
 * C = alpha·op(A)·op(B) + beta·C (row-major) in pieces of C's rows (or columns, when it has
 * more columns than rows), each piece one serial BLAS call on the whole K: every element is
 * the same dot product whichever thread computes it. Below GEMM_PARALLEL_MIN multiply-adds
 * (OpenBLAS's own threshold for threading) it runs as one call. */
#define GEMM_PARALLEL_MIN 262144.0
#define GEMM_GRAIN 32 /* rows or columns per piece, at least */
#ifndef GEMM_PIECES_PER_THREAD
#define GEMM_PIECES_PER_THREAD 2
#endif

typedef struct {
    CBLAS_TRANSPOSE ta, tb;
    int M, N, K, lda, ldb, ldc, by_rows, pieces;
    real alpha, beta;
    const real *A, *B;
    real *C;
} R(gemm_job);

static void R(gemm_piece)(void *p, int i, int tid) {
    const R(gemm_job) *j = p;
    (void)tid;
    int dim = j->by_rows ? j->M : j->N;
    int a = (int)mt_piece((size_t)dim, j->pieces, i), b = (int)mt_piece((size_t)dim, j->pieces, i + 1);
    if (a >= b) return;
    if (j->by_rows)
        r_blas_gemm(CblasRowMajor, j->ta, j->tb, b - a, j->N, j->K, j->alpha,
                    j->A + (j->ta == CblasNoTrans ? (size_t)a * j->lda : (size_t)a), j->lda, j->B, j->ldb, j->beta,
                    j->C + (size_t)a * j->ldc, j->ldc);
    else
        r_blas_gemm(CblasRowMajor, j->ta, j->tb, j->M, b - a, j->K, j->alpha, j->A, j->lda,
                    j->B + (j->tb == CblasNoTrans ? (size_t)a : (size_t)a * j->ldb), j->ldb, j->beta,
                    j->C + a, j->ldc);
}

void R(mt_gemm)(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, real alpha,
                const real *A, int lda, const real *B, int ldb, real beta, real *C, int ldc) {
    int nth = mt_kernels_threads(), by_rows = M >= N, dim = by_rows ? M : N;
    int pieces = nth * GEMM_PIECES_PER_THREAD < dim / GEMM_GRAIN ? nth * GEMM_PIECES_PER_THREAD : dim / GEMM_GRAIN;
    mt_blas_serial();
    if (order != CblasRowMajor || pieces < 2 || (double)M * N * K < GEMM_PARALLEL_MIN || mt_pool_nested()) {
        r_blas_gemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    R(gemm_job) j = {ta, tb, M, N, K, lda, ldb, ldc, by_rows, pieces, alpha, beta, A, B, C};
    mt_parallel(pieces, R(gemm_piece), &j);
}

#ifndef MT_REAL_DOUBLE
/* Decoding's matrix-vector products go to mt_matvec (decode.c) when the matrix is too big to
 * stay in cache; on smaller ones OpenBLAS's serial sgemv did better. */
#define MATVEC_MIN 65536

static void matvec(float *out, const float *x, const float *w, int K, int N) {
    mt_blas_serial();
    if ((size_t)N * K < MATVEC_MIN)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1, w, K, x, 1, 0, out, 1);
    else
        mt_matvec(out, x, w, K, N);
}
#else
static void matvec(double *out, const double *x, const double *w, int K, int N) {
    mt_blas_serial();
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
    mt_blas_serial();
    if ((size_t)N * K < MATVEC_MIN) /* small: cached anyway; the same sgemv as matvec() */
        for (int b = 0; b < B; b++) cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1, w, K, x[b], 1, 0, out[b], 1);
    else
        mt_matvec_rows(out, x, w, K, N, B);
    if (bias)
        for (int b = 0; b < B; b++)
            for (int n = 0; n < N; n++) out[b][n] += bias[n];
}
#endif

typedef struct {
    real *db;
    const real *dout;
    int T, N;
} R(bias_grad_job);

static void R(bias_grad)(void *p, size_t n0, size_t n1, int tid) {
    const R(bias_grad_job) *j = p;
    (void)tid;
    for (size_t n = n0; n < n1; n++) {
        real sum = 0;
        for (int t = 0; t < j->T; t++) sum += j->dout[(size_t)t * j->N + n];
        j->db[n] += sum;
    }
}

void R(mt_matmul_backward)(real *dx, real *dw, real *db, const real *dout, const real *x,
                           const real *w, int T, int K, int N) {
    /* dx[T, K] += dout[T, N] · W[N, K] */
    if (dx) r_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, K, N, 1, dout, N, w, K, 1, dx, K);
    /* dW[N, K] += dout^T[N, T] · x[T, K] */
    if (dw) r_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, T, 1, dout, N, x, K, 1, dw, K);
    if (db) {
        R(bias_grad_job) j = {db, dout, T, N};
        mt_parallel_range((size_t)N, (size_t)T * N > MT_PARALLEL_MIN, R(bias_grad), &j);
    }
}
