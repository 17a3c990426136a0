/* The Llama-family forward pass for inference: embedding, then per layer RMSNorm ->
 * Q/K/V (+bias) -> RoPE -> cached causal GQA -> output projection -> residual, RMSNorm ->
 * SwiGLU MLP -> residual; final RMSNorm and the (possibly tied) head. Tokens are processed
 * in chunks so a prompt runs as GEMMs and decoding as GEMVs through the same code. */
#include "model/forward.h"
#include "model/context.h"
#include "model/adapter.h"
#include "model/mome.h"
#include "model/base_store.h"
#include "core/check.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 64          /* tokens per prefill chunk */
#define DEFAULT_MAX_CTX 4096

int mt_infer_context(const mt_model *m) {
    if (m->context_override > 0) return m->context_override;
    int n = m->cfg.max_seq_len;
    return n < DEFAULT_MAX_CTX ? n : DEFAULT_MAX_CTX;
}

mt_status mt_model_set_context(mt_model *m, int n) {
    mt_status cs = mt_check_int("--context", n, 0, MT_MAX_CONTEXT);
    if (cs) return cs;
    mt_infer_free(m);
    m->context_override = n;
    return MT_OK;
}

static void free_adapter_scratch(mt_context *s) {
    free(s->lora_h);
    s->lora_h = NULL;
    s->lora_rank_cap = 0;
    free(s->mome_y); free(s->mome_q); free(s->mome_gate); free(s->mome_z); free(s->mome_idx);
    free(s->mome_ctx); free(s->mome_acc); free(s->mome_scratch);
    s->mome_y = s->mome_q = s->mome_gate = s->mome_z = s->mome_ctx = s->mome_acc = s->mome_scratch = NULL;
    s->mome_idx = NULL;
    s->mome_for = NULL;
}

void mt_context_free(mt_context *s) {
    if (!s) return;
    free(s->k_cache); free(s->v_cache); free(s->rope_cos); free(s->rope_sin);
    free(s->x); free(s->xn); free(s->q); free(s->k); free(s->v); free(s->att);
    free(s->gate); free(s->up); free(s->scratch); free(s->posv); free(s->wbuf); free(s->row_logit);
    free_adapter_scratch(s);
    free(s);
}

void mt_infer_free(mt_model *m) {
    mt_context_free(m->infer);
    m->infer = NULL;
}

mt_status mt_context_create(const mt_model *m, int n_ctx, mt_context **out) {
    *out = NULL;
    const mt_config *c = &m->cfg;
    if (n_ctx < 0 || n_ctx > (1 << 22)) return mt_error(MT_ERR_ARG, "context length %d out of range", n_ctx);
    mt_context *s = calloc(1, sizeof *s);
    if (!s) return mt_error(MT_ERR_NOMEM, "out of memory for inference state");
    s->m = m;
    s->n_ctx = n_ctx > 0 ? n_ctx : mt_infer_context(m);
    size_t kv_dim = (size_t)c->n_kv_heads * c->head_dim, q_dim = (size_t)c->n_heads * c->head_dim;
    size_t cache = (size_t)c->n_layers * s->n_ctx * kv_dim;
    size_t wide = q_dim > (size_t)c->dim ? q_dim : (size_t)c->dim;
    s->k_cache = malloc(cache * sizeof(float));
    s->v_cache = malloc(cache * sizeof(float));
    s->x = malloc(CHUNK * (size_t)c->dim * sizeof(float));
    s->xn = malloc(CHUNK * wide * sizeof(float));
    s->q = malloc(CHUNK * q_dim * sizeof(float));
    s->k = malloc(CHUNK * kv_dim * sizeof(float));
    s->v = malloc(CHUNK * kv_dim * sizeof(float));
    s->att = malloc(CHUNK * q_dim * sizeof(float));
    s->gate = malloc(CHUNK * (size_t)c->hidden_dim * sizeof(float));
    s->up = malloc(CHUNK * (size_t)c->hidden_dim * sizeof(float));
    s->posv = malloc(CHUNK * sizeof(int));
    s->row_logit = malloc(sizeof(float));
    if (m->base && !(s->wbuf = malloc(mt_site_scratch_floats(c) * sizeof(float)))) {
        mt_context_free(s);
        return mt_error(MT_ERR_NOMEM, "out of memory for dequantising the base");
    }
    if (!s->k_cache || !s->v_cache || !s->x || !s->xn || !s->q || !s->k || !s->v || !s->att ||
        !s->gate || !s->up || !s->posv || !s->row_logit) {
        int n = s->n_ctx;
        mt_context_free(s);
        return mt_error(MT_ERR_NOMEM, "out of memory for a %d-token KV cache", n);
    }
    mt_status st = mt_rope_tables(c, s->n_ctx, &s->rope_cos, &s->rope_sin);
    if (st) {
        mt_context_free(s);
        return st;
    }
    *out = s;
    return MT_OK;
}

/* Sizes the adapter scratch for the context's current adapters (grown, never shrunk). */
static mt_status ensure_adapter_scratch(mt_context *s) {
    const mt_config *c = &s->m->cfg;
    int rank = 0;
    for (int i = 0; i < s->n_loras; i++)
        if (s->loras[i]->rank > rank) rank = s->loras[i]->rank;
    if (rank > s->lora_rank_cap) {
        float *h = realloc(s->lora_h, CHUNK * (size_t)rank * sizeof(float));
        if (!h) return mt_error(MT_ERR_NOMEM, "out of memory for adapter scratch");
        s->lora_h = h, s->lora_rank_cap = rank;
    }
    if (s->mome && s->mome_for != s->mome) {
        const mt_mome_shape *sh = &s->mome->shape;
        size_t slots = (size_t)CHUNK * sh->H * sh->K;
        free(s->mome_y); free(s->mome_q); free(s->mome_gate); free(s->mome_z); free(s->mome_idx);
        free(s->mome_ctx); free(s->mome_acc); free(s->mome_scratch);
        s->mome_y = malloc(CHUNK * (size_t)c->dim * sizeof(float));
        s->mome_q = malloc(CHUNK * (size_t)sh->H * sh->dk * sizeof(float));
        s->mome_gate = malloc(slots * sizeof(float));
        s->mome_z = malloc(slots * sizeof(float));
        s->mome_idx = malloc(slots * sizeof(int));
        s->mome_ctx = malloc((CHUNK * (size_t)sh->Cx + 1) * sizeof(float));
        s->mome_acc = malloc(((size_t)s->n_ctx * sh->Cx + 1) * sizeof(float));
        s->mome_scratch = malloc(mt_mome_scratch_size(sh, CHUNK) * sizeof(float));
        s->mome_for = s->mome;
        if (!s->mome_y || !s->mome_q || !s->mome_gate || !s->mome_z || !s->mome_idx || !s->mome_ctx || !s->mome_acc ||
            !s->mome_scratch) {
            free_adapter_scratch(s);
            return mt_error(MT_ERR_NOMEM, "out of memory for memory-expert scratch");
        }
    }
    return MT_OK;
}

mt_status mt_model_default_context(mt_model *m, mt_context **out) {
    if (!m->infer) {
        mt_context *s;
        mt_status st = mt_context_create(m, 0, &s);
        if (st) return st;
        /* the model's attached adapters: every attach or detach frees this context */
        for (int i = 0; i < m->n_loras; i++) {
            s->loras[i] = m->loras[i];
            s->lora_weights[i] = m->lora_weights[i];
        }
        s->n_loras = m->n_loras;
        s->mome = m->mome;
        s->rows = m->token_rows;
        m->infer = s;
    }
    *out = m->infer;
    return MT_OK;
}

int mt_context_size(const mt_context *c) { return c->n_ctx; }
int mt_context_pos(const mt_context *c) { return c->pos; }
const mt_model *mt_context_model(const mt_context *c) { return c->m; }
void mt_context_reset(mt_context *c) { c->pos = 0; }

void mt_context_clear_adapters(mt_context *c) {
    c->n_loras = 0;
    c->mome = NULL;
    c->rows = NULL;
    c->pos = 0;
}

mt_status mt_context_add_lora(mt_context *c, const mt_lora *l, float w) {
    if (!l) return mt_error(MT_ERR_ARG, "no adapter to add");
    if (l->n_layers != c->m->cfg.n_layers)
        return mt_error(MT_ERR_MISMATCH, "the adapter has %d layers, the model %d", l->n_layers, c->m->cfg.n_layers);
    if (!isfinite(w)) return mt_error(MT_ERR_ARG, "adapter weight must be finite");
    if (c->n_loras == MT_MAX_ADAPTERS) return mt_error(MT_ERR_ARG, "at most %d adapters at once", MT_MAX_ADAPTERS);
    c->loras[c->n_loras] = l;
    c->lora_weights[c->n_loras++] = w;
    c->pos = 0;
    return MT_OK;
}

mt_status mt_context_set_mome(mt_context *c, const mt_mome *mm) {
    const mt_model *m = c->m;
    if (mm && (mm->n_layers != m->cfg.n_layers || mm->shape.C != m->cfg.dim))
        return mt_error(MT_ERR_MISMATCH, "the memory experts were made for %d layers of width %d, the model has %d of %d",
                        mm->n_layers, mm->shape.C, m->cfg.n_layers, m->cfg.dim);
    c->mome = mm;
    c->pos = 0;
    return MT_OK;
}

mt_status mt_context_set_token_rows(mt_context *c, const mt_token_rows *r) {
    const mt_model *m = c->m;
    if (r && (r->dim != m->cfg.dim || r->untied != !m->cfg.tied_embeddings))
        return mt_error(MT_ERR_MISMATCH, "trainable token rows of width %d do not fit this model (width %d)",
                        r->dim, m->cfg.dim);
    for (int i = 0; r && i < r->n; i++)
        if (r->ids[i] < 0 || r->ids[i] >= m->cfg.vocab_size)
            return mt_error(MT_ERR_MISMATCH, "trainable token id %d is outside the vocabulary of %d",
                            r->ids[i], m->cfg.vocab_size);
    c->rows = r;
    c->pos = 0;
    return MT_OK;
}

/* y[T, out] += every attached adapter's term at (layer l, site) for input x[T, in] */
static void adapter_forward(const mt_context *s, int l, int site, float *y, const float *x, int T) {
    int in, out;
    mt_linear_site_shape(&s->m->cfg, site, &in, &out);
    for (int i = 0; i < s->n_loras; i++) {
        const struct mt_lora *lo = s->loras[i];
        const float *a, *b;
        if (mt_lora_site(lo, l, site, &a, &b))
            mt_lora_forward(y, s->lora_h, x, a, b, (double)lo->scale * s->lora_weights[i], T, in, out, lo->rank);
    }
}

/* s->mome_y[T, dim] = the memory experts' output at layer l for the MLP input xn (zero when
 * the layer has no site); returns whether it has one */
static int mome_forward(const mt_context *s, int l, const float *xn, int T) {
    const struct mt_mome *mm = s->mome;
    int site = mm->site_of_layer[l];
    if (site < 0) return 0;
    memset(s->mome_y, 0, (size_t)T * s->m->cfg.dim * sizeof(float));
    mt_mome_forward(s->mome_y, s->mome_q, s->mome_idx, s->mome_gate, s->mome_z, xn, s->mome_ctx,
                    mm->router + site * mm->router_size, mm->bank + site * mm->bank_size, mm->n_experts,
                    &mm->shape, T, s->mome_scratch);
    return 1;
}
/* the f32 weight of site of this layer (dequantised into the first context's wbuf for a
 * bf16/Q8_0 base) */
#define W(site) mt_site_weight(m, l, site, cs[0]->wbuf)

/* linear() for a site of this layer: one token of one context from a GGUF-typed base is
 * multiplied on its blocks (no dequantised copy); otherwise the f32 weight, W(site) */
static void linear_site(const mt_model *m, int l, int site, float *wbuf, int B, int T, float *const *out,
                        float *const *in, const float *bias, int K, int N);
#define LINEAR(site, out, in, bias, K, N) linear_site(m, l, site, cs[0]->wbuf, B, T, out, in, bias, K, N)

/* out_b = in_b·W^T (+ bias) for each context b: T rows of one context, or (B > 1) one row of
 * each of B contexts in one product that reads W once, with the same numbers as B separate
 * one-row products (so a batched step decodes exactly what one sequence alone decodes). */
static void linear(int B, int T, float *const *out, float *const *in, const float *w, const float *bias, int K, int N) {
    if (B == 1) mt_matmul_forward(out[0], in[0], w, bias, T, K, N);
    else mt_matmul_forward_rows(out, (const float *const *)in, w, bias, B, K, N);
}

static void linear_site(const mt_model *m, int l, int site, float *wbuf, int B, int T, float *const *out,
                        float *const *in, const float *bias, int K, int N) {
    if (B == 1 && T == 1 && mt_site_matvec(m, l, site, out[0], in[0], bias)) return;
    linear(B, T, out, in, mt_site_weight(m, l, site, wbuf), bias, K, N);
}

/* One layer for B contexts at once: T rows of one context, or one row of each of B > 1.
 * Context b's rows sit at its positions cs[b]->at ... */
static void layer_forward(mt_context *const *cs, int B, int l, int T) {
    const mt_model *m = cs[0]->m;
    const mt_config *c = &m->cfg;
    const mt_layer *L = &m->layers[l];
    int kv_dim = c->n_kv_heads * c->head_dim, q_dim = c->n_heads * c->head_dim;
    float *xn[B], *q[B], *kp[B], *vp[B], *att[B], *gate[B], *up[B], *kc[B], *vc[B];
    int memory[B];
    for (int b = 0; b < B; b++) {
        mt_context *s = cs[b];
        kc[b] = s->k_cache + (size_t)l * s->n_ctx * kv_dim;
        vc[b] = s->v_cache + (size_t)l * s->n_ctx * kv_dim;
        kp[b] = kc[b] + (size_t)s->at * kv_dim;
        vp[b] = vc[b] + (size_t)s->at * kv_dim;
        xn[b] = s->xn, q[b] = s->q, att[b] = s->att, gate[b] = s->gate, up[b] = s->up;
        mt_rmsnorm_forward(s->xn, s->x, L->attn_norm, T, c->dim, c->norm_eps);
    }
    LINEAR(MT_SITE_Q, q, xn, L->bq, c->dim, q_dim);
    LINEAR(MT_SITE_K, kp, xn, L->bk, c->dim, kv_dim);
    LINEAR(MT_SITE_V, vp, xn, L->bv, c->dim, kv_dim);
    for (int b = 0; b < B; b++) {
        mt_context *s = cs[b];
        if (s->n_loras) {
            adapter_forward(s, l, MT_SITE_Q, s->q, s->xn, T);
            adapter_forward(s, l, MT_SITE_K, kp[b], s->xn, T);
            adapter_forward(s, l, MT_SITE_V, vp[b], s->xn, T);
        }
        mt_rope_forward(s->q, s->posv, T, c->n_heads, c->head_dim, c->rope_interleaved, s->rope_cos, s->rope_sin);
        mt_rope_forward(kp[b], s->posv, T, c->n_kv_heads, c->head_dim, c->rope_interleaved, s->rope_cos, s->rope_sin);
        mt_attention_cached_forward(s->att, s->q, kc[b], vc[b], T, s->at, c->n_heads, c->n_kv_heads, c->head_dim,
                                    s->scratch);
    }
    LINEAR(MT_SITE_O, xn, att, NULL, q_dim, c->dim);
    for (int b = 0; b < B; b++) {
        mt_context *s = cs[b];
        if (s->n_loras) adapter_forward(s, l, MT_SITE_O, s->xn, s->att, T);
        for (size_t i = 0; i < (size_t)T * c->dim; i++) s->x[i] += s->xn[i];
        mt_rmsnorm_forward(s->xn, s->x, L->ffn_norm, T, c->dim, c->norm_eps);
    }
    LINEAR(MT_SITE_GATE, gate, xn, NULL, c->dim, c->hidden_dim);
    LINEAR(MT_SITE_UP, up, xn, NULL, c->dim, c->hidden_dim);
    for (int b = 0; b < B; b++) {
        mt_context *s = cs[b];
        if (s->n_loras) {
            adapter_forward(s, l, MT_SITE_GATE, s->gate, s->xn, T);
            adapter_forward(s, l, MT_SITE_UP, s->up, s->xn, T);
        }
        memory[b] = s->mome && mome_forward(s, l, s->xn, T); /* reads xn before it is reused */
        mt_swiglu_forward(s->gate, s->gate, s->up, (size_t)T * c->hidden_dim);
    }
    LINEAR(MT_SITE_DOWN, xn, gate, NULL, c->hidden_dim, c->dim);
    for (int b = 0; b < B; b++) {
        mt_context *s = cs[b];
        if (s->n_loras) adapter_forward(s, l, MT_SITE_DOWN, s->xn, s->gate, T);
        if (memory[b])
            for (size_t i = 0; i < (size_t)T * c->dim; i++) s->xn[i] += s->mome_y[i];
        for (size_t i = 0; i < (size_t)T * c->dim; i++) s->x[i] += s->xn[i];
    }
}

/* The embedding row of token id: a trainable token row of the context replaces the model's. */
static const float *embed_row(const mt_context *s, int id) {
    const struct mt_token_rows *r = s->rows;
    for (int i = 0; r && i < r->n; i++)
        if (r->ids[i] == id) return r->values + (size_t)i * r->dim;
    return s->m->tok_embd + (size_t)id * s->m->cfg.dim;
}

/* Each trainable token row's logit again from the context's row: done the same way whether
 * the rows are attached to the model (written into its weights: the CLI, training) or only
 * to this context (the server), so the two give the same numbers bit for bit. */
static void token_row_logits(mt_context *s, float *logits, const float *x) {
    const struct mt_token_rows *r = s->rows;
    for (int i = 0; r && i < r->n; i++) {
        const float *row = r->values + (size_t)(r->untied ? r->n + i : i) * r->dim;
        mt_matmul_forward(s->row_logit, x, row, NULL, 1, s->m->cfg.dim, 1);
        logits[r->ids[i]] = s->row_logit[0];
    }
}

/* ids[b][0..T) at positions cs[b]->at... for B contexts (T == 1 when B > 1); logits[b] gets
 * every row's logits when all_logits, else the last row's */
static void chunk_forward(mt_context *const *cs, int B, const int *const *ids, int T, float *const *logits,
                          int all_logits) {
    const mt_model *m = cs[0]->m;
    const mt_config *c = &m->cfg;
    for (int b = 0; b < B; b++) {
        mt_context *s = cs[b];
        for (int t = 0; t < T; t++) {
            memcpy(s->x + (size_t)t * c->dim, embed_row(s, ids[b][t]), c->dim * sizeof(float));
            s->posv[t] = s->at + t;
        }
        if (s->mome && s->mome->shape.Cx) { /* the running sums of earlier positions stay in mome_acc */
            size_t W = (size_t)s->mome->shape.Cx;
            int pos = s->at;
            mt_mome_context(s->mome_ctx, s->mome_acc + pos * W, ids[b], s->posv, T, &s->mome->context,
                            pos ? s->mome_acc + (pos - 1) * W : NULL);
        }
    }
    for (int l = 0; l < c->n_layers; l++) layer_forward(cs, B, l, T);
    float *last[B];
    for (int b = 0; b < B; b++) {
        mt_rmsnorm_forward(cs[b]->x, cs[b]->x, m->norm_final, T, c->dim, c->norm_eps);
        last[b] = cs[b]->x + (size_t)(T - 1) * c->dim;
    }
    if (B > 1) {
        linear(B, 1, logits, last, m->output, NULL, c->dim, c->vocab_size);
        for (int b = 0; b < B; b++) token_row_logits(cs[b], logits[b], last[b]);
        return;
    }
    mt_context *s = cs[0];
    if (!all_logits) {
        mt_matmul_forward(logits[0], last[0], m->output, NULL, 1, c->dim, c->vocab_size);
        token_row_logits(s, logits[0], last[0]);
    } else if (!s->rows) {
        mt_matmul_forward(logits[0], s->x, m->output, NULL, T, c->dim, c->vocab_size);
    } else {
        for (int t = 0; t < T; t++) {
            float *row = logits[0] + (size_t)t * c->vocab_size;
            mt_matmul_forward(row, s->x + (size_t)t * c->dim, m->output, NULL, 1, c->dim, c->vocab_size);
            token_row_logits(s, row, s->x + (size_t)t * c->dim);
        }
    }
}

/* the attention scratch for the thread count now and the adapters' scratch */
static mt_status prepare(mt_context *s) {
    int threads = mt_kernels_enter();
    if (threads > s->scratch_threads) {
        /* sized here, not with the rest of the state: mt_set_threads may raise the count between calls */
        size_t n = mt_attention_cached_scratch(threads, s->n_ctx, s->m->cfg.n_heads, s->m->cfg.head_dim);
        float *grown = realloc(s->scratch, n * sizeof(float));
        if (!grown) return mt_error(MT_ERR_NOMEM, "out of memory for attention scratch of %d threads", threads);
        s->scratch = grown, s->scratch_threads = threads;
    }
    return ensure_adapter_scratch(s);
}

mt_status mt_context_forward(mt_context *s, const int *ids, int T, int pos, float *logits, int all_logits) {
    const mt_model *m = s->m;
    mt_status st = prepare(s);
    if (st) return st;
    if (T <= 0 || pos < 0 || pos + T > s->n_ctx)
        return mt_error(MT_ERR_ARG, "sequence of %d tokens at position %d exceeds the context of %d",
                        T, pos, s->n_ctx);
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= m->cfg.vocab_size)
            return mt_error(MT_ERR_ARG, "token id %d out of range (vocab %d)", ids[t], m->cfg.vocab_size);
    for (int done = 0; done < T; done += CHUNK) {
        int n = T - done < CHUNK ? T - done : CHUNK;
        float *out = all_logits ? logits + (size_t)done * m->cfg.vocab_size : logits;
        const int *chunk_ids = ids + done;
        s->at = pos + done;
        /* only the final chunk's last row matters when all_logits is off */
        chunk_forward(&s, 1, &chunk_ids, n, &out, all_logits);
    }
    return MT_OK;
}

mt_status mt_context_decode(mt_context *c, const int *ids, int n, float *logits) {
    mt_status st = mt_context_forward(c, ids, n, c->pos, logits, 0);
    if (st == MT_OK) c->pos += n;
    return st;
}

mt_status mt_forward(mt_model *m, const int *ids, int T, int pos, float *logits, int all_logits) {
    mt_context *s;
    mt_status st = mt_model_default_context(m, &s);
    return st ? st : mt_context_forward(s, ids, T, pos, logits, all_logits);
}

mt_status mt_model_logits(mt_model *m, const int *ids, int n, float *out) {
    return mt_forward(m, ids, n, 0, out, 1);
}

size_t mt_model_inference_bytes(const mt_model *m, int n_ctx) {
    const mt_config *c = &m->cfg;
    size_t kv = 2 * (size_t)c->n_layers * n_ctx * c->n_kv_heads * c->head_dim;
    size_t act = CHUNK * ((size_t)c->dim * 3 + (size_t)c->n_heads * c->head_dim * 2 +
                          (size_t)c->hidden_dim * 2) + (size_t)c->vocab_size * CHUNK;
    size_t scratch = m->base ? mt_site_scratch_floats(c) : 0; /* one dequantised matrix */
    return mt_model_weight_bytes(m) + (kv + act + scratch) * sizeof(float);
}

mt_status mt_contexts_decode_batch(mt_context *const *cs, const int *ids, int n, float *const *logits) {
    if (n < 1 || n > MT_MAX_DECODE_BATCH) return mt_error(MT_ERR_ARG, "batch of %d contexts out of range [1, %d]", n, MT_MAX_DECODE_BATCH);
    const int *row_ids[n];
    for (int i = 0; i < n; i++) {
        mt_context *s = cs[i];
        if (s->m != cs[0]->m) return mt_error(MT_ERR_ARG, "a batch runs contexts of one model");
        mt_status st = prepare(s);
        if (st) return st;
        if (s->pos + 1 > s->n_ctx)
            return mt_error(MT_ERR_ARG, "context %d is full (%d tokens)", i, s->n_ctx);
        if (ids[i] < 0 || ids[i] >= s->m->cfg.vocab_size)
            return mt_error(MT_ERR_ARG, "token id %d out of range (vocab %d)", ids[i], s->m->cfg.vocab_size);
        for (int j = 0; j < i; j++)
            if (cs[j] == s) return mt_error(MT_ERR_ARG, "a context appears twice in a batch");
        s->at = s->pos;
        row_ids[i] = &ids[i];
    }
    chunk_forward(cs, n, row_ids, 1, logits, 0);
    for (int i = 0; i < n; i++) cs[i]->pos++;
    return MT_OK;
}
