/* The one interface between the model and adapters: low-rank terms at linear sites.
 *
 * A linear site is one projection of one layer (q, k, v, o, gate, up, down). An attached
 * mt_lora gives some sites a pair A [r, in], B [out, r]; the inference forward and the
 * training pass then compute y = x·W^T (+ b) + scale·(x·A^T)·B^T there, and the training
 * backward adds the matching input gradient and accumulates dA, dB (see
 * mt_lora_forward/mt_lora_backward in kernels/ops.h). With no adapter attached (m->lora
 * NULL) no code path changes. The model only reads this plain data; creating, initialising,
 * merging, saving and loading adapters is the adapters layer (src/adapters/lora.h).
 *
 * Rows of B at q and k sites follow the model's RoPE layout (cfg.rope_interleaved), like the
 * rows of wq/wk themselves; file readers and writers convert. */
#ifndef MT_MODEL_ADAPTER_H
#define MT_MODEL_ADAPTER_H
#include <stddef.h>
#include <stdint.h>
#include "memtune.h"

typedef enum {
    MT_SITE_Q, MT_SITE_K, MT_SITE_V, MT_SITE_O, MT_SITE_GATE, MT_SITE_UP, MT_SITE_DOWN,
    MT_N_SITES
} mt_linear_site;

#define MT_LORA_NONE SIZE_MAX

struct mt_lora {
    int n_layers;
    int rank;
    float alpha, dropout;
    int rslora;             /* scale = alpha / sqrt(rank) instead of alpha / rank */
    float scale;
    unsigned targets;       /* bit s set: site s is adapted (in every layer) */
    size_t n_params;
    float *params;          /* every A and B, one allocation */
    size_t *a_offset;       /* [n_layers * MT_N_SITES]: offset of A in params, or MT_LORA_NONE */
    size_t *b_offset;       /* [n_layers * MT_N_SITES]: offset of B, or MT_LORA_NONE */
};

/* Trainable token rows (PEFT's trainable_token_indices): chosen rows of the embedding, and of
 * the head when it is not tied, that train while the rest of the base stays frozen. A base
 * that never learned its stop token (stories260K's EOS) cannot end answers otherwise.
 *
 * While attached, the trained rows live in the model's own weight rows (the base's rows are
 * kept in `base` and put back on detach), so every forward, the KV-cache inference and the
 * training pass use them with no extra code or cost, and a merge or save of the model
 * includes them. The training pass gives their gradient in s->row_grads; after an optimizer
 * step on `values`, mt_token_rows_sync() copies them into the model again. */
struct mt_token_rows {
    int n;                  /* number of rows (token ids) */
    int dim;
    int untied;             /* 1: the head has its own rows, trained too */
    int *ids;               /* [n], distinct, in [0, vocab) */
    float *values;          /* [(1 + untied) * n, dim]: embedding rows, then head rows */
    float *base;            /* same shape: the base model's rows */
    mt_model *attached;     /* the model they are written into, or NULL */
};

/* Attaches r to m (NULL detaches whatever is attached, restoring the base rows). m does not
 * own r. MT_ERR_MISMATCH for rows made for another width or vocabulary. */
mt_status mt_model_set_token_rows(mt_model *m, struct mt_token_rows *r);
/* Copies r->values into the model it is attached to (after they changed). */
void mt_token_rows_sync(struct mt_token_rows *r);

/* in/out features of a site for this config */
void mt_linear_site_shape(const mt_config *c, int site, int *in, int *out);
/* The base weight [out, in] of a site. */
float *mt_linear_site_weight(const mt_model *m, int layer, int site);
/* A and B of (layer, site), or 0 when the site has no adapter. */
int mt_lora_site(const struct mt_lora *l, int layer, int site, const float **a, const float **b);
/* Attaches l to m as its only adapter (NULL detaches all); m does not own it. The KV cache
 * is dropped. MT_ERR_MISMATCH when the adapter was made for a model with another layer count. */
mt_status mt_model_set_lora(mt_model *m, struct mt_lora *l);
/* Adds l to the attached adapters with weight w (its term is w·scale·(x·A^T)·B^T). */
mt_status mt_model_push_lora(mt_model *m, struct mt_lora *l, float w);
/* Detaches l if attached (the others stay, in order). */
void mt_model_drop_lora(mt_model *m, const struct mt_lora *l);
/* The largest rank among the attached adapters (0 with none). */
int mt_model_lora_max_rank(const mt_model *m);

#endif
