/* The training loop every method runs (see loop.h): per step, the method computes the
 * gradients; they pass the one hook where they are complete; the global norm is clipped over
 * every trained gradient (optimizer.c's clip, the one the PyTorch reference test drives); the
 * schedule gives the learning rate and the method's optimizer updates; then the method
 * reports, a checkpoint is written every save_every steps or on a stop request, and the
 * step ends at a safe point. It reports through train/progress.h and never prints. */
#include "train/loop.h"
#include "core/error.h"
#include "train/progress.h"
#include "dist/dist.h"
#include "core/rng.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

mt_status mt_loop_gradients_complete(mt_loop *l, mt_grad_span *spans, int n) {
    (void)l, (void)spans, (void)n; /* one process: nothing to combine */
    return MT_OK;
}

/* One optimizer step: gradients, the hook, clipping, the schedule's lr, the update. */
static mt_status loop_step(mt_loop *l, const mt_train_method *m, void *self, double *loss, double *grad_norm,
                           float *lr) {
    mt_status s = m->compute_gradients(self, l, loss);
    if (s) return s;
    mt_grad_span spans[MT_LOOP_MAX_GRADS];
    int n = m->gradients(self, spans, MT_LOOP_MAX_GRADS);
    if ((s = mt_loop_gradients_complete(l, spans, n))) return s;
    *grad_norm = mt_grad_clip_spans(spans, n, l->clip);
    *lr = mt_schedule_lr(l->sched, l->peak_lr, l->step, l->warmup, l->total_steps);
    if ((s = m->update(self, l, *lr))) return s;
    l->step++;
    l->tokens += l->tokens_per_step;
    if (!isfinite(*loss)) return mt_error(MT_ERR_ARG, "loss became %f at step %ld: lower --lr", *loss, l->step);
    return MT_OK;
}

mt_status mt_loop_run(mt_loop *l, const mt_train_method *m, void *self) {
    mt_status s = MT_OK;
    while (s == MT_OK && l->step < l->total_steps && !(m->done && m->done(self, l))) {
        double loss, grad_norm;
        float lr;
        double t_step = mt_now_seconds();
        if ((s = loop_step(l, m, self, &loss, &grad_norm, &lr))) break;
        mt_dist_count_step(l->dist, mt_now_seconds() - t_step); /* dist: the share spent communicating */
        l->loss = loss;
        s = m->after_step(self, l, grad_norm, lr);
        int stop = mt_dist_max_int(l->dist, mt_progress_stop_requested()); /* dist: one rank's stop stops all */
        if (s == MT_OK && (stop || (l->save_every > 0 && l->step % l->save_every == 0))) s = m->save_checkpoint(self, l);
        if (s == MT_OK && stop) {
            l->interrupted = 1;
            mt_progress stopped = {.kind = MT_PROGRESS_STOPPED, .step = l->step, .total_steps = l->total_steps};
            mt_progress_emit(&stopped);
            break;
        }
        /* the step is done, its checkpoint written: a safe point (the CLI's crash test kills here) */
        mt_progress end = {.kind = MT_PROGRESS_STEP_END, .step = l->step, .total_steps = l->total_steps};
        mt_progress_emit(&end);
        if (m->step_end) m->step_end(self, l);
    }
    return s;
}

int mt_token_ids_add(int *ids, int n, int id) {
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return n;
    ids[n] = id;
    return n + 1;
}

mt_status mt_parse_token_ids(const char *list, int *ids, int cap, int *n) {
    *n = 0;
    for (const char *p = list; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < 0 || v > INT32_MAX)
            return mt_error(MT_ERR_ARG, "--trainable-tokens: expected auto, none or a comma list of token ids, got \"%s\"", list);
        if (*n == cap) return mt_error(MT_ERR_ARG, "--trainable-tokens: more than %d ids", cap);
        *n = mt_token_ids_add(ids, *n, (int)v);
        p = *end ? end + 1 : end;
    }
    return MT_OK;
}
