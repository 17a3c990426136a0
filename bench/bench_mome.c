/* Memory experts: per-token time of the MoME layer's forward (inference) and forward +
 * backward + sparse gradient gather (training) for N = 2^10, 2^14, 2^17, 2^20 experts, at
 * stories260K's width (C = 64) with the defaults (K = 8, H = 4, query dim 64, routing context
 * 2 x 32), and the bytes
 * the bank takes. Product-key routing scores n1 + n2 ≈ 2√N sub-keys per head, so time per
 * token should grow far slower than N.
 *
 *   make build/bench/bench_mome && build/bench/bench_mome [tokens]    # one JSON line per N */
#include "memtune.h"
#include "kernels/kernels.h"
#include "core/rng.h"
#include "train/sparse_adam.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double best_of(int reps, double (*fn)(void *), void *ctx) {
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double t = fn(ctx);
        if (t < best) best = t;
    }
    return best;
}

typedef struct {
    mt_mome_shape sh;
    long N;
    int T;
    float *x, *ctx, *router, *bank, *out, *q, *gate, *z, *dout, *dx, *drouter, *sg, *scratch;
    int *idx;
    long *ids;
    mt_sparse_rows rows;
} bench;

static double run_forward(void *p) {
    bench *b = p;
    double t0 = mt_now_seconds();
    memset(b->out, 0, (size_t)b->T * b->sh.C * sizeof(float));
    mt_mome_forward(b->out, b->q, b->idx, b->gate, b->z, b->x, b->ctx, b->router, b->bank, NULL, &b->sh, b->T, b->scratch);
    return mt_now_seconds() - t0;
}

static double run_train(void *p) {
    bench *b = p;
    double t0 = mt_now_seconds();
    memset(b->out, 0, (size_t)b->T * b->sh.C * sizeof(float));
    mt_mome_forward(b->out, b->q, b->idx, b->gate, b->z, b->x, b->ctx, b->router, b->bank, NULL, &b->sh, b->T, b->scratch);
    memset(b->dx, 0, (size_t)b->T * b->sh.C * sizeof(float));
    mt_mome_backward(b->dx, b->drouter, b->sg, b->dout, b->x, b->ctx, b->q, b->idx, b->gate, b->z, b->router, b->bank, NULL,
                     &b->sh, b->T, b->scratch);
    long slots = (long)b->T * b->sh.H * b->sh.K;
    for (long i = 0; i < slots; i++) b->ids[i] = b->idx[i];
    mt_sparse_rows_gather(&b->rows, b->ids, b->sg, slots, 2 * b->sh.C);
    return mt_now_seconds() - t0;
}

static float *randn(mt_rng *rng, size_t n, float std) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; p && i < n; i++) p[i] = std * (float)mt_rng_normal(rng);
    return p;
}

int main(int argc, char **argv) {
    int T = argc > 1 ? atoi(argv[1]) : 256;
    mt_set_threads(1);
    mt_rng rng;
    mt_rng_seed(&rng, 1);
    int logs[4] = {10, 14, 17, 20};
    for (int li = 0; li < 4; li++) {
        bench b = {.N = 1L << logs[li], .T = T};
        int n2 = 1 << (logs[li] / 2);
        b.sh = (mt_mome_shape){.C = 64, .n1 = (int)(b.N / n2), .n2 = n2, .H = 4, .K = 8, .dk = 64, .Cx = 64};
        size_t rs = mt_mome_router_size(&b.sh), slots = (size_t)T * b.sh.H * b.sh.K;
        b.x = randn(&rng, (size_t)T * 64, 1), b.ctx = randn(&rng, (size_t)T * 64, 1), b.router = randn(&rng, rs, 0.125f), b.dout = randn(&rng, (size_t)T * 64, 1);
        b.bank = randn(&rng, (size_t)b.N * 128, 0.1f);
        b.out = malloc((size_t)T * 64 * sizeof(float)), b.dx = malloc((size_t)T * 64 * sizeof(float));
        b.q = malloc((size_t)T * 4 * 64 * sizeof(float));
        b.gate = malloc(slots * sizeof(float)), b.z = malloc(slots * sizeof(float)), b.idx = malloc(slots * sizeof(int));
        b.drouter = calloc(rs, sizeof(float)), b.sg = malloc(slots * 128 * sizeof(float)), b.ids = malloc(slots * sizeof(long));
        b.scratch = malloc(mt_mome_scratch_size(&b.sh, b.T) * sizeof(float));
        if (!b.bank || !b.sg) return 1;
        double inf = best_of(5, run_forward, &b), tr = best_of(5, run_train, &b);
        printf("{\"experts\": %ld, \"n1\": %d, \"n2\": %d, \"tokens\": %d, \"infer_us_per_token\": %.3f, "
               "\"train_us_per_token\": %.3f, \"bank_bytes\": %zu, \"router_bytes\": %zu}\n",
               b.N, b.sh.n1, b.sh.n2, T, 1e6 * inf / T, 1e6 * tr / T, (size_t)b.N * 128 * sizeof(float), rs * sizeof(float));
        fflush(stdout);
        free(b.x), free(b.ctx), free(b.router), free(b.dout), free(b.bank), free(b.out), free(b.dx), free(b.q), free(b.gate), free(b.z);
        free(b.idx), free(b.drouter), free(b.sg), free(b.ids), free(b.scratch);
        mt_sparse_rows_free(&b.rows);
    }
    return 0;
}
