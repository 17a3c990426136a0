/* Linear sites: their shapes, their base weights, and the adapter pair at each. See
 * model/adapter.h. */
#include "model/adapter.h"
#include "model/model.h"
#include "model/mome.h"
#include "model/forward.h"
#include "core/error.h"
#include <math.h>
#include <string.h>

void mt_linear_site_shape(const mt_config *c, int site, int *in, int *out) {
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    switch (site) {
    case MT_SITE_Q: *in = c->dim, *out = qd; break;
    case MT_SITE_K:
    case MT_SITE_V: *in = c->dim, *out = kvd; break;
    case MT_SITE_O: *in = qd, *out = c->dim; break;
    case MT_SITE_GATE:
    case MT_SITE_UP: *in = c->dim, *out = c->hidden_dim; break;
    default: *in = c->hidden_dim, *out = c->dim; break;
    }
}

float *mt_linear_site_weight(const mt_model *m, int layer, int site) {
    const mt_layer *L = &m->layers[layer];
    float *w[MT_N_SITES] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
    return w[site];
}

int mt_lora_site(const struct mt_lora *l, int layer, int site, const float **a, const float **b) {
    if (!l || layer >= l->n_layers) return 0;
    size_t off = l->a_offset[(size_t)layer * MT_N_SITES + site];
    if (off == MT_LORA_NONE) return 0;
    *a = l->params + off;
    *b = l->params + l->b_offset[(size_t)layer * MT_N_SITES + site];
    return 1;
}

mt_status mt_model_set_lora(mt_model *m, struct mt_lora *l) {
    if (l && l->n_layers != m->cfg.n_layers)
        return mt_error(MT_ERR_MISMATCH, "the adapter has %d layers, the model %d", l->n_layers, m->cfg.n_layers);
    mt_infer_free(m);
    m->n_loras = 0;
    m->lora = NULL;
    return l ? mt_model_push_lora(m, l, 1.0f) : MT_OK;
}

mt_status mt_model_push_lora(mt_model *m, struct mt_lora *l, float w) {
    if (!l) return mt_error(MT_ERR_ARG, "no adapter to attach");
    if (l->n_layers != m->cfg.n_layers)
        return mt_error(MT_ERR_MISMATCH, "the adapter has %d layers, the model %d", l->n_layers, m->cfg.n_layers);
    if (!isfinite(w)) return mt_error(MT_ERR_ARG, "adapter weight must be finite");
    if (m->n_loras == MT_MAX_ADAPTERS) return mt_error(MT_ERR_ARG, "at most %d adapters at once", MT_MAX_ADAPTERS);
    for (int i = 0; i < m->n_loras; i++)
        if (m->loras[i] == l) return mt_error(MT_ERR_ARG, "this adapter is already attached");
    mt_infer_free(m);
    m->loras[m->n_loras] = l;
    m->lora_weights[m->n_loras++] = w;
    m->lora = m->loras[0];
    return MT_OK;
}

void mt_model_drop_lora(mt_model *m, const struct mt_lora *l) {
    int k = 0;
    for (int i = 0; i < m->n_loras; i++)
        if (m->loras[i] != l) {
            m->loras[k] = m->loras[i];
            m->lora_weights[k++] = m->lora_weights[i];
        }
    if (k != m->n_loras) mt_infer_free(m);
    m->n_loras = k;
    m->lora = k ? m->loras[0] : NULL;
}

int mt_model_lora_max_rank(const mt_model *m) {
    int r = 0;
    for (int i = 0; i < m->n_loras; i++)
        if (m->loras[i]->rank > r) r = m->loras[i]->rank;
    return r;
}

/* The model row of entry i of r's values: embedding rows first, then head rows (untied). */
static float *model_row(mt_model *m, const struct mt_token_rows *r, int i) {
    int head = i >= r->n;
    int id = r->ids[head ? i - r->n : i];
    return (head ? m->output : m->tok_embd) + (size_t)id * r->dim;
}

static void copy_rows(mt_model *m, struct mt_token_rows *r, const float *src) {
    for (int i = 0; i < (1 + r->untied) * r->n; i++)
        memcpy(model_row(m, r, i), src + (size_t)i * r->dim, (size_t)r->dim * sizeof(float));
}

void mt_token_rows_sync(struct mt_token_rows *r) {
    if (r && r->attached) copy_rows(r->attached, r, r->values);
}

mt_status mt_model_set_token_rows(mt_model *m, struct mt_token_rows *r) {
    if (r && (r->dim != m->cfg.dim || r->untied != !m->cfg.tied_embeddings))
        return mt_error(MT_ERR_MISMATCH, "trainable token rows of width %d (%s head) do not fit this model "
                        "(width %d, %s head)", r->dim, r->untied ? "untied" : "tied", m->cfg.dim,
                        m->cfg.tied_embeddings ? "tied" : "untied");
    for (int i = 0; r && i < r->n; i++)
        if (r->ids[i] < 0 || r->ids[i] >= m->cfg.vocab_size)
            return mt_error(MT_ERR_MISMATCH, "trainable token id %d is outside the vocabulary of %d",
                            r->ids[i], m->cfg.vocab_size);
    if (r && r->attached && r->attached != m)
        return mt_error(MT_ERR_ARG, "these token rows are attached to another model");
    struct mt_token_rows *old = m->token_rows;
    if (old == r) {
        mt_token_rows_sync(r);
        return MT_OK;
    }
    mt_infer_free(m);
    if (old) {
        copy_rows(m, old, old->base);
        old->attached = NULL;
    }
    m->token_rows = r;
    if (r) {
        for (int i = 0; i < (1 + r->untied) * r->n; i++)
            memcpy(r->base + (size_t)i * r->dim, model_row(m, r, i), (size_t)r->dim * sizeof(float));
        r->attached = m;
        copy_rows(m, r, r->values);
    }
    return MT_OK;
}

mt_status mt_model_set_mome(mt_model *m, struct mt_mome *mm) {
    if (mm && (mm->n_layers != m->cfg.n_layers || mm->shape.C != m->cfg.dim))
        return mt_error(MT_ERR_MISMATCH, "the memory experts were made for %d layers of width %d, the model has %d of %d",
                        mm->n_layers, mm->shape.C, m->cfg.n_layers, m->cfg.dim);
    mt_infer_free(m);
    m->mome = mm;
    return MT_OK;
}
