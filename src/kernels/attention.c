/* Causal grouped-query attention: query head h reads KV head h / (n_heads / n_kv_heads);
 * scores scaled by 1/sqrt(head_dim); softmax with the max subtracted.
 *
 * Two forms: the inference one over a KV cache (float only), and the training one over a
 * batch of packed rows with a document mask, which saves the probabilities [B, H, T, T] and
 * has a backward. The training pair is compiled in float here and in double by
 * kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include <math.h>
#include <omp.h>
#include <string.h>
#include "kernels/real.h"

#ifndef MT_REAL_DOUBLE
void mt_attention_cached_forward(float *out, const float *q, const float *k, const float *v,
                                 int T, int p0, int n_heads, int n_kv_heads, int head_dim,
                                 float *scratch) {
    int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    int n_ctx_scratch = p0 + T;
    float scale = 1.0f / sqrtf((float)head_dim);
    /* decoding a small model is a few thousand multiply-adds: not worth waking threads */
    size_t work = (size_t)T * n_heads * (size_t)(p0 + T) * head_dim;
#pragma omp parallel for collapse(2) if (work > 65536)
    for (int t = 0; t < T; t++)
        for (int h = 0; h < n_heads; h++) {
            float *att = scratch + (size_t)omp_get_thread_num() * n_ctx_scratch;
            const float *qh = q + (size_t)t * q_dim + (size_t)h * head_dim;
            int kvh = h / group, n_keys = p0 + t + 1;
            for (int j = 0; j < n_keys; j++) {
                const float *kj = k + (size_t)j * kv_dim + (size_t)kvh * head_dim;
                float dot = 0.0f;
                for (int d = 0; d < head_dim; d++) dot += qh[d] * kj[d];
                att[j] = dot * scale;
            }
            mt_softmax_inplace(att, n_keys);
            float *oh = out + (size_t)t * q_dim + (size_t)h * head_dim;
            memset(oh, 0, (size_t)head_dim * sizeof(float));
            for (int j = 0; j < n_keys; j++) {
                const float *vj = v + (size_t)j * kv_dim + (size_t)kvh * head_dim;
                float a = att[j];
                for (int d = 0; d < head_dim; d++) oh[d] += a * vj[d];
            }
        }
}
#endif

/* Documents are contiguous runs of equal doc ids in a row (how packing lays them out):
 * token t attends to [doc_start, t], where doc_start is the first token of its run. Only
 * those keys are visited, so packed rows cost the sum of their documents' squares. */
static inline int doc_start(const int *doc, int b, int T, int t) {
    if (!doc) return 0;
    const int *d = doc + (size_t)b * T;
    int s = t;
    while (s > 0 && d[s - 1] == d[t]) s--;
    return s;
}

/* One query row: probabilities p[0..T) (zero outside [s0, t]) and the output. */
static void attention_row_forward(real *o, real *p, const real *qt, const real *k, const real *v,
                                  int s0, int t, int T, int kv_dim, int head_dim) {
    real scale = 1 / r_sqrt((real)head_dim), mx = -INFINITY, sum = 0;
    memset(p, 0, (size_t)s0 * sizeof(real));
    memset(p + t + 1, 0, (size_t)(T - t - 1) * sizeof(real));
    for (int s = s0; s <= t; s++) {
        const real *ks = k + (size_t)s * kv_dim;
        real dot = 0;
        for (int d = 0; d < head_dim; d++) dot += qt[d] * ks[d];
        p[s] = dot * scale;
        if (p[s] > mx) mx = p[s];
    }
    for (int s = s0; s <= t; s++) {
        p[s] = r_exp(p[s] - mx);
        sum += p[s];
    }
    memset(o, 0, (size_t)head_dim * sizeof(real));
    real inv = 1 / sum;
    for (int s = s0; s <= t; s++) {
        p[s] *= inv;
        const real *vs = v + (size_t)s * kv_dim;
        for (int d = 0; d < head_dim; d++) o[d] += p[s] * vs[d];
    }
}

void R(mt_attention_forward)(real *out, real *att, const real *q, const real *k, const real *v,
                             const int *doc, int B, int T, int n_heads, int n_kv_heads, int head_dim) {
    int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
#pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < n_heads; h++)
            for (int t = 0; t < T; t++) {
                size_t row = (size_t)b * T + t, kv_off = (size_t)b * T * kv_dim + (size_t)(h / group) * head_dim;
                attention_row_forward(out + row * q_dim + (size_t)h * head_dim,
                                      att + (((size_t)b * n_heads + h) * T + t) * T,
                                      q + row * q_dim + (size_t)h * head_dim, k + kv_off, v + kv_off,
                                      doc_start(doc, b, T, t), t, T, kv_dim, head_dim);
            }
}

/* One query row t of head h, given its probabilities p and output gradient dot:
 * ds = p·(dp - Σ p·dp) with dp[s] = dot·v_s, then dq_t += scale·Σ ds·k_s, and the key side
 * dk_s += scale·ds·q_t, dv_s += p·dot for s in [s0, t]. ds is scratch of t + 1 entries. */
static void attention_row_backward(real *dqt, real *dk, real *dv, real *ds, const real *p,
                                   const real *dot, const real *qt, const real *k, const real *v,
                                   int s0, int t, int kv_dim, int head_dim) {
    real scale = 1 / r_sqrt((real)head_dim), pdp = 0;
    for (int s = s0; s <= t; s++) {
        const real *vs = v + (size_t)s * kv_dim;
        real acc = 0;
        for (int d = 0; d < head_dim; d++) acc += dot[d] * vs[d];
        ds[s] = acc;
        pdp += p[s] * acc;
    }
    for (int s = s0; s <= t; s++) {
        real g = scale * p[s] * (ds[s] - pdp), ps = p[s];
        const real *ks = k + (size_t)s * kv_dim;
        real *dks = dk + (size_t)s * kv_dim, *dvs = dv + (size_t)s * kv_dim;
        for (int d = 0; d < head_dim; d++) {
            dqt[d] += g * ks[d];
            dks[d] += g * qt[d];
            dvs[d] += ps * dot[d];
        }
    }
}

/* Work is split by (row b, KV head): one thread owns the dk, dv rows of its KV head and the
 * dq rows of the query heads that read it, so every access is a row and nothing races.
 * dscores holds one scratch row per (b, h, t) as laid out by the caller; only [s0, t] of a
 * row is used. */
void R(mt_attention_backward)(real *dq, real *dk, real *dv, real *dscores, const real *dout,
                              const real *att, const real *q, const real *k, const real *v,
                              const int *doc, int B, int T, int n_heads, int n_kv_heads, int head_dim) {
    int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int kvh = 0; kvh < n_kv_heads; kvh++) {
            size_t kv_off = (size_t)b * T * kv_dim + (size_t)kvh * head_dim;
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
                for (int t = 0; t < T; t++) {
                    size_t row = (size_t)b * T + t, idx = (((size_t)b * n_heads + h) * T + t) * T;
                    size_t qo = row * q_dim + (size_t)h * head_dim;
                    attention_row_backward(dq + qo, dk + kv_off, dv + kv_off, dscores + idx, att + idx,
                                           dout + qo, q + qo, k + kv_off, v + kv_off,
                                           doc_start(doc, b, T, t), t, kv_dim, head_dim);
                }
        }
}
