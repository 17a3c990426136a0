/* memtune quantized matrix-vector benchmark: what decoding from a GGUF's blocks costs per
 * weight, next to the f32 kernel, for each type memtune writes (Q8_0, Q4_0, Q5_0, Q4_K, Q6_K).
 *
 * One thread, timed with the thread's CPU clock, so the figures hold on a shared machine. A
 * matrix of N rows x K (smollm-135m's shapes by default: 1536 x 576, the up projection) of
 * seeded random values is quantized once; the product runs until min_seconds of CPU time have
 * passed; the best of three such runs is reported as ns per weight, weights per ns and the
 * bytes read per second. Each result is checked against the dot products with the
 * dequantized rows (relative to sum |w x|), so a fast wrong kernel shows.
 *
 * usage: bench_quant [N=1536] [K=576] [min_seconds=0.5]   (K a multiple of 256 for the k-quants:
 * rows that are not are skipped for those types). One JSON line per type on stdout. */
#include "memtune.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef void (*product_fn)(const void *w, const float *x, float *out, int K, int N, uint32_t type);

static void f32_product(const void *w, const float *x, float *out, int K, int N, uint32_t type) {
    (void)type;
    mt_matvec(out, x, w, K, N);
}

static void quant_product(const void *w, const float *x, float *out, int K, int N, uint32_t type) {
    mt_quant_matvec(type, out, x, w, K, N);
}

/* best of three runs of at least min_s CPU seconds each: seconds per product */
static double time_product(product_fn f, const void *w, const float *x, float *out, int K, int N, uint32_t type,
                           double min_s) {
    double best = 1e30;
    for (int run = 0; run < 3; run++) {
        long reps = 0;
        double t0 = cpu_now(), t;
        do {
            f(w, x, out, K, N, type);
            reps++;
        } while ((t = cpu_now() - t0) < min_s);
        if (t / reps < best) best = t / reps;
    }
    return best;
}

/* max over rows of |out - dequantized dot| / sum |w x| */
static double check(uint32_t type, const uint8_t *q, const float *x, const float *out, int K, int N) {
    float *row = malloc((size_t)K * sizeof(float));
    size_t row_bytes = mt_qtype_bytes(type, (size_t)K);
    double worst = 0;
    for (int n = 0; n < N && row; n++) {
        mt_dequantize(type, q + (size_t)n * row_bytes, row, (size_t)K);
        double want = 0, mag = 0;
        for (int k = 0; k < K; k++) want += (double)row[k] * x[k], mag += fabs((double)row[k] * x[k]);
        double err = fabs(out[n] - want) / (mag + 1e-30);
        if (err > worst) worst = err;
    }
    free(row);
    return worst;
}

int main(int argc, char **argv) {
    int N = argc > 1 ? atoi(argv[1]) : 1536, K = argc > 2 ? atoi(argv[2]) : 576;
    double min_s = argc > 3 ? atof(argv[3]) : 0.5;
    if (N < 1 || K < 32 || K % 32 || !(min_s > 0)) {
        fprintf(stderr, "usage: bench_quant [N>=1] [K: a multiple of 32] [min_seconds>0]\n");
        return 2;
    }
    mt_set_threads(1);
    float *w = malloc((size_t)N * K * sizeof(float)), *x = malloc((size_t)K * sizeof(float)),
          *out = malloc((size_t)N * sizeof(float));
    uint8_t *q = malloc((size_t)N * K * 2);
    if (!w || !x || !out || !q) return 1;
    uint64_t s = 42;
    for (size_t i = 0; i < (size_t)N * K; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        w[i] = ((float)(s >> 40) / (float)(1 << 24) - 0.5f) * 0.1f;
    }
    for (int k = 0; k < K; k++) x[k] = sinf(0.37f * (float)k);
    double f32_s = time_product(f32_product, w, x, out, K, N, 0, min_s);
    printf("{\"type\": \"f32\", \"N\": %d, \"K\": %d, \"ns_per_weight\": %.4f, \"GB_per_s\": %.2f}\n", N, K,
           f32_s * 1e9 / ((double)N * K), (double)N * K * 4 / f32_s / 1e9);
    const struct { const char *name; uint32_t type; } types[] = {
        {"q8_0", MT_QTYPE_Q8_0}, {"q4_0", MT_QTYPE_Q4_0}, {"q5_0", MT_QTYPE_Q5_0},
        {"q4_k", MT_QTYPE_Q4_K}, {"q6_k", MT_QTYPE_Q6_K},
    };
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        if (K % (int)mt_qtype_size_of(types[t].type).block) continue;
        mt_quantize_rows(types[t].type, w, q, (size_t)N, (size_t)K);
        double sec = time_product(quant_product, q, x, out, K, N, types[t].type, min_s);
        size_t bytes = mt_qtype_bytes(types[t].type, (size_t)N * K);
        printf("{\"type\": \"%s\", \"N\": %d, \"K\": %d, \"ns_per_weight\": %.4f, \"GB_per_s\": %.2f, "
               "\"vs_f32\": %.2f, \"max_rel_err\": %.2e}\n",
               types[t].name, N, K, sec * 1e9 / ((double)N * K), (double)bytes / sec / 1e9, f32_s / sec,
               check(types[t].type, q, x, out, K, N));
    }
    free(w), free(x), free(out), free(q);
    return 0;
}
