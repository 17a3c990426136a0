/* The Llama-family forward pass for inference: embedding, then per layer RMSNorm ->
 * Q/K/V (+bias) -> RoPE -> cached causal GQA -> output projection -> residual, RMSNorm ->
 * SwiGLU MLP -> residual; final RMSNorm and the (possibly tied) head. Tokens are processed
 * in chunks so a prompt runs as GEMMs and decoding as GEMVs through the same code. */
#include "model/forward.h"
#include "model/adapter.h"
#include "model/mome.h"
#include "model/base_store.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include <stdlib.h>
#include <string.h>

#define CHUNK 64          /* tokens per prefill chunk */
#define DEFAULT_MAX_CTX 4096

typedef struct {
    int n_ctx;
    float *k_cache, *v_cache;      /* [n_layers, n_ctx, kv_dim] */
    float *rope_cos, *rope_sin;    /* [n_ctx, head_dim/2] */
    float *x, *xn, *q, *k, *v, *att, *gate, *up; /* activations for one chunk */
    float *scratch;                /* attention scores, per thread */
    int scratch_threads;           /* the thread count scratch was sized for */
    float *lora_h;                 /* [CHUNK, rank] adapter scratch, NULL without an adapter */
    float *mome_y, *mome_q, *mome_gate, *mome_z; /* memory-expert scratch, NULL without them */
    int *mome_idx;
    float *mome_ctx;               /* [CHUNK, Cx] the routing context of the chunk */
    float *mome_scratch;           /* mt_mome_scratch_size(shape, CHUNK) */
    float *mome_acc;               /* [n_ctx, Cx] its running sums, position by position */
    float *wbuf;                   /* one dequantised site weight, NULL with an f32 base */
    int *pos;
} infer_state;

int mt_infer_context(const mt_model *m) {
    if (m->context_override > 0) return m->context_override;
    int n = m->cfg.max_seq_len;
    const char *env = getenv("MEMTUNE_CTX");
    int cap = env ? atoi(env) : DEFAULT_MAX_CTX;
    if (cap <= 0) cap = DEFAULT_MAX_CTX;
    return n < cap ? n : cap;
}

mt_status mt_model_set_context(mt_model *m, int n) {
    if (n < 0 || n > (1 << 22)) return mt_error(MT_ERR_ARG, "context length %d out of range", n);
    mt_infer_free(m);
    m->context_override = n;
    return MT_OK;
}

void mt_infer_free(mt_model *m) {
    infer_state *s = m->infer;
    if (!s) return;
    free(s->k_cache); free(s->v_cache); free(s->rope_cos); free(s->rope_sin);
    free(s->x); free(s->xn); free(s->q); free(s->k); free(s->v); free(s->att);
    free(s->gate); free(s->up); free(s->scratch); free(s->pos); free(s->lora_h);
    free(s->mome_y); free(s->mome_q); free(s->mome_gate); free(s->mome_z); free(s->mome_idx);
    free(s->mome_ctx); free(s->mome_acc); free(s->mome_scratch); free(s->wbuf);
    free(s);
    m->infer = NULL;
}

static mt_status infer_state_create(mt_model *m) {
    const mt_config *c = &m->cfg;
    infer_state *s = calloc(1, sizeof *s);
    if (!s) return mt_error(MT_ERR_NOMEM, "out of memory for inference state");
    m->infer = s;
    s->n_ctx = mt_infer_context(m);
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
    s->pos = malloc(CHUNK * sizeof(int));
    if (m->base && !(s->wbuf = malloc(mt_site_scratch_floats(c) * sizeof(float)))) {
        mt_infer_free(m);
        return mt_error(MT_ERR_NOMEM, "out of memory for dequantising the base");
    }
    if (m->n_loras && !(s->lora_h = malloc(CHUNK * (size_t)mt_model_lora_max_rank(m) * sizeof(float)))) {
        mt_infer_free(m);
        return mt_error(MT_ERR_NOMEM, "out of memory for adapter scratch");
    }
    if (m->mome) {
        const mt_mome_shape *sh = &m->mome->shape;
        size_t slots = (size_t)CHUNK * sh->H * sh->K;
        s->mome_y = malloc(CHUNK * (size_t)c->dim * sizeof(float));
        s->mome_q = malloc(CHUNK * (size_t)sh->H * sh->dk * sizeof(float));
        s->mome_gate = malloc(slots * sizeof(float));
        s->mome_z = malloc(slots * sizeof(float));
        s->mome_idx = malloc(slots * sizeof(int));
        s->mome_ctx = malloc((CHUNK * (size_t)sh->Cx + 1) * sizeof(float));
        s->mome_acc = malloc(((size_t)s->n_ctx * sh->Cx + 1) * sizeof(float));
        s->mome_scratch = malloc(mt_mome_scratch_size(sh, CHUNK) * sizeof(float));
        if (!s->mome_y || !s->mome_q || !s->mome_gate || !s->mome_z || !s->mome_idx || !s->mome_ctx || !s->mome_acc ||
            !s->mome_scratch) {
            mt_infer_free(m);
            return mt_error(MT_ERR_NOMEM, "out of memory for memory-expert scratch");
        }
    }
    if (!s->k_cache || !s->v_cache || !s->x || !s->xn || !s->q || !s->k || !s->v || !s->att ||
        !s->gate || !s->up || !s->pos) {
        mt_infer_free(m);
        return mt_error(MT_ERR_NOMEM, "out of memory for a %d-token KV cache", mt_infer_context(m));
    }
    mt_status st = mt_rope_tables(c, s->n_ctx, &s->rope_cos, &s->rope_sin);
    if (st) mt_infer_free(m);
    return st;
}

/* y[T, out] += every attached adapter's term at (layer l, site) for input x[T, in] */
static void adapter_forward(const mt_model *m, infer_state *s, int l, int site, float *y,
                            const float *x, int T) {
    int in, out;
    mt_linear_site_shape(&m->cfg, site, &in, &out);
    for (int i = 0; i < m->n_loras; i++) {
        const struct mt_lora *lo = m->loras[i];
        const float *a, *b;
        if (mt_lora_site(lo, l, site, &a, &b))
            mt_lora_forward(y, s->lora_h, x, a, b, (double)lo->scale * m->lora_weights[i], T, in, out, lo->rank);
    }
}

/* s->mome_y[T, dim] = the memory experts' output at layer l for the MLP input xn (zero when
 * the layer has no site); returns whether it has one */
static int mome_forward(const mt_model *m, infer_state *s, int l, const float *xn, int T) {
    const struct mt_mome *mm = m->mome;
    int site = mm->site_of_layer[l];
    if (site < 0) return 0;
    memset(s->mome_y, 0, (size_t)T * m->cfg.dim * sizeof(float));
    mt_mome_forward(s->mome_y, s->mome_q, s->mome_idx, s->mome_gate, s->mome_z, xn, s->mome_ctx,
                    mm->router + site * mm->router_size, mm->bank + site * mm->bank_size, mm->n_experts,
                    &mm->shape, T, s->mome_scratch);
    return 1;
}
/* the f32 weight of site of this layer (dequantised into s->wbuf for a bf16/Q8_0 base) */
#define W(site) mt_site_weight(m, l, site, s->wbuf)
/* out = x·W(site)^T + bias; decoding one token from a GGUF-typed base multiplies on its blocks */
#define LINEAR(site, out, x, bias, K, N) \
    do { if (T != 1 || !mt_site_matvec(m, l, site, out, x, bias)) mt_matmul_forward(out, x, W(site), bias, T, K, N); } while (0)

static void layer_forward(mt_model *m, infer_state *s, int l, int T, int pos) {
    const mt_config *c = &m->cfg;
    const mt_layer *L = &m->layers[l];
    int kv_dim = c->n_kv_heads * c->head_dim, q_dim = c->n_heads * c->head_dim;
    float *kc = s->k_cache + (size_t)l * s->n_ctx * kv_dim;
    float *vc = s->v_cache + (size_t)l * s->n_ctx * kv_dim;

    mt_rmsnorm_forward(s->xn, s->x, L->attn_norm, T, c->dim, c->norm_eps);
    LINEAR(MT_SITE_Q, s->q, s->xn, L->bq, c->dim, q_dim);
    LINEAR(MT_SITE_K, kc + (size_t)pos * kv_dim, s->xn, L->bk, c->dim, kv_dim);
    LINEAR(MT_SITE_V, vc + (size_t)pos * kv_dim, s->xn, L->bv, c->dim, kv_dim);
    if (m->lora) {
        adapter_forward(m, s, l, MT_SITE_Q, s->q, s->xn, T);
        adapter_forward(m, s, l, MT_SITE_K, kc + (size_t)pos * kv_dim, s->xn, T);
        adapter_forward(m, s, l, MT_SITE_V, vc + (size_t)pos * kv_dim, s->xn, T);
    }
    mt_rope_forward(s->q, s->pos, T, c->n_heads, c->head_dim, c->rope_interleaved, s->rope_cos, s->rope_sin);
    mt_rope_forward(kc + (size_t)pos * kv_dim, s->pos, T, c->n_kv_heads, c->head_dim,
                    c->rope_interleaved, s->rope_cos, s->rope_sin);
    mt_attention_cached_forward(s->att, s->q, kc, vc, T, pos, c->n_heads, c->n_kv_heads,
                                c->head_dim, s->scratch);
    LINEAR(MT_SITE_O, s->xn, s->att, NULL, q_dim, c->dim);
    if (m->lora) adapter_forward(m, s, l, MT_SITE_O, s->xn, s->att, T);
    for (size_t i = 0; i < (size_t)T * c->dim; i++) s->x[i] += s->xn[i];

    mt_rmsnorm_forward(s->xn, s->x, L->ffn_norm, T, c->dim, c->norm_eps);
    LINEAR(MT_SITE_GATE, s->gate, s->xn, NULL, c->dim, c->hidden_dim);
    LINEAR(MT_SITE_UP, s->up, s->xn, NULL, c->dim, c->hidden_dim);
    if (m->lora) {
        adapter_forward(m, s, l, MT_SITE_GATE, s->gate, s->xn, T);
        adapter_forward(m, s, l, MT_SITE_UP, s->up, s->xn, T);
    }
    int memory = m->mome && mome_forward(m, s, l, s->xn, T); /* reads xn before it is reused */
    mt_swiglu_forward(s->gate, s->gate, s->up, (size_t)T * c->hidden_dim);
    LINEAR(MT_SITE_DOWN, s->xn, s->gate, NULL, c->hidden_dim, c->dim);
    if (m->lora) adapter_forward(m, s, l, MT_SITE_DOWN, s->xn, s->gate, T);
    if (memory)
        for (size_t i = 0; i < (size_t)T * c->dim; i++) s->xn[i] += s->mome_y[i];
    for (size_t i = 0; i < (size_t)T * c->dim; i++) s->x[i] += s->xn[i];
}

static void chunk_forward(mt_model *m, infer_state *s, const int *ids, int T, int pos,
                          float *logits, int all_logits) {
    const mt_config *c = &m->cfg;
    for (int t = 0; t < T; t++) {
        memcpy(s->x + (size_t)t * c->dim, m->tok_embd + (size_t)ids[t] * c->dim, c->dim * sizeof(float));
        s->pos[t] = pos + t;
    }
    if (m->mome && m->mome->shape.Cx) { /* the running sums of earlier positions stay in mome_acc */
        size_t W = (size_t)m->mome->shape.Cx;
        mt_mome_context(s->mome_ctx, s->mome_acc + pos * W, ids, s->pos, T, &m->mome->context,
                        pos ? s->mome_acc + (pos - 1) * W : NULL);
    }
    for (int l = 0; l < c->n_layers; l++) layer_forward(m, s, l, T, pos);
    mt_rmsnorm_forward(s->x, s->x, m->norm_final, T, c->dim, c->norm_eps);
    if (all_logits)
        mt_matmul_forward(logits, s->x, m->output, NULL, T, c->dim, c->vocab_size);
    else
        mt_matmul_forward(logits, s->x + (size_t)(T - 1) * c->dim, m->output, NULL, 1, c->dim, c->vocab_size);
}

mt_status mt_forward(mt_model *m, const int *ids, int T, int pos, float *logits, int all_logits) {
    if (!m->infer) {
        mt_status st = infer_state_create(m);
        if (st) return st;
    }
    infer_state *s = m->infer;
    /* sized here, not with the rest of the state: mt_set_threads may raise the count between calls */
    int threads = mt_kernels_threads();
    if (threads > s->scratch_threads) {
        size_t n = mt_attention_cached_scratch(threads, s->n_ctx, m->cfg.n_heads, m->cfg.head_dim);
        float *grown = realloc(s->scratch, n * sizeof(float));
        if (!grown) return mt_error(MT_ERR_NOMEM, "out of memory for attention scratch of %d threads", threads);
        s->scratch = grown, s->scratch_threads = threads;
    }
    if (T <= 0 || pos < 0 || pos + T > s->n_ctx)
        return mt_error(MT_ERR_ARG, "sequence of %d tokens at position %d exceeds the context of %d",
                        T, pos, s->n_ctx);
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= m->cfg.vocab_size)
            return mt_error(MT_ERR_ARG, "token id %d out of range (vocab %d)", ids[t], m->cfg.vocab_size);
    for (int done = 0; done < T; done += CHUNK) {
        int n = T - done < CHUNK ? T - done : CHUNK;
        float *out = all_logits ? logits + (size_t)done * m->cfg.vocab_size : logits;
        /* only the final chunk's last row matters when all_logits is off */
        chunk_forward(m, s, ids + done, n, pos + done, out, all_logits);
    }
    return MT_OK;
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
