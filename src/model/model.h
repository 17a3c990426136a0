/* The in-memory model: config, all parameters in one f32 allocation addressed through
 * named pointers (llm.c style), and the tokenizer that came with it.
 *
 * Weight shapes are row-major [out, in] as in PyTorch/HF. Q and K rows follow the layout
 * in cfg.rope_interleaved: 1 = adjacent pairs rotate (llama2.c, GGUF), 0 = halves rotate
 * (HF). Writers convert with mt_permute_qk_rows() when a format needs the other layout. */
#ifndef MT_MODEL_MODEL_H
#define MT_MODEL_MODEL_H
#include <stddef.h>
#include "memtune.h"

#define MT_MAX_ADAPTERS 16

typedef struct {
    float *attn_norm; /* [dim] */
    float *wq;        /* [n_heads*head_dim, dim] */
    float *wk;        /* [n_kv_heads*head_dim, dim] */
    float *wv;        /* [n_kv_heads*head_dim, dim] */
    float *bq;        /* [n_heads*head_dim] or NULL */
    float *bk;        /* [n_kv_heads*head_dim] or NULL */
    float *bv;        /* [n_kv_heads*head_dim] or NULL */
    float *wo;        /* [dim, n_heads*head_dim] */
    float *ffn_norm;  /* [dim] */
    float *w_gate;    /* [hidden_dim, dim] */
    float *w_up;      /* [hidden_dim, dim] */
    float *w_down;    /* [dim, hidden_dim] */
} mt_layer;

struct mt_model {
    mt_config cfg;
    float *params;      /* one allocation holding every tensor below */
    size_t n_params;
    float *tok_embd;    /* [vocab, dim] */
    float *norm_final;  /* [dim] */
    float *output;      /* [vocab, dim]; == tok_embd when tied */
    mt_layer *layers;   /* [n_layers] */
    mt_tokenizer *tok;  /* may be NULL */
    char *chat_template;/* from tokenizer_config.json / GGUF, may be NULL */
    void *infer;        /* lazily created inference state (KV cache), see forward.c */
    int context_override; /* > 0: inference context set by mt_model_set_context */
    /* attached adapters (model/adapter.h), not owned: inference applies each, unmerged, with
     * its weight; training uses lora (== loras[0]) and needs exactly one, of weight 1 */
    struct mt_lora *lora;
    struct mt_lora *loras[MT_MAX_ADAPTERS];
    float lora_weights[MT_MAX_ADAPTERS];
    int n_loras;
    /* the linear sites' weights in bf16 / Q8_0 (model/base_store.h), or NULL: all f32 */
    struct mt_base_store *base;
    struct mt_token_rows *token_rows; /* attached trainable token rows or NULL; not owned */
    struct mt_mome *mome; /* attached memory-expert layer or NULL (model/mome.h); not owned */
};

/* One named tensor of the model, for loaders and writers. Names are the HF names
 * ("model.layers.3.self_attn.q_proj.weight"); rows x cols (cols == 1 for vectors, with
 * rows == length). */
typedef struct {
    char name[96];
    float *data;
    int rows, cols;
    int is_vector;
    int layer;          /* -1 for global tensors */
    int kind;           /* mt_tensor_kind */
} mt_tensor_ref;

typedef enum {
    MT_T_EMBED, MT_T_NORM_FINAL, MT_T_OUTPUT,
    MT_T_ATTN_NORM, MT_T_WQ, MT_T_WK, MT_T_WV, MT_T_BQ, MT_T_BK, MT_T_BV, MT_T_WO,
    MT_T_FFN_NORM, MT_T_GATE, MT_T_UP, MT_T_DOWN,
} mt_tensor_kind;

/* Allocates params for cfg (zeroed) and sets every pointer. */
mt_status mt_model_alloc(const mt_config *cfg, mt_model **out);
/* Lists the model's tensors in a fixed order (embedding, layers, final norm, output if
 * untied). Returns the count; fills at most max entries of out (out may be NULL). */
int mt_model_tensors(const mt_model *m, mt_tensor_ref *out, int max);

/* The model's pointer slot of a tensor kind (layer ignored for global tensors). */
float **mt_model_tensor_slot(mt_model *m, int kind, int layer);
/* Frees a bf16/Q8_0 base store (model/base_store.c). */
void mt_model_free_base(mt_model *m);

/* Permute rows of a Q or K projection (or bias, cols == 1) between the two RoPE layouts.
 * to_interleaved=1: HF rotate-half -> interleaved pairs; 0: the inverse. dst != src. */
void mt_permute_qk_rows(float *dst, const float *src, int n_heads, int head_dim, int cols,
                        int to_interleaved);

/* Fill in defaults for a config (head_dim, eps, theta...) and validate. */
void mt_config_defaults(mt_config *cfg);

#endif
