/* Lazy AdamW state for the rows of a huge table (see sparse_adam.h). */
#include "train/sparse_adam.h"
#include "core/error.h"
#include "formats/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

mt_status mt_sparse_adam_init(mt_sparse_adam *o, int width) {
    memset(o, 0, sizeof *o);
    o->width = width;
    o->beta1 = 0.9f, o->beta2 = 0.999f, o->eps = 1e-8f;
    o->cap = 1024;
    o->keys = malloc((size_t)o->cap * sizeof(long));
    o->slot_of = malloc((size_t)o->cap * sizeof(int));
    if (!o->keys || !o->slot_of) return mt_error(MT_ERR_NOMEM, "out of memory for optimizer state");
    for (long i = 0; i < o->cap; i++) o->keys[i] = -1;
    return MT_OK;
}

void mt_sparse_adam_free(mt_sparse_adam *o) {
    free(o->keys), free(o->slot_of), free(o->m), free(o->v);
    memset(o, 0, sizeof *o);
}

long mt_sparse_adam_rows(const mt_sparse_adam *o) { return o->used; }

static long bucket(const mt_sparse_adam *o, long key) {
    unsigned long long h = (unsigned long long)key * 0x9E3779B97F4A7C15ull;
    long i = (long)(h >> 20) & (o->cap - 1);
    while (o->keys[i] != -1 && o->keys[i] != key) i = (i + 1) & (o->cap - 1);
    return i;
}

static mt_status grow_table(mt_sparse_adam *o) {
    long old_cap = o->cap, *old_keys = o->keys;
    int *old_slot = o->slot_of;
    o->cap *= 2;
    o->keys = malloc((size_t)o->cap * sizeof(long));
    o->slot_of = malloc((size_t)o->cap * sizeof(int));
    if (!o->keys || !o->slot_of) return mt_error(MT_ERR_NOMEM, "out of memory for optimizer state");
    for (long i = 0; i < o->cap; i++) o->keys[i] = -1;
    for (long i = 0; i < old_cap; i++)
        if (old_keys[i] != -1) {
            long b = bucket(o, old_keys[i]);
            o->keys[b] = old_keys[i];
            o->slot_of[b] = old_slot[i];
        }
    free(old_keys), free(old_slot);
    return MT_OK;
}

/* The state slot of row key, created (zero moments) on first use; -1 when out of memory. */
static long state_slot(mt_sparse_adam *o, long key) {
    if (2 * (o->used + 1) > o->cap && grow_table(o)) return -1;
    long b = bucket(o, key);
    if (o->keys[b] == key) return o->slot_of[b];
    if (o->used == o->state_cap) {
        long cap = o->state_cap ? 2 * o->state_cap : 1024;
        float *m = realloc(o->m, (size_t)cap * o->width * sizeof(float));
        if (m) o->m = m;
        float *v = m ? realloc(o->v, (size_t)cap * o->width * sizeof(float)) : NULL;
        if (!v) return -1;
        o->v = v;
        o->state_cap = cap;
    }
    o->keys[b] = key;
    o->slot_of[b] = (int)o->used;
    memset(o->m + o->used * o->width, 0, (size_t)o->width * sizeof(float));
    memset(o->v + o->used * o->width, 0, (size_t)o->width * sizeof(float));
    return o->used++;
}

int mt_sparse_adam_has(const mt_sparse_adam *o, long id) { return o->keys[bucket(o, id)] == id; }

void mt_sparse_adam_ids(const mt_sparse_adam *o, long *ids) {
    for (long b = 0; b < o->cap; b++)
        if (o->keys[b] != -1) ids[o->slot_of[b]] = o->keys[b];
}

mt_status mt_sparse_adam_restore(mt_sparse_adam *o, const long *ids, long n, long max_id, const float *m, const float *v) {
    if (o->used) return mt_error(MT_ERR_ARG, "optimizer state restored into a used state");
    for (long i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= max_id) return mt_error(MT_ERR_FORMAT, "row id %ld out of range [0, %ld)", ids[i], max_id);
        long slot = state_slot(o, ids[i]);
        if (slot < 0) return mt_error(MT_ERR_NOMEM, "out of memory for optimizer state");
        if (slot != i) return mt_error(MT_ERR_FORMAT, "row id %ld appears twice", ids[i]);
        memcpy(o->m + slot * o->width, m + (size_t)i * o->width, (size_t)o->width * sizeof(float));
        memcpy(o->v + slot * o->width, v + (size_t)i * o->width, (size_t)o->width * sizeof(float));
    }
    return MT_OK;
}

static const long *sort_keys;
static int by_key(const void *a, const void *b) {
    long x = sort_keys[*(const long *)a], y = sort_keys[*(const long *)b];
    if (x != y) return x < y ? -1 : 1;
    long i = *(const long *)a, j = *(const long *)b; /* stable: slot order breaks ties */
    return (i > j) - (i < j);
}

mt_status mt_sparse_rows_gather(mt_sparse_rows *r, const long *ids, const float *slot_grads, long n_slots, int width) {
    if (n_slots > r->cap) {
        free(r->ids), free(r->grads), free(r->order);
        r->ids = malloc((size_t)n_slots * sizeof(long));
        r->order = malloc((size_t)n_slots * sizeof(long));
        r->grads = malloc((size_t)n_slots * width * sizeof(float));
        r->cap = n_slots;
        if (!r->ids || !r->order || !r->grads) {
            r->cap = 0;
            return mt_error(MT_ERR_NOMEM, "out of memory for sparse gradients");
        }
    }
    long kept = 0;
    for (long i = 0; i < n_slots; i++)
        if (ids[i] >= 0) r->order[kept++] = i;
    sort_keys = ids;
    qsort(r->order, (size_t)kept, sizeof(long), by_key);
    r->n = 0;
    for (long k = 0; k < kept; k++) {
        long s = r->order[k];
        const float *g = slot_grads + (size_t)s * width;
        if (r->n == 0 || r->ids[r->n - 1] != ids[s]) {
            r->ids[r->n] = ids[s];
            memcpy(r->grads + (size_t)r->n * width, g, (size_t)width * sizeof(float));
            r->n++;
        } else {
            float *dst = r->grads + (size_t)(r->n - 1) * width;
            for (int j = 0; j < width; j++) dst[j] += g[j];
        }
    }
    return MT_OK;
}

void mt_sparse_rows_free(mt_sparse_rows *r) {
    free(r->ids), free(r->grads), free(r->order);
    memset(r, 0, sizeof *r);
}

mt_status mt_sparse_adam_update(mt_sparse_adam *o, float *table, const mt_sparse_rows *r, long step, float lr,
                                float weight_decay) {
    double bc1 = 1 - pow(o->beta1, (double)step), bc2 = 1 - pow(o->beta2, (double)step);
    for (long k = 0; k < r->n; k++) {
        long slot = state_slot(o, r->ids[k]);
        if (slot < 0) return mt_error(MT_ERR_NOMEM, "out of memory for optimizer state");
        float *p = table + (size_t)r->ids[k] * o->width, *m = o->m + slot * o->width, *v = o->v + slot * o->width;
        const float *g = r->grads + (size_t)k * o->width;
        for (int j = 0; j < o->width; j++) {
            m[j] = o->beta1 * m[j] + (1 - o->beta1) * g[j];
            v[j] = o->beta2 * v[j] + (1 - o->beta2) * g[j] * g[j];
            if (o->bf16_moments) m[j] = mt_bf16_to_f32(mt_f32_to_bf16(m[j])), v[j] = mt_bf16_to_f32(mt_f32_to_bf16(v[j]));
            p[j] -= lr * weight_decay * p[j];
            p[j] -= (float)(lr * (m[j] / bc1) / (sqrt(v[j] / bc2) + o->eps));
        }
    }
    return MT_OK;
}
