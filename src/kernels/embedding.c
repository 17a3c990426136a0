/* Token embedding: a row lookup forward, a scatter-add backward (a token that occurs several
 * times in the batch collects the gradient of every occurrence). Compiled in float here and
 * in double by kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include <string.h>
#include "kernels/real.h"

/* Columns per work item of the scatter-add: threads own disjoint column blocks, so two
 * occurrences of one token never race. */
#define EMBED_COL_BLOCK 64

void R(mt_embedding_forward)(real *out, const int *ids, const real *table, int n, int C) {
#pragma omp parallel for if (n > 64)
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * C, table + (size_t)ids[i] * C, (size_t)C * sizeof(real));
}

void R(mt_embedding_backward)(real *dtable, const real *dout, const int *ids, int n, int C) {
#pragma omp parallel for if ((size_t)n * C > MT_PARALLEL_MIN)
    for (int c0 = 0; c0 < C; c0 += EMBED_COL_BLOCK) {
        int c1 = c0 + EMBED_COL_BLOCK < C ? c0 + EMBED_COL_BLOCK : C;
        for (int i = 0; i < n; i++) {
            real *row = dtable + (size_t)ids[i] * C;
            const real *g = dout + (size_t)i * C;
            for (int c = c0; c < c1; c++) row[c] += g[c];
        }
    }
}
