/* The best check of a memory run (see memory_run.h): recall can peak before the step cap
 * and fall again (measured on 200 random labels: 200/200 exact at step 500, 176/200 at step
 * 800), so the run keeps the values of its best check within the perplexity limit and ends
 * on them when the last check is worse. */
#include "core/error.h"
#include "train/memory_run.h"
#include <stdlib.h>
#include <string.h>

size_t mt_memory_dense_size(const memory_run *r) {
    return (r->mome ? r->mome->n_sites * r->mome->router_size : 0) + (r->rows ? r->rows_opt.n : 0) +
           (r->lora ? r->lora->n_params : 0);
}

/* to_buf: the trained dense values into buf; else back from it */
static void copy_dense(memory_run *r, float *buf, int to_buf) {
    float *part[3] = {r->mome ? r->mome->router : NULL, r->rows ? r->rows->values : NULL, r->lora ? r->lora->params : NULL};
    size_t n[3] = {r->mome ? r->mome->n_sites * r->mome->router_size : 0, r->rows ? r->rows_opt.n : 0,
                   r->lora ? r->lora->n_params : 0};
    for (int k = 0; k < 3; k++) {
        if (!part[k]) continue;
        if (to_buf) memcpy(buf, part[k], n[k] * sizeof(float));
        else memcpy(part[k], buf, n[k] * sizeof(float));
        buf += n[k];
    }
    if (!to_buf && r->rows) mt_token_rows_sync(r->rows);
}

/* floats per bank row (values of both halves) */
static size_t row_width(const memory_run *r) { return 2 * (size_t)r->mome->shape.C; }

/* The ids of the bank rows that have optimizer state (= have changed), malloc'd; *n of them.
 * NULL with *n = 0 when there are none, NULL with *n > 0 when out of memory. */
static long *changed_rows(const memory_run *r, long *n) {
    *n = r->mome ? mt_sparse_adam_rows(&r->bank_opt) : 0;
    long *ids = *n > 0 ? malloc((size_t)*n * sizeof(long)) : NULL;
    if (ids) mt_sparse_adam_ids(&r->bank_opt, ids);
    return ids;
}

static int within_limit(const memory_run *r) { return r->ppl_last <= r->o.general_limit * r->ppl_base; }
static int beats(int exact, int memorised, int exact2, int memorised2) {
    return exact > exact2 || (exact == exact2 && memorised > memorised2);
}

static mt_status reserve_rows(memory_run *r, long n) {
    if (n <= r->best.cap) return MT_OK;
    size_t width = row_width(r);
    long *ids = realloc(r->best.row_ids, (size_t)n * sizeof(long));
    if (ids) r->best.row_ids = ids;
    float *rows = ids ? realloc(r->best.rows, (size_t)n * width * sizeof(float)) : NULL;
    if (!rows) return mt_error(MT_ERR_NOMEM, "out of memory for the best check's %ld expert rows", n);
    r->best.rows = rows, r->best.cap = n;
    return MT_OK;
}

mt_status mt_memory_best_consider(memory_run *r) {
    /* the later check wins a tie: the copy is small now that only the rows the facts touch
     * train, and a run whose last check is its best then checkpoints those values once */
    if (!within_limit(r) || (r->best.have && beats(r->best.exact, r->best.memorised, r->n_exact, r->n_ok))) return MT_OK;
    return mt_memory_best_snapshot(r);
}

mt_status mt_memory_best_snapshot(memory_run *r) {
    if (!r->best.dense && !(r->best.dense = malloc(mt_memory_dense_size(r) * sizeof(float) + 1)))
        return mt_error(MT_ERR_NOMEM, "out of memory for the best check's values");
    copy_dense(r, r->best.dense, 1);
    long n = r->mome ? mt_sparse_adam_rows(&r->bank_opt) : 0;
    if (n > 0) {
        mt_status s = reserve_rows(r, n);
        if (s) return s;
        size_t width = row_width(r);
        mt_sparse_adam_ids(&r->bank_opt, r->best.row_ids);
        for (long i = 0; i < n; i++)
            memcpy(r->best.rows + i * width, r->mome->bank + (size_t)r->best.row_ids[i] * width, width * sizeof(float));
    }
    r->best.have = 1, r->best.step = r->loop.step, r->best.n_rows = n;
    r->best.exact = r->n_exact, r->best.memorised = r->n_ok, r->best.ppl = r->ppl_last;
    return MT_OK;
}

/* Bank rows first changed after the best check (state slots >= its row count: slots are
 * never removed) go back to their initial values, which the same options recreate. */
static mt_status reset_later_rows(memory_run *r) {
    if (mt_sparse_adam_rows(&r->bank_opt) <= r->best.n_rows) return MT_OK;
    long n;
    long *ids = changed_rows(r, &n);
    mt_mome *fresh = NULL;
    mt_status s = ids ? mt_mome_create(r->m, &r->mome_opts, &fresh) : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s) {
        size_t width = row_width(r);
        for (long i = r->best.n_rows; i < n; i++)
            memcpy(r->mome->bank + (size_t)ids[i] * width, fresh->bank + (size_t)ids[i] * width, width * sizeof(float));
    }
    mt_mome_free(fresh);
    free(ids);
    return s;
}

mt_status mt_memory_best_restore(memory_run *r, int *restored) {
    *restored = 0;
    /* recall first: a last check above the limit with more facts right is kept (the report says
     * the ratio); measured on the text-to-SQL example, whose every check after step 0 was above */
    if (!r->best.have || r->best.step == r->loop.step || !beats(r->best.exact, r->best.memorised, r->n_exact, r->n_ok))
        return MT_OK;
    copy_dense(r, r->best.dense, 0);
    if (r->mome) {
        mt_status s = reset_later_rows(r);
        if (s) return s;
        size_t width = row_width(r);
        for (long i = 0; i < r->best.n_rows; i++)
            memcpy(r->mome->bank + (size_t)r->best.row_ids[i] * width, r->best.rows + i * width, width * sizeof(float));
    }
    r->ppl_last = r->best.ppl; /* the caller re-checks the facts on these values */
    *restored = 1;
    return MT_OK;
}

/* Test hook (MEMTUNE_TEST_FORGET_AFTER_STEP): negates every trained bank row and token row, so
 * the checks after it are worse than the ones before and the restore path runs. */
void mt_memory_test_forget(memory_run *r) {
    if (r->rows) {
        for (size_t i = 0; i < r->rows_opt.n; i++) r->rows->values[i] = -r->rows->values[i];
        mt_token_rows_sync(r->rows);
    }
    long n;
    long *ids = changed_rows(r, &n);
    if (!ids) return;
    size_t width = row_width(r);
    for (long i = 0; i < n; i++)
        for (size_t j = 0; j < width; j++) r->mome->bank[(size_t)ids[i] * width + j] *= -1;
    free(ids);
}

void mt_memory_best_free(memory_run *r) {
    free(r->best.dense), free(r->best.row_ids), free(r->best.rows);
    memset(&r->best, 0, sizeof r->best);
}
