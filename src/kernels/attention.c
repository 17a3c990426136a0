/* Causal grouped-query attention over a KV cache: query head h reads KV head
 * h / (n_heads / n_kv_heads); scores scaled by 1/sqrt(head_dim); softmax in float with the
 * max subtracted. */
#include "kernels/kernels.h"
#include <math.h>
#include <omp.h>
#include <string.h>

void mt_attention_cached_forward(float *out, const float *q, const float *k, const float *v,
                                 int T, int p0, int n_heads, int n_kv_heads, int head_dim,
                                 float *scratch) {
    int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    int n_ctx_scratch = p0 + T;
    float scale = 1.0f / sqrtf((float)head_dim);
#pragma omp parallel for collapse(2)
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
