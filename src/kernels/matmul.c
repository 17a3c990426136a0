/* Matrix products through OpenBLAS, with the transposes chosen so no weight is copied. */
#include "kernels/kernels.h"
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

static int kernel_threads = 0;

void mt_kernels_set_threads(int n) {
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0) n = 1;
    kernel_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int mt_kernels_threads(void) {
    if (kernel_threads == 0) mt_kernels_set_threads(0);
    return kernel_threads;
}

void mt_set_threads(int n) { mt_kernels_set_threads(n); }

void mt_matmul_forward(float *out, const float *x, const float *w, const float *bias, int T, int K, int N) {
    if (T == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w, K, x, 1, 0.0f, out, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, x, K, w, K, 0.0f, out, N);
    if (bias)
        for (int t = 0; t < T; t++)
            for (int n = 0; n < N; n++) out[(size_t)t * N + n] += bias[n];
}
