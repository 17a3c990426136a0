/* AdamW and gradient clipping (see optimizer.h). Per parameter, as torch.optim.AdamW:
 *   p -= lr·wd·p                                  (decoupled weight decay, before the moments)
 *   m = b1·m + (1-b1)·g;   v = b2·v + (1-b2)·g^2
 *   p -= lr/(1-b1^t) · m / (sqrt(v)/sqrt(1-b2^t) + eps) */
#include "train/optimizer.h"
#include "core/error.h"
#include "kernels/simd.h"
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

/* parameters per work item */
#define ADAMW_CHUNK 16384

/* One chunk of the update; restrict and omp simd make it one vector pass over the four
 * arrays (sqrtf vectorises because the build uses -fno-math-errno). */
MT_SIMD_CLONES
static void adamw_chunk(float *restrict p, const float *restrict g, float *restrict m,
                        float *restrict v, size_t n, float b1, float b2, float eps, float decay,
                        float step_size, float sqrt_bc2) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        p[i] = p[i] * decay - step_size * m[i] / (sqrtf(v[i]) / sqrt_bc2 + eps);
    }
}

void mt_adamw_update(mt_adamw *o, float *params, const float *grads, size_t begin, size_t end,
                     float weight_decay) {
    float b1 = o->beta1, b2 = o->beta2, eps = o->eps, decay = 1.0f - o->lr * weight_decay;
    float step_size = (float)(o->lr / (1.0 - pow(b1, (double)o->step)));
    float sqrt_bc2 = (float)sqrt(1.0 - pow(b2, (double)o->step));
    size_t n = end > begin ? end - begin : 0, n_chunks = (n + ADAMW_CHUNK - 1) / ADAMW_CHUNK;
#pragma omp parallel for if (n_chunks > 4)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t i = begin + c * ADAMW_CHUNK, len = end - i < ADAMW_CHUNK ? end - i : ADAMW_CHUNK;
        adamw_chunk(params + i, grads + i, o->m + i, o->v + i, len, b1, b2, eps, decay, step_size,
                    sqrt_bc2);
    }
}

void mt_adamw_step(mt_adamw *o, float *params, const float *grads) {
    mt_adamw_begin_step(o);
    mt_adamw_update(o, params, grads, 0, o->n, o->weight_decay);
}

double mt_grad_norm(const float *g, size_t n) {
    double ss = 0.0;
#pragma omp parallel for simd reduction(+ : ss) if (n > 65536)
    for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    return sqrt(ss);
}

double mt_grad_clip(float *g, size_t n, double max_norm) {
    double norm = mt_grad_norm(g, n), factor = max_norm / (norm + 1e-6);
    if (factor < 1.0) {
        float f = (float)factor;
#pragma omp parallel for if (n > 65536)
        for (size_t i = 0; i < n; i++) g[i] *= f;
    }
    return norm;
}
