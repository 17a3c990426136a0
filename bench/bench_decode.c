/* memtune decode benchmark: greedy decoding with the KV cache through mt_forward.
 *
 * The prompt is P deterministic token ids (BOS, then (37*i + 11) % (V - 3) + 3), the same
 * formula bench/torch_bench.py uses, so both engines see the same tokens. One repetition =
 * prefill of the prompt (one mt_forward of P tokens) + N greedy tokens (N - 1 single-token
 * forwards after the prefill's). A warm-up repetition of min(N, 16) tokens comes first.
 *
 * Standalone: repetitions run until at least min_seconds have passed and at least min_reps
 * have run. Lockstep (--lockstep as the last argument, driven by bench/lockstep.py): prints
 * "ready" once loaded, then reads commands on stdin, "warm" = a warm-up repetition, "go" = a timed one, "end" = stop; answers
 * each with one line "ok SECONDS" on stdout, so several engines can take turns on a shared
 * machine and see the same noise.
 *
 * Reports the median decode tokens/s, the best, the median prefill tokens/s, the generated
 * ids (to check both engines agree) and the process's peak RSS, as one JSON line on stdout.
 *
 * Environment: BENCH_KEEP_QUANTIZED=1 keeps a quantized GGUF's linear weights in their blocks.
 *
 * usage: bench_decode MODEL [threads=2] [prompt=16] [new=128] [min_seconds=3] [min_reps=3] [--lockstep] */
#include "memtune.h"
#include "model/forward.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* One repetition: prefill ids[0..P), then n_gen greedy tokens into ids[P..). Sets the
 * prefill and decode seconds. */
static int rep(mt_model *m, int *ids, float *logits, int P, int n_gen, int V, double *t_pre, double *t_dec) {
    double t0 = now();
    if (mt_forward(m, ids, P, 0, logits, 0) != MT_OK) return 1;
    double t1 = now();
    for (int i = 0; i < n_gen; i++) {
        ids[P + i] = argmax(logits, V);
        if (i + 1 < n_gen && mt_forward(m, &ids[P + i], 1, P + i, logits, 0) != MT_OK) return 1;
    }
    *t_pre = t1 - t0;
    *t_dec = now() - t1;
    return 0;
}

int main(int argc, char **argv) {
    int lockstep = argc > 1 && strcmp(argv[argc - 1], "--lockstep") == 0;
    if (lockstep) argc--;
    if (argc < 2) {
        fprintf(stderr, "usage: bench_decode MODEL [threads] [prompt] [new] [min_seconds] [min_reps] [--lockstep]\n");
        return 2;
    }
    const char *path = argv[1];
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    int P = argc > 3 ? atoi(argv[3]) : 16;
    int N = argc > 4 ? atoi(argv[4]) : 128;
    double min_seconds = argc > 5 ? atof(argv[5]) : 3.0;
    int min_reps = argc > 6 ? atoi(argv[6]) : 3;
    if (P < 1 || N < 2 || min_reps < 1) {
        fprintf(stderr, "bench_decode: need prompt >= 1, new >= 2, min_reps >= 1\n");
        return 2;
    }
    mt_set_threads(threads);

    mt_model *m;
    double t_load = now();
    /* BENCH_KEEP_QUANTIZED=1: decode on a quantized GGUF's blocks (as memtune generate does) */
    const char *keep = getenv("BENCH_KEEP_QUANTIZED");
    mt_load_options lo = {.keep_quantized = keep && *keep == '1'};
    if (mt_model_load(path, &lo, &m) != MT_OK) {
        fprintf(stderr, "bench_decode: %s\n", mt_last_error());
        return 1;
    }
    t_load = now() - t_load;
    const mt_config *c = mt_model_config(m);
    int V = c->vocab_size;
    /* a KV cache just big enough for the run (the torch side allocates the same) */
    if (mt_model_set_context(m, P + N) != MT_OK) {
        fprintf(stderr, "bench_decode: %s\n", mt_last_error());
        return 1;
    }
    int *ids = malloc((size_t)(P + N) * sizeof(int));
    float *logits = malloc((size_t)V * sizeof(float));
    ids[0] = 1; /* BOS in every model benchmarked here; torch_bench.py uses the same */
    for (int i = 1; i < P; i++) ids[i] = (37 * i + 11) % (V - 3) + 3;

    enum { MAX_REPS = 1000 };
    double dec[MAX_REPS], pre[MAX_REPS], tp, td;
    int reps = 0, n_warm = N > 16 ? 16 : N;
    if (lockstep) {
        char cmd[64];
        printf("ready\n");
        fflush(stdout);
        while (reps < MAX_REPS && fgets(cmd, sizeof cmd, stdin) && strncmp(cmd, "end", 3) != 0) {
            int warm = strncmp(cmd, "warm", 4) == 0;
            if (rep(m, ids, logits, P, warm ? n_warm : N, V, &tp, &td)) break;
            if (!warm) {
                dec[reps] = (N - 1) / td;
                pre[reps] = P / tp;
                reps++;
            }
            printf("ok %.6f\n", tp + td);
            fflush(stdout);
        }
    } else {
        double t_start = 0;
        for (int r = -1; r < MAX_REPS; r++) { /* r = -1: warm-up */
            if (rep(m, ids, logits, P, r < 0 ? n_warm : N, V, &tp, &td)) break;
            if (r < 0) {
                t_start = now();
                continue;
            }
            dec[reps] = (N - 1) / td;
            pre[reps] = P / tp;
            reps++;
            if (reps >= min_reps && now() - t_start >= min_seconds) break;
        }
    }
    if (reps == 0) {
        fprintf(stderr, "bench_decode: no timed repetition (%s)\n", mt_last_error());
        return 1;
    }
    double best = 0;
    for (int i = 0; i < reps; i++)
        if (dec[i] > best) best = dec[i];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"engine\":\"memtune\",\"bench\":\"decode\",\"model\":\"%s\",\"params\":%zu,\"threads\":%d,"
           "\"prompt\":%d,\"new\":%d,\"reps\":%d,\"decode_tok_s\":%.3f,\"best_decode_tok_s\":%.3f,\"prefill_tok_s\":%.3f,"
           "\"load_s\":%.3f,\"peak_rss_mb\":%.1f,\"ids\":[",
           path, mt_model_param_count(m), threads, P, N, reps, median(dec, reps), best, median(pre, reps),
           t_load, ru.ru_maxrss / 1024.0);
    for (int i = 0; i < N; i++) printf("%s%d", i ? "," : "", ids[P + i]);
    printf("]}\n");
    free(ids);
    free(logits);
    mt_model_free(m);
    return 0;
}
