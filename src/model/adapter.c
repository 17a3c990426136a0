/* Linear sites: their shapes, their base weights, and the adapter pair at each. See
 * model/adapter.h. */
#include "model/adapter.h"
#include "model/model.h"
#include "model/forward.h"
#include "core/error.h"

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
    m->lora = l;
    return MT_OK;
}
