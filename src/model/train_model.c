/* The Llama-family training pass (see train_model.h): the memory plan of a training state,
 * the forward that saves activations, and the backward that mirrors it layer by layer.
 *
 * Forward, per layer l (x = residual stream, BT = B*T rows):
 *   xn1 = rmsnorm(x); q,k,v = xn1·W^T (+b); rope(q, k); atty = attention(q, k, v | doc)
 *   x_mid = x + atty·Wo^T;  xn2 = rmsnorm(x_mid); gate, up = xn2·W^T
 *   x_next = x_mid + (silu(gate)·up)·Wdown^T
 * then the final norm, the head and masked cross-entropy. The backward walks the same list
 * in reverse with dx, the gradient of the residual stream, flowing through the residual
 * adds unchanged and picking up each branch's input gradient.
 *
 * Written in terms of `real` (see kernels/real.h): compiled in float here and in double by
 * train_model_f64.c, where the parameters are an owned double copy. */
#include "model/train_model.h"
#include "model/adapter.h"
#include "model/mome.h"
#include "model/base_store.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/real.h"

typedef R(mt_train_state) train_state;

/* ---- memory plan ------------------------------------------------------------------- */

#define N_ACTS 27

/* Element count of every activation array, in the order of the pointers in
 * activation_slots(). The only place that knows how big a training state is. */
static void activation_sizes(const mt_config *c, int B, int T, int flags, size_t sizes[N_ACTS]) {
    /* with recomputation only the residual stream x keeps every layer; the rest holds the
     * layer being worked on */
    size_t LX = (size_t)c->n_layers, BT = (size_t)B * T, C = (size_t)c->dim;
    size_t L = flags & MT_TRAIN_RECOMPUTE ? 1 : LX;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t F = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t H = (size_t)c->n_heads;
    size_t plan[N_ACTS] = {
        (LX + 1) * BT * C, L * BT * C, L * BT * C, L * BT * C, /* x, x_mid, xn1, xn2 */
        L * BT, L * BT,                                        /* rstd1, rstd2 */
        L * BT * qd, L * BT * kvd, L * BT * kvd,               /* q, k, v */
        L * BT * H, L * BT * qd,                               /* att_lse, atty */
        L * BT * F, L * BT * F,                                /* gate, up */
        BT * C, BT, BT * V, BT,                                /* xn_final, rstd_final, logits, lse */
        BT * F, BT * F, BT * F, BT * F,                        /* hidden, dhidden, dgate, dup */
        BT * C, BT * C,                                        /* dx, dxn */
        BT * qd, BT * qd, BT * kvd, BT * kvd,                  /* dq, datty, dk, dv */
    };
    memcpy(sizes, plan, sizeof plan);
}

static void activation_slots(train_state *s, real **slots[N_ACTS]) {
    real **list[N_ACTS] = {
        &s->x, &s->x_mid, &s->xn1, &s->xn2, &s->rstd1, &s->rstd2, &s->q, &s->k, &s->v,
        &s->att_lse, &s->atty, &s->gate, &s->up, &s->xn_final, &s->rstd_final, &s->logits, &s->lse,
        &s->hidden, &s->dhidden, &s->dgate, &s->dup, &s->dx, &s->dxn, &s->dq, &s->datty,
        &s->dk, &s->dv,
    };
    memcpy(slots, list, sizeof list);
}

static int shape_ok(int B, int T) {
    return B > 0 && T > 0 && T <= MT_TRAIN_MAX_T && (size_t)B * T <= MT_TRAIN_MAX_TOKENS;
}

size_t R(mt_train_activation_bytes_flags)(const mt_config *c, int B, int T, int flags) {
    if (!shape_ok(B, T)) return SIZE_MAX;
    size_t sizes[N_ACTS], n = 0;
    activation_sizes(c, B, T, flags, sizes);
    for (int i = 0; i < N_ACTS; i++) n += sizes[i];
    return n * sizeof(real);
}

size_t R(mt_train_activation_bytes)(const mt_config *c, int B, int T) {
    return R(mt_train_activation_bytes_flags)(c, B, T, 0);
}

size_t R(mt_train_state_bytes_flags)(const mt_config *c, int B, int T, int flags) {
    size_t acts = R(mt_train_activation_bytes_flags)(c, B, T, flags);
    if (acts == SIZE_MAX) return SIZE_MAX;
    size_t grads = mt_config_param_count(c) * sizeof(real);
    size_t batch = 4 * (size_t)B * T * sizeof(int);
    size_t rope = 2 * (size_t)T * (c->head_dim / 2) * sizeof(float);
    return acts + grads + batch + rope;
}

size_t R(mt_train_state_bytes)(const mt_config *c, int B, int T) {
    return R(mt_train_state_bytes_flags)(c, B, T, 0);
}

/* ---- parameters, gradients, trainable flags ----------------------------------------- */

/* index of the tensor that holds parameter offset off (offsets ascend in tensor order) */
static int tensor_index(const train_state *s, size_t off) {
    int lo = 0, hi = s->n_tensors - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->tensor_offset[mid] <= off) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* This precision's copy of the model tensor at p (NULL stays NULL: absent biases). */
static const real *param(const train_state *s, const float *p) {
    return p ? s->params + (p - s->model->params) : NULL;
}

real *R(mt_train_grad)(const train_state *s, const float *p) {
    if (!p) return NULL;
    size_t off = (size_t)(p - s->model->params);
    return s->trainable[tensor_index(s, off)] ? s->grads + off : NULL;
}

mt_status R(mt_train_set_trainable)(train_state *s, const char *name, int on) {
    if (!name) {
        memset(s->trainable, on != 0, (size_t)s->n_tensors);
        return MT_OK;
    }
    mt_tensor_ref *refs = malloc((size_t)s->n_tensors * sizeof *refs);
    if (!refs) return mt_error(MT_ERR_NOMEM, "out of memory for the tensor list");
    mt_model_tensors(s->model, refs, s->n_tensors);
    int found = -1;
    for (int i = 0; i < s->n_tensors && found < 0; i++)
        if (strcmp(refs[i].name, name) == 0) found = i;
    free(refs);
    if (found < 0) return mt_error(MT_ERR_ARG, "no tensor named \"%s\" in the model", name);
    s->trainable[found] = on != 0;
    return MT_OK;
}

void R(mt_train_set_target_weights)(train_state *s, const float *w) { s->target_weight = w; }
void R(mt_train_set_soft_targets)(train_state *s, const mt_soft_targets *soft) { s->soft = soft; }
/* The parameter gradients exist once some tensor is trainable: a frozen base (LoRA) never
 * allocates them. */
static mt_status ensure_grads(train_state *s) {
    if (s->grads) return MT_OK;
    int any = 0;
    for (int i = 0; i < s->n_tensors && !any; i++) any = s->trainable[i];
    if (!any) return MT_OK;
    s->grads = calloc(s->model->n_params ? s->model->n_params : 1, sizeof(real));
    return s->grads ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory for %zu gradients", s->model->n_params);
}

static size_t row_values_count(const struct mt_token_rows *r) {
    return (size_t)(1 + r->untied) * r->n * r->dim;
}

void R(mt_train_zero_grads)(train_state *s) {
    if (s->grads) memset(s->grads, 0, s->model->n_params * sizeof(real));
    if (s->lora) memset(s->lora_grads, 0, s->lora->n_params * sizeof(real));
    if (s->rows) memset(s->row_grads, 0, row_values_count(s->rows) * sizeof(real));
    if (s->mome_router_grads) memset(s->mome_router_grads, 0, s->mome->n_sites * s->mome->router_size * sizeof(real));
}

/* ---- create / free ------------------------------------------------------------------ */

void R(mt_train_free)(train_state *s) {
    if (!s) return;
#ifdef MT_REAL_DOUBLE
    free(s->params);
    free(s->lora_params);
#endif
    free(s->grads);
    free(s->lora_grads);
    free(s->lora_h);
    free(s->lora_dh);
    free(s->lora_xd);
    free(s->wbuf);
    free(s->row_of_id);
    free(s->row_grads);
#ifdef MT_REAL_DOUBLE
    free(s->mome_router);
    free(s->mome_bank);
#endif
    free(s->mome_router_grads);
    free(s->mome_q);
    free(s->mome_gate);
    free(s->mome_z);
    free(s->mome_slot_grads);
    free(s->mome_idx);
    free(s->mome_scratch);
    free(s->mome_ctx);
    free(s->mome_acc);
    free(s->tensor_offset);
    free(s->trainable);
    free(s->inputs);
    free(s->rope_cos);
    free(s->rope_sin);
    free(s->acts_memory);
    free(s);
}

static mt_status tensor_table(train_state *s) {
    int n = mt_model_tensors(s->model, NULL, 0);
    mt_tensor_ref *refs = malloc((size_t)n * sizeof *refs);
    s->tensor_offset = malloc((size_t)n * sizeof(size_t));
    s->trainable = malloc((size_t)n);
    if (!refs || !s->tensor_offset || !s->trainable) {
        free(refs);
        return mt_error(MT_ERR_NOMEM, "out of memory for the tensor table");
    }
    mt_model_tensors(s->model, refs, n);
    for (int i = 0; i < n; i++) {
        s->tensor_offset[i] = (size_t)(refs[i].data - s->model->params);
        s->trainable[i] = 1;
    }
    s->n_tensors = n;
    free(refs);
    return MT_OK;
}

static mt_status allocate_row_grads(train_state *s) {
    const struct mt_token_rows *r = s->rows = s->model->token_rows;
    int V = s->model->cfg.vocab_size;
    s->row_of_id = malloc((size_t)V * sizeof(int));
    s->row_grads = calloc(row_values_count(r) + 1, sizeof(real));
    if (!s->row_of_id || !s->row_grads) return mt_error(MT_ERR_NOMEM, "out of memory for token row gradients");
    for (int v = 0; v < V; v++) s->row_of_id[v] = -1;
    for (int i = 0; i < r->n; i++) s->row_of_id[r->ids[i]] = i;
    return MT_OK;
}

static real *copy_params(const float *src, size_t n) {
#ifdef MT_REAL_DOUBLE
    real *p = malloc((n ? n : 1) * sizeof(real));
    for (size_t i = 0; p && i < n; i++) p[i] = src[i];
    return p;
#else
    (void)n;
    return (real *)src;
#endif
}

static mt_status allocate_mome(train_state *s) {
    const struct mt_mome *mm = s->mome = s->model->mome;
    const mt_mome_shape *sh = &mm->shape;
    size_t BT = (size_t)s->B * s->T, slots = (size_t)mm->n_sites * BT * sh->H * sh->K;
    s->mome_router = copy_params(mm->router, mm->n_sites * mm->router_size);
    s->mome_bank = copy_params(mm->bank, mm->n_sites * mm->bank_size);
    if (!mm->freeze_router) s->mome_router_grads = calloc(mm->n_sites * mm->router_size + 1, sizeof(real));
    s->mome_q = malloc((size_t)mm->n_sites * BT * sh->H * sh->dk * sizeof(real));
    s->mome_gate = malloc(slots * sizeof(real));
    s->mome_z = malloc(slots * sizeof(real));
    s->mome_slot_grads = malloc(slots * 2 * sh->C * sizeof(real));
    s->mome_idx = malloc(slots * sizeof(int));
    s->mome_ctx = malloc((BT * sh->Cx + 1) * sizeof(real));
    s->mome_acc = malloc(((size_t)s->T * sh->Cx + 1) * sizeof(real)); /* one row at a time */
    s->mome_scratch = malloc(mt_mome_scratch_size(sh, (int)BT) * sizeof(real));
    if (!s->mome_router || !s->mome_bank || (!mm->freeze_router && !s->mome_router_grads) || !s->mome_q ||
        !s->mome_gate || !s->mome_z || !s->mome_slot_grads || !s->mome_idx || !s->mome_ctx || !s->mome_acc ||
        !s->mome_scratch)
        return mt_error(MT_ERR_NOMEM, "out of memory for the memory experts' training state");
    return MT_OK;
}

static mt_status allocate(train_state *s) {
    const mt_config *c = &s->model->cfg;
    size_t sizes[N_ACTS], BT = (size_t)s->B * s->T;
    real **slots[N_ACTS];
    activation_sizes(c, s->B, s->T, s->flags, sizes);
    activation_slots(s, slots);
    s->n_acts = 0;
    for (int i = 0; i < N_ACTS; i++) s->n_acts += sizes[i];
    s->acts_memory = malloc(s->n_acts * sizeof(real));
    s->inputs = malloc(4 * BT * sizeof(int));
    if (s->model->base) s->wbuf = malloc(mt_site_scratch_floats(c) * sizeof(float));
    if (!s->acts_memory || !s->inputs || (s->model->base && !s->wbuf))
        return mt_error(MT_ERR_NOMEM, "out of memory for a training state of %zu bytes",
                        R(mt_train_state_bytes_flags)(c, s->B, s->T, s->flags));
    real *p = s->acts_memory;
    for (int i = 0; i < N_ACTS; i++) {
        *slots[i] = p;
        p += sizes[i];
    }
    s->targets = s->inputs + BT;
    s->pos = s->targets + BT;
    s->doc = s->pos + BT;
#ifdef MT_REAL_DOUBLE
    if (s->model->base)
        return mt_error(MT_ERR_UNSUPPORTED, "the double-precision training pass needs an f32 base, not %s",
                        mt_model_base_dtype(s->model));
    s->params = malloc(s->model->n_params * sizeof(real));
    if (!s->params) return mt_error(MT_ERR_NOMEM, "out of memory for double parameters");
    for (size_t i = 0; i < s->model->n_params; i++) s->params[i] = s->model->params[i];
#else
    s->params = s->model->params;
#endif
    if (s->model->n_loras > 1 || (s->model->n_loras == 1 && s->model->lora_weights[0] != 1.0f))
        return mt_error(MT_ERR_ARG, "training needs exactly one attached adapter of weight 1 (%d attached): "
                        "merge the others first", s->model->n_loras);
    if (s->model->lora) {
        const struct mt_lora *l = s->lora = s->model->lora;
        s->lora_grads = calloc(l->n_params ? l->n_params : 1, sizeof(real));
        s->lora_h = malloc(BT * l->rank * sizeof(real));
        s->lora_dh = malloc(BT * l->rank * sizeof(real));
#ifdef MT_REAL_DOUBLE
        s->lora_params = malloc((l->n_params ? l->n_params : 1) * sizeof(real));
        if (s->lora_params)
            for (size_t i = 0; i < l->n_params; i++) s->lora_params[i] = l->params[i];
#else
        s->lora_params = l->params;
#endif
        if (!s->lora_grads || !s->lora_h || !s->lora_dh || !s->lora_params)
            return mt_error(MT_ERR_NOMEM, "out of memory for adapter gradients");
    }
    if (s->model->token_rows) {
        mt_status st = allocate_row_grads(s);
        if (st) return st;
    }
    if (s->model->mome) {
        mt_status st = allocate_mome(s);
        if (st) return st;
    }
    return mt_rope_tables(c, s->T, &s->rope_cos, &s->rope_sin);
}

mt_status R(mt_train_create_flags)(mt_model *m, int B, int T, int flags, train_state **out) {
    *out = NULL;
    if (!shape_ok(B, T))
        return mt_error(MT_ERR_ARG, "training batch of %d rows x %d tokens is outside the limits "
                        "(T <= %d, B*T <= %d)", B, T, MT_TRAIN_MAX_T, MT_TRAIN_MAX_TOKENS);
    train_state *s = calloc(1, sizeof *s);
    if (!s) return mt_error(MT_ERR_NOMEM, "out of memory for a training state");
    s->model = m;
    s->B = B;
    s->T = T;
    s->flags = flags;
    mt_status st = tensor_table(s);
    if (!st) st = allocate(s);
    if (st) {
        R(mt_train_free)(s);
        return st;
    }
    *out = s;
    return MT_OK;
}

mt_status R(mt_train_create)(mt_model *m, int B, int T, train_state **out) {
    return R(mt_train_create_flags)(m, B, T, 0, out);
}

/* ---- forward ------------------------------------------------------------------------ */

/* The activations of layer l, as slices of the per-layer arrays (with recomputation all
 * layers but the residual stream share slice 0). */
typedef struct {
    real *x, *x_mid, *x_next, *xn1, *xn2, *rstd1, *rstd2, *q, *k, *v, *att_lse, *atty, *gate, *up;
} layer_acts;

static layer_acts layer_slice(const train_state *s, int l) {
    const mt_config *c = &s->model->cfg;
    size_t BT = (size_t)s->B * s->T, C = (size_t)c->dim, F = (size_t)c->hidden_dim;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t H = (size_t)c->n_heads, x_l = (size_t)l;
    if (s->flags & MT_TRAIN_RECOMPUTE) l = 0;
    layer_acts a = {
        .x = s->x + x_l * BT * C, .x_next = s->x + (x_l + 1) * BT * C, .x_mid = s->x_mid + l * BT * C,
        .xn1 = s->xn1 + l * BT * C, .xn2 = s->xn2 + l * BT * C,
        .rstd1 = s->rstd1 + l * BT, .rstd2 = s->rstd2 + l * BT,
        .q = s->q + l * BT * qd, .k = s->k + l * BT * kvd, .v = s->v + l * BT * kvd,
        .att_lse = s->att_lse + l * BT * H, .atty = s->atty + l * BT * qd,
        .gate = s->gate + l * BT * F, .up = s->up + l * BT * F,
    };
    return a;
}

/* ---- adapter terms at the linear sites (model/adapter.h) ---- */

/* This precision's A and B of (layer l, site); 0 when the site has no adapter. */
static int adapter_site(const train_state *s, int l, int site, const real **a, const real **b,
                        size_t *a_off, size_t *b_off, int *in, int *out) {
    const struct mt_lora *lo = s->lora;
    if (!lo) return 0;
    size_t i = (size_t)l * MT_N_SITES + site;
    if (lo->a_offset[i] == MT_LORA_NONE) return 0;
    *a_off = lo->a_offset[i];
    *b_off = lo->b_offset[i];
    *a = s->lora_params + *a_off;
    *b = s->lora_params + *b_off;
    mt_linear_site_shape(&s->model->cfg, site, in, out);
    return 1;
}

/* ---- LoRA dropout ---- */

/* the mask of (l, site) is kernels' mt_dropout under this key */
static uint64_t dropout_site_key(const train_state *s, int l, int site) {
    return mt_mix64(s->dropout_key ^ mt_mix64(((uint64_t)l << 8) | (uint64_t)site));
}

static int dropout_on(const train_state *s) { return s->lora && s->lora_dropout > 0; }

/* y[BT, out] += the adapter term of (l, site) for input x[BT, in] (dropout(x) when on) */
static void adapter_forward(train_state *s, int l, int site, real *y, const real *x) {
    const real *a, *b;
    size_t ao, bo;
    int in, out, BT = s->B * s->T;
    if (!adapter_site(s, l, site, &a, &b, &ao, &bo, &in, &out)) return;
    if (dropout_on(s)) {
        R(mt_dropout)(s->lora_xd, x, (size_t)BT * in, dropout_site_key(s, l, site), s->lora_dropout, 0);
        x = s->lora_xd;
    }
    R(mt_lora_forward)(y, s->lora_h, x, a, b, s->lora->scale, BT, in, out, s->lora->rank);
}

/* dx += the adapter's input gradient; dA, dB += its parameter gradients. With dropout the
 * adapter saw x⊙mask: its parameter gradients use that, and its input gradient is masked. */
static void adapter_backward(train_state *s, int l, int site, real *dx, const real *dy, const real *x) {
    const real *a, *b;
    size_t ao, bo;
    int in, out, BT = s->B * s->T, r = s->lora->rank;
    if (!adapter_site(s, l, site, &a, &b, &ao, &bo, &in, &out)) return;
    if (!dropout_on(s)) {
        R(mt_lora_backward)(dx, s->lora_grads + ao, s->lora_grads + bo, s->lora_h, s->lora_dh, dy, x, a, b,
                            s->lora->scale, BT, in, out, r);
        return;
    }
    uint64_t key = dropout_site_key(s, l, site);
    size_t n = (size_t)BT * in;
    R(mt_dropout)(s->lora_xd, x, n, key, s->lora_dropout, 0);
    R(mt_lora_backward)(NULL, s->lora_grads + ao, s->lora_grads + bo, s->lora_h, s->lora_dh, dy, s->lora_xd, a, b,
                        s->lora->scale, BT, in, out, r);
    /* the gradient of dropout(x): (dh · A) ⊙ mask */
    memset(s->lora_xd, 0, n * sizeof(real));
    R(mt_matmul_backward)(s->lora_xd, NULL, NULL, s->lora_dh, NULL, a, BT, in, r);
    R(mt_dropout)(dx, s->lora_xd, n, key, s->lora_dropout, 1);
}

/* the [B*T, widest site input] dropout scratch, made on first use */
static mt_status ensure_dropout_scratch(train_state *s) {
    if (!dropout_on(s) || s->lora_xd) return MT_OK;
    if (!(s->lora_dropout < 1)) return mt_error(MT_ERR_ARG, "LoRA dropout %g must be in [0, 1)", s->lora_dropout);
    const mt_config *c = &s->model->cfg;
    size_t wide = (size_t)c->dim, qd = (size_t)c->n_heads * c->head_dim;
    if (qd > wide) wide = qd;
    if ((size_t)c->hidden_dim > wide) wide = (size_t)c->hidden_dim;
    s->lora_xd = malloc((size_t)s->B * s->T * wide * sizeof(real));
    return s->lora_xd ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory for LoRA dropout scratch");
}

/* The weight of a linear site in this precision: the parameters, or, for a bf16/Q8_0 base
 * (float build only), the matrix dequantised into s->wbuf, valid until the next call. */
static const real *site_w(train_state *s, int l, int site) {
#ifdef MT_REAL_DOUBLE
    return param(s, mt_linear_site_weight(s->model, l, site));
#else
    return mt_site_weight(s->model, l, site, s->wbuf);
#endif
}

/* ---- memory experts at the MLP output (model/mome.h) ---- */

/* The saved arrays of site `site`, for the current batch shape. */
static void mome_slices(const train_state *s, int site, real **q, int **idx, real **gate, real **z, real **sg) {
    const mt_mome_shape *sh = &s->mome->shape;
    size_t BT = (size_t)s->B * s->T, slots = BT * sh->H * sh->K;
    *q = s->mome_q + site * BT * sh->H * sh->dk;
    *idx = s->mome_idx + site * slots;
    *gate = s->mome_gate + site * slots;
    *z = s->mome_z + site * slots;
    *sg = s->mome_slot_grads + site * slots * 2 * sh->C;
}

/* out[BT, C] += the experts' output for the MLP input xn of layer l */
/* the keys of a site's keyed experts (float in both builds: never trained), else NULL */
static const float *mome_keys(const struct mt_mome *mm, int site) {
    return mm->keys ? mm->keys + (size_t)site * mm->n_experts * mm->shape.Cx : NULL;
}

static void mome_site_forward(train_state *s, int l, real *out, const real *xn) {
    const struct mt_mome *mm = s->mome;
    int site = mm->site_of_layer[l];
    if (site < 0) return;
    real *q, *gate, *z, *sg;
    int *idx;
    mome_slices(s, site, &q, &idx, &gate, &z, &sg);
    R(mt_mome_forward)(out, q, idx, gate, z, xn, s->mome_ctx, s->mome_router + site * mm->router_size,
                       s->mome_bank + site * mm->bank_size, mome_keys(mm, site), &mm->shape, s->B * s->T, s->mome_scratch);
}

/* dxn += the experts' input gradient; router grads +=; slot grads = per-slot (da, db) */
static void mome_site_backward(train_state *s, int l, real *dxn, const real *dout, const real *xn) {
    const struct mt_mome *mm = s->mome;
    int site = mm->site_of_layer[l];
    if (site < 0) return;
    real *q, *gate, *z, *sg;
    int *idx;
    mome_slices(s, site, &q, &idx, &gate, &z, &sg);
    real *drouter = s->mome_router_grads ? s->mome_router_grads + site * mm->router_size : NULL;
    R(mt_mome_backward)(dxn, drouter, sg, dout, xn, s->mome_ctx, q, idx, gate, z, s->mome_router + site * mm->router_size,
                        s->mome_bank + site * mm->bank_size, mome_keys(mm, site), &mm->shape, s->B * s->T,
                        s->mome_scratch);
}

static void layer_forward(train_state *s, int l) {
    const mt_config *c = &s->model->cfg;
    const mt_layer *L = &s->model->layers[l];
    layer_acts a = layer_slice(s, l);
    int BT = s->B * s->T, C = c->dim, F = c->hidden_dim;
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;

    R(mt_rmsnorm_forward_save)(a.xn1, a.rstd1, a.x, param(s, L->attn_norm), BT, C, c->norm_eps);
    R(mt_matmul_forward)(a.q, a.xn1, site_w(s, l, MT_SITE_Q), param(s, L->bq), BT, C, qd);
    R(mt_matmul_forward)(a.k, a.xn1, site_w(s, l, MT_SITE_K), param(s, L->bk), BT, C, kvd);
    R(mt_matmul_forward)(a.v, a.xn1, site_w(s, l, MT_SITE_V), param(s, L->bv), BT, C, kvd);
    if (s->lora) {
        adapter_forward(s, l, MT_SITE_Q, a.q, a.xn1);
        adapter_forward(s, l, MT_SITE_K, a.k, a.xn1);
        adapter_forward(s, l, MT_SITE_V, a.v, a.xn1);
    }
    R(mt_rope_forward)(a.q, s->pos, BT, c->n_heads, c->head_dim, c->rope_interleaved, s->rope_cos, s->rope_sin);
    R(mt_rope_forward)(a.k, s->pos, BT, c->n_kv_heads, c->head_dim, c->rope_interleaved, s->rope_cos, s->rope_sin);
    R(mt_attention_forward)(a.atty, a.att_lse, a.q, a.k, a.v, s->doc, s->B, s->T, c->n_heads,
                            c->n_kv_heads, c->head_dim);
    R(mt_matmul_forward)(a.x_mid, a.atty, site_w(s, l, MT_SITE_O), NULL, BT, qd, C);
    if (s->lora) adapter_forward(s, l, MT_SITE_O, a.x_mid, a.atty);
    R(mt_add)(a.x_mid, a.x, a.x_mid, (size_t)BT * C);

    R(mt_rmsnorm_forward_save)(a.xn2, a.rstd2, a.x_mid, param(s, L->ffn_norm), BT, C, c->norm_eps);
    R(mt_matmul_forward)(a.gate, a.xn2, site_w(s, l, MT_SITE_GATE), NULL, BT, C, F);
    R(mt_matmul_forward)(a.up, a.xn2, site_w(s, l, MT_SITE_UP), NULL, BT, C, F);
    if (s->lora) {
        adapter_forward(s, l, MT_SITE_GATE, a.gate, a.xn2);
        adapter_forward(s, l, MT_SITE_UP, a.up, a.xn2);
    }
    R(mt_swiglu_forward)(s->hidden, a.gate, a.up, (size_t)BT * F);
    R(mt_matmul_forward)(a.x_next, s->hidden, site_w(s, l, MT_SITE_DOWN), NULL, BT, F, C);
    if (s->lora) adapter_forward(s, l, MT_SITE_DOWN, a.x_next, s->hidden);
    if (s->mome) mome_site_forward(s, l, a.x_next, a.xn2);
    R(mt_add)(a.x_next, a.x_mid, a.x_next, (size_t)BT * C);
}

/* Checks the batch against the model and copies it into the state (the backward needs it). */
static mt_status take_batch(train_state *s, const int *inputs, const int *targets, const int *pos,
                            const int *doc) {
    int BT = s->B * s->T, V = s->model->cfg.vocab_size;
    for (int i = 0; i < BT; i++) {
        if (inputs[i] < 0 || inputs[i] >= V)
            return mt_error(MT_ERR_ARG, "input token %d at %d is outside the vocabulary of %d", inputs[i], i, V);
        if (targets[i] >= V)
            return mt_error(MT_ERR_ARG, "target token %d at %d is outside the vocabulary of %d", targets[i], i, V);
        int p = pos ? pos[i] : i % s->T;
        if (p < 0 || p >= s->T)
            return mt_error(MT_ERR_ARG, "position %d at %d is outside [0, %d)", p, i, s->T);
        s->inputs[i] = inputs[i];
        s->targets[i] = targets[i];
        s->pos[i] = p;
        s->doc[i] = doc ? doc[i] : 0;
    }
    return MT_OK;
}

mt_status R(mt_train_forward)(train_state *s, const int *inputs, const int *targets, const int *pos,
                              const int *doc, double loss_scale, double *nll_sum, long *n_targets) {
    const mt_config *c = &s->model->cfg;
    int BT = s->B * s->T;
    s->have_forward = 0;
    mt_status st = take_batch(s, inputs, targets, pos, doc);
    if (st == MT_OK) st = ensure_dropout_scratch(s);
    if (st) return st;
    R(mt_embedding_forward)(s->x, s->inputs, param(s, s->model->tok_embd), BT, c->dim);
    if (s->mome && s->mome->shape.Cx) /* row by row: a row starts a document */
        for (int b = 0; b < s->B; b++) {
            size_t at = (size_t)b * s->T;
            R(mt_mome_context)(s->mome_ctx + at * s->mome->shape.Cx, s->mome_acc, s->inputs + at, s->pos + at, s->T,
                               &s->mome->context, NULL);
        }
    for (int l = 0; l < c->n_layers; l++) layer_forward(s, l);
    real *x_final = s->x + (size_t)c->n_layers * BT * c->dim;
    R(mt_rmsnorm_forward_save)(s->xn_final, s->rstd_final, x_final, param(s, s->model->norm_final),
                               BT, c->dim, c->norm_eps);
    R(mt_matmul_forward)(s->logits, s->xn_final, param(s, s->model->output), NULL, BT, c->dim,
                         c->vocab_size);
    long count = 0;
    double nll = R(mt_cross_entropy_forward)(s->lse, s->logits, s->targets, s->soft, BT, c->vocab_size, &count);
    if (nll_sum) *nll_sum = nll;
    if (n_targets) *n_targets = count;
    s->loss_scale = loss_scale;
    s->have_forward = 1;
    return MT_OK;
}

/* ---- backward ----------------------------------------------------------------------- */

static void zero(real *p, size_t n) { memset(p, 0, n * sizeof(real)); }

/* On entry s->dx = ∂loss/∂x_next; on exit ∂loss/∂x (layer l's input). */
static void layer_backward(train_state *s, int l) {
    const mt_config *c = &s->model->cfg;
    const mt_layer *L = &s->model->layers[l];
    layer_acts a = layer_slice(s, l);
    int BT = s->B * s->T, C = c->dim, F = c->hidden_dim;
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    size_t nF = (size_t)BT * F;

    /* MLP: x_next = x_mid + down(silu(gate)·up); the residual passes dx through unchanged */
    R(mt_swiglu_forward)(s->hidden, a.gate, a.up, nF);
    zero(s->dhidden, nF);
    R(mt_matmul_backward)(s->dhidden, R(mt_train_grad)(s, L->w_down), NULL, s->dx, s->hidden,
                          site_w(s, l, MT_SITE_DOWN), BT, F, C);
    if (s->lora) adapter_backward(s, l, MT_SITE_DOWN, s->dhidden, s->dx, s->hidden);
    zero(s->dgate, nF);
    zero(s->dup, nF);
    R(mt_swiglu_backward)(s->dgate, s->dup, s->dhidden, a.gate, a.up, nF);
    zero(s->dxn, (size_t)BT * C);
    R(mt_matmul_backward)(s->dxn, R(mt_train_grad)(s, L->w_gate), NULL, s->dgate, a.xn2,
                          site_w(s, l, MT_SITE_GATE), BT, C, F);
    R(mt_matmul_backward)(s->dxn, R(mt_train_grad)(s, L->w_up), NULL, s->dup, a.xn2,
                          site_w(s, l, MT_SITE_UP), BT, C, F);
    if (s->lora) {
        adapter_backward(s, l, MT_SITE_GATE, s->dxn, s->dgate, a.xn2);
        adapter_backward(s, l, MT_SITE_UP, s->dxn, s->dup, a.xn2);
    }
    if (s->mome) mome_site_backward(s, l, s->dxn, s->dx, a.xn2);
    R(mt_rmsnorm_backward)(s->dx, R(mt_train_grad)(s, L->ffn_norm), s->dxn, a.x_mid,
                           param(s, L->ffn_norm), a.rstd2, BT, C);

    /* attention: x_mid = x + o(attention(rope(q), rope(k), v)) */
    zero(s->datty, (size_t)BT * qd);
    R(mt_matmul_backward)(s->datty, R(mt_train_grad)(s, L->wo), NULL, s->dx, a.atty,
                          site_w(s, l, MT_SITE_O), BT, qd, C);
    if (s->lora) adapter_backward(s, l, MT_SITE_O, s->datty, s->dx, a.atty);
    zero(s->dq, (size_t)BT * qd);
    zero(s->dk, (size_t)BT * kvd);
    zero(s->dv, (size_t)BT * kvd);
    R(mt_attention_backward)(s->dq, s->dk, s->dv, s->datty, a.atty, a.att_lse, a.q, a.k, a.v,
                             s->doc, s->B, s->T, c->n_heads, c->n_kv_heads, c->head_dim);
    R(mt_rope_backward)(s->dq, s->pos, BT, c->n_heads, c->head_dim, c->rope_interleaved, s->rope_cos, s->rope_sin);
    R(mt_rope_backward)(s->dk, s->pos, BT, c->n_kv_heads, c->head_dim, c->rope_interleaved, s->rope_cos, s->rope_sin);
    zero(s->dxn, (size_t)BT * C);
    R(mt_matmul_backward)(s->dxn, R(mt_train_grad)(s, L->wq), R(mt_train_grad)(s, L->bq), s->dq,
                          a.xn1, site_w(s, l, MT_SITE_Q), BT, C, qd);
    R(mt_matmul_backward)(s->dxn, R(mt_train_grad)(s, L->wk), R(mt_train_grad)(s, L->bk), s->dk,
                          a.xn1, site_w(s, l, MT_SITE_K), BT, C, kvd);
    R(mt_matmul_backward)(s->dxn, R(mt_train_grad)(s, L->wv), R(mt_train_grad)(s, L->bv), s->dv,
                          a.xn1, site_w(s, l, MT_SITE_V), BT, C, kvd);
    if (s->lora) {
        adapter_backward(s, l, MT_SITE_Q, s->dxn, s->dq, a.xn1);
        adapter_backward(s, l, MT_SITE_K, s->dxn, s->dk, a.xn1);
        adapter_backward(s, l, MT_SITE_V, s->dxn, s->dv, a.xn1);
    }
    R(mt_rmsnorm_backward)(s->dx, R(mt_train_grad)(s, L->attn_norm), s->dxn, a.x,
                           param(s, L->attn_norm), a.rstd1, BT, C);
}

/* ---- trainable token rows (model/adapter.h) ---- */

/* Head rows: d row_v += Σ_t dlogits[t, v] · xn_final[t] for each trained id v (into the
 * embedding entries when the head is tied, so both uses add up). */
static void head_row_grads(train_state *s) {
    const struct mt_token_rows *r = s->rows;
    int BT = s->B * s->T, C = s->model->cfg.dim, V = s->model->cfg.vocab_size;
    for (int i = 0; i < r->n; i++) {
        real *g = s->row_grads + (size_t)(r->untied ? r->n + i : i) * C;
        for (int t = 0; t < BT; t++) {
            real d = s->logits[(size_t)t * V + r->ids[i]];
            if (d == 0) continue;
            const real *xn = s->xn_final + (size_t)t * C;
            for (int j = 0; j < C; j++) g[j] += d * xn[j];
        }
    }
}

/* Embedding rows: d row_v += dx[t] for every position whose input is v. */
static void embedding_row_grads(train_state *s) {
    int BT = s->B * s->T, C = s->model->cfg.dim;
    for (int t = 0; t < BT; t++) {
        int i = s->row_of_id[s->inputs[t]];
        if (i < 0) continue;
        real *g = s->row_grads + (size_t)i * C;
        const real *dx = s->dx + (size_t)t * C;
        for (int j = 0; j < C; j++) g[j] += dx[j];
    }
}

mt_status R(mt_train_backward)(train_state *s) {
    if (!s->have_forward)
        return mt_error(MT_ERR_ARG, "training backward without a forward since the last backward");
    s->have_forward = 0;
    mt_status st = ensure_grads(s);
    if (st) return st;
    const mt_config *c = &s->model->cfg;
    const mt_model *m = s->model;
    int BT = s->B * s->T, C = c->dim;

    /* head: logits = rmsnorm(x_final)·output^T; the logits become dlogits in place */
    R(mt_cross_entropy_backward)(s->logits, s->logits, s->lse, s->targets, s->soft, s->loss_scale, BT,
                                 c->vocab_size);
    for (int t = 0; s->target_weight && t < BT; t++) {
        real w = s->target_weight[t], *row = s->logits + (size_t)t * c->vocab_size;
        if (w != 1)
            for (int v = 0; v < c->vocab_size; v++) row[v] *= w;
    }
    zero(s->dxn, (size_t)BT * C);
    R(mt_matmul_backward)(s->dxn, R(mt_train_grad)(s, m->output), NULL, s->logits, s->xn_final,
                          param(s, m->output), BT, C, c->vocab_size);
    if (s->rows) head_row_grads(s);
    zero(s->dx, (size_t)BT * C);
    R(mt_rmsnorm_backward)(s->dx, R(mt_train_grad)(s, m->norm_final), s->dxn,
                           s->x + (size_t)c->n_layers * BT * C, param(s, m->norm_final),
                           s->rstd_final, BT, C);
    if (s->grads_ready) s->grads_ready(s->grads_ready_user, c->n_layers);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        /* recomputation: rerun the layer from its saved input (x[l+1] is rewritten with the
         * same values; nothing reads it any more) */
        if (s->flags & MT_TRAIN_RECOMPUTE) layer_forward(s, l);
        layer_backward(s, l);
        if (s->grads_ready) s->grads_ready(s->grads_ready_user, l);
    }
    real *dembd = R(mt_train_grad)(s, m->tok_embd);
    if (dembd) R(mt_embedding_backward)(dembd, s->dx, s->inputs, BT, C);
    if (s->rows) embedding_row_grads(s);
    if (s->grads_ready) s->grads_ready(s->grads_ready_user, -1);
    return MT_OK;
}
