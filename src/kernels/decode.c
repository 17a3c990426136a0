/* Decoding's kernels: the matrix-vector products of the linear layers and attention of one
 * new token over the KV cache.
 *
 * Matrix-vector products, out[N] = W[N, K]·x: every weight is read once per
 * token, so the kernel's only job is to keep the memory system streaming. Each thread takes
 * a contiguous block of rows; a row is dotted in four 8-float vector accumulators kept in
 * registers (GCC/Clang vector extensions, so each clone of MT_SIMD_CLONES gets its own
 * instruction set), then reduced once. This file is compiled with -ffp-contract=fast (the
 * Makefile), so the v3/v4 clones fuse each multiply-add into one FMA.
 *
 * The earlier kernel summed into a 32-float array; GCC zeroed it with `rep stosq` and reduced
 * it through the stack on every row, which for smollm-135m's 576-float rows cost 15-20% of
 * the streaming rate (bench/RESULTS.md, section on decode). */
#include "kernels/kernels.h"
#include <math.h>
#include "kernels/pool.h"
#include <string.h>
#include "kernels/simd.h"
#include "kernels/real.h"
#include "kernels/online_softmax.h"

#if defined(__GNUC__)
#define MT_VECTORS 1
typedef float v8f __attribute__((vector_size(32)));
#define HSUM8(a) ((((a)[0] + (a)[4]) + ((a)[1] + (a)[5])) + (((a)[2] + (a)[6]) + ((a)[3] + (a)[7])))

static inline float row_dot(const float *restrict r, const float *restrict x, int K) {
    v8f a = {0}, b = {0}, c = {0}, d = {0};
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        v8f r0, r1, r2, r3, x0, x1, x2, x3;
        memcpy(&r0, r + k, 32), memcpy(&r1, r + k + 8, 32);
        memcpy(&r2, r + k + 16, 32), memcpy(&r3, r + k + 24, 32);
        memcpy(&x0, x + k, 32), memcpy(&x1, x + k + 8, 32);
        memcpy(&x2, x + k + 16, 32), memcpy(&x3, x + k + 24, 32);
        a += r0 * x0, b += r1 * x1, c += r2 * x2, d += r3 * x3;
    }
    for (; k + 8 <= K; k += 8) {
        v8f r0, x0;
        memcpy(&r0, r + k, 32), memcpy(&x0, x + k, 32);
        a += r0 * x0;
    }
    float sum = 0;
    for (; k < K; k++) sum += r[k] * x[k];
    a = (a + b) + (c + d);
    return sum + HSUM8(a);
}
#else
static inline float row_dot(const float *restrict r, const float *restrict x, int K) {
    float sum = 0;
    for (int k = 0; k < K; k++) sum += r[k] * x[k];
    return sum;
}
#endif

/* out[n] = W[n]·x for the rows n0 <= n < n1 */
MT_SIMD_CLONES
static void rows_dot(float *out, const float *w, const float *x, int K, int n0, int n1) {
    for (int n = n0; n < n1; n++) out[n] = row_dot(w + (size_t)n * K, x, K);
}

typedef struct {
    float *out;
    float *const *outs;
    const float *x, *w;
    const float *const *xs;
    int K, B;
} matvec_job;

static void matvec_task(void *p, size_t n0, size_t n1, int tid) {
    const matvec_job *j = p;
    (void)tid;
    rows_dot(j->out, j->w, j->x, j->K, (int)n0, (int)n1);
}

void mt_matvec(float *out, const float *x, const float *w, int K, int N) {
    matvec_job j = {.out = out, .x = x, .w = w, .K = K};
    mt_parallel_range((size_t)N, 1, matvec_task, &j);
}

/* out[b][n] = W[n]·x[b] for the rows n0 <= n < n1 and every b: the row stays in L1 while
 * the B inputs read it (row_dot as in rows_dot, so each output is mt_matvec's) */
MT_SIMD_CLONES
static void rows_dot_multi(float *const *out, const float *w, const float *const *x, int K, int n0, int n1, int B) {
    for (int n = n0; n < n1; n++) {
        const float *r = w + (size_t)n * K;
        for (int b = 0; b < B; b++) out[b][n] = row_dot(r, x[b], K);
    }
}

static void matvec_rows_task(void *p, size_t n0, size_t n1, int tid) {
    const matvec_job *j = p;
    (void)tid;
    rows_dot_multi(j->outs, j->w, j->xs, j->K, (int)n0, (int)n1, j->B);
}

void mt_matvec_rows(float *const *out, const float *const *x, const float *w, int K, int N, int B) {
    matvec_job j = {.outs = out, .xs = x, .w = w, .K = K, .B = B};
    mt_parallel_range((size_t)N, 1, matvec_rows_task, &j);
}

/* Attention of one new token (flash decoding). The n cached keys are split between the
 * threads; each walks its share in blocks of DECODE_KEYS keys and, per block, every query
 * head in turn, so a block's K and V rows come from memory once and stay in L1 while the
 * heads of their KV group read them. Per head a thread keeps a running max m, sum l and
 * unnormalised output; the threads' partials are merged at the end. The per-key work is in
 * registers: scores four keys at a time (four independent FMA chains), the output update
 * 64 dims at a time in eight accumulators (each key's V row read once per 64 dims), then 8
 * at a time, then one. */
#define DECODE_KEYS 32

/* s[j] = scale·q·K[j] for j < n (K rows kv_dim apart) */
static inline void decode_scores(float *restrict s, const float *restrict q, const float *restrict K, int n,
                                 int kv_dim, int hd, float scale) {
    int j = 0;
#ifdef MT_VECTORS
    int hd8 = hd & ~7;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = K + (size_t)j * kv_dim, *k1 = k0 + kv_dim, *k2 = k1 + kv_dim, *k3 = k2 + kv_dim;
        v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int d = 0; d < hd8; d += 8) {
            v8f x, r0, r1, r2, r3;
            memcpy(&x, q + d, 32);
            memcpy(&r0, k0 + d, 32), memcpy(&r1, k1 + d, 32), memcpy(&r2, k2 + d, 32), memcpy(&r3, k3 + d, 32);
            a0 += x * r0, a1 += x * r1, a2 += x * r2, a3 += x * r3;
        }
        float t0 = HSUM8(a0), t1 = HSUM8(a1), t2 = HSUM8(a2), t3 = HSUM8(a3);
        for (int d = hd8; d < hd; d++) t0 += q[d] * k0[d], t1 += q[d] * k1[d], t2 += q[d] * k2[d], t3 += q[d] * k3[d];
        s[j] = scale * t0, s[j + 1] = scale * t1, s[j + 2] = scale * t2, s[j + 3] = scale * t3;
    }
#endif
    for (; j < n; j++) {
        const float *kj = K + (size_t)j * kv_dim;
        float t = 0;
        for (int d = 0; d < hd; d++) t += q[d] * kj[d];
        s[j] = scale * t;
    }
}

/* o[d] += Σ_j p[j]·V[j][d] for j < n */
static inline void decode_values(float *restrict o, const float *restrict p, const float *restrict V, int n,
                                 int kv_dim, int hd) {
    int d = 0;
#ifdef MT_VECTORS
    for (; d + 64 <= hd; d += 64) {
        v8f o0, o1, o2, o3, o4, o5, o6, o7;
        memcpy(&o0, o + d, 32), memcpy(&o1, o + d + 8, 32), memcpy(&o2, o + d + 16, 32), memcpy(&o3, o + d + 24, 32);
        memcpy(&o4, o + d + 32, 32), memcpy(&o5, o + d + 40, 32), memcpy(&o6, o + d + 48, 32), memcpy(&o7, o + d + 56, 32);
        for (int j = 0; j < n; j++) {
            const float *vj = V + (size_t)j * kv_dim + d;
            v8f w = p[j] - (v8f){0}, r0, r1, r2, r3, r4, r5, r6, r7; /* w: p[j] in every lane */
            memcpy(&r0, vj, 32), memcpy(&r1, vj + 8, 32), memcpy(&r2, vj + 16, 32), memcpy(&r3, vj + 24, 32);
            memcpy(&r4, vj + 32, 32), memcpy(&r5, vj + 40, 32), memcpy(&r6, vj + 48, 32), memcpy(&r7, vj + 56, 32);
            o0 += w * r0, o1 += w * r1, o2 += w * r2, o3 += w * r3;
            o4 += w * r4, o5 += w * r5, o6 += w * r6, o7 += w * r7;
        }
        memcpy(o + d, &o0, 32), memcpy(o + d + 8, &o1, 32), memcpy(o + d + 16, &o2, 32), memcpy(o + d + 24, &o3, 32);
        memcpy(o + d + 32, &o4, 32), memcpy(o + d + 40, &o5, 32), memcpy(o + d + 48, &o6, 32), memcpy(o + d + 56, &o7, 32);
    }
    for (; d + 8 <= hd; d += 8) { /* what is left of head_dim (48 = 6 x 8, 80 = 64 + 2 x 8, ...) */
        v8f acc;
        memcpy(&acc, o + d, 32);
        for (int j = 0; j < n; j++) {
            v8f r;
            memcpy(&r, V + (size_t)j * kv_dim + d, 32);
            acc += (p[j] - (v8f){0}) * r;
        }
        memcpy(o + d, &acc, 32);
    }
#endif
    for (; d < hd; d++) {
        float acc = o[d];
        for (int j = 0; j < n; j++) acc += p[j] * V[(size_t)j * kv_dim + d];
        o[d] = acc;
    }
}

/* one head over a block of n keys: updates part = [o[hd], m, l] (online softmax) */
MT_SIMD_CLONES
static void decode_head_block(float *part, const float *q, const float *K, const float *V, int n, int kv_dim,
                              int hd, float scale) {
    float p[DECODE_KEYS], cm = -INFINITY, *o = part, *m = part + hd, *l = m + 1;
    decode_scores(p, q, K, n, kv_dim, hd, scale);
    for (int j = 0; j < n; j++) cm = p[j] > cm ? p[j] : cm;
    online_softmax_chunk(p, n, cm, m, l, o, hd);
    decode_values(o, p, V, n, kv_dim, hd);
}

/* out[h] = the threads' partials for head h merged (parts: nth x [n_heads][hd + 2]) */
static void decode_merge(float *out, const float *parts, int nth, int n_heads, int hd, int h) {
    size_t stride = (size_t)n_heads * (hd + 2);
    const float *first = parts + (size_t)h * (hd + 2);
    float M = -INFINITY, L = 0;
    for (int t = 0; t < nth; t++) M = fmaxf(M, first[t * stride + hd]);
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int t = 0; t < nth; t++) {
        const float *part = first + t * stride;
        if (part[hd + 1] == 0) continue; /* a thread that had no keys */
        float w = expf(part[hd] - M);
        L += w * part[hd + 1];
        for (int d = 0; d < hd; d++) out[d] += w * part[d];
    }
    for (int d = 0; d < hd; d++) out[d] /= L;
}

typedef struct {
    float *out, *scratch;
    const float *q, *k, *v;
    int n_keys, n_heads, n_kv_heads, hd, parts;
} decode_job;

/* part id of the keys (the keys split in j->parts, by the thread count) into its partials */
static void decode_part_task(void *p, int id, int tid) {
    const decode_job *job = p;
    (void)tid;
    int n_heads = job->n_heads, hd = job->hd, nth = job->parts, n_keys = job->n_keys;
    int group = n_heads / job->n_kv_heads, kv_dim = job->n_kv_heads * hd;
    float scale = 1 / sqrtf((float)hd);
    const float *q = job->q, *k = job->k, *v = job->v;
    {
        int j0 = (int)((long)n_keys * id / nth), j1 = (int)((long)n_keys * (id + 1) / nth);
        float *parts = job->scratch + (size_t)id * n_heads * (hd + 2);
        for (int h = 0; h < n_heads; h++) {
            float *part = parts + (size_t)h * (hd + 2);
            memset(part, 0, (size_t)hd * sizeof(float));
            part[hd] = -INFINITY, part[hd + 1] = 0;
        }
        for (int jb = j0; jb < j1; jb += DECODE_KEYS) {
            int n = j1 - jb < DECODE_KEYS ? j1 - jb : DECODE_KEYS;
            for (int h = 0; h < n_heads; h++) {
                size_t off = (size_t)jb * kv_dim + (size_t)(h / group) * hd;
                decode_head_block(parts + (size_t)h * (hd + 2), q + (size_t)h * hd, k + off, v + off, n, kv_dim, hd,
                                  scale);
            }
        }
    }
}

static void decode_merge_task(void *p, int h, int tid) {
    const decode_job *j = p;
    (void)tid;
    decode_merge(j->out + (size_t)h * j->hd, j->scratch, j->parts, j->n_heads, j->hd, h);
}

void mt_attention_decode(float *out, const float *q, const float *k, const float *v, int n_keys, int n_heads,
                         int n_kv_heads, int hd, float *scratch, int threaded) {
    /* the keys in as many parts as threads (the scratch holds that many partials) */
    decode_job j = {out, scratch, q, k, v, n_keys, n_heads, n_kv_heads, hd, threaded ? mt_kernels_threads() : 1};
    mt_parallel_if(threaded, j.parts, decode_part_task, &j);
    mt_parallel_if(threaded, n_heads, decode_merge_task, &j);
}
