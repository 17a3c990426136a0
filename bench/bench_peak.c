/* Machine ceilings for the benchmark table, measured in the same run:
 *   - sgemm peak: OpenBLAS cblas_sgemm at n = 1024, 1536, 2048 with the requested threads
 *     (best of a few repetitions per size; the peak is the best over sizes);
 *   - memory bandwidth: a read-only sum over a 256 MiB array (what f32 decoding does to the
 *     weights) and a copy (memcpy-like, counted as read + write), with the same threads.
 * Prints one JSON object per line on stdout.
 *
 * usage: bench_peak [threads] */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double sgemm_gflops(int n, int reps) {
    float *a = malloc((size_t)n * n * sizeof(float)), *b = malloc((size_t)n * n * sizeof(float)),
          *c = malloc((size_t)n * n * sizeof(float));
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = (float)((i * 7) % 13) * 0.01f;
        b[i] = (float)((i * 5) % 11) * 0.01f;
        c[i] = 0;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n); /* warm */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    free(a); free(b); free(c);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    openblas_set_num_threads(threads);
    omp_set_num_threads(threads);

    int sizes[] = {1024, 1536, 2048};
    double peak = 0;
    for (int i = 0; i < 3; i++) {
        double g = sgemm_gflops(sizes[i], sizes[i] >= 2048 ? 6 : 10);
        printf("{\"bench\":\"sgemm\",\"n\":%d,\"threads\":%d,\"gflops\":%.2f}\n", sizes[i], threads, g);
        if (g > peak) peak = g;
    }
    printf("{\"bench\":\"sgemm_peak\",\"threads\":%d,\"gflops\":%.2f}\n", threads, peak);

    size_t n = (size_t)64 << 20; /* 64 Mi floats = 256 MiB */
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) { x[i] = (float)(i & 1023); y[i] = 0; }
    double best_read = 1e30, best_copy = 1e30, sink = 0;
    for (int r = 0; r < 8; r++) {
        double t0 = now(), s = 0;
#pragma omp parallel reduction(+ : s)
        {
            float acc[32] = {0}; /* independent lanes so the loop vectorises without -ffast-math */
#pragma omp for
            for (size_t i = 0; i < n; i += 32)
                for (int j = 0; j < 32; j++) acc[j] += x[i + j];
            for (int j = 0; j < 32; j++) s += acc[j];
        }
        double dt = now() - t0;
        sink += s;
        if (dt < best_read) best_read = dt;
        t0 = now();
#pragma omp parallel for
        for (size_t i = 0; i < n; i++) y[i] = x[i];
        dt = now() - t0;
        if (dt < best_copy) best_copy = dt;
    }
    double bytes = (double)n * sizeof(float);
    printf("{\"bench\":\"bandwidth\",\"threads\":%d,\"read_gbs\":%.2f,\"copy_gbs\":%.2f,\"sink\":%g}\n",
           threads, bytes / best_read * 1e-9, 2 * bytes / best_copy * 1e-9, sink + y[n / 2]);
    free(x); free(y);
    return 0;
}
