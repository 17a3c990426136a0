/* What data-parallel training (dist/dist.h) needs from the trainer's side, kept out of the
 * training loop so the loop only calls in at a few marked places: which rows of a global
 * micro-batch are this rank's, the start-of-run check that every rank trains the same thing,
 * and the map from "layer l's backward is done" to the gradient offsets that are final. */
#ifndef MT_TRAIN_DIST_TRAIN_H
#define MT_TRAIN_DIST_TRAIN_H
#include "dist/dist.h"
#include "dataset/batch.h"
#include "model/model.h"

/* Rows of a global micro-batch of size * batch rows: this rank's batch rows start after
 * *before others and are followed by *after others. */
void mt_dist_shard(const mt_dist *d, int batch, long *before, long *after);

/* Every rank compares hashes of its options, training data and model (weights, adapter,
 * token rows) with rank 0's; a mismatch is one clear error on every rank. */
mt_status mt_dist_check_run(mt_dist *d, const mt_train_options *o, int seq_len, const mt_packed_data *train,
                            const mt_packed_data *eval, const mt_model *m, const mt_lora *l, const mt_token_rows *rows);

/* The gradient offsets that become final as the backward walks down (the train state's
 * grads_ready hook): begin[layer + 1] for layer in [-1, n_layers]. */
typedef struct {
    mt_dist *d;
    int n_layers;
    size_t *begin;
    float *const *buf;  /* the train state's gradient field (allocated by the first backward) */
    size_t n;
} mt_dist_grad_map;
/* For the model's own gradients (method full) or the adapter's (lora: l not NULL); buf is the
 * address of the train state's grads or lora_grads field. The hook starts the exchange
 * (mt_dist_exchange_begin) at its first call of a backward. */
mt_status mt_dist_grad_map_init(mt_dist_grad_map *g, mt_dist *d, mt_model *m, const mt_lora *l, float *const *buf);
void mt_dist_grad_map_free(mt_dist_grad_map *g);
void mt_dist_grads_ready(void *user, int layer); /* the hook: user is the map */

#endif
