/* Causal grouped-query attention: query head h reads KV head h / (n_heads / n_kv_heads);
 * scores scaled by 1/sqrt(head_dim); softmax with the max subtracted.
 *
 * Three forms:
 * - the inference one over a KV cache (float only, at the end of this file): a decoded token
 *   split over the keys between threads (decode.c), a prompt chunk through the training
 *   forward's blocks below, small heads a dot product per key;
 * - the training one (mt_attention_forward/backward), over a batch of packed rows with a
 *   document mask. It never stores a T x T matrix: the forward walks the keys of query rows
 *   in blocks with an online softmax (running max and sum, the output rescaled when the max
 *   grows) and saves only each row's log-sum-exp; the backward recomputes the probabilities
 *   from q, k and that log-sum-exp, and uses D = dout·out for Σ_s p_s·dp_s (flash
 *   attention's identity), so it too needs only a block of scratch on the stack. Memory is
 *   linear in T. Heads above 16 wide go as small GEMMs per block, narrower ones transposed
 *   (see SMALL_HEAD);
 * - the simple reference (mt_attention_forward_ref/backward_ref), which saves the
 *   probabilities [B, H, T, T]: the tests check the fast pair against it.
 * The training pairs are compiled in float here and in double by kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include <math.h>
#include "kernels/pool.h"
#include <stdlib.h>
#include <string.h>
#include "kernels/real.h"
#include "kernels/online_softmax.h"

/* small heads: keys per chunk of a query row (stack scratch: two chunks of reals) and
 * query rows per work item of the forward */
#define KEY_CHUNK 256
#define QUERY_BLOCK 32

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

/* the arguments of an attention call, for its pool tasks */
typedef struct {
    real *out, *lse, *att, *dq, *dk, *dv, *dscores, *scratch;
    const real *q, *k, *v, *dout, *out_in, *lse_in, *att_in;
    const int *doc;
    int B, T, n_heads, n_kv_heads, head_dim, n_blocks;
    size_t scratch_per_thread;
} R(attn_job);

static void R(reference_forward_task)(void *p, size_t r0, size_t r1, int tid) {
    const R(attn_job) *j = p;
    (void)tid;
    int T = j->T, n_heads = j->n_heads, head_dim = j->head_dim, group = n_heads / j->n_kv_heads;
    int kv_dim = j->n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    for (size_t r = r0; r < r1; r++) {
        int b = (int)(r / ((size_t)n_heads * T)), h = (int)(r / (size_t)T % (size_t)n_heads), t = (int)(r % (size_t)T);
        size_t row = (size_t)b * T + t, kv_off = (size_t)b * T * kv_dim + (size_t)(h / group) * head_dim;
        reference_row_forward(j->out + row * q_dim + (size_t)h * head_dim,
                              j->att + (((size_t)b * n_heads + h) * T + t) * T,
                              j->q + row * q_dim + (size_t)h * head_dim, j->k + kv_off, j->v + kv_off,
                              doc_start(j->doc, b, T, t), t, T, kv_dim, head_dim);
    }
}

void R(mt_attention_forward_ref)(real *out, real *att, const real *q, const real *k, const real *v,
                             const int *doc, int B, int T, int n_heads, int n_kv_heads, int head_dim) {
    R(attn_job) j = {.out = out, .att = att, .q = q, .k = k, .v = v, .doc = doc, .B = B, .T = T,
                     .n_heads = n_heads, .n_kv_heads = n_kv_heads, .head_dim = head_dim};
    mt_parallel_range((size_t)B * n_heads * T, 1, R(reference_forward_task), &j);
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
static void R(reference_backward_task)(void *p, int task, int tid) {
    const R(attn_job) *j = p;
    (void)tid;
    int T = j->T, n_heads = j->n_heads, n_kv_heads = j->n_kv_heads, head_dim = j->head_dim;
    int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    int b = task / n_kv_heads, kvh = task % n_kv_heads;
    real *dq = j->dq, *dk = j->dk, *dv = j->dv, *dscores = j->dscores;
    const real *dout = j->dout, *att = j->att_in, *q = j->q, *k = j->k, *v = j->v;
    const int *doc = j->doc;
    size_t kv_off = (size_t)b * T * kv_dim + (size_t)kvh * head_dim;
    for (int h = kvh * group; h < (kvh + 1) * group; h++)
        for (int t = 0; t < T; t++) {
            size_t row = (size_t)b * T + t, idx = (((size_t)b * n_heads + h) * T + t) * T;
            size_t qo = row * q_dim + (size_t)h * head_dim;
            reference_row_backward(dq + qo, dk + kv_off, dv + kv_off, dscores + idx, att + idx, dout + qo,
                                   q + qo, k + kv_off, v + kv_off, doc_start(doc, b, T, t), t, kv_dim, head_dim);
        }
}

void R(mt_attention_backward_ref)(real *dq, real *dk, real *dv, real *dscores, const real *dout,
                              const real *att, const real *q, const real *k, const real *v,
                              const int *doc, int B, int T, int n_heads, int n_kv_heads, int head_dim) {
    R(attn_job) j = {.dq = dq, .dk = dk, .dv = dv, .dscores = dscores, .dout = dout, .att_in = att, .q = q,
                     .k = k, .v = v, .doc = doc, .B = B, .T = T, .n_heads = n_heads, .n_kv_heads = n_kv_heads,
                     .head_dim = head_dim};
    mt_parallel(B * n_kv_heads, R(reference_backward_task), &j);
}


/* ---- the tiled pair: nothing of size T x T ---- */

/* Σ_d a[d]·b[d] */
static inline real dot(const real *restrict a, const real *restrict b, int n) {
    real sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int d = 0; d < n; d++) sum += a[d] * b[d];
    return sum;
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

/* one task per (b, head, query block); each thread transposes K, V into its own scratch */
static void R(small_forward_task)(void *p, int task, int tid) {
    const R(attn_job) *j = p;
    int T = j->T, n_heads = j->n_heads, head_dim = j->head_dim, n_blocks = j->n_blocks;
    int group = n_heads / j->n_kv_heads, kv_dim = j->n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    int b = task / (n_heads * n_blocks), h = task / n_blocks % n_heads, blk = task % n_blocks;
    const int *doc = j->doc;
    if (!j->scratch) return; /* out of memory (T·head_dim reals a thread): these rows are left unwritten */
    real *kt = j->scratch + (size_t)tid * j->scratch_per_thread, *vt = kt + (size_t)T * head_dim;
    size_t kv_off = (size_t)b * T * kv_dim + (size_t)(h / group) * head_dim;
    int t0 = blk * QUERY_BLOCK, t1 = t0 + QUERY_BLOCK < T ? t0 + QUERY_BLOCK : T;
    int s0 = doc_start(doc, b, T, t0), base = s0, n = t1 - base;
    transpose_span(kt, j->k + kv_off, base, n, kv_dim, head_dim);
    transpose_span(vt, j->v + kv_off, base, n, kv_dim, head_dim);
    for (int t = t0; t < t1; t++) {
        if (t > t0 && doc && doc[(size_t)b * T + t] != doc[(size_t)b * T + t - 1]) s0 = t;
        size_t row = (size_t)b * T + t, qo = row * q_dim + (size_t)h * head_dim;
        j->lse[row * n_heads + h] = small_row_forward(j->out + qo, j->q + qo, kt, vt, n, s0 - base, t - base, head_dim);
    }
}

static void small_attention_forward(real *out, real *lse, const real *q, const real *k, const real *v,
                                    const int *doc, int B, int T, int n_heads, int n_kv_heads, int head_dim) {
    int n_blocks = (T + QUERY_BLOCK - 1) / QUERY_BLOCK;
    size_t per_thread = 2 * (size_t)T * head_dim;
    R(attn_job) j = {.out = out, .lse = lse, .q = q, .k = k, .v = v, .doc = doc, .B = B, .T = T,
                     .n_heads = n_heads, .n_kv_heads = n_kv_heads, .head_dim = head_dim, .n_blocks = n_blocks,
                     .scratch = malloc((size_t)mt_kernels_threads() * per_thread * sizeof(real)),
                     .scratch_per_thread = per_thread};
    mt_parallel(B * n_heads * n_blocks, R(small_forward_task), &j);
    free(j.scratch);
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

/* one task per (b, KV head); each thread transposes into its own scratch */
static void R(small_backward_task)(void *p, int task, int tid) {
    const R(attn_job) *job = p;
    int T = job->T, n_heads = job->n_heads, n_kv_heads = job->n_kv_heads, head_dim = job->head_dim;
    int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    int b = task / n_kv_heads, kvh = task % n_kv_heads;
    size_t span = (size_t)T * head_dim;
    const int *doc = job->doc;
    real *dk = job->dk, *dv = job->dv;
    if (!job->scratch) return; /* out of memory: no gradient rather than a crash */
    real *kt = job->scratch + (size_t)tid * job->scratch_per_thread, *vt = kt + span, *dkt = vt + span,
         *dvt = dkt + span;
    size_t kv_off = (size_t)b * T * kv_dim + (size_t)kvh * head_dim;
    transpose_span(kt, job->k + kv_off, 0, T, kv_dim, head_dim);
    transpose_span(vt, job->v + kv_off, 0, T, kv_dim, head_dim);
    memset(dkt, 0, 2 * span * sizeof(real));
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        int s0 = 0;
        for (int t = 0; t < T; t++) {
            if (t > 0 && doc && doc[(size_t)b * T + t] != doc[(size_t)b * T + t - 1]) s0 = t;
            size_t row = (size_t)b * T + t, qo = row * q_dim + (size_t)h * head_dim;
            small_row_backward(job->dq + qo, dkt, dvt, job->dout + qo, job->out_in + qo, job->q + qo, kt, vt,
                               job->lse_in[row * n_heads + h], T, s0, t, head_dim);
        }
    }
    for (int j = 0; j < T; j++)
        for (int d = 0; d < head_dim; d++) {
            dk[kv_off + (size_t)j * kv_dim + d] += dkt[(size_t)d * T + j];
            dv[kv_off + (size_t)j * kv_dim + d] += dvt[(size_t)d * T + j];
        }
}

static void small_attention_backward(real *dq, real *dk, real *dv, const real *dout, const real *out,
                                     const real *lse, const real *q, const real *k, const real *v,
                                     const int *doc, int B, int T, int n_heads, int n_kv_heads, int head_dim) {
    size_t per_thread = 4 * (size_t)T * head_dim;
    R(attn_job) j = {.dq = dq, .dk = dk, .dv = dv, .dout = dout, .out_in = out, .lse_in = lse, .q = q, .k = k,
                     .v = v, .doc = doc, .B = B, .T = T, .n_heads = n_heads, .n_kv_heads = n_kv_heads,
                     .head_dim = head_dim, .scratch = malloc((size_t)mt_kernels_threads() * per_thread * sizeof(real)),
                     .scratch_per_thread = per_thread};
    mt_parallel(B * n_kv_heads, R(small_backward_task), &j);
    free(j.scratch);
}

/* Heads larger than SMALL_HEAD go in blocks of BLOCK query rows x BLOCK keys, each block a
 * few small GEMMs (flash attention's tiling): called inside a parallel region, OpenBLAS runs
 * each on the calling thread. Row by row (a dot product per key, then an update of the
 * output and, in the backward, of the dK and dV rows once per query) the same arithmetic
 * took 11.5% of a smollm-135m training step.
 *
 * Forward, per block: S = scale·Q·K^T, then an online softmax row by row (running max m and
 * sum l; the output rows, unnormalised, rescaled by exp(m_old - m_new) when m grows), then
 * O += P·V; at the end O /= l and lse = m + log l. */
#define BLOCK 64

typedef struct {
    const real *q, *k, *v, *dout, *out, *lse; /* q, dout, out at head h; k, v at its KV head */
    real *dq, *dk, *dv;
    int q_dim, kv_dim, head_dim, lse_stride;
    int row0; /* the position of q's (and out's, lse's) first row: 0 in training, p0 over a KV cache */
} head_view;

/* the length of the block that starts at from, in a span that ends at end */
static inline int block_len(int from, int end) { return end - from < BLOCK ? end - from : BLOCK; }

/* the first visible key of rows [t0, t0 + nq) of one batch row (doc: its T ids, or NULL) */
static void block_starts(int *start, const int *doc, int T, int t0, int nq) {
    for (int i = 0; i < nq; i++) {
        int t = t0 + i;
        start[i] = !doc ? 0 : (i > 0 && doc[t] == doc[t - 1] ? start[i - 1] : doc_start(doc, 0, T, t));
    }
}

/* the keys [lo, hi) of block k0..k0+nk that row t0 + i sees */
static inline void visible_keys(const int *start, int t0, int i, int k0, int nk, int *lo, int *hi) {
    int a = start[i] - k0, b = t0 + i - k0 + 1;
    *lo = a < 0 ? 0 : a;
    *hi = b > nk ? nk : b;
}

/* s[nq][BLOCK]: the scaled scores of rows t0.. against keys k0..; becomes exp(s - m) where
 * visible and 0 elsewhere, with m, l and the output rows o (stride ld) updated */
MT_SIMD_CLONES
static void block_online_softmax(real *restrict s, real *m, real *l, real *o, int ld, int head_dim,
                                 const int *start, int t0, int nq, int k0, int nk) {
    for (int i = 0; i < nq; i++) {
        real *restrict row = s + (size_t)i * BLOCK, *restrict oi = o + (size_t)i * ld, cm = -INFINITY;
        int lo, hi;
        visible_keys(start, t0, i, k0, nk, &lo, &hi);
        for (int j = lo; j < hi; j++) cm = row[j] > cm ? row[j] : cm;
        if (cm > m[i]) {
            real correction = m[i] == -INFINITY ? 0 : r_exp(m[i] - cm);
            l[i] *= correction;
#pragma omp simd
            for (int d = 0; d < head_dim; d++) oi[d] *= correction;
            m[i] = cm;
        }
        real mx = m[i], sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < nk; j++) {
            row[j] = j >= lo && j < hi ? r_expv(row[j] - mx) : 0;
            sum += row[j];
        }
        l[i] += sum;
    }
}

/* the rows at positions [t0, t0 + nq) of one head, nq = block_len(t0, T): out and lse at
 * the head, as in head_view (lse may be NULL) */
static void head_block_forward(const head_view *hv, real *out, real *lse, const int *doc, int T, int t0) {
    real s[BLOCK * BLOCK], m[BLOCK], l[BLOCK];
    int start[BLOCK], nq = block_len(t0, T);
    int qd = hv->q_dim, kd = hv->kv_dim, hd = hv->head_dim;
    real scale = 1 / r_sqrt((real)hd);
    real *O = out + (size_t)(t0 - hv->row0) * qd;
    const real *Q = hv->q + (size_t)(t0 - hv->row0) * qd;
    block_starts(start, doc, T, t0, nq);
    for (int i = 0; i < nq; i++) {
        m[i] = -INFINITY, l[i] = 0;
        memset(O + (size_t)i * qd, 0, (size_t)hd * sizeof(real));
    }
    for (int k0 = start[0]; k0 < t0 + nq; k0 += BLOCK) {
        int nk = block_len(k0, t0 + nq);
        r_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, scale, Q, qd,
               hv->k + (size_t)k0 * kd, kd, 0, s, BLOCK);
        block_online_softmax(s, m, l, O, qd, hd, start, t0, nq, k0, nk);
        r_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, 1, s, BLOCK, hv->v + (size_t)k0 * kd, kd,
               1, O, qd);
    }
    for (int i = 0; i < nq; i++) {
        real inv = 1 / l[i], *oi = O + (size_t)i * qd;
        for (int d = 0; d < hd; d++) oi[d] *= inv;
        if (lse) lse[(size_t)(t0 + i - hv->row0) * hv->lse_stride] = m[i] + (real)log(l[i]);
    }
}

/* Backward, per block: S = scale·Q·K^T recomputes the scores, P = exp(S - lse) (zero where
 * masked), dP = dO·V^T, dS = scale·P·(dP - D) with D_t = dO_t·O_t, then dQ += dS·K,
 * dK += dS^T·Q, dV += P^T·dO.
 *
 * Here: p[i][j] = exp(s[i][j] - lse_i) for the visible keys of row t0 + i, [start_i, t0 + i]. */
MT_SIMD_CLONES
static void block_probabilities(real *restrict p, const real *restrict lse, const int *start, int t0,
                                int nq, int k0, int nk) {
    for (int i = 0; i < nq; i++) {
        real *restrict row = p + (size_t)i * BLOCK, l = lse[i];
        int lo, hi;
        visible_keys(start, t0, i, k0, nk, &lo, &hi);
#pragma omp simd
        for (int j = 0; j < nk; j++) row[j] = j >= lo && j < hi ? r_expv(row[j] - l) : 0;
    }
}

/* dS = scale·P·(dP - D), in place of dP */
MT_SIMD_CLONES
static void block_score_grad(real *restrict dp, const real *restrict p, const real *restrict D, real scale,
                             int nq, int nk) {
    for (int i = 0; i < nq; i++) {
        real *restrict g = dp + (size_t)i * BLOCK;
        const real *restrict pi = p + (size_t)i * BLOCK;
        real Di = D[i];
#pragma omp simd
        for (int j = 0; j < nk; j++) g[j] = scale * pi[j] * (g[j] - Di);
    }
}

/* rows [t0, t0 + nq) of one head against keys [k0, k0 + nk); start[i] is row t0 + i's
 * first visible key, lse and D its log-sum-exp and dO·O */
static void block_backward(const head_view *hv, real *p, real *dp, const int *start, const real *lse,
                           const real *D, int t0, int nq, int k0, int nk) {
    int qd = hv->q_dim, kd = hv->kv_dim, hd = hv->head_dim;
    real scale = 1 / r_sqrt((real)hd);
    const real *Q = hv->q + (size_t)t0 * qd, *dO = hv->dout + (size_t)t0 * qd;
    const real *K = hv->k + (size_t)k0 * kd, *V = hv->v + (size_t)k0 * kd;
    r_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, scale, Q, qd, K, kd, 0, p, BLOCK);
    block_probabilities(p, lse, start, t0, nq, k0, nk);
    r_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, 1, dO, qd, V, kd, 0, dp, BLOCK);
    block_score_grad(dp, p, D, scale, nq, nk);
    r_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, 1, dp, BLOCK, K, kd, 1,
           hv->dq + (size_t)t0 * qd, qd);
    r_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nq, 1, dp, BLOCK, Q, qd, 1,
           hv->dk + (size_t)k0 * kd, kd);
    r_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nq, 1, p, BLOCK, dO, qd, 1,
           hv->dv + (size_t)k0 * kd, kd);
}

/* every query block of one head of one batch row; doc as in doc_start (row b's T ids) */
static void head_backward(const head_view *hv, const int *doc, int T) {
    real p[BLOCK * BLOCK], dp[BLOCK * BLOCK], lse[BLOCK], D[BLOCK];
    int start[BLOCK];
    for (int t0 = 0; t0 < T; t0 += BLOCK) {
        int nq = block_len(t0, T);
        block_starts(start, doc, T, t0, nq);
        for (int i = 0; i < nq; i++) {
            int t = t0 + i;
            lse[i] = hv->lse[(size_t)t * hv->lse_stride];
            D[i] = dot(hv->dout + (size_t)t * hv->q_dim, hv->out + (size_t)t * hv->q_dim, hv->head_dim);
        }
        /* keys before the block's first visible one, or after its last row, are all masked */
        for (int k0 = start[0]; k0 < t0 + nq; k0 += BLOCK) {
            int nk = block_len(k0, t0 + nq);
            block_backward(hv, p, dp, start, lse, D, t0, nq, k0, nk);
        }
    }
}

static void R(forward_task)(void *p, int task, int tid) {
    const R(attn_job) *j = p;
    (void)tid;
    int T = j->T, n_heads = j->n_heads, head_dim = j->head_dim, n_blocks = j->n_blocks;
    int group = n_heads / j->n_kv_heads, kv_dim = j->n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    int b = task / (n_heads * n_blocks), h = task / n_blocks % n_heads, blk = task % n_blocks;
    size_t kv_off = (size_t)b * T * kv_dim + (size_t)(h / group) * head_dim;
    size_t qo = (size_t)b * T * q_dim + (size_t)h * head_dim;
    head_view hv = {j->q + qo, j->k + kv_off, j->v + kv_off, NULL, NULL, NULL, NULL, NULL, NULL,
                    q_dim, kv_dim, head_dim, n_heads, 0};
    head_block_forward(&hv, j->out + qo, j->lse + (size_t)b * T * n_heads + h, j->doc ? j->doc + (size_t)b * T : NULL,
                       T, blk * BLOCK);
}

static void R(backward_task)(void *p, int task, int tid) {
    const R(attn_job) *j = p;
    (void)tid;
    int T = j->T, n_heads = j->n_heads, n_kv_heads = j->n_kv_heads, head_dim = j->head_dim;
    int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    int b = task / n_kv_heads, kvh = task % n_kv_heads;
    size_t kv_off = (size_t)b * T * kv_dim + (size_t)kvh * head_dim;
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        size_t qo = (size_t)b * T * q_dim + (size_t)h * head_dim;
        head_view hv = {j->q + qo, j->k + kv_off, j->v + kv_off, j->dout + qo, j->out_in + qo,
                        j->lse_in + (size_t)b * T * n_heads + h, j->dq + qo, j->dk + kv_off, j->dv + kv_off,
                        q_dim, kv_dim, head_dim, n_heads, 0};
        head_backward(&hv, j->doc ? j->doc + (size_t)b * T : NULL, T);
    }
}

void R(mt_attention_forward)(real *out, real *lse, const real *q, const real *k, const real *v,
                             const int *doc, int B, int T, int n_heads, int n_kv_heads, int head_dim) {
    if (head_dim <= SMALL_HEAD) {
        small_attention_forward(out, lse, q, k, v, doc, B, T, n_heads, n_kv_heads, head_dim);
        return;
    }
    int n_blocks = (T + BLOCK - 1) / BLOCK;
    R(attn_job) j = {.out = out, .lse = lse, .q = q, .k = k, .v = v, .doc = doc, .B = B, .T = T,
                     .n_heads = n_heads, .n_kv_heads = n_kv_heads, .head_dim = head_dim, .n_blocks = n_blocks};
    /* later blocks see more keys: a task per block evens the threads out */
    mt_parallel(B * n_heads * n_blocks, R(forward_task), &j);
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
    R(attn_job) j = {.dq = dq, .dk = dk, .dv = dv, .dout = dout, .out_in = out, .lse_in = lse, .q = q, .k = k,
                     .v = v, .doc = doc, .B = B, .T = T, .n_heads = n_heads, .n_kv_heads = n_kv_heads,
                     .head_dim = head_dim};
    mt_parallel(B * n_kv_heads, R(backward_task), &j);
}

#ifndef MT_REAL_DOUBLE
size_t mt_attention_cached_scratch(int threads, int n_ctx, int n_heads, int head_dim) {
    return (size_t)threads * ((size_t)n_ctx + (size_t)n_heads * (head_dim + 2));
}

typedef struct {
    float *out;
    const float *q, *k, *v;
    float *scratch;
    int T, p0, n_heads, n_kv_heads, head_dim;
} cached_job;

static void small_cached_task(void *p, size_t r0, size_t r1, int tid) {
    const cached_job *job = p;
    int n_heads = job->n_heads, head_dim = job->head_dim, p0 = job->p0;
    int group = n_heads / job->n_kv_heads, kv_dim = job->n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    float scale = 1.0f / sqrtf((float)head_dim);
    const float *q = job->q, *k = job->k, *v = job->v;
    float *att = job->scratch + (size_t)tid * (size_t)(p0 + job->T);
    for (size_t r = r0; r < r1; r++) {
        int t = (int)(r / (size_t)n_heads), h = (int)(r % (size_t)n_heads);
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
        float *oh = job->out + (size_t)t * q_dim + (size_t)h * head_dim;
        memset(oh, 0, (size_t)head_dim * sizeof(float));
        for (int j = 0; j < n_keys; j++) {
            const float *vj = v + (size_t)j * kv_dim + (size_t)kvh * head_dim;
            float a = att[j];
#pragma omp simd
            for (int d = 0; d < head_dim; d++) oh[d] += a * vj[d];
        }
    }
}

/* small heads (head_dim <= SMALL_HEAD): a dot product per key and row, the rows and heads
 * split between threads */
static void small_cached_forward(float *out, const float *q, const float *k, const float *v, int T, int p0,
                                 int n_heads, int n_kv_heads, int head_dim, float *scratch) {
    /* decoding a small model is a few thousand multiply-adds: not worth waking threads */
    size_t work = (size_t)T * n_heads * (size_t)(p0 + T) * head_dim;
    cached_job j = {out, q, k, v, scratch, T, p0, n_heads, n_kv_heads, head_dim};
    mt_parallel_range((size_t)T * n_heads, work > MT_PARALLEL_MIN, small_cached_task, &j);
}

static void prompt_block_task(void *p, int task, int tid) {
    const cached_job *j = p;
    (void)tid;
    int n_heads = j->n_heads, head_dim = j->head_dim, n_blocks = (j->T + BLOCK - 1) / BLOCK;
    int group = n_heads / j->n_kv_heads, kv_dim = j->n_kv_heads * head_dim, q_dim = n_heads * head_dim;
    int h = task / n_blocks, blk = task % n_blocks;
    size_t kv_off = (size_t)(h / group) * head_dim;
    head_view hv = {j->q + (size_t)h * head_dim, j->k + kv_off, j->v + kv_off, NULL, NULL, NULL, NULL, NULL, NULL,
                    q_dim, kv_dim, head_dim, n_heads, j->p0};
    head_block_forward(&hv, j->out + (size_t)h * head_dim, NULL, NULL, j->p0 + j->T, j->p0 + blk * BLOCK);
}

/* Heads wider than SMALL_HEAD: a decoded token (T = 1) by mt_attention_decode (decode.c); a prompt
 * chunk in the training forward's blocks (head_block_forward with its rows at positions p0..,
 * no document mask), so a long prompt costs small GEMMs instead of a dot product per key. */
void mt_attention_cached_forward(float *out, const float *q, const float *k, const float *v,
                                 int T, int p0, int n_heads, int n_kv_heads, int head_dim,
                                 float *scratch) {
    if (head_dim <= SMALL_HEAD) {
        small_cached_forward(out, q, k, v, T, p0, n_heads, n_kv_heads, head_dim, scratch);
        return;
    }
    size_t work = (size_t)T * n_heads * (size_t)(p0 + T) * head_dim;
    if (T == 1) {
        mt_attention_decode(out, q, k, v, p0 + 1, n_heads, n_kv_heads, head_dim, scratch, work > MT_PARALLEL_MIN);
        return;
    }
    cached_job j = {out, q, k, v, NULL, T, p0, n_heads, n_kv_heads, head_dim};
    mt_parallel_if(work > MT_PARALLEL_MIN, n_heads * ((T + BLOCK - 1) / BLOCK), prompt_block_task, &j);
}
#endif
