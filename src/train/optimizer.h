/* AdamW with fp32 moment state, as torch.optim.AdamW computes it (decoupled weight decay,
 * bias-corrected moments), and global-norm gradient clipping.
 *
 * The moments mirror a flat parameter array (e.g. m->params with s->grads from a training
 * state). One step is mt_adamw_step for the whole array, or, when some tensors are frozen or
 * need their own weight decay (norms and biases are often not decayed), one
 * mt_adamw_begin_step followed by mt_adamw_update on each range to train. */
#ifndef MT_TRAIN_OPTIMIZER_H
#define MT_TRAIN_OPTIMIZER_H
#include <stddef.h>
#include "memtune.h"

typedef struct {
    float lr, beta1, beta2, eps, weight_decay; /* lr may change between steps (schedules) */
    size_t n;
    float *m, *v;  /* [n] first and second moments, zero at the start */
    long step;     /* steps taken; bias correction uses it */
} mt_adamw;

mt_status mt_adamw_init(mt_adamw *o, size_t n, float lr, float beta1, float beta2, float eps,
                        float weight_decay);
void mt_adamw_free(mt_adamw *o);
/* Whole-array step with o->weight_decay on every parameter (one torch param group). */
void mt_adamw_step(mt_adamw *o, float *params, const float *grads);
/* Counts a step; then update each trained range [begin, end) of params/grads/moments. */
void mt_adamw_begin_step(mt_adamw *o);
void mt_adamw_update(mt_adamw *o, float *params, const float *grads, size_t begin, size_t end,
                     float weight_decay);

/* sqrt(Σ g^2), accumulated in double */
double mt_grad_norm(const float *g, size_t n);
/* Scales g so its norm is at most max_norm (torch.nn.utils.clip_grad_norm_: factor
 * max_norm / (norm + 1e-6) when below 1); returns the norm before clipping. */
double mt_grad_clip(float *g, size_t n, double max_norm);

/* One trained gradient array: a parameter group of the global norm. */
typedef struct {
    float *g;
    size_t n;
} mt_grad_span;
/* mt_grad_clip over several arrays at once (the training loop's clipping): the global norm
 * is sqrt(Σ norm_k^2) over the spans in order; max_norm <= 0: no clipping. */
double mt_grad_clip_spans(const mt_grad_span *spans, int n, double max_norm);

#endif
