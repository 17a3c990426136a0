/* Kernels: the numeric ops of a Llama-family transformer, each a plain function over
 * row-major arrays. Each op's backward is written next to its forward in the same file.
 * GEMMs go through OpenBLAS (serial, split over the pool); the rest runs on the kernels' own
 * thread pool (pool.h).
 *
 * The backend seam. Every BLAS call and every parallel loop of the library is in this folder
 * (src/kernels/); the layers above (model, adapters, train, eval, ...) call these functions
 * on host arrays and never include <cblas.h> or name the pool. A second backend
 * (CUDA is next) is a second implementation of this folder behind the same declarations,
 * tested against this one, the reference, as the double-precision twins test the float ops;
 * nothing above it changes. What crosses the seam: float/double arrays, shapes, and the
 * thread count (mt_kernels_set_threads).
 *
 * The ops used in training exist in two precisions from one source text (see real.h):
 * float (mt_rmsnorm_forward, ...), which the model runs, and double (mt_rmsnorm_forward_f64,
 * ...), which the finite-difference gradient checks run. Their declarations are in
 * kernels/ops.h, included below once per precision.
 *
 * Conventions for every backward: gradient outputs are ACCUMULATED (+=), so a caller zeroes
 * them first, and several consumers of one tensor add into the same buffer; a NULL gradient
 * output is skipped (a frozen weight costs no weight-gradient work). The two exceptions say
 * so: RoPE's backward rotates the gradient in place, and cross-entropy's backward writes. */
#ifndef MT_KERNELS_KERNELS_H
#define MT_KERNELS_KERNELS_H
#include <stddef.h>
#include <stdint.h>
#include "memtune.h"

/* Elements (or units of work) below which a loop runs on the calling thread: waking the
 * pool costs more than splitting the work saves. Every parallel condition on a size uses it. */
#define MT_PARALLEL_MIN 65536

/* splitmix64's finaliser: a well-mixed 64-bit hash of z (LoRA dropout's mask, mt_dropout). */
static inline uint64_t mt_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Threads of the kernels' pool (0 = the CPUs this process may run on); OpenBLAS runs serial
 * inside it, so the two never oversubscribe. */
void mt_kernels_set_threads(int n);
int mt_kernels_threads(void);

/* out[N] = W[N, K]·x with our threads, for decoding (decode.c: bandwidth-bound, no BLAS) */
void mt_matvec(float *out, const float *x, const float *w, int K, int N);
/* The thread count set by mt_set_threads (kept as the call that precedes kernels in a thread
 * that may not be the one that set it; the count is global). */
int mt_kernels_enter(void);
/* mt_matvec for B inputs at once: out[b] = W·x[b], each weight row read once for all of
 * them, every output the same number mt_matvec gives. */
void mt_matvec_rows(float *const *out, const float *const *x, const float *w, int K, int N, int B);
/* B one-row linear forwards out[b] = x[b]·W^T (+ bias) in one pass over W: each out[b] equals
 * mt_matmul_forward(out[b], x[b], w, bias, 1, K, N) bit for bit (batched decoding). */
void mt_matmul_forward_rows(float *const *out, const float *const *x, const float *w, const float *bias, int B,
                            int K, int N);

/* ---- the optimizer's ops (optim.c); train/optimizer.c owns the state and the step ---- */
/* One AdamW update of [begin, end) of params with moments m, v: m = b1·m + (1-b1)·g,
 * v = b2·v + (1-b2)·g², p = p·decay - step_size·m / (sqrt(v)/sqrt_bc2 + eps). */
void mt_adamw_kernel(float *params, const float *grads, float *m, float *v, size_t begin, size_t end,
                     float b1, float b2, float eps, float decay, float step_size, float sqrt_bc2);
/* Σ x², accumulated in double */
double mt_sum_squares(const float *x, size_t n);
/* x *= f */
void mt_scale(float *x, size_t n, float f);

/* ---- weight codecs (convert.c): bf16, and Q8_0 blocks along rows ---- */
void mt_bf16_encode(const float *src, size_t n, uint8_t *dst);
void mt_bf16_decode(const uint8_t *src, size_t n, float *dst);
/* bytes of one Q8_0 row of cols values */
size_t mt_q8_0_row_bytes(size_t cols);
void mt_q8_0_encode_rows(const float *src, size_t rows, size_t cols, uint8_t *dst);
void mt_q8_0_decode_rows(const uint8_t *src, size_t rows, size_t cols, float *dst);

/* RoPE tables: cos/sin[pos * (head_dim/2) + i] for pos < n_pos, with Llama 3 scaling when
 * the config asks for it. Caller frees both with free(). Both precisions read these float
 * tables: RoPE's backward is the exact transpose of its forward for any table values. */
mt_status mt_rope_tables(const mt_config *cfg, int n_pos, float **cos_out, float **sin_out);

/* out[T, H*hd]: causal grouped-query attention of q[T, H*hd] (row t at position p0 + t) over
 * the first p0 + t + 1 rows of the caches k, v [n_ctx, KV*hd]. scratch: at least
 * mt_attention_cached_scratch(threads, p0 + T, n_heads, head_dim) floats. */
void mt_attention_cached_forward(float *out, const float *q, const float *k, const float *v,
                                 int T, int p0, int n_heads, int n_kv_heads, int head_dim,
                                 float *scratch);
size_t mt_attention_cached_scratch(int threads, int n_ctx, int n_heads, int head_dim);
/* the T = 1 case for any head_dim (decode.c): n_keys = p0 + 1 cached rows; scratch: threads *
 * n_heads * (head_dim + 2) floats; threaded = 0 runs it on the calling thread */
void mt_attention_decode(float *out, const float *q, const float *k, const float *v, int n_keys, int n_heads,
                         int n_kv_heads, int head_dim, float *scratch, int threaded);

/* In-place softmax of x[n]; returns log(sum(exp(x - max))) + max (the log-partition). */
double mt_softmax_inplace(float *x, int n);
/* log-sum-exp of x[n] without modifying it */
double mt_logsumexp(const float *x, int n);

/* Shape of one mixture-of-memory-experts site (mome.c): N = n1·n2 experts of width C, H
 * heads, each choosing K experts through a query of dk dims (two halves of dk/2 against
 * sub-key tables of n1 and n2 keys; expert e = i·n2 + j). Cx: width of the context code
 * added to the query (0 = none). */
typedef struct {
    int C, n1, n2, H, K, dk, Cx;
} mt_mome_shape;
/* elements of the router (query projection + both sub-key tables + context projection) of
 * one site */
size_t mt_mome_router_size(const mt_mome_shape *sh);
/* where the context projection Wx [H*dk, Cx] starts in a router (after Wq, K1, K2) */
size_t mt_mome_context_offset(const mt_mome_shape *sh);
/* elements of the scratch mt_mome_forward/backward need for T tokens: the sub-key scores
 * [T, H·(n1 + n2)] of the forward, the query gradient [T, H·dk] of the backward */
size_t mt_mome_scratch_size(const mt_mome_shape *sh, int T);

/* The routing context of a document prefix: one block of `dim` values per decay d, block =
 * acc / rms(acc) with acc_t = d·acc_(t-1) + code(token_t), code a fixed pseudo-random ±1
 * vector per token id. It depends on the token ids alone (no trainable weight), so training
 * and the KV-cache forward compute the same thing. */
#define MT_MOME_MAX_DECAYS 4
typedef struct {
    int dim;                          /* per decay; 0 = no context */
    int n_decays;
    float decays[MT_MOME_MAX_DECAYS]; /* each in [0, 1) */
} mt_mome_context_spec;
static inline int mt_mome_context_width(const mt_mome_context_spec *cs) { return cs->dim * cs->n_decays; }

/* Soft targets for cross-entropy (distillation): row i is scored against the distribution
 * given by k (ids[i*k + j], p[i*k + j]) pairs instead of its hard target when ids[i*k] >= 0;
 * a list shorter than k ends with id -1. The p of a row need not sum to 1 (a truncated
 * top-k distribution): loss_i = Σ_j p_j·(lse_i - logit_i[id_j]). */
typedef struct {
    const int *ids;
    const float *p;
    int k;
} mt_soft_targets;

#define MT_OPS_REAL float
#define MT_OPS_FN(name) name
#include "kernels/ops.h"
#undef MT_OPS_REAL
#undef MT_OPS_FN
#define MT_OPS_REAL double
#define MT_OPS_FN(name) name##_f64
#include "kernels/ops.h"
#undef MT_OPS_REAL
#undef MT_OPS_FN

#endif
