/* Masked cross-entropy over logits [n, V]: rows whose target is negative (-1, -100: prompt
 * tokens, padding, document ends) are not scored. The forward returns the SUM of the NLL of
 * the scored rows; the caller's scale (1 / total target tokens across gradient-accumulation
 * micro-batches) enters only the backward, so micro-batches of different target counts
 * average exactly. The backward is scale·(softmax - onehot), written in place over the logits
 * when asked, so no second [n, V] buffer is needed. Compiled in float here and in double by
 * kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
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

double R(mt_cross_entropy_forward)(real *lse, const real *logits, const int *targets, int n, int V,
                                   long *n_targets) {
    double nll = 0.0;
    long count = 0;
#pragma omp parallel for reduction(+ : nll, count) if (n > 1)
    for (int i = 0; i < n; i++) {
        const real *row = logits + (size_t)i * V;
        double z = row_logsumexp(row, V);
        lse[i] = (real)z;
        if (targets[i] < 0) continue;
        nll += z - row[targets[i]];
        count++;
    }
    if (n_targets) *n_targets = count;
    return nll;
}

void R(mt_cross_entropy_backward)(real *dlogits, const real *logits, const real *lse,
                                  const int *targets, double scale, int n, int V) {
#pragma omp parallel for if (n > 1)
    for (int i = 0; i < n; i++) {
        const real *row = logits + (size_t)i * V;
        real *d = dlogits + (size_t)i * V;
        if (targets[i] < 0) {
            memset(d, 0, (size_t)V * sizeof(real));
            continue;
        }
        row_softmax_scaled(d, row, lse[i], (real)scale, V);
        d[targets[i]] -= (real)scale;
    }
}
