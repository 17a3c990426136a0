/* AdamW and gradient clipping (see optimizer.h): the state and the step count here, the
 * arithmetic in kernels (mt_adamw_kernel, mt_sum_squares, mt_scale). Per parameter, as
 * torch.optim.AdamW:
 *   p -= lr·wd·p                                  (decoupled weight decay, before the moments)
 *   m = b1·m + (1-b1)·g;   v = b2·v + (1-b2)·g^2
 *   p -= lr/(1-b1^t) · m / (sqrt(v)/sqrt(1-b2^t) + eps) */
#include "train/optimizer.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include <math.h>
#include <stdlib.h>

mt_status mt_adamw_init(mt_adamw *o, size_t n, float lr, float beta1, float beta2, float eps,
                        float weight_decay) {
    *o = (mt_adamw){.lr = lr, .beta1 = beta1, .beta2 = beta2, .eps = eps,
                    .weight_decay = weight_decay, .n = n};
    o->m = calloc(n ? n : 1, sizeof(float));
    o->v = calloc(n ? n : 1, sizeof(float));
    if (!o->m || !o->v) {
        mt_adamw_free(o);
        return mt_error(MT_ERR_NOMEM, "out of memory for AdamW state of %zu parameters", n);
    }
    return MT_OK;
}

void mt_adamw_free(mt_adamw *o) {
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
}

void mt_adamw_begin_step(mt_adamw *o) { o->step++; }

void mt_adamw_update(mt_adamw *o, float *params, const float *grads, size_t begin, size_t end,
                     float weight_decay) {
    float b1 = o->beta1, b2 = o->beta2, eps = o->eps, decay = 1.0f - o->lr * weight_decay;
    float step_size = (float)(o->lr / (1.0 - pow(b1, (double)o->step)));
    float sqrt_bc2 = (float)sqrt(1.0 - pow(b2, (double)o->step));
    mt_adamw_kernel(params, grads, o->m, o->v, begin, end, b1, b2, eps, decay, step_size, sqrt_bc2);
}

void mt_adamw_step(mt_adamw *o, float *params, const float *grads) {
    mt_adamw_begin_step(o);
    mt_adamw_update(o, params, grads, 0, o->n, o->weight_decay);
}

double mt_grad_norm(const float *g, size_t n) { return sqrt(mt_sum_squares(g, n)); }

double mt_grad_clip_spans(const mt_grad_span *spans, int n, double max_norm) {
    double sq = 0;
    for (int k = 0; k < n; k++) {
        double norm = spans[k].g ? mt_grad_norm(spans[k].g, spans[k].n) : 0;
        sq += norm * norm;
    }
    double norm = sqrt(sq), factor = max_norm / (norm + 1e-6);
    if (max_norm > 0 && factor < 1.0)
        for (int k = 0; k < n; k++)
            if (spans[k].g) mt_scale(spans[k].g, spans[k].n, (float)factor);
    return norm;
}

double mt_grad_clip(float *g, size_t n, double max_norm) {
    mt_grad_span span = {g, n};
    return mt_grad_clip_spans(&span, 1, max_norm);
}
