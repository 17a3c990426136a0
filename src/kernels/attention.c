/* Causal grouped-query attention: query head h reads KV head h / (n_heads / n_kv_heads);
 * scores scaled by 1/sqrt(head_dim); softmax with the max subtracted.
 *
 * Three forms:
 * - the inference one over a KV cache (float only);
 * - the training one (mt_attention_forward/backward), over a batch of packed rows with a
 *   document mask. It never stores a T x T matrix: the forward walks the keys of a query row
 *   in chunks with an online softmax (running max and sum, the output rescaled when the max
 *   grows) and saves only the row's log-sum-exp; the backward recomputes each probability
 *   from q, k and that log-sum-exp, and uses D = dout·out for Σ_s p_s·dp_s (flash
 *   attention's identity), so it too needs only a chunk of scratch on the stack. Memory is
 *   linear in T;
 * - the simple reference (mt_attention_forward_ref/backward_ref), which saves the
 *   probabilities [B, H, T, T]: the tests check the fast pair against it.
 * The training pairs are compiled in float here and in double by kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/real.h"

/* keys per chunk of a query row (stack scratch: two chunks of reals) */
#define KEY_CHUNK 256
/* query rows per work item of the forward */
#define QUERY_BLOCK 32

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
#pragma omp simd reduction(+ : dot)
                for (int d = 0; d < head_dim; d++) dot += qh[d] * kj[d];
                att[j] = dot * scale;
            }
            mt_softmax_inplace(att, n_keys);
            float *oh = out + (size_t)t * q_dim + (size_t)h * head_dim;
            memset(oh, 0, (size_t)head_dim * sizeof(float));
            for (int j = 0; j < n_keys; j++) {
                const float *vj = v + (size_t)j * kv_dim + (size_t)kvh * head_dim;
                float a = att[j];
#pragma omp simd
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

/* ---- the simple reference: probabilities saved, [B, H, T, T] ---- */

/* One query row: probabilities p[0..T) (zero outside [s0, t]) and the output. */
static void reference_row_forward(real *o, real *p, const real *qt, const real *k, const real *v,
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

void R(mt_attention_forward_ref)(real *out, real *att, const real *q, const real *k, const real *v,
                             const int *doc, int B, int T, int n_heads, int n_kv_heads, int head_dim) {
    int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
#pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < n_heads; h++)
            for (int t = 0; t < T; t++) {
                size_t row = (size_t)b * T + t, kv_off = (size_t)b * T * kv_dim + (size_t)(h / group) * head_dim;
                reference_row_forward(out + row * q_dim + (size_t)h * head_dim,
                                      att + (((size_t)b * n_heads + h) * T + t) * T,
                                      q + row * q_dim + (size_t)h * head_dim, k + kv_off, v + kv_off,
                                      doc_start(doc, b, T, t), t, T, kv_dim, head_dim);
            }
}

/* One query row t of head h, given its probabilities p and output gradient dot:
 * ds = p·(dp - Σ p·dp) with dp[s] = dot·v_s, then dq_t += scale·Σ ds·k_s, and the key side
 * dk_s += scale·ds·q_t, dv_s += p·dot for s in [s0, t]. ds is scratch of t + 1 entries. */
static void reference_row_backward(real *dqt, real *dk, real *dv, real *ds, const real *p,
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
void R(mt_attention_backward_ref)(real *dq, real *dk, real *dv, real *dscores, const real *dout,
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
                    reference_row_backward(dq + qo, dk + kv_off, dv + kv_off, dscores + idx, att + idx,
                                           dout + qo, q + qo, k + kv_off, v + kv_off,
                                           doc_start(doc, b, T, t), t, kv_dim, head_dim);
                }
        }
}


/* ---- the tiled pair: nothing of size T x T ---- */

/* Σ_d a[d]·b[d] */
static inline real dot(const real *restrict a, const real *restrict b, int n) {
    real sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int d = 0; d < n; d++) sum += a[d] * b[d];
    return sum;
}

/* One chunk of an online softmax: p[n] holds scaled scores whose maximum is cm; the running
 * max m and sum l (and the unnormalised output o) are rescaled when cm exceeds m, then p
 * becomes exp(p - m) and is added to l. */
MT_SIMD_CLONES
static void online_softmax_chunk(real *restrict p, int n, real cm, real *m, real *l, real *restrict o, int head_dim) {
    if (cm > *m) {
        real correction = *m == -INFINITY ? 0 : r_exp(*m - cm);
        *l *= correction;
#pragma omp simd
        for (int d = 0; d < head_dim; d++) o[d] *= correction;
        *m = cm;
    }
    real mx = *m, sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
        p[j] = r_expv(p[j] - mx);
        sum += p[j];
    }
    *l += sum;
}

/* One query row over its keys [s0, t]: o = softmax(scale·q·K^T)·V, returns the row's
 * log-sum-exp of the scaled scores. Keys go in chunks; m and l are the running max and sum
 * of exp(score - m), and o (unnormalised) is rescaled by exp(m_old - m_new) when m grows. */
MT_SIMD_CLONES
static real tiled_row_forward(real *restrict o, const real *restrict qt, const real *k,
                              const real *v, int s0, int t, int kv_dim, int head_dim) {
    real scale = 1 / r_sqrt((real)head_dim), m = -INFINITY, l = 0, p[KEY_CHUNK];
    memset(o, 0, (size_t)head_dim * sizeof(real));
    for (int c0 = s0; c0 <= t; c0 += KEY_CHUNK) {
        int n = t + 1 - c0 < KEY_CHUNK ? t + 1 - c0 : KEY_CHUNK;
        real cm = -INFINITY;
        for (int j = 0; j < n; j++) {
            p[j] = scale * dot(qt, k + (size_t)(c0 + j) * kv_dim, head_dim);
            cm = p[j] > cm ? p[j] : cm;
        }
        online_softmax_chunk(p, n, cm, &m, &l, o, head_dim);
        for (int j = 0; j < n; j++) {
            const real *restrict vs = v + (size_t)(c0 + j) * kv_dim;
            real pj = p[j];
#pragma omp simd
            for (int d = 0; d < head_dim; d++) o[d] += pj * vs[d];
        }
    }
    real inv = 1 / l;
#pragma omp simd
    for (int d = 0; d < head_dim; d++) o[d] *= inv;
    return m + (real)log(l);
}

/* Small heads (head_dim <= SMALL_HEAD): a per-key dot over a few elements is a horizontal
 * reduction per key, so the keys and values of the span a work item reads are first
 * transposed to [head_dim][n] scratch and scores, exponentials and updates vectorise over
 * keys instead. Kt, Vt: column j is key base + j. */
#define SMALL_HEAD 16

static void transpose_span(real *restrict dst, const real *src, int base, int n, int kv_dim, int head_dim) {
    for (int j = 0; j < n; j++)
        for (int d = 0; d < head_dim; d++) dst[(size_t)d * n + j] = src[(size_t)(base + j) * kv_dim + d];
}

MT_SIMD_CLONES
static real small_row_forward(real *restrict o, const real *restrict qt, const real *restrict kt,
                              const real *restrict vt, int ld, int s0, int t, int head_dim) {
    real scale = 1 / r_sqrt((real)head_dim), m = -INFINITY, l = 0, p[KEY_CHUNK];
    memset(o, 0, (size_t)head_dim * sizeof(real));
    for (int c0 = s0; c0 <= t; c0 += KEY_CHUNK) {
        int n = t + 1 - c0 < KEY_CHUNK ? t + 1 - c0 : KEY_CHUNK;
        memset(p, 0, (size_t)n * sizeof(real));
        for (int d = 0; d < head_dim; d++) {
            const real *restrict kd = kt + (size_t)d * ld + c0;
            real qd = scale * qt[d];
#pragma omp simd
            for (int j = 0; j < n; j++) p[j] += qd * kd[j];
        }
        real cm = -INFINITY;
#pragma omp simd reduction(max : cm)
        for (int j = 0; j < n; j++) cm = p[j] > cm ? p[j] : cm;
        online_softmax_chunk(p, n, cm, &m, &l, o, head_dim);
        for (int d = 0; d < head_dim; d++) {
            const real *restrict vd = vt + (size_t)d * ld + c0;
            real acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int j = 0; j < n; j++) acc += p[j] * vd[j];
            o[d] += acc;
        }
    }
    real inv = 1 / l;
    for (int d = 0; d < head_dim; d++) o[d] *= inv;
    return m + (real)log(l);
}

static void small_attention_forward(real *out, real *lse, const real *q, const real *k, const real *v,
                                    const int *doc, int B, int T, int n_heads, int n_kv_heads, int head_dim) {
    int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    int n_blocks = (T + QUERY_BLOCK - 1) / QUERY_BLOCK;
#pragma omp parallel
    {
        real *kt = malloc(2 * (size_t)T * head_dim * sizeof(real)), *vt = kt ? kt + (size_t)T * head_dim : NULL;
#pragma omp for collapse(3) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < n_heads; h++)
                for (int blk = 0; blk < n_blocks; blk++) {
                    size_t kv_off = (size_t)b * T * kv_dim + (size_t)(h / group) * head_dim;
                    int t0 = blk * QUERY_BLOCK, t1 = t0 + QUERY_BLOCK < T ? t0 + QUERY_BLOCK : T;
                    int s0 = doc_start(doc, b, T, t0), base = s0, n = t1 - base;
                    if (!kt) continue; /* out of memory (T·head_dim reals): these rows are left unwritten */
                    transpose_span(kt, k + kv_off, base, n, kv_dim, head_dim);
                    transpose_span(vt, v + kv_off, base, n, kv_dim, head_dim);
                    for (int t = t0; t < t1; t++) {
                        if (t > t0 && doc && doc[(size_t)b * T + t] != doc[(size_t)b * T + t - 1]) s0 = t;
                        size_t row = (size_t)b * T + t, qo = row * q_dim + (size_t)h * head_dim;
                        lse[row * n_heads + h] = small_row_forward(out + qo, q + qo, kt, vt, n, s0 - base, t - base,
                                                                   head_dim);
                    }
                }
        free(kt);
    }
}

/* The backward of one query row over transposed K, V of its (b, kv head); dK, dV accumulate
 * transposed (dkt, dvt [head_dim][ld]) and are added back by the caller. */
MT_SIMD_CLONES
static void small_row_backward(real *restrict dqt, real *restrict dkt, real *restrict dvt,
                               const real *restrict dot_t, const real *restrict ot, const real *restrict qt,
                               const real *restrict kt, const real *restrict vt, real lse, int ld, int s0,
                               int t, int head_dim) {
    real scale = 1 / r_sqrt((real)head_dim), p[KEY_CHUNK], g[KEY_CHUNK];
    real D = dot(dot_t, ot, head_dim);
    for (int c0 = s0; c0 <= t; c0 += KEY_CHUNK) {
        int n = t + 1 - c0 < KEY_CHUNK ? t + 1 - c0 : KEY_CHUNK;
        for (int j = 0; j < n; j++) p[j] = -lse, g[j] = 0;
        for (int d = 0; d < head_dim; d++) {
            const real *restrict kd = kt + (size_t)d * ld + c0, *restrict vd = vt + (size_t)d * ld + c0;
            real qd = scale * qt[d], od = dot_t[d];
#pragma omp simd
            for (int j = 0; j < n; j++) {
                p[j] += qd * kd[j];
                g[j] += od * vd[j];
            }
        }
#pragma omp simd
        for (int j = 0; j < n; j++) {
            p[j] = r_expv(p[j]);
            g[j] = scale * p[j] * (g[j] - D);
        }
        for (int d = 0; d < head_dim; d++) {
            const real *restrict kd = kt + (size_t)d * ld + c0;
            real *restrict dkd = dkt + (size_t)d * ld + c0, *restrict dvd = dvt + (size_t)d * ld + c0;
            real qd = qt[d], od = dot_t[d], acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int j = 0; j < n; j++) {
                acc += g[j] * kd[j];
                dkd[j] += g[j] * qd;
                dvd[j] += p[j] * od;
            }
            dqt[d] += acc;
        }
    }
}

static void small_attention_backward(real *dq, real *dk, real *dv, const real *dout, const real *out,
                                     const real *lse, const real *q, const real *k, const real *v,
                                     const int *doc, int B, int T, int n_heads, int n_kv_heads, int head_dim) {
    int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    size_t span = (size_t)T * head_dim;
#pragma omp parallel
    {
        real *kt = malloc(4 * span * sizeof(real)), *vt = kt + span, *dkt = vt + span, *dvt = dkt + span;
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int kvh = 0; kvh < n_kv_heads; kvh++) {
                if (!kt) continue; /* out of memory: no gradient rather than a crash */
                size_t kv_off = (size_t)b * T * kv_dim + (size_t)kvh * head_dim;
                transpose_span(kt, k + kv_off, 0, T, kv_dim, head_dim);
                transpose_span(vt, v + kv_off, 0, T, kv_dim, head_dim);
                memset(dkt, 0, 2 * span * sizeof(real));
                for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                    int s0 = 0;
                    for (int t = 0; t < T; t++) {
                        if (t > 0 && doc && doc[(size_t)b * T + t] != doc[(size_t)b * T + t - 1]) s0 = t;
                        size_t row = (size_t)b * T + t, qo = row * q_dim + (size_t)h * head_dim;
                        small_row_backward(dq + qo, dkt, dvt, dout + qo, out + qo, q + qo, kt, vt,
                                           lse[row * n_heads + h], T, s0, t, head_dim);
                    }
                }
                for (int j = 0; j < T; j++)
                    for (int d = 0; d < head_dim; d++) {
                        dk[kv_off + (size_t)j * kv_dim + d] += dkt[(size_t)d * T + j];
                        dv[kv_off + (size_t)j * kv_dim + d] += dvt[(size_t)d * T + j];
                    }
            }
        free(kt);
    }
}

void R(mt_attention_forward)(real *out, real *lse, const real *q, const real *k, const real *v,
                             const int *doc, int B, int T, int n_heads, int n_kv_heads, int head_dim) {
    if (head_dim <= SMALL_HEAD) {
        small_attention_forward(out, lse, q, k, v, doc, B, T, n_heads, n_kv_heads, head_dim);
        return;
    }
    int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    int n_blocks = (T + QUERY_BLOCK - 1) / QUERY_BLOCK;
    /* later blocks see more keys: dynamic scheduling evens the threads out */
#pragma omp parallel for collapse(3) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < n_heads; h++)
            for (int blk = 0; blk < n_blocks; blk++) {
                size_t kv_off = (size_t)b * T * kv_dim + (size_t)(h / group) * head_dim;
                int t0 = blk * QUERY_BLOCK, t1 = t0 + QUERY_BLOCK < T ? t0 + QUERY_BLOCK : T;
                int s0 = doc_start(doc, b, T, t0);
                for (int t = t0; t < t1; t++) {
                    if (t > t0 && doc && doc[(size_t)b * T + t] != doc[(size_t)b * T + t - 1]) s0 = t;
                    size_t row = (size_t)b * T + t, qo = row * q_dim + (size_t)h * head_dim;
                    lse[row * n_heads + h] = tiled_row_forward(out + qo, q + qo, k + kv_off, v + kv_off,
                                                               s0, t, kv_dim, head_dim);
                }
            }
}

/* One query row t of one head in the backward. p_s = exp(scale·q·k_s - lse) is recomputed,
 * dp_s = dot·v_s, ds_s = p_s·(dp_s - D) with D = Σ p·dp = dot·o; then
 * dq_t += scale·Σ ds·k_s, dk_s += scale·ds·q_t, dv_s += p_s·dot. */
MT_SIMD_CLONES
static void tiled_row_backward(real *restrict dqt, real *dk, real *dv, const real *restrict dot_t,
                               const real *restrict ot, const real *restrict qt, const real *k,
                               const real *v, real lse, int s0, int t, int kv_dim, int head_dim) {
    real scale = 1 / r_sqrt((real)head_dim), p[KEY_CHUNK], g[KEY_CHUNK];
    real D = dot(dot_t, ot, head_dim);
    for (int c0 = s0; c0 <= t; c0 += KEY_CHUNK) {
        int n = t + 1 - c0 < KEY_CHUNK ? t + 1 - c0 : KEY_CHUNK;
        for (int j = 0; j < n; j++) {
            p[j] = scale * dot(qt, k + (size_t)(c0 + j) * kv_dim, head_dim) - lse;
            g[j] = dot(dot_t, v + (size_t)(c0 + j) * kv_dim, head_dim);
        }
#pragma omp simd
        for (int j = 0; j < n; j++) {
            p[j] = r_expv(p[j]);
            g[j] = scale * p[j] * (g[j] - D);
        }
        for (int j = 0; j < n; j++) {
            const real *restrict ks = k + (size_t)(c0 + j) * kv_dim;
            real *restrict dks = dk + (size_t)(c0 + j) * kv_dim, *restrict dvs = dv + (size_t)(c0 + j) * kv_dim;
            real gj = g[j], pj = p[j];
#pragma omp simd
            for (int d = 0; d < head_dim; d++) {
                dqt[d] += gj * ks[d];
                dks[d] += gj * qt[d];
                dvs[d] += pj * dot_t[d];
            }
        }
    }
}

/* Work is split by (row b, KV head), as in the reference: one thread owns the dk, dv rows of
 * its KV head and the dq rows of the query heads that read it. */
void R(mt_attention_backward)(real *dq, real *dk, real *dv, const real *dout, const real *out,
                              const real *lse, const real *q, const real *k, const real *v,
                              const int *doc, int B, int T, int n_heads, int n_kv_heads, int head_dim) {
    if (head_dim <= SMALL_HEAD) {
        small_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, doc, B, T, n_heads, n_kv_heads, head_dim);
        return;
    }
    int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int kvh = 0; kvh < n_kv_heads; kvh++) {
            size_t kv_off = (size_t)b * T * kv_dim + (size_t)kvh * head_dim;
            for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                int s0 = 0;
                for (int t = 0; t < T; t++) {
                    if (t > 0 && doc && doc[(size_t)b * T + t] != doc[(size_t)b * T + t - 1]) s0 = t;
                    size_t row = (size_t)b * T + t, qo = row * q_dim + (size_t)h * head_dim;
                    tiled_row_backward(dq + qo, dk + kv_off, dv + kv_off, dout + qo, out + qo, q + qo,
                                       k + kv_off, v + kv_off, lse[row * n_heads + h], s0, t, kv_dim,
                                       head_dim);
                }
            }
        }
}
