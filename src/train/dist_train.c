/* The trainer's side of data-parallel training (dist_train.h). */
#include "train/dist_train.h"
#include "core/error.h"
#include "model/adapter.h"
#include "train/trainer.h"
#include <stdlib.h>
#include <string.h>

void mt_dist_shard(const mt_dist *d, int batch, long *before, long *after) {
    int r = mt_dist_rank(d), k = mt_dist_size(d);
    *before = (long)r * batch;
    *after = (long)(k - 1 - r) * batch;
}

static uint64_t hash_str(uint64_t h, const char *s) {
    h = mt_hash_bytes(h, s ? s : "\1null", s ? strlen(s) + 1 : 6);
    return h;
}

#define H(field) h = mt_hash_bytes(h, &o->field, sizeof o->field)

static uint64_t options_hash(const mt_train_options *o, int seq_len) {
    uint64_t h = MT_HASH_START;
    h = hash_str(h, o->method);
    h = hash_str(h, o->schedule);
    h = hash_str(h, o->lora_targets);
    h = hash_str(h, o->lora_layers);
    h = hash_str(h, o->base_dtype);
    h = hash_str(h, o->trainable_tokens);
    H(epochs); H(steps); H(lr); H(batch); H(grad_accum); H(warmup); H(weight_decay); H(clip);
    H(eval_every); H(save_every); H(log_every); H(keep_checkpoints); H(seed); H(shuffle);
    H(resume); H(lora_rank); H(lora_alpha); H(lora_rslora); H(lora_dropout);
    h = mt_hash_bytes(h, &seq_len, sizeof seq_len);
    return h;
}

static uint64_t packed_hash(uint64_t h, const mt_packed_data *p) {
    for (int i = 0; i < p->n_seqs; i++) {
        h = mt_hash_bytes(h, &p->seqs[i].n, sizeof p->seqs[i].n);
        h = mt_hash_bytes(h, p->seqs[i].ids, (size_t)p->seqs[i].n * sizeof(int));
        h = mt_hash_bytes(h, p->seqs[i].learn, (size_t)p->seqs[i].n);
    }
    return h;
}

mt_status mt_dist_check_run(mt_dist *d, const mt_train_options *o, int seq_len, const mt_packed_data *train,
                            const mt_packed_data *eval, const mt_model *m, const mt_lora *l, const mt_token_rows *rows) {
    if (!mt_dist_is_multi(d)) return MT_OK;
    uint64_t h[3];
    h[0] = options_hash(o, seq_len);
    h[1] = packed_hash(packed_hash(MT_HASH_START, train), eval);
    h[2] = mt_hash_bytes(MT_HASH_START, m->params, m->n_params * sizeof(float));
    if (l) h[2] = mt_hash_bytes(h[2], l->params, l->n_params * sizeof(float));
    if (rows) h[2] = mt_hash_bytes(h[2], rows->values, (size_t)(1 + rows->untied) * rows->n * rows->dim * sizeof(float));
    const char *what[3] = {"training options (--batch, --lr, --seq-len, --steps, ...)", "training data (as tokenized)",
                           "model (its weights)"};
    return mt_dist_check_same(d, h, what, 3);
}

mt_status mt_dist_grad_map_init(mt_dist_grad_map *g, mt_dist *d, mt_model *m, const mt_lora *l, float *const *buf) {
    memset(g, 0, sizeof *g);
    int L = m->cfg.n_layers;
    g->d = d;
    g->buf = buf;
    g->n = l ? l->n_params : m->n_params;
    g->n_layers = L;
    g->begin = malloc((size_t)(L + 2) * sizeof(size_t));
    if (!g->begin) return mt_error(MT_ERR_NOMEM, "out of memory");
    size_t n = l ? l->n_params : m->n_params;
    for (int i = 0; i < L + 2; i++) g->begin[i] = n;
    g->begin[0] = 0; /* the end of the backward: everything */
    if (l) { /* the adapter: (layer, site) in ascending order; nothing above the layers */
        for (int layer = 0; layer < L && layer < l->n_layers; layer++)
            for (int s = 0; s < MT_N_SITES; s++) {
                size_t i = (size_t)layer * MT_N_SITES + s;
                if (l->a_offset[i] != MT_LORA_NONE && l->a_offset[i] < g->begin[layer + 1]) g->begin[layer + 1] = l->a_offset[i];
                if (l->b_offset[i] != MT_LORA_NONE && l->b_offset[i] < g->begin[layer + 1]) g->begin[layer + 1] = l->b_offset[i];
            }
    } else {
        mt_tensor_ref refs[MT_MAX_TENSORS];
        int nt = mt_model_tensors(m, refs, MT_MAX_TENSORS);
        for (int i = 0; i < nt && i < MT_MAX_TENSORS; i++) {
            size_t off = (size_t)(refs[i].data - m->params);
            int slot = refs[i].layer >= 0 ? refs[i].layer + 1 : L + 1;
            if (refs[i].layer < 0 && refs[i].data == m->tok_embd) continue; /* final only at the end */
            if (off < g->begin[slot]) g->begin[slot] = off;
        }
    }
    /* what is final after layer l includes everything final before it (walking down) */
    for (int i = L; i >= 1; i--)
        if (g->begin[i + 1] < g->begin[i]) g->begin[i] = g->begin[i + 1];
    return MT_OK;
}

void mt_dist_grad_map_free(mt_dist_grad_map *g) {
    free(g->begin);
    g->begin = NULL;
}

void mt_dist_grads_ready(void *user, int layer) {
    mt_dist_grad_map *g = user;
    if (layer < -1 || layer > g->n_layers) return;
    if (layer == g->n_layers) mt_dist_exchange_begin(g->d, *g->buf, g->n);
    mt_dist_exchange_ready(g->d, g->begin[layer + 1]);
}
