/* The training state and its functions, declared once per precision by train_model.h (with
 * MT_TR_REAL = float / double and MT_TR_FN(name) = name / name##_f64); do not include it
 * directly. See train_model.h for how they are used. */
#define REAL_ MT_TR_REAL

typedef struct MT_TR_FN(mt_train_state) {
    mt_model *model;          /* config and tensor layout (and, in float, the parameters) */
    int B, T;
    int flags;                /* MT_TRAIN_RECOMPUTE or 0 */
    REAL_ *params;            /* float: model->params, trained in place; double: owned copy */
    REAL_ *grads;             /* [model->n_params], same offsets as model->params; NULL until
                                 a backward with some tensor trainable (never for LoRA) */
    int n_tensors;
    size_t *tensor_offset;    /* [n_tensors]: offset of each tensor in params, ascending */
    unsigned char *trainable; /* [n_tensors]: 1 = compute this tensor's weight gradient */
    int *inputs, *targets, *pos, *doc; /* [B*T] copies of the last forward's batch */
    float *rope_cos, *rope_sin;        /* [T, head_dim/2] */
    double loss_scale;        /* of the last forward; the backward differentiates scale·Σ NLL */
    int have_forward;         /* the backward needs a forward since the last backward */

    REAL_ *acts_memory;       /* every array below lives in this one allocation */
    size_t n_acts;            /* its length in elements */
    /* saved by the forward; per layer arrays are [n_layers, B*T, width] (with
     * MT_TRAIN_RECOMPUTE every one but x is [1, B*T, width]: the layer being worked on) */
    REAL_ *x;                 /* [n_layers + 1, B*T, dim] residual stream: input of layer l, final */
    REAL_ *x_mid;             /* [n_layers, B*T, dim] after the attention residual */
    REAL_ *xn1, *xn2;         /* [n_layers, B*T, dim] normed inputs of attention and MLP */
    REAL_ *rstd1, *rstd2;     /* [n_layers, B*T] their 1/rms */
    REAL_ *q;                 /* [n_layers, B*T, n_heads*head_dim] after RoPE */
    REAL_ *k, *v;             /* [n_layers, B*T, n_kv_heads*head_dim] (k after RoPE) */
    REAL_ *att_lse;           /* [n_layers, B*T, n_heads] log-sum-exp of each attention row
                               * (the backward recomputes the probabilities from it) */
    REAL_ *atty;              /* [n_layers, B*T, n_heads*head_dim] attention output */
    REAL_ *gate, *up;         /* [n_layers, B*T, hidden_dim] MLP pre-activations */
    REAL_ *xn_final;          /* [B*T, dim] */
    REAL_ *rstd_final;        /* [B*T] */
    REAL_ *logits;            /* [B*T, vocab]; the backward turns them into dlogits in place */
    REAL_ *lse;               /* [B*T] log-sum-exp of each logits row */
    /* scratch for one layer at a time */
    REAL_ *hidden;            /* [B*T, hidden_dim] silu(gate)*up, recomputed in the backward */
    REAL_ *dhidden, *dgate, *dup; /* [B*T, hidden_dim] */
    REAL_ *dx;                /* [B*T, dim] gradient of the residual stream */
    REAL_ *dxn;               /* [B*T, dim] gradient of a norm's output */
    REAL_ *dq, *datty;        /* [B*T, n_heads*head_dim] */
    REAL_ *dk, *dv;           /* [B*T, n_kv_heads*head_dim] */

    /* the adapter attached to the model when the state was made (model/adapter.h), or NULL:
     * its parameters (float: the adapter's own, trained in place; double: an owned copy),
     * their gradients (same offsets), and two [B*T, rank] scratch arrays */
    const struct mt_lora *lora;
    REAL_ *lora_params, *lora_grads, *lora_h, *lora_dh;
    /* LoRA dropout (PEFT's lora_dropout: the adapter sees dropout(x), the base x): the rate,
     * 0 = off (set it to 0 for evaluation), and the key the caller sets before each forward;
     * the mask of element i at (layer, site) is a hash of (key, layer, site, i), so the
     * backward regenerates it instead of storing it. lora_xd: [B*T, widest input] scratch. */
    double lora_dropout;
    uint64_t dropout_key;
    REAL_ *lora_xd;
    float *wbuf;              /* one dequantised site weight (bf16/Q8_0 base), else NULL */

    /* trainable token rows attached to the model when the state was made (model/adapter.h),
     * or NULL: row_of_id[v] is the entry of token v in them or -1; row_grads has the shape of
     * rows->values (embedding rows, then head rows when untied) and gets their gradient */
    const struct mt_token_rows *rows;
    int *row_of_id;
    REAL_ *row_grads;

    /* memory experts attached when the state was made (model/mome.h), or NULL: router and
     * bank (float: the layer's own, trained in place; double: owned copies), the router's
     * gradient (NULL when frozen), and per site what the forward saved for the backward:
     * queries [BT, H*dk], chosen experts, gates and pre-activations [BT*H*K], and the
     * per-slot expert gradients [BT*H*K, 2C] (da, db) the sparse optimizer sums per expert */
    const float *target_weight; /* [B*T] or NULL: per-target loss weights (mt_train_set_target_weights) */
    const mt_soft_targets *soft;  /* or NULL: distillation targets (mt_train_set_soft_targets) */
    const struct mt_mome *mome;
    REAL_ *mome_router, *mome_bank, *mome_router_grads;
    REAL_ *mome_q, *mome_gate, *mome_z, *mome_slot_grads;
    int *mome_idx;
    REAL_ *mome_scratch;    /* mt_mome_scratch_size(shape, B·T): one site at a time */
    REAL_ *mome_ctx, *mome_acc; /* [B*T, Cx] routing context of the batch; [T, Cx] running sums of a row */

    /* Called by the backward, when not NULL, as the weight gradients become final: with
     * layer = n_layers after the head and final norm, l after layer l (walking down), -1 at
     * the end (embedding and token rows). Data-parallel training starts its all-reduce of
     * what is final from here (dist/dist.h) while the layers below still compute. */
    void (*grads_ready)(void *user, int layer);
    void *grads_ready_user;
} MT_TR_FN(mt_train_state);

/* Bytes of the activation allocation, and of everything a state allocates (activations,
 * gradients, batch copies, RoPE tables), for a batch of B rows of T tokens. SIZE_MAX when
 * the shape is outside the limits above. */
size_t MT_TR_FN(mt_train_activation_bytes)(const mt_config *cfg, int B, int T);
size_t MT_TR_FN(mt_train_state_bytes)(const mt_config *cfg, int B, int T);
/* The same for a state made with these flags (MT_TRAIN_RECOMPUTE). */
size_t MT_TR_FN(mt_train_activation_bytes_flags)(const mt_config *cfg, int B, int T, int flags);
size_t MT_TR_FN(mt_train_state_bytes_flags)(const mt_config *cfg, int B, int T, int flags);

/* Makes a state for batches of B rows of T tokens (an adapter attached to m at this point
 * takes part in every forward and backward and gets gradients in s->lora_grads) (T <= MT_TRAIN_MAX_T, B*T <=
 * MT_TRAIN_MAX_TOKENS). Gradients start at zero, every tensor trainable. The model must
 * outlive the state. */
mt_status MT_TR_FN(mt_train_create)(mt_model *m, int B, int T, MT_TR_FN(mt_train_state) **out);
/* The same with flags (MT_TRAIN_RECOMPUTE); mt_train_create is flags 0. */
mt_status MT_TR_FN(mt_train_create_flags)(mt_model *m, int B, int T, int flags,
                                          MT_TR_FN(mt_train_state) **out);
void MT_TR_FN(mt_train_free)(MT_TR_FN(mt_train_state) *s);

/* Runs the batch (all arrays [B*T], row-major by row b then token t). inputs in [0, vocab);
 * targets < vocab, negative = not scored; pos in [0, T), NULL = 0..T-1 in every row; doc
 * NULL = one document per row. Sets *nll_sum (Σ NLL over scored tokens; the loss is
 * loss_scale * nll_sum) and *n_targets (either may be NULL). */
mt_status MT_TR_FN(mt_train_forward)(MT_TR_FN(mt_train_state) *s, const int *inputs,
                                     const int *targets, const int *pos, const int *doc,
                                     double loss_scale, double *nll_sum, long *n_targets);
/* grads += d(loss_scale * Σ NLL)/d(params) for trainable tensors, for the last forward
 * (which it consumes: the logits become their gradient). */
mt_status MT_TR_FN(mt_train_backward)(MT_TR_FN(mt_train_state) *s);
void MT_TR_FN(mt_train_zero_grads)(MT_TR_FN(mt_train_state) *s);
/* The backward then differentiates loss_scale · Σ_t w[t]·NLL_t (w [B*T], NULL = all 1; the
 * caller keeps w alive until the backward). Forward's nll_sum stays unweighted. */
void MT_TR_FN(mt_train_set_target_weights)(MT_TR_FN(mt_train_state) *s, const float *w);
/* Positions [B*T] with a soft target list (kernels.h mt_soft_targets, ids [B*T*k]) are scored
 * against that distribution instead of their hard target, in the forward and the backward
 * (distillation); NULL = none. The caller keeps it alive until the backward. */
void MT_TR_FN(mt_train_set_soft_targets)(MT_TR_FN(mt_train_state) *s, const mt_soft_targets *soft);

/* Sets the flag of the tensor with this HF name ("model.layers.0.mlp.up_proj.weight"), or of
 * every tensor when name is NULL. MT_ERR_ARG for an unknown name. */
mt_status MT_TR_FN(mt_train_set_trainable)(MT_TR_FN(mt_train_state) *s, const char *name, int on);
/* The gradient of the tensor at model pointer p (one of m->tok_embd, m->layers[l].wq, ...),
 * or NULL when p is NULL or the tensor is frozen. */
REAL_ *MT_TR_FN(mt_train_grad)(const MT_TR_FN(mt_train_state) *s, const float *p);

#undef REAL_
