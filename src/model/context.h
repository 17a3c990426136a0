/* A context: everything one sequence needs to run on a shared, read-only model (llama.cpp's
 * llama_context next to llama_model). It holds the KV cache and its position, the adapters
 * it applies (LoRA pairs unmerged with their weights, memory experts with their routing
 * context, trainable token rows), and the activation scratch of the forward pass. Many
 * contexts may run on one model at once, each in its own thread; a context itself is used by
 * one thread at a time.
 *
 * The model's own attached adapters (mt_model_set_lora, mt_model_attach_*: what training and
 * the CLI use) are those of the model's default context, m->infer, which mt_forward runs. */
#ifndef MT_MODEL_CONTEXT_H
#define MT_MODEL_CONTEXT_H
#include "model/model.h"

#define MT_MAX_DECODE_BATCH 256

struct mt_context {
    const mt_model *m;
    int n_ctx;                     /* KV cache length */
    int pos;                       /* tokens held in the cache (mt_context_decode appends) */
    int at;                        /* position of the rows the forward is running */
    /* the adapter set, not owned */
    const struct mt_lora *loras[MT_MAX_ADAPTERS];
    float lora_weights[MT_MAX_ADAPTERS];
    int n_loras;
    const struct mt_mome *mome;
    const struct mt_token_rows *rows;
    /* the cache and scratch */
    float *k_cache, *v_cache;      /* [n_layers, n_ctx, kv_dim] */
    float *rope_cos, *rope_sin;    /* [n_ctx, head_dim/2] */
    float *x, *xn, *q, *k, *v, *att, *gate, *up; /* activations for one chunk */
    float *scratch;                /* attention scores, per thread */
    int scratch_threads;           /* the thread count scratch was sized for */
    float *lora_h;                 /* [CHUNK, lora_rank_cap] adapter scratch */
    int lora_rank_cap;
    const struct mt_mome *mome_for; /* the memory experts the mome scratch was sized for */
    float *mome_y, *mome_q, *mome_gate, *mome_z;
    int *mome_idx;
    float *mome_ctx;               /* [CHUNK, Cx] the routing context of the chunk */
    float *mome_scratch;           /* mt_mome_scratch_size(shape, CHUNK) */
    float *mome_acc;               /* [n_ctx, Cx] its running sums, position by position */
    float *wbuf;                   /* one dequantised site weight, NULL with an f32 base */
    float *row_logit;              /* [1] scratch for token-row head logits */
    int *posv;
};

/* Runs ids[0..T) at positions pos..pos+T-1 of c (the cache must hold positions < pos), like
 * mt_forward. Does not move c->pos. */
mt_status mt_context_forward(mt_context *c, const int *ids, int T, int pos, float *logits, int all_logits);
/* The model's default context (created on first use with the model's attached adapters). */
mt_status mt_model_default_context(mt_model *m, mt_context **out);

/* The ids mt_generate runs for a prompt: its tokens with BOS, or BOS (EOS) alone for an empty
 * prompt. *ids is malloc'd. */
mt_status mt_prompt_ids(const mt_model *m, const char *prompt, int **ids, int *n);
/* Whether generation stops at token id (EOS, BOS, the config's EOS). */
int mt_is_stop_token(const mt_model *m, int id);

#endif
