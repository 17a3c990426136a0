/* memtune training benchmark: full fine-tuning steps (forward, backward, AdamW) on random
 * token batches of B rows x T tokens, through the training-state API.
 *
 * One step = zero grads, mt_train_forward (loss = mean NLL over the B*T targets),
 * mt_train_backward, mt_adamw_step over every parameter (torch.optim.AdamW defaults:
 * lr 1e-4 here, betas 0.9/0.999, eps 1e-8, weight decay 0.01 on every tensor; no gradient
 * clipping), exactly what bench/torch_bench.py times. Every step gets a fresh random batch
 * (inputs uniform over the vocabulary, targets = inputs shifted by one). `warmup` steps run
 * first and are not timed; then `steps` timed steps. Reports the median step time as
 * tokens/s (B*T / step seconds), the first step's loss (ln V for a fresh model, a sanity
 * check against torch) and the process's peak RSS, as one JSON line on stdout.
 *
 * Lockstep (--lockstep as the last argument, driven by bench/lockstep.py): instead of
 * warmup + steps, prints "ready" once loaded, then reads commands on stdin, "warm" = an untimed step, "go" = a timed one,
 * "end" = stop, and answers each with one line "ok SECONDS" on stdout.
 *
 * LoRA (--lora R, anywhere in the arguments): the base is frozen and a rank-R adapter (alpha
 * 2R, all seven projections, PEFT init) trains instead, AdamW over the adapter only (what
 * `memtune train --method lora` does; torch_bench.py --lora R times the same);
 * --base-dtype bf16|q8_0 also holds the frozen base's linear layers in that dtype.
 *
 * usage: bench_train MODEL [threads=2] [B=4] [T=128] [warmup=2] [steps=5] [--lora R]
 *                    [--base-dtype D] [--lockstep] */
#include "memtune.h"
#include "model/train_model.h"
#include "train/optimizer.h"
#include <math.h>
#include <stdint.h>
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

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng_next(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define CHECK(call)                                                         \
    do {                                                                    \
        if ((call) != MT_OK) {                                              \
            fprintf(stderr, "bench_train: %s\n", mt_last_error());          \
            return 1;                                                       \
        }                                                                   \
    } while (0)

int main(int argc, char **argv) {
    int lockstep = 0, lora_rank = 0;
    const char *base_dtype = "f32";
    int k = 1;
    for (int i = 1; i < argc; i++) { /* take the options out, keep the positional arguments */
        if (!strcmp(argv[i], "--lockstep")) lockstep = 1;
        else if (!strcmp(argv[i], "--lora") && i + 1 < argc) lora_rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--base-dtype") && i + 1 < argc) base_dtype = argv[++i];
        else argv[k++] = argv[i];
    }
    argc = k;
    if (argc < 2) {
        fprintf(stderr, "usage: bench_train MODEL [threads] [B] [T] [warmup] [steps]\n");
        return 2;
    }
    const char *path = argv[1];
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    int B = argc > 3 ? atoi(argv[3]) : 4;
    int T = argc > 4 ? atoi(argv[4]) : 128;
    int warmup = argc > 5 ? atoi(argv[5]) : 2;
    int steps = argc > 6 ? atoi(argv[6]) : 5;
    if (steps < 1 || steps > 1000 || warmup < 0) {
        fprintf(stderr, "bench_train: steps must be in [1, 1000]\n");
        return 2;
    }
    mt_set_threads(threads);

    mt_model *m;
    CHECK(mt_model_load(path, NULL, &m));
    const mt_config *c = mt_model_config(m);
    int V = c->vocab_size, BT = B * T;
    mt_lora *lora = NULL;
    size_t n_params = mt_model_param_count(m);
    if (lora_rank > 0) {
        mt_lora_options lo;
        mt_lora_options_default(&lo);
        lo.rank = lora_rank;
        lo.alpha = 2.0f * lora_rank;
        CHECK(mt_model_set_base_dtype(m, base_dtype));
        CHECK(mt_lora_create(m, &lo, &lora));
        CHECK(mt_model_attach_lora(m, lora));
    }
    mt_train_state *s;
    CHECK(mt_train_create(m, B, T, &s));
    if (lora) CHECK(mt_train_set_trainable(s, NULL, 0));
    mt_adamw opt;
    size_t n_trained = lora ? mt_lora_param_count(lora) : m->n_params;
    CHECK(mt_adamw_init(&opt, n_trained, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.01f));

    int *seq = malloc((size_t)B * (T + 1) * sizeof(int));
    int *inputs = malloc((size_t)BT * sizeof(int)), *targets = malloc((size_t)BT * sizeof(int));
    double times[1000], first_loss = NAN, last_loss = NAN;
    int n_timed = 0, n_warm = 0;
    if (lockstep) {
        printf("ready\n");
        fflush(stdout);
    }
    for (int step = 0;; step++) {
        int timed;
        if (lockstep) {
            char cmd[64];
            if (n_timed >= 1000 || !fgets(cmd, sizeof cmd, stdin) || strncmp(cmd, "end", 3) == 0) break;
            timed = strncmp(cmd, "warm", 4) != 0;
        } else {
            if (step >= warmup + steps) break;
            timed = step >= warmup;
        }
        for (int i = 0; i < B * (T + 1); i++) seq[i] = (int)(rng_next() % (uint32_t)V);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                inputs[b * T + t] = seq[b * (T + 1) + t];
                targets[b * T + t] = seq[b * (T + 1) + t + 1];
            }
        double t0 = now(), nll;
        long n;
        mt_train_zero_grads(s);
        CHECK(mt_train_forward(s, inputs, targets, NULL, NULL, 1.0 / BT, &nll, &n));
        CHECK(mt_train_backward(s));
        if (lora) mt_adamw_step(&opt, s->lora_params, s->lora_grads);
        else mt_adamw_step(&opt, m->params, s->grads);
        double dt = now() - t0;
        if (step == 0) first_loss = nll / n;
        last_loss = nll / n;
        if (timed) times[n_timed++] = dt;
        else n_warm++;
        fprintf(stderr, "memtune step %d: %.3f s, loss %.4f\n", step, dt, nll / n);
        if (lockstep) {
            printf("ok %.6f\n", dt);
            fflush(stdout);
        }
    }
    if (n_timed == 0) {
        fprintf(stderr, "bench_train: no timed step\n");
        return 1;
    }
    warmup = n_warm;
    steps = n_timed;
    qsort(times, (size_t)steps, sizeof times[0], cmp_double);
    double med = steps % 2 ? times[steps / 2] : 0.5 * (times[steps / 2 - 1] + times[steps / 2]);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"engine\":\"memtune\",\"bench\":\"train\",\"method\":\"%s\",\"base_dtype\":\"%s\",\"trainable\":%zu,"
           "\"model\":\"%s\",\"params\":%zu,\"threads\":%d,"
           "\"B\":%d,\"T\":%d,\"warmup\":%d,\"steps\":%d,\"step_s\":%.4f,\"best_step_s\":%.4f,"
           "\"tok_s\":%.3f,\"first_loss\":%.5f,\"last_loss\":%.5f,\"state_mb\":%.1f,\"peak_rss_mb\":%.1f}\n",
           lora ? "lora" : "full", base_dtype, n_trained, path, n_params, threads, B, T, warmup, steps, med, times[0],
           BT / med, first_loss,
           last_loss, mt_train_state_bytes(c, B, T) / 1048576.0, ru.ru_maxrss / 1024.0);
    free(seq); free(inputs); free(targets);
    mt_adamw_free(&opt);
    mt_train_free(s);
    mt_model_attach_lora(m, NULL);
    mt_lora_free(lora);
    mt_model_free(m);
    return 0;
}
