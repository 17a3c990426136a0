/* AdamW for rows of a huge table of which each step touches a few (the memory experts'
 * bank): moments exist only for rows that were ever used (lazy state in a hash map from
 * row id to a state slot), and a step updates only the rows touched in it, like
 * torch.optim.SparseAdam (bias correction by the global step count).
 *
 * A step: mt_sparse_rows_gather() sums per-slot gradients into one gradient per distinct
 * row (sorted by row id, so the result never depends on slot order); the caller may scale
 * them (clipping); mt_sparse_adam_update() applies AdamW to those rows. */
#ifndef MT_TRAIN_SPARSE_ADAM_H
#define MT_TRAIN_SPARSE_ADAM_H
#include <stddef.h>
#include "memtune.h"

typedef struct {
    int width;              /* floats per row */
    long *keys;             /* [cap] row id of each hash bucket, -1 = empty */
    int *slot_of;           /* [cap] state slot of each bucket */
    long cap, used;         /* buckets, rows with state */
    float *m, *v;           /* [used rows, width] moments */
    long state_cap;
    float beta1, beta2, eps;
    int bf16_moments;       /* keep m and v bf16-exact (rounded after each update): a checkpoint
                               stores them in half the bytes, losslessly; default 0 */
} mt_sparse_adam;

mt_status mt_sparse_adam_init(mt_sparse_adam *o, int width);
void mt_sparse_adam_free(mt_sparse_adam *o);
/* rows that have state (were ever updated) */
long mt_sparse_adam_rows(const mt_sparse_adam *o);
/* Whether row id has state (was ever updated). */
int mt_sparse_adam_has(const mt_sparse_adam *o, long id);
/* The row id of each state slot, in slot order (ids[mt_sparse_adam_rows(o)]); the moments
 * are o->m and o->v in the same order. */
void mt_sparse_adam_ids(const mt_sparse_adam *o, long *ids);
/* Gives a fresh state the n rows ids (slot order, distinct, each in [0, max_id)) with the
 * moments m and v [n, width] (a checkpoint's); MT_ERR_FORMAT when the ids are not so. */
mt_status mt_sparse_adam_restore(mt_sparse_adam *o, const long *ids, long n, long max_id, const float *m, const float *v);

typedef struct {
    long n;                 /* distinct rows this step */
    long *ids;              /* [n] ascending */
    float *grads;           /* [n, width] summed gradients */
    long cap;
    long *order;            /* scratch */
} mt_sparse_rows;

/* ids[n_slots] (row ids, any order, repeats allowed; a negative id drops its slot) and
 * grads[n_slots, width] -> rows. */
mt_status mt_sparse_rows_gather(mt_sparse_rows *r, const long *ids, const float *slot_grads, long n_slots, int width);
void mt_sparse_rows_free(mt_sparse_rows *r);

/* AdamW on table rows (row id i at table + i*width) for the gathered rows; step is the
 * global step count (>= 1) for bias correction. */
mt_status mt_sparse_adam_update(mt_sparse_adam *o, float *table, const mt_sparse_rows *r, long step, float lr,
                                float weight_decay);

#endif
