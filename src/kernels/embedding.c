/* Token embedding: a row lookup forward, a scatter-add backward (a token that occurs several
 * times in the batch collects the gradient of every occurrence). Compiled in float here and
 * in double by kernels_f64.c (see real.h). */
#include "kernels/kernels.h"
#include "kernels/pool.h"
#include <string.h>
#include "kernels/real.h"

/* Columns per work item of the scatter-add: threads own disjoint column blocks, so two
 * occurrences of one token never race. */
#define EMBED_COL_BLOCK 64

typedef struct {
    real *out;
    const real *in;
    const int *ids;
    int n, C;
} R(embedding_job);

static void R(embedding_forward_task)(void *p, size_t i0, size_t i1, int tid) {
    const R(embedding_job) *j = p;
    (void)tid;
    size_t C = (size_t)j->C;
    for (size_t i = i0; i < i1; i++) memcpy(j->out + i * C, j->in + (size_t)j->ids[i] * C, C * sizeof(real));
}

void R(mt_embedding_forward)(real *out, const int *ids, const real *table, int n, int C) {
    R(embedding_job) j = {out, table, ids, n, C};
    mt_parallel_range((size_t)n, n > 64, R(embedding_forward_task), &j);
}

/* a piece owns blocks of columns and walks every row, so no two add into the same entry */
static void R(embedding_backward_task)(void *p, size_t b0, size_t b1, int tid) {
    const R(embedding_job) *j = p;
    (void)tid;
    int C = j->C;
    for (int c0 = (int)b0 * EMBED_COL_BLOCK; c0 < (int)b1 * EMBED_COL_BLOCK && c0 < C; c0 += EMBED_COL_BLOCK) {
        int c1 = c0 + EMBED_COL_BLOCK < C ? c0 + EMBED_COL_BLOCK : C;
        for (int i = 0; i < j->n; i++) {
            real *row = j->out + (size_t)j->ids[i] * C;
            const real *g = j->in + (size_t)i * C;
            for (int c = c0; c < c1; c++) row[c] += g[c];
        }
    }
}

void R(mt_embedding_backward)(real *dtable, const real *dout, const int *ids, int n, int C) {
    R(embedding_job) j = {dtable, dout, ids, n, C};
    size_t blocks = ((size_t)C + EMBED_COL_BLOCK - 1) / EMBED_COL_BLOCK;
    mt_parallel_range(blocks, (size_t)n * C > MT_PARALLEL_MIN, R(embedding_backward_task), &j);
}
