/* A mixture of memory experts (PEER-style, He 2024) with product-key routing (Lample et al.
 * 2019), forward next to backward. For one token x [C] and each head h:
 *
 *   q = Wq_h·x + Wx_h·ctx [dk], split into q1, q2 [dk/2]
 *   s1[i] = K1_h[i]·q1 (n1 sub-keys), s2[j] = K2_h[j]·q2 (n2 sub-keys)
 *   top-K of s1 and of s2, then top-K of the K² sums s1[i] + s2[j]: experts e = i·n2 + j
 *   gate = softmax of the K chosen sums
 *   out += Σ_k gate_k · silu(a_e·x) · b_e
 *
 * so a token costs O((n1 + n2)·dk + K³ + K·C) per head: it grows with √N, never with N. The
 * choice of experts is piecewise constant, so the gradient flows through the chosen scores
 * only: into the gates, the sub-keys that were picked, the query and the input. Expert rows
 * get per-slot gradients (da, db for the expert one slot used), summed per expert by the
 * sparse optimizer, so no step ever touches all N rows. Compiled in float and in double.
 *
 * ctx is a code of the document so far (mt_mome_context below): decayed sums of fixed
 * pseudo-random token codes. In a small model the hidden state at a position is dominated by
 * the current token, so without it two facts whose answers share a token followed by different
 * ones route that token to the same experts and fight over them; with it, each fact's answer
 * positions get their own experts. It has no trainable part, so it gets no gradient. */
#include "kernels/kernels.h"
#include "kernels/pool.h"
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/real.h"

#ifndef MT_REAL_DOUBLE
size_t mt_mome_context_offset(const mt_mome_shape *sh) {
    return (size_t)sh->H * sh->dk * sh->C + (size_t)sh->H * (sh->n1 + sh->n2) * (sh->dk / 2);
}
size_t mt_mome_scratch_size(const mt_mome_shape *sh, int T) {
    size_t scores = (size_t)sh->H * (sh->n1 + sh->n2), dq = (size_t)sh->H * sh->dk;
    return (size_t)T * ((scores > dq ? scores : dq) + (size_t)sh->H * sh->K); /* backward: dq, then ds */
}

size_t mt_mome_router_size(const mt_mome_shape *sh) {
    return mt_mome_context_offset(sh) + (size_t)sh->H * sh->dk * sh->Cx;
}
#endif

#define MOME_MAX_K 64

/* bits 64w .. 64w+63 of a token's code: splitmix64 of the token id and the word index w */
static uint64_t code_word(int token, int w) {
    uint64_t z = ((uint64_t)(uint32_t)token << 20 | (uint64_t)w) + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static real R(silu)(real z) { return z / (1 + r_exp(-z)); }
static real R(silu_grad)(real z) {
    real s = 1 / (1 + r_exp(-z));
    return s * (1 + z * (1 - s));
}

/* indices of the k largest of v[n] (ties: the lower index first), best first */
static void R(top_k)(const real *v, int n, int k, int *out) {
    int found = 0;
    for (int i = 0; i < n; i++) {
        if (found == k && !(v[i] > v[out[k - 1]])) continue;
        int at = found < k ? found++ : k - 1;
        while (at > 0 && v[i] > v[out[at - 1]]) {
            out[at] = out[at - 1];
            at--;
        }
        out[at] = i;
    }
}

static real R(dot)(const real *a, const real *b, int n) {
    real s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Routes one token for head h from its sub-key scores s1 [n1], s2 [n2]: the K experts (idx)
 * and their softmax gates. sums: scratch of K² reals. */
static void R(route)(const real *s1, const real *s2, const mt_mome_shape *sh, int *idx, real *gate, real *sums) {
    int n1 = sh->n1, n2 = sh->n2, K = sh->K;
    int t1[MOME_MAX_K], t2[MOME_MAX_K], best[MOME_MAX_K];
    R(top_k)(s1, n1, K, t1);
    R(top_k)(s2, n2, K, t2);
    for (int a = 0; a < K; a++)
        for (int b = 0; b < K; b++) sums[a * K + b] = s1[t1[a]] + s2[t2[b]];
    R(top_k)(sums, K * K, K, best);
    real mx = sums[best[0]], total = 0;
    for (int k = 0; k < K; k++) {
        idx[k] = t1[best[k] / K] * n2 + t2[best[k] % K];
        gate[k] = r_exp(sums[best[k]] - mx);
        total += gate[k];
    }
    for (int k = 0; k < K; k++) gate[k] /= total;
}

/* Sub-key scores of every token and head as GEMMs: scores[t][h] = [K1_h·q1 (n1) | K2_h·q2 (n2)] */
static void R(sub_key_scores)(real *scores, const real *q, const real *k1, const real *k2, const mt_mome_shape *sh,
                              int T) {
    int H = sh->H, dk = sh->dk, half = dk / 2, n1 = sh->n1, n2 = sh->n2, ld = H * (n1 + n2);
    for (int h = 0; h < H; h++) {
        real *s = scores + (size_t)h * (n1 + n2);
        r_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n1, half, 1, q + (size_t)h * dk, H * dk,
               k1 + (size_t)h * n1 * half, half, 0, s, ld);
        r_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n2, half, 1, q + (size_t)h * dk + half, H * dk,
               k2 + (size_t)h * n2 * half, half, 0, s + n1, ld);
    }
}

void R(mt_mome_context)(real *ctx, real *acc, const int *ids, const int *pos, int T,
                        const mt_mome_context_spec *cs, const real *prev) {
    int D = cs->dim, W = mt_mome_context_width(cs);
    for (int t = 0; t < T; t++) {
        const real *before = pos[t] == 0 ? NULL : t > 0 ? acc + (size_t)(t - 1) * W : prev;
        real *a = acc + (size_t)t * W, *c = ctx + (size_t)t * W;
        for (int b = 0; b < cs->n_decays; b++) {
            real d = cs->decays[b], ss = 0;
            uint64_t bits = 0;
            for (int j = b * D; j < (b + 1) * D; j++) {
                if (j == b * D || (j & 63) == 0) bits = code_word(ids[t], j >> 6);
                a[j] = (before ? d * before[j] : 0) + ((bits >> (j & 63) & 1) ? 1 : -1);
                ss += a[j] * a[j];
            }
            real inv = 1 / r_sqrt(ss / D);
            for (int j = b * D; j < (b + 1) * D; j++) c[j] = a[j] * inv;
        }
    }
}

/* the arguments of a MoME call, for its pool tasks */
typedef struct {
    real *out, *gate, *z, *dx, *slot_grads, *dq, *ds, *dk1, *dk2;
    int *idx;
    const int *cidx;
    const real *x, *bank, *scores, *dout, *cgate, *cz, *k1, *k2, *q;
    const mt_mome_shape *sh;
    int T;
} R(mome_job);

static void R(mome_forward_task)(void *p, size_t t0, size_t t1, int tid);
static void R(mome_backward_task)(void *p, size_t t0, size_t t1, int tid);
static void R(mome_sub_key_task)(void *p, size_t h0, size_t h1, int tid);

void R(mt_mome_forward)(real *out, real *q, int *idx, real *gate, real *z, const real *x, const real *ctx,
                        const real *router, const real *bank, long n_experts,
                        const mt_mome_shape *sh, int T, real *scratch) {
    int C = sh->C, H = sh->H, dk = sh->dk, half = dk / 2;
    const real *wq = router, *k1 = wq + (size_t)H * dk * C, *k2 = k1 + (size_t)H * sh->n1 * half;
    (void)n_experts;
    /* q[T, H*dk] = x·Wq^T + ctx·Wx^T */
    r_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, H * dk, C, 1, x, C, wq, C, 0, q, H * dk);
    if (sh->Cx)
        r_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, H * dk, sh->Cx, 1, ctx, sh->Cx,
               router + mt_mome_context_offset(sh), sh->Cx, 1, q, H * dk);
    R(sub_key_scores)(scratch, q, k1, k2, sh, T);
    R(mome_job) j = {.out = out, .idx = idx, .gate = gate, .z = z, .x = x, .bank = bank, .sh = sh, .scores = scratch};
    mt_parallel_range((size_t)T, T > 1, R(mome_forward_task), &j);
}

/* tokens [t0, t1) of mt_mome_forward: routing and the chosen experts */
static void R(mome_forward_task)(void *p, size_t t0, size_t t1, int tid) {
    const R(mome_job) *j = p;
    (void)tid;
    const mt_mome_shape *sh = j->sh;
    int C = sh->C, H = sh->H, K = sh->K;
    real *out = j->out, *gate = j->gate, *z = j->z;
    int *idx = j->idx;
    const real *x = j->x, *bank = j->bank, *scores = j->scores;
    size_t per_token = (size_t)H * (sh->n1 + sh->n2);
    for (size_t t = t0; t < t1; t++) {
        const real *xt = x + (size_t)t * C;
        real *ot = out + (size_t)t * C, sums[MOME_MAX_K * MOME_MAX_K];
        for (int h = 0; h < H; h++) {
            size_t slot = ((size_t)t * H + h) * K;
            const real *s1 = scores + t * per_token + (size_t)h * (sh->n1 + sh->n2);
            R(route)(s1, s1 + sh->n1, sh, idx + slot, gate + slot, sums);
            for (int k = 0; k < K; k++) {
                size_t e = (size_t)idx[slot + k];
                z[slot + k] = R(dot)(bank + e * 2 * C, xt, C);
                real w = gate[slot + k] * R(silu)(z[slot + k]);
                const real *be = bank + e * 2 * C + C;
                for (int c = 0; c < C; c++) ot[c] += w * be[c];
            }
        }
    }
}

/* The backward of one (token, head): expert slots, gates, scores and query. dq is the query
 * gradient of this head (written), ds [K] the chosen scores' gradients (written; the sub-keys'
 * gradients follow from them, head by head, in mt_mome_backward). */
static void R(head_backward)(real *dx, real *ds, real *dq, real *slot_grads, const real *dy,
                             const real *x, const int *idx, const real *gate, const real *z,
                             const real *k1, const real *k2, const real *bank, const mt_mome_shape *sh) {
    int C = sh->C, K = sh->K, half = sh->dk / 2, n2 = sh->n2;
    real dgate[MOME_MAX_K], wsum = 0;
    for (int k = 0; k < K; k++) {
        size_t e = (size_t)idx[k];
        const real *ae = bank + e * 2 * C, *be = ae + C;
        real *da = slot_grads + (size_t)k * 2 * C, *db = da + C;
        real by = R(dot)(be, dy, C), act = R(silu)(z[k]);
        real dz = gate[k] * by * R(silu_grad)(z[k]), w = gate[k] * act;
        for (int c = 0; c < C; c++) {
            db[c] = w * dy[c];
            da[c] = dz * x[c];
        }
        if (dx)
            for (int c = 0; c < C; c++) dx[c] += dz * ae[c];
        dgate[k] = act * by;
        wsum += gate[k] * dgate[k];
    }
    if (!ds) return;
    memset(dq, 0, (size_t)sh->dk * sizeof(real));
    for (int k = 0; k < K; k++) {
        /* softmax backward, then score = s1[i] + s2[j] with s1[i] = K1[i]·q1, s2[j] = K2[j]·q2 */
        ds[k] = gate[k] * (dgate[k] - wsum);
        int i = idx[k] / n2, j = idx[k] % n2;
        for (int c = 0; c < half; c++) {
            dq[c] += ds[k] * k1[(size_t)i * half + c];
            dq[half + c] += ds[k] * k2[(size_t)j * half + c];
        }
    }
}

void R(mt_mome_backward)(real *dx, real *drouter, real *slot_grads, const real *dout, const real *x,
                         const real *ctx, const real *q, const int *idx, const real *gate, const real *z, const real *router,
                         const real *bank, long n_experts, const mt_mome_shape *sh, int T, real *scratch) {
    int C = sh->C, H = sh->H, dk = sh->dk, half = dk / 2;
    const real *wq = router, *k1 = wq + (size_t)H * dk * C, *k2 = k1 + (size_t)H * sh->n1 * half;
    (void)n_experts;
    real *dwq = drouter, *dk1 = drouter ? drouter + (size_t)H * dk * C : NULL;
    real *dk2 = drouter ? dk1 + (size_t)H * sh->n1 * half : NULL;
    real *dq = drouter ? scratch : NULL; /* head_backward writes each head's part whole */
    real *ds = drouter ? scratch + (size_t)T * H * dk : NULL; /* [T, H, K] */
    /* tokens in parallel: each writes its own slots, dx row, dq and ds */
    R(mome_job) j = {.dx = dx, .slot_grads = slot_grads, .dq = dq, .ds = ds, .dk1 = dk1, .dk2 = dk2, .cidx = idx,
                     .x = x, .bank = bank, .dout = dout, .cgate = gate, .cz = z, .k1 = k1, .k2 = k2, .q = q,
                     .sh = sh, .T = T};
    mt_parallel_range((size_t)T, T > 1, R(mome_backward_task), &j);
    if (!dq) return;
    /* the sub-keys' gradients, heads in parallel (each owns its sub-key rows); within a head,
     * tokens in order, so every row sums in the same order as a serial pass */
    mt_parallel_range((size_t)H, H > 1 && T > 1, R(mome_sub_key_task), &j);
    /* q = x·Wq^T: dWq[H*dk, C] += dq^T·x;  dx += dq·Wq */
    r_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, H * dk, C, T, 1, dq, H * dk, x, C, 1, dwq, C);
    if (sh->Cx) /* dWx += dq^T·ctx (ctx has no gradient) */
        r_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, H * dk, sh->Cx, T, 1, dq, H * dk, ctx, sh->Cx, 1,
               drouter + mt_mome_context_offset(sh), sh->Cx);
    if (dx) r_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, C, H * dk, 1, dq, H * dk, wq, C, 1, dx, C);
}

/* tokens [t0, t1) of mt_mome_backward */
static void R(mome_backward_task)(void *p, size_t t0, size_t t1, int tid) {
    const R(mome_job) *j = p;
    (void)tid;
    const mt_mome_shape *sh = j->sh;
    int C = sh->C, H = sh->H, K = sh->K, dk = sh->dk, half = dk / 2;
    real *dx = j->dx, *ds = j->ds, *dq = j->dq, *slot_grads = j->slot_grads;
    const real *dout = j->dout, *x = j->x, *gate = j->cgate, *z = j->cz, *k1 = j->k1, *k2 = j->k2, *bank = j->bank;
    const int *idx = j->cidx;
    for (size_t t = t0; t < t1; t++)
        for (int h = 0; h < H; h++) {
            size_t slot = ((size_t)t * H + h) * K;
            size_t h1 = (size_t)h * sh->n1 * half, h2 = (size_t)h * sh->n2 * half;
            R(head_backward)(dx ? dx + (size_t)t * C : NULL, ds ? ds + slot : NULL,
                             dq ? dq + (size_t)t * H * dk + (size_t)h * dk : NULL, slot_grads + slot * 2 * C,
                             dout + (size_t)t * C, x + (size_t)t * C, idx + slot, gate + slot, z + slot, k1 + h1,
                             k2 + h2, bank, sh);
        }
}

/* heads [h0, h1) of the sub-keys' gradients of mt_mome_backward */
static void R(mome_sub_key_task)(void *p, size_t h0, size_t h1, int tid) {
    const R(mome_job) *j = p;
    (void)tid;
    const mt_mome_shape *sh = j->sh;
    int H = sh->H, K = sh->K, dk = sh->dk, half = dk / 2, T = j->T;
    real *dk1 = j->dk1, *dk2 = j->dk2;
    const real *ds = j->ds, *q = j->q;
    const int *idx = j->cidx;
    for (size_t h = h0; h < h1; h++) {
        real *g1 = dk1 + (size_t)h * sh->n1 * half, *g2 = dk2 + (size_t)h * sh->n2 * half;
        for (int t = 0; t < T; t++) {
            size_t slot = ((size_t)t * H + h) * K;
            const real *qt = q + (size_t)t * H * dk + (size_t)h * dk;
            for (int k = 0; k < K; k++) {
                int i = idx[slot + k] / sh->n2, j = idx[slot + k] % sh->n2;
                real d = ds[slot + k];
                for (int c = 0; c < half; c++) {
                    g1[(size_t)i * half + c] += d * qt[c];
                    g2[(size_t)j * half + c] += d * qt[half + c];
                }
            }
        }
    }
}
