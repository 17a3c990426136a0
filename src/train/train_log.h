/* What a training run records: DIR/metrics.jsonl with a line per logged step and per eval
 * (evals also go to the progress callback), and DIR/loss.svg plotting train and eval loss at
 * the end. The progress bar or lines are the caller's (the CLI draws them from the
 * callback's step events). */
#ifndef MT_TRAIN_TRAIN_LOG_H
#define MT_TRAIN_TRAIN_LOG_H
#include <stdio.h>
#include "memtune.h"

typedef struct {
    FILE *metrics;        /* DIR/metrics.jsonl, appended to (a resumed run continues it) */
    int quiet;
    long total_steps;
    double start_time;
    long *train_step, *eval_step;
    double *train_loss, *eval_loss;
    int n_train, n_eval, cap_train, cap_eval;
} mt_train_log;

/* A resumed run's metrics.jsonl: drops the lines of steps after `step` (written by the run
 * that died after its last checkpoint), so each step appears once. Atomic rewrite. */
mt_status mt_metrics_drop_after(const char *path, long step);
mt_status mt_train_log_open(mt_train_log *l, const char *dir, long total_steps, int quiet, int resume,
                            long resume_step);
void mt_train_log_step(mt_train_log *l, long step, double loss, float lr, double grad_norm,
                       double tokens_per_s, int write_line);
void mt_train_log_eval(mt_train_log *l, long step, double eval_loss);
/* Writes DIR/loss.svg (atomically) and closes the metrics file. */
mt_status mt_train_log_close(mt_train_log *l, const char *dir);

#endif
