/* Kernels: the numeric ops of a Llama-family transformer, each a plain function over
 * row-major float arrays. Forward ops live here; each op's backward is written next to its
 * forward in the same file. GEMMs go through OpenBLAS; the rest is threaded with OpenMP. */
#ifndef MT_KERNELS_KERNELS_H
#define MT_KERNELS_KERNELS_H
#include <stddef.h>
#include "memtune.h"

/* Threads for our loops and for OpenBLAS (kept equal so they do not oversubscribe). */
void mt_kernels_set_threads(int n);
int mt_kernels_threads(void);

/* out[T, N] = x[T, K] · W[N, K]^T (+ bias[N]) */
void mt_matmul_forward(float *out, const float *x, const float *w, const float *bias, int T, int K, int N);

/* out[T, C] = x / rms(x) * w, row by row */
void mt_rmsnorm_forward(float *out, const float *x, const float *w, int T, int C, float eps);

/* RoPE tables: cos/sin[pos * (head_dim/2) + i] for pos < n_pos, with Llama 3 scaling when
 * the config asks for it. Caller frees both with free(). */
mt_status mt_rope_tables(const mt_config *cfg, int n_pos, float **cos_out, float **sin_out);
/* Rotates x[T, n_heads*head_dim] in place; row t sits at position pos[t]. */
void mt_rope_forward(float *x, const int *pos, int T, int n_heads, int head_dim, int interleaved,
                     const float *cos_t, const float *sin_t);

/* out[T, H*hd]: causal grouped-query attention of q[T, H*hd] (row t at position p0 + t) over
 * the first p0 + t + 1 rows of the caches k, v [n_ctx, KV*hd]. scratch: threads * n_ctx floats. */
void mt_attention_cached_forward(float *out, const float *q, const float *k, const float *v,
                                 int T, int p0, int n_heads, int n_kv_heads, int head_dim,
                                 float *scratch);

/* out[i] = silu(gate[i]) * up[i] */
void mt_swiglu_forward(float *out, const float *gate, const float *up, size_t n);

/* In-place softmax of x[n]; returns log(sum(exp(x - max))) + max (the log-partition). */
double mt_softmax_inplace(float *x, int n);
/* log-sum-exp of x[n] without modifying it */
double mt_logsumexp(const float *x, int n);

#endif
