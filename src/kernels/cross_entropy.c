/* Masked cross-entropy over logits [n, V]: rows whose target is negative (-1, -100: prompt
 * tokens, padding, document ends) are not scored. The forward returns the SUM of the NLL of
 * the scored rows; the caller's scale (1 / total target tokens across gradient-accumulation
 * micro-batches) enters only the backward, so micro-batches of different target counts
 * average exactly. The backward is scale·(softmax - onehot), written in place over the logits
 * when asked, so no second [n, V] buffer is needed. Compiled in float here and in double by
 * kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include "kernels/pool.h"
#include <math.h>
#include <string.h>
#include "kernels/real.h"

/* log(Σ exp(x - max)) + max. The sum runs in `real` over vector lanes (each lane adds about
 * V/16 terms in [0, 1], one of them 1): relative error ~1e-6 in float, far below what a
 * loss needs. */
MT_SIMD_CLONES
static double row_logsumexp(const real *x, int V) {
    real mx = x[0];
#pragma omp simd reduction(max : mx)
    for (int i = 1; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    real sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < V; i++) sum += r_expv(x[i] - mx);
    return log((double)sum) + mx;
}

/* d = scale · softmax(row) (d may be row) */
MT_SIMD_CLONES
static void row_softmax_scaled(real *d, const real *row, real lse, real scale, int V) {
#pragma omp simd
    for (int v = 0; v < V; v++) d[v] = scale * r_expv(row[v] - lse);
}

static int is_soft(const mt_soft_targets *soft, int i) { return soft && soft->ids[(size_t)i * soft->k] >= 0; }

/* Σ_j p_j·(z - row[id_j]) over row i's soft list, and its total mass */
static double soft_nll(const mt_soft_targets *soft, int i, const real *row, double z, double *mass) {
    const int *ids = soft->ids + (size_t)i * soft->k;
    const float *p = soft->p + (size_t)i * soft->k;
    double nll = 0, m = 0;
    for (int j = 0; j < soft->k && ids[j] >= 0; j++) nll += p[j] * (z - row[ids[j]]), m += p[j];
    if (mass) *mass = m;
    return nll;
}

/* the rows in pieces (fixed by n and the thread count), their sums added in piece order */
#define CE_PIECES_MAX 64
typedef struct {
    real *lse, *dlogits;
    const real *logits, *lse_in;
    const int *targets;
    const mt_soft_targets *soft;
    double scale;
    int n, V, pieces;
    double nll[CE_PIECES_MAX];
    long count[CE_PIECES_MAX];
} R(ce_job);

static void R(ce_forward_task)(void *p, int piece, int tid) {
    R(ce_job) *j = p;
    (void)tid;
    int i0 = (int)mt_piece((size_t)j->n, j->pieces, piece), i1 = (int)mt_piece((size_t)j->n, j->pieces, piece + 1);
    const mt_soft_targets *soft = j->soft;
    double nll = 0.0;
    long count = 0;
    for (int i = i0; i < i1; i++) {
        const real *row = j->logits + (size_t)i * j->V;
        double z = row_logsumexp(row, j->V);
        j->lse[i] = (real)z;
        if (is_soft(soft, i)) {
            nll += soft_nll(soft, i, row, z, NULL);
            count++;
            continue;
        }
        if (j->targets[i] < 0) continue;
        nll += z - row[j->targets[i]];
        count++;
    }
    j->nll[piece] = nll, j->count[piece] = count;
}

double R(mt_cross_entropy_forward)(real *lse, const real *logits, const int *targets,
                                   const mt_soft_targets *soft, int n, int V, long *n_targets) {
    R(ce_job) j = {.lse = lse, .logits = logits, .targets = targets, .soft = soft, .n = n, .V = V,
                   .pieces = mt_parallel_pieces((size_t)(n > 0 ? n : 0), n > 1)};
    if (j.pieces > CE_PIECES_MAX) j.pieces = CE_PIECES_MAX;
    double nll = 0.0;
    long count = 0;
    if (n > 0) {
        mt_parallel(j.pieces, R(ce_forward_task), &j);
        for (int i = 0; i < j.pieces; i++) nll += j.nll[i], count += j.count[i];
    }
    if (n_targets) *n_targets = count;
    return nll;
}

static void R(ce_backward_task)(void *arg, size_t i0, size_t i1, int tid) {
    const R(ce_job) *job = arg;
    (void)tid;
    const mt_soft_targets *soft = job->soft;
    const int *targets = job->targets;
    const real *logits = job->logits, *lse = job->lse_in;
    real *dlogits = job->dlogits;
    int V = job->V;
    double scale = job->scale;
    for (int i = (int)i0; i < (int)i1; i++) {
        const real *row = logits + (size_t)i * V;
        real *d = dlogits + (size_t)i * V;
        if (is_soft(soft, i)) {
            double mass;
            soft_nll(soft, i, row, 0, &mass);
            row_softmax_scaled(d, row, lse[i], (real)(scale * mass), V);
            const int *ids = soft->ids + (size_t)i * soft->k;
            const float *p = soft->p + (size_t)i * soft->k;
            for (int j = 0; j < soft->k && ids[j] >= 0; j++) d[ids[j]] -= (real)(scale * p[j]);
            continue;
        }
        if (targets[i] < 0) {
            memset(d, 0, (size_t)V * sizeof(real));
            continue;
        }
        row_softmax_scaled(d, row, lse[i], (real)scale, V);
        d[targets[i]] -= (real)scale;
    }
}

void R(mt_cross_entropy_backward)(real *dlogits, const real *logits, const real *lse,
                                  const int *targets, const mt_soft_targets *soft, double scale,
                                  int n, int V) {
    R(ce_job) j = {.dlogits = dlogits, .logits = logits, .lse_in = lse, .targets = targets, .soft = soft,
                   .scale = scale, .n = n, .V = V};
    mt_parallel_range((size_t)(n > 0 ? n : 0), n > 1, R(ce_backward_task), &j);
}
