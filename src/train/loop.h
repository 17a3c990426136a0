/* The one training loop (loop.c) and the interface a training method implements over it.
 *
 * A method (full fine-tuning and LoRA in trainer.c, memory tuning in memory.c) says what
 * trains and how: how a step's rows are filled and its gradients computed, which gradients
 * there are, how the optimizer updates them, what happens after a step (metrics, evals,
 * checks), its stop rule besides the step cap, and what a checkpoint carries. Setup, the
 * resume and what the end writes stay the method's own entry point; the loop owns the rest:
 * the step counter, the gradient hook, global-norm clipping, the LR schedule, checkpoint
 * cadence, stop requests and the safe point after each step. */
#ifndef MT_TRAIN_LOOP_H
#define MT_TRAIN_LOOP_H
#include "memtune.h"
#include "train/optimizer.h"
#include "train/schedule.h"

#define MT_LOOP_MAX_GRADS 8

typedef struct {
    long step;             /* optimizer steps done (a resume restores it) */
    long total_steps;      /* the step cap */
    long tokens;           /* tokens processed (the method may restore it on resume) */
    long tokens_per_step;  /* added to tokens each step */
    double loss;           /* the last step's loss in this process (0 before the first) */
    mt_schedule_kind sched;
    float peak_lr;         /* the schedule's peak */
    int warmup;
    float clip;            /* max global gradient norm; 0: off */
    int save_every;        /* checkpoint every N steps (0: only on a stop) */
    int interrupted;       /* stopped on request (checkpoint saved) */
    mt_dist *dist;         /* data-parallel run (NULL: one process): a stop on any rank stops all at the same step */
} mt_loop;

typedef struct {
    const char *name;
    /* Fills the step's rows and runs forward and backward over them: on return every trained
     * tensor's gradient is complete. *loss: the step's loss. l->step is the step's index. */
    mt_status (*compute_gradients)(void *self, mt_loop *l, double *loss);
    /* The trained gradients as spans, in the order their norms add up; returns the count. */
    int (*gradients)(void *self, mt_grad_span *spans, int cap);
    /* The optimizer update with this step's learning rate (l->step not yet advanced). */
    mt_status (*update)(void *self, mt_loop *l, float lr);
    /* After the step counted: progress, metrics, evals or checks. */
    mt_status (*after_step)(void *self, mt_loop *l, double grad_norm, float lr);
    /* The stop rule besides the step cap (NULL: the cap alone). */
    int (*done)(void *self, const mt_loop *l);
    /* Writes a checkpoint of the state after l->step steps. */
    mt_status (*save_checkpoint)(void *self, mt_loop *l);
    /* After the safe point (test hooks); may be NULL. */
    void (*step_end)(void *self, mt_loop *l);
} mt_train_method;

/* Steps until the step cap, the method's stop rule or a stop request (which saves a
 * checkpoint first and sets l->interrupted). */
mt_status mt_loop_run(mt_loop *l, const mt_train_method *method, void *self);

/* The one place where a step's gradients are complete, before they are clipped and the
 * optimizer uses them: every method's step passes here (a data-parallel run all-reduces the
 * spans at this point). */
mt_status mt_loop_gradients_complete(mt_loop *l, mt_grad_span *spans, int n);

/* The most ids --trainable-tokens lists (and "auto" picks for full and LoRA). */
#define MT_MAX_TOKEN_ROW_IDS 256

/* --trainable-tokens as a comma list of ids: each in [0, INT32_MAX], duplicates kept once,
 * at most cap ids; *n the count. */
mt_status mt_parse_token_ids(const char *list, int *ids, int cap, int *n);
/* Adds id to ids[0..n) unless present; returns the new count. */
int mt_token_ids_add(int *ids, int n, int id);

#endif
