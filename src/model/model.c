/* Model memory: the parameter plan (sizes computed in one place, all tensors in one
 * allocation), the fixed tensor list used by every loader and writer, the Q/K row
 * permutation between RoPE layouts, and random initialisation. */
#include "model/model.h"
#include "model/base_store.h"
#include "model/adapter.h"
#include "model/forward.h"
#include "core/error.h"
#include "core/rng.h"
#include "tokenizer/tokenizer.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

void mt_config_defaults(mt_config *c) {
    if (!c->arch[0]) snprintf(c->arch, sizeof c->arch, "llama");
    if (c->n_kv_heads <= 0) c->n_kv_heads = c->n_heads;
    if (c->head_dim <= 0 && c->n_heads > 0) c->head_dim = c->dim / c->n_heads;
    if (c->norm_eps <= 0) c->norm_eps = 1e-5f;
    if (c->rope_theta <= 0) c->rope_theta = 10000.0f;
    if (c->max_seq_len <= 0) c->max_seq_len = 2048;
}

mt_status mt_config_validate(const mt_config *c, const char *what) {
    const char *w = what ? what : "config";
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->head_dim <= 0 || c->vocab_size <= 0 || c->max_seq_len <= 0)
        return mt_error(MT_ERR_FORMAT, "%s: sizes must be positive (dim %d, hidden %d, layers %d, "
                        "heads %d, kv heads %d, head_dim %d, vocab %d, context %d)", w, c->dim,
                        c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim,
                        c->vocab_size, c->max_seq_len);
    /* Bounds keep size arithmetic far from overflow on untrusted headers. */
    if (c->dim > (1 << 16) || c->hidden_dim > (1 << 18) || c->n_layers > 1024 ||
        c->n_heads > 1024 || c->head_dim > 1024 || c->vocab_size > (1 << 22) ||
        c->max_seq_len > (1 << 22))
        return mt_error(MT_ERR_FORMAT, "%s: implausibly large sizes", w);
    if (c->n_heads % c->n_kv_heads != 0)
        return mt_error(MT_ERR_FORMAT, "%s: %d heads is not a multiple of %d KV heads", w,
                        c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return mt_error(MT_ERR_FORMAT, "%s: head_dim %d must be even for RoPE", w, c->head_dim);
    if (!(c->norm_eps > 0) || !(c->rope_theta > 0))
        return mt_error(MT_ERR_FORMAT, "%s: rms eps and rope theta must be positive", w);
    if (c->rope_scaling == MT_ROPE_SCALING_LLAMA3 &&
        (!(c->rope_factor > 0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
         c->rope_original_max_pos <= 0))
        return mt_error(MT_ERR_FORMAT, "%s: invalid llama3 rope scaling parameters", w);
    return MT_OK;
}

/* Sizes of each tensor kind, in floats. The only place that knows the parameter plan. */
static size_t tensor_rows(const mt_config *c, int kind) {
    size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
    switch (kind) {
    case MT_T_EMBED: case MT_T_OUTPUT: return (size_t)c->vocab_size;
    case MT_T_WQ: case MT_T_BQ: return q;
    case MT_T_WK: case MT_T_WV: case MT_T_BK: case MT_T_BV: return kv;
    case MT_T_WO: case MT_T_DOWN: return (size_t)c->dim;
    case MT_T_GATE: case MT_T_UP: return (size_t)c->hidden_dim;
    default: return (size_t)c->dim; /* norms */
    }
}

static size_t tensor_cols(const mt_config *c, int kind) {
    switch (kind) {
    case MT_T_WO: return (size_t)c->n_heads * c->head_dim;
    case MT_T_DOWN: return (size_t)c->hidden_dim;
    case MT_T_NORM_FINAL: case MT_T_ATTN_NORM: case MT_T_FFN_NORM:
    case MT_T_BQ: case MT_T_BK: case MT_T_BV: return 1;
    default: return (size_t)c->dim;
    }
}

static const int layer_kinds[] = {MT_T_ATTN_NORM, MT_T_WQ, MT_T_WK, MT_T_WV, MT_T_BQ, MT_T_BK,
                                  MT_T_BV, MT_T_WO, MT_T_FFN_NORM, MT_T_GATE, MT_T_UP, MT_T_DOWN};
#define N_LAYER_KINDS ((int)(sizeof layer_kinds / sizeof layer_kinds[0]))

static int kind_present(const mt_config *c, int kind) {
    if (kind == MT_T_BQ || kind == MT_T_BK || kind == MT_T_BV) return c->attn_bias;
    if (kind == MT_T_OUTPUT) return !c->tied_embeddings;
    return 1;
}

static const char *hf_layer_name(int kind) {
    switch (kind) {
    case MT_T_ATTN_NORM: return "input_layernorm.weight";
    case MT_T_WQ: return "self_attn.q_proj.weight";
    case MT_T_WK: return "self_attn.k_proj.weight";
    case MT_T_WV: return "self_attn.v_proj.weight";
    case MT_T_BQ: return "self_attn.q_proj.bias";
    case MT_T_BK: return "self_attn.k_proj.bias";
    case MT_T_BV: return "self_attn.v_proj.bias";
    case MT_T_WO: return "self_attn.o_proj.weight";
    case MT_T_FFN_NORM: return "post_attention_layernorm.weight";
    case MT_T_GATE: return "mlp.gate_proj.weight";
    case MT_T_UP: return "mlp.up_proj.weight";
    default: return "mlp.down_proj.weight";
    }
}

static float **layer_slot(mt_layer *l, int kind) {
    switch (kind) {
    case MT_T_ATTN_NORM: return &l->attn_norm;
    case MT_T_WQ: return &l->wq;
    case MT_T_WK: return &l->wk;
    case MT_T_WV: return &l->wv;
    case MT_T_BQ: return &l->bq;
    case MT_T_BK: return &l->bk;
    case MT_T_BV: return &l->bv;
    case MT_T_WO: return &l->wo;
    case MT_T_FFN_NORM: return &l->ffn_norm;
    case MT_T_GATE: return &l->w_gate;
    case MT_T_UP: return &l->w_up;
    default: return &l->w_down;
    }
}

size_t mt_config_param_count(const mt_config *c) {
    size_t n = tensor_rows(c, MT_T_EMBED) * tensor_cols(c, MT_T_EMBED) + (size_t)c->dim;
    if (!c->tied_embeddings) n += tensor_rows(c, MT_T_OUTPUT) * tensor_cols(c, MT_T_OUTPUT);
    for (int k = 0; k < N_LAYER_KINDS; k++)
        if (kind_present(c, layer_kinds[k]))
            n += (size_t)c->n_layers * tensor_rows(c, layer_kinds[k]) * tensor_cols(c, layer_kinds[k]);
    return n;
}

mt_status mt_model_alloc(const mt_config *cfg, mt_model **out) {
    *out = NULL;
    mt_status s = mt_config_validate(cfg, "model config");
    if (s) return s;
    mt_model *m = calloc(1, sizeof *m);
    if (!m) return mt_error(MT_ERR_NOMEM, "out of memory allocating model");
    m->cfg = *cfg;
    m->n_params = mt_config_param_count(cfg);
    m->params = calloc(m->n_params, sizeof(float));
    m->layers = calloc((size_t)cfg->n_layers, sizeof(mt_layer));
    if (!m->params || !m->layers) {
        mt_model_free(m);
        return mt_error(MT_ERR_NOMEM, "out of memory allocating %zu parameters", mt_config_param_count(cfg));
    }
    float *p = m->params;
    m->tok_embd = p;
    p += tensor_rows(cfg, MT_T_EMBED) * tensor_cols(cfg, MT_T_EMBED);
    for (int l = 0; l < cfg->n_layers; l++)
        for (int k = 0; k < N_LAYER_KINDS; k++) {
            if (!kind_present(cfg, layer_kinds[k])) continue;
            *layer_slot(&m->layers[l], layer_kinds[k]) = p;
            p += tensor_rows(cfg, layer_kinds[k]) * tensor_cols(cfg, layer_kinds[k]);
        }
    m->norm_final = p;
    p += cfg->dim;
    if (cfg->tied_embeddings) m->output = m->tok_embd;
    else {
        m->output = p;
        p += tensor_rows(cfg, MT_T_OUTPUT) * tensor_cols(cfg, MT_T_OUTPUT);
    }
    *out = m;
    return MT_OK;
}

static void fill_ref(mt_tensor_ref *r, const mt_config *c, int kind, int layer, float *data) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->layer = layer;
    r->data = data;
    r->rows = (int)tensor_rows(c, kind);
    r->cols = (int)tensor_cols(c, kind);
    r->is_vector = r->cols == 1 && kind != MT_T_EMBED && kind != MT_T_OUTPUT;
    if (layer >= 0) snprintf(r->name, sizeof r->name, "model.layers.%d.%s", layer, hf_layer_name(kind));
    else if (kind == MT_T_EMBED) snprintf(r->name, sizeof r->name, "model.embed_tokens.weight");
    else if (kind == MT_T_NORM_FINAL) snprintf(r->name, sizeof r->name, "model.norm.weight");
    else snprintf(r->name, sizeof r->name, "lm_head.weight");
}

float **mt_model_tensor_slot(mt_model *m, int kind, int layer) {
    if (kind == MT_T_EMBED) return &m->tok_embd;
    if (kind == MT_T_NORM_FINAL) return &m->norm_final;
    if (kind == MT_T_OUTPUT) return &m->output;
    return layer_slot(&m->layers[layer], kind);
}

int mt_model_tensors(const mt_model *m, mt_tensor_ref *out, int max) {
    const mt_config *c = &m->cfg;
    int n = 0;
#define ADD(kind, layer, ptr) do { if (out && n < max) fill_ref(&out[n], c, kind, layer, ptr); n++; } while (0)
    ADD(MT_T_EMBED, -1, m->tok_embd);
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < N_LAYER_KINDS; k++)
            /* a site weight held in the bf16/Q8_0 base store has no f32 tensor */
            if (kind_present(c, layer_kinds[k]) && *layer_slot(&m->layers[l], layer_kinds[k]))
                ADD(layer_kinds[k], l, *layer_slot(&m->layers[l], layer_kinds[k]));
    ADD(MT_T_NORM_FINAL, -1, m->norm_final);
    if (!c->tied_embeddings) ADD(MT_T_OUTPUT, -1, m->output);
#undef ADD
    return n;
}

void mt_permute_qk_rows(float *dst, const float *src, int n_heads, int head_dim, int cols,
                        int to_interleaved) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++) {
                /* HF row (j*half + i) holds what the interleaved layout keeps at row (2i + j). */
                size_t hf = (size_t)h * head_dim + (size_t)j * half + i;
                size_t il = (size_t)h * head_dim + 2 * (size_t)i + j;
                size_t from = to_interleaved ? hf : il, to = to_interleaved ? il : hf;
                memcpy(dst + to * cols, src + from * cols, (size_t)cols * sizeof(float));
            }
}

void mt_model_free(mt_model *m) {
    if (!m) return;
    mt_infer_free(m);
    mt_model_free_base(m);
    if (m->token_rows) m->token_rows->attached = NULL; /* its rows die with the weights */
    free(m->params);
    free(m->layers);
    if (m->tok) mt_tokenizer_free(m->tok);
    free(m->chat_template);
    free(m);
}

const mt_config *mt_model_config(const mt_model *m) { return &m->cfg; }
mt_tokenizer *mt_model_tokenizer(const mt_model *m) { return m->tok; }
size_t mt_model_param_count(const mt_model *m) {
    return m->n_params + (m->base ? m->base->n_site_params : 0);
}

mt_status mt_model_init(const mt_config *cfg, uint64_t seed, mt_model **out) {
    mt_config c = *cfg;
    mt_config_defaults(&c);
    mt_status s = mt_model_alloc(&c, out);
    if (s) return s;
    mt_model *m = *out;
    mt_rng rng;
    mt_rng_seed(&rng, seed);
    mt_tensor_ref refs[4096];
    int n = mt_model_tensors(m, refs, 4096);
    if (n > 4096) n = 4096;
    for (int i = 0; i < n; i++) {
        size_t len = (size_t)refs[i].rows * refs[i].cols;
        int is_norm = refs[i].kind == MT_T_ATTN_NORM || refs[i].kind == MT_T_FFN_NORM ||
                      refs[i].kind == MT_T_NORM_FINAL;
        int is_bias = refs[i].kind == MT_T_BQ || refs[i].kind == MT_T_BK || refs[i].kind == MT_T_BV;
        for (size_t j = 0; j < len; j++)
            refs[i].data[j] = is_norm ? 1.0f : is_bias ? 0.0f : 0.02f * mt_rng_normal(&rng);
    }
    return MT_OK;
}
