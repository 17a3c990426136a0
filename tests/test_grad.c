/* Finite-difference checks of every backward, in double precision. The kernels and the
 * model's training pass are one source text compiled in float and in double (see
 * src/kernels/real.h); these tests run the double build, where a central difference with
 * eps 1e-6 is accurate to ~1e-9 relative, so any wrong derivative term shows up far above
 * the 1e-6 tolerance.
 *
 * Each op test defines a scalar loss L = Σ w·op(inputs) with fixed random weights w, runs
 * the op's backward with dout = w into gradient buffers PRE-FILLED with random values (so
 * the check also proves the backward accumulates, +=, rather than overwrites), and compares
 * (buffer - prefill) with (L(x + eps) - L(x - eps)) / 2eps for every input element. The
 * error printed is max |analytic - numeric| / max |numeric| over the tensor.
 *
 * The whole model is checked the same way, for a few random elements of every parameter
 * tensor, on packed batches with document masks and ignored targets, in two configurations
 * that together cover GQA and MQA, tied and untied heads, q/k/v biases, an explicit
 * head_dim, Llama 3 RoPE scaling and both RoPE layouts. Then: the float build agrees with the
 * double build, frozen tensors get no gradient, and a second backward accumulates. */
#include "test.h"
#include "core/rng.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "model/train_model.h"

#define FD_EPS 1e-6
#define FD_TOL 1e-6

static mt_rng rng;

static double *randn_d(size_t n, double scale) {
    double *x = malloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) x[i] = scale * mt_rng_normal(&rng);
    return x;
}

static double *copy_d(const double *x, size_t n) {
    double *y = malloc((n ? n : 1) * sizeof(double));
    memcpy(y, x, n * sizeof(double));
    return y;
}

static double dot_d(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* A loss of the current inputs; ctx holds the inputs and the weights. */
typedef double (*loss_fn)(void *ctx);

/* Compares analytic = (grad - prefill) with central differences of f with respect to each
 * element of x; returns max |analytic - numeric| / max |numeric|. */
static double fd_error(loss_fn f, void *ctx, double *x, size_t n, const double *grad,
                       const double *prefill) {
    double worst = 0, scale = 1e-30;
    for (size_t j = 0; j < n; j++) {
        double keep = x[j];
        x[j] = keep + FD_EPS;
        double up = f(ctx);
        x[j] = keep - FD_EPS;
        double down = f(ctx);
        x[j] = keep;
        double numeric = (up - down) / (2 * FD_EPS), analytic = grad[j] - prefill[j];
        worst = fmax(worst, fabs(analytic - numeric));
        scale = fmax(scale, fabs(numeric));
    }
    return worst / scale;
}

#define CHECK_FD(what, err) do { double e_ = (err); fprintf(stderr, "  %-34s rel err %.2e\n", what, e_); \
    CHECK_MSG(e_ < FD_TOL, "%s: gradient relative error %.3g", what, e_); } while (0)

/* ---- linear -------------------------------------------------------------------------- */

typedef struct { double *x, *w, *b, *dout; int T, K, N; } linear_ctx;

static double linear_loss(void *p) {
    linear_ctx *c = p;
    double *out = malloc((size_t)c->T * c->N * sizeof(double));
    mt_matmul_forward_f64(out, c->x, c->w, c->b, c->T, c->K, c->N);
    double l = dot_d(out, c->dout, (size_t)c->T * c->N);
    free(out);
    return l;
}

static void check_linear(int T, int K, int N, int with_bias) {
    linear_ctx c = {randn_d((size_t)T * K, 1), randn_d((size_t)N * K, 1), with_bias ? randn_d(N, 1) : NULL,
                    randn_d((size_t)T * N, 1), T, K, N};
    double *pdx = randn_d((size_t)T * K, 1), *pdw = randn_d((size_t)N * K, 1), *pdb = randn_d(N, 1);
    double *dx = copy_d(pdx, (size_t)T * K), *dw = copy_d(pdw, (size_t)N * K), *db = copy_d(pdb, N);
    mt_matmul_backward_f64(dx, dw, with_bias ? db : NULL, c.dout, c.x, c.w, T, K, N);
    char what[64];
    snprintf(what, sizeof what, "linear T=%d %s: dx", T, with_bias ? "bias" : "no bias");
    CHECK_FD(what, fd_error(linear_loss, &c, c.x, (size_t)T * K, dx, pdx));
    snprintf(what, sizeof what, "linear T=%d %s: dW", T, with_bias ? "bias" : "no bias");
    CHECK_FD(what, fd_error(linear_loss, &c, c.w, (size_t)N * K, dw, pdw));
    if (with_bias) CHECK_FD("linear: db", fd_error(linear_loss, &c, c.b, N, db, pdb));
    else for (int i = 0; i < N; i++) CHECK(db[i] == pdb[i]); /* NULL db: untouched */
    /* the float build runs the same source: it must agree with the double one */
    float *xf = malloc((size_t)T * K * 4), *wf = malloc((size_t)N * K * 4), *of = malloc((size_t)T * N * 4);
    double *od = malloc((size_t)T * N * 8), worst = 0;
    for (int i = 0; i < T * K; i++) xf[i] = (float)c.x[i];
    for (int i = 0; i < N * K; i++) wf[i] = (float)c.w[i];
    mt_matmul_forward(of, xf, wf, NULL, T, K, N);
    mt_matmul_forward_f64(od, c.x, c.w, NULL, T, K, N);
    for (int i = 0; i < T * N; i++) worst = fmax(worst, fabs(of[i] - od[i]));
    CHECK_MSG(worst < 1e-4, "float and double linear differ by %.3g", worst);
    free(xf); free(wf); free(of); free(od);
    free(c.x); free(c.w); free(c.b); free(c.dout); free(pdx); free(pdw); free(pdb); free(dx); free(dw); free(db);
}

TEST(linear_backward_matches_finite_differences) {
    check_linear(5, 7, 6, 1);
    check_linear(5, 7, 6, 0);
    check_linear(1, 9, 4, 1); /* the forward's GEMV path */
}

/* ---- embedding ----------------------------------------------------------------------- */

typedef struct { double *table, *dout; const int *ids; int n, C; } embed_ctx;

static double embed_loss(void *p) {
    embed_ctx *c = p;
    double *out = malloc((size_t)c->n * c->C * sizeof(double));
    mt_embedding_forward_f64(out, c->ids, c->table, c->n, c->C);
    double l = dot_d(out, c->dout, (size_t)c->n * c->C);
    free(out);
    return l;
}

TEST(embedding_backward_scatter_adds_repeated_tokens) {
    enum { V = 5, C = 70, n = 8 }; /* C > one column block of the scatter */
    static const int ids[n] = {3, 1, 3, 0, 4, 3, 1, 2};
    embed_ctx c = {randn_d(V * C, 1), randn_d(n * C, 1), ids, n, C};
    double *pre = randn_d(V * C, 1), *d = copy_d(pre, V * C);
    mt_embedding_backward_f64(d, c.dout, ids, n, C);
    CHECK_FD("embedding: dtable", fd_error(embed_loss, &c, c.table, V * C, d, pre));
    free(c.table); free(c.dout); free(pre); free(d);
}

/* ---- RMSNorm ------------------------------------------------------------------------- */

typedef struct { double *x, *w, *dout; int T, C; } norm_ctx;

static double norm_loss(void *p) {
    norm_ctx *c = p;
    double *out = malloc((size_t)c->T * c->C * sizeof(double));
    mt_rmsnorm_forward_f64(out, c->x, c->w, c->T, c->C, 1e-5f);
    double l = dot_d(out, c->dout, (size_t)c->T * c->C);
    free(out);
    return l;
}

TEST(rmsnorm_backward_matches_finite_differences) {
    enum { T = 4, C = 70 };
    norm_ctx c = {randn_d(T * C, 1), randn_d(C, 1), randn_d(T * C, 1), T, C};
    for (int i = 0; i < C; i++) c.w[i] += 1;
    double *pdx = randn_d(T * C, 1), *pdw = randn_d(C, 1), *dx = copy_d(pdx, T * C), *dw = copy_d(pdw, C);
    double rstd[T], out[T * C];
    mt_rmsnorm_forward_save_f64(out, rstd, c.x, c.w, T, C, 1e-5f);
    mt_rmsnorm_backward_f64(dx, dw, c.dout, c.x, c.w, rstd, T, C);
    CHECK_FD("rmsnorm: dx", fd_error(norm_loss, &c, c.x, T * C, dx, pdx));
    CHECK_FD("rmsnorm: dw", fd_error(norm_loss, &c, c.w, C, dw, pdw));
    free(c.x); free(c.w); free(c.dout); free(pdx); free(pdw); free(dx); free(dw);
}

/* ---- RoPE ---------------------------------------------------------------------------- */

typedef struct { double *x, *dout; const int *pos; int T, H, hd, interleaved; const float *ct, *st; } rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    size_t n = (size_t)c->T * c->H * c->hd;
    double *y = copy_d(c->x, n);
    mt_rope_forward_f64(y, c->pos, c->T, c->H, c->hd, c->interleaved, c->ct, c->st);
    double l = dot_d(y, c->dout, n);
    free(y);
    return l;
}

TEST(rope_backward_matches_finite_differences_in_both_layouts) {
    mt_config cfg = {0};
    cfg.head_dim = 8; cfg.rope_theta = 10000; cfg.rope_scaling = MT_ROPE_SCALING_LLAMA3;
    cfg.rope_factor = 8; cfg.rope_low_freq_factor = 1; cfg.rope_high_freq_factor = 4;
    cfg.rope_original_max_pos = 16;
    float *ct, *st;
    CHECK_OK(mt_rope_tables(&cfg, 20, &ct, &st));
    enum { T = 5, H = 3, HD = 8, N = T * H * HD };
    static const int pos[T] = {0, 3, 1, 19, 7};
    for (int interleaved = 0; interleaved <= 1; interleaved++) {
        rope_ctx c = {randn_d(N, 1), randn_d(N, 1), pos, T, H, HD, interleaved, ct, st};
        /* in place: the gradient buffer starts as dout and becomes ∂L/∂x */
        double *d = copy_d(c.dout, N), zero[N] = {0};
        mt_rope_backward_f64(d, pos, T, H, HD, interleaved, ct, st);
        CHECK_FD(interleaved ? "rope interleaved: dx" : "rope rotate-half: dx",
                 fd_error(rope_loss, &c, c.x, N, d, zero));
        free(c.x); free(c.dout); free(d);
    }
    free(ct); free(st);
}

/* ---- attention ----------------------------------------------------------------------- */

enum { AB = 2, AT = 7, AH = 4, AKV = 2, AHD = 4, AQ = AB * AT * AH * AHD, AK = AB * AT * AKV * AHD };
/* row 0: three documents; row 1: two (ids only need to differ within a row) */
static const int attention_doc[AB * AT] = {0, 0, 0, 1, 1, 2, 2, 5, 5, 5, 5, 9, 9, 9};

typedef struct { double *q, *k, *v, *dout; } attn_ctx;

static double attention_loss(void *p) {
    attn_ctx *c = p;
    double out[AQ], lse[AB * AT * AH];
    mt_attention_forward_f64(out, lse, c->q, c->k, c->v, attention_doc, AB, AT, AH, AKV, AHD);
    return dot_d(out, c->dout, AQ);
}

TEST(attention_backward_with_document_mask_and_gqa_matches_finite_differences) {
    attn_ctx c = {randn_d(AQ, 1), randn_d(AK, 1), randn_d(AK, 1), randn_d(AQ, 1)};
    double *pdq = randn_d(AQ, 1), *pdk = randn_d(AK, 1), *pdv = randn_d(AK, 1);
    double *dq = copy_d(pdq, AQ), *dk = copy_d(pdk, AK), *dv = copy_d(pdv, AK), out[AQ];
    double lse[AB * AT * AH];
    mt_attention_forward_f64(out, lse, c.q, c.k, c.v, attention_doc, AB, AT, AH, AKV, AHD);
    mt_attention_backward_f64(dq, dk, dv, c.dout, out, lse, c.q, c.k, c.v, attention_doc, AB, AT, AH, AKV, AHD);
    CHECK_FD("attention: dq", fd_error(attention_loss, &c, c.q, AQ, dq, pdq));
    CHECK_FD("attention: dk", fd_error(attention_loss, &c, c.k, AK, dk, pdk));
    CHECK_FD("attention: dv", fd_error(attention_loss, &c, c.v, AK, dv, pdv));
    /* the reference (probabilities saved) gives the same gradients */
    double *att = malloc((size_t)AB * AH * AT * AT * sizeof(double));
    double *dscores = malloc((size_t)AB * AH * AT * AT * sizeof(double)), ref_out[AQ];
    double *rq = copy_d(pdq, AQ), *rk = copy_d(pdk, AK), *rv = copy_d(pdv, AK);
    mt_attention_forward_ref_f64(ref_out, att, c.q, c.k, c.v, attention_doc, AB, AT, AH, AKV, AHD);
    mt_attention_backward_ref_f64(rq, rk, rv, dscores, c.dout, att, c.q, c.k, c.v, attention_doc, AB, AT, AH, AKV, AHD);
    for (int i = 0; i < AQ; i++) CHECK_NEAR(ref_out[i], out[i], 1e-12);
    for (int i = 0; i < AQ; i++) CHECK_NEAR(rq[i], dq[i], 1e-12);
    for (int i = 0; i < AK; i++) CHECK_NEAR(rk[i], dk[i], 1e-12);
    for (int i = 0; i < AK; i++) CHECK_NEAR(rv[i], dv[i], 1e-12);
    free(rq); free(rk); free(rv);
    /* nothing crosses a document: the probability of a masked pair is exactly zero */
    for (int b = 0; b < AB; b++)
        for (int h = 0; h < AH; h++)
            for (int t = 0; t < AT; t++)
                for (int s = 0; s < AT; s++) {
                    int visible = s <= t && attention_doc[b * AT + s] == attention_doc[b * AT + t];
                    double p = att[(((size_t)b * AH + h) * AT + t) * AT + s];
                    if (!visible) CHECK(p == 0);
                    else CHECK(p > 0);
                }
    free(c.q); free(c.k); free(c.v); free(c.dout); free(pdq); free(pdk); free(pdv);
    free(dq); free(dk); free(dv); free(att); free(dscores);
}

/* The packed, masked training attention of each document equals the inference attention
 * (KV cache) run on that document alone. */
TEST(training_attention_equals_cached_attention_per_document) {
    float q[AQ], k[AK], v[AK], out[AQ], lse[AB * AT * AH];
    for (int i = 0; i < AQ; i++) q[i] = mt_rng_normal(&rng);
    for (int i = 0; i < AK; i++) { k[i] = mt_rng_normal(&rng); v[i] = mt_rng_normal(&rng); }
    mt_attention_forward(out, lse, q, k, v, attention_doc, AB, AT, AH, AKV, AHD);
    float *scratch = malloc((size_t)mt_kernels_threads() * AT * sizeof(float)), ref[AQ];
    double worst = 0;
    for (int start = 0; start < AB * AT;) {
        int end = start + 1;
        while (end < AB * AT && end % AT != 0 && attention_doc[end] == attention_doc[start]) end++;
        int n = end - start;
        mt_attention_cached_forward(ref, q + start * AH * AHD, k + start * AKV * AHD,
                                    v + start * AKV * AHD, n, 0, AH, AKV, AHD, scratch);
        for (int i = 0; i < n * AH * AHD; i++) worst = fmax(worst, fabs(ref[i] - out[start * AH * AHD + i]));
        start = end;
    }
    CHECK_MSG(worst < 1e-6, "packed attention differs from per-document attention by %.3g", worst);
    free(scratch);
}

/* The tiled attention (float; blocks of 64 x 64 as GEMMs above head_dim 16, keys in chunks
 * of 256 below, both with an online softmax) against the simple reference that saves every
 * probability, on rows long enough for several blocks and chunks, with documents that start
 * mid-block and scores large enough that the running maximum changes between blocks. */
static void check_tiled_attention(int HD, int single_docs) {
    enum { B = 2, T = 600, H = 4, KV = 2 };
    const int NQ = B * T * H * HD, NK = B * T * KV * HD;
    int *doc = malloc(B * T * sizeof(int));
    for (int t = 0; t < B * T; t++) doc[t] = t < T ? 0 : (t - T < 37 ? 1 : (t - T < 333 ? 2 : 3));
    /* padding as memory tuning lays it out: every position its own document */
    for (int t = 2 * T - 50; single_docs && t < 2 * T; t++) doc[t] = -1 - t;
    /* calloc: sizes depend on HD, and the compiler cannot see the fill loops run */
    float *q = calloc(NQ, sizeof(float)), *k = calloc(NK, sizeof(float)), *v = calloc(NK, sizeof(float));
    float *dout = calloc(NQ, sizeof(float)), *out = calloc(NQ, sizeof(float)), *ref = calloc(NQ, sizeof(float));
    float *dq = calloc(NQ, sizeof(float)), *dk = calloc(NK, sizeof(float)), *dv = calloc(NK, sizeof(float));
    float *rq = calloc(NQ, sizeof(float)), *rk = calloc(NK, sizeof(float)), *rv = calloc(NK, sizeof(float));
    float *lse = calloc(B * T * H, sizeof(float));
    float *att = calloc((size_t)B * H * T * T, sizeof(float)), *ds = calloc((size_t)B * H * T * T, sizeof(float));
    for (int i = 0; i < NQ; i++) { q[i] = 2 * mt_rng_normal(&rng); dout[i] = mt_rng_normal(&rng); }
    /* keys grow along the row, so later chunks hold larger scores */
    for (int i = 0; i < NK; i++) { k[i] = mt_rng_normal(&rng) * (1 + (i / (KV * HD)) % T / 200.0f); v[i] = mt_rng_normal(&rng); }
    mt_attention_forward(out, lse, q, k, v, doc, B, T, H, KV, HD);
    mt_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, doc, B, T, H, KV, HD);
    mt_attention_forward_ref(ref, att, q, k, v, doc, B, T, H, KV, HD);
    mt_attention_backward_ref(rq, rk, rv, ds, dout, att, q, k, v, doc, B, T, H, KV, HD);
    double e_out = 0, e_q = 0, e_k = 0, e_v = 0;
    for (int i = 0; i < NQ; i++) e_out = fmax(e_out, fabs(out[i] - ref[i]));
    for (int i = 0; i < NQ; i++) e_q = fmax(e_q, fabs(dq[i] - rq[i]) / (1 + fabs(rq[i])));
    for (int i = 0; i < NK; i++) e_k = fmax(e_k, fabs(dk[i] - rk[i]) / (1 + fabs(rk[i])));
    for (int i = 0; i < NK; i++) e_v = fmax(e_v, fabs(dv[i] - rv[i]) / (1 + fabs(rv[i])));
    fprintf(stderr, "  tiled vs reference, head_dim %d: out %.3g, dq %.3g, dk %.3g, dv %.3g\n", HD, e_out, e_q, e_k, e_v);
    CHECK_MSG(e_out < 3e-5 && e_q < 1e-4 && e_k < 1e-4 && e_v < 1e-4,
              "tiled vs reference: out %.3g, dq %.3g, dk %.3g, dv %.3g", e_out, e_q, e_k, e_v);
    free(doc); free(q); free(k); free(v); free(dout); free(out); free(ref); free(dq); free(dk);
    free(dv); free(rq); free(rk); free(rv); free(lse); free(att); free(ds);
}

TEST(tiled_attention_matches_reference_across_key_chunks) { check_tiled_attention(40, 0); }

/* head_dim <= 16 takes the transposed path (keys vectorised, dK/dV accumulated transposed) */
TEST(small_head_attention_matches_reference) {
    check_tiled_attention(8, 1);
    check_tiled_attention(16, 0);
}

/* The blocked forward and backward (head_dim > 16: 64 x 64 blocks of GEMMs) in double
 * against the reference, which is itself checked against finite differences above: rows of
 * several blocks plus a tail, documents that start mid-block, one-token documents, and no
 * mask. */
static void check_blocked_attention_f64(int with_doc) {
    enum { B = 2, T = 150, H = 3, KV = 1, HD = 20 };
    const int NQ = B * T * H * HD, NK = B * T * KV * HD;
    int doc[B * T];
    for (int t = 0; t < B * T; t++) doc[t] = t < T ? (t < 70 ? 0 : 1) : (t - T < 130 ? 2 : -t);
    const int *d = with_doc ? doc : NULL;
    double *q = randn_d(NQ, 1), *k = randn_d(NK, 1), *v = randn_d(NK, 1), *dout = randn_d(NQ, 1);
    double *dq = randn_d(NQ, 1), *dk = randn_d(NK, 1), *dv = randn_d(NK, 1);
    double *rq = copy_d(dq, NQ), *rk = copy_d(dk, NK), *rv = copy_d(dv, NK);
    double *out = malloc(NQ * sizeof(double)), *ref = malloc(NQ * sizeof(double)), *lse = malloc(B * T * H * sizeof(double));
    double *att = malloc((size_t)B * H * T * T * sizeof(double)), *ds = malloc((size_t)B * H * T * T * sizeof(double));
    mt_attention_forward_f64(out, lse, q, k, v, d, B, T, H, KV, HD);
    mt_attention_backward_f64(dq, dk, dv, dout, out, lse, q, k, v, d, B, T, H, KV, HD);
    mt_attention_forward_ref_f64(ref, att, q, k, v, d, B, T, H, KV, HD);
    mt_attention_backward_ref_f64(rq, rk, rv, ds, dout, att, q, k, v, d, B, T, H, KV, HD);
    double e = 0;
    for (int i = 0; i < NQ; i++) e = fmax(e, fmax(fabs(out[i] - ref[i]), fabs(dq[i] - rq[i])));
    for (int i = 0; i < NK; i++) e = fmax(e, fmax(fabs(dk[i] - rk[i]), fabs(dv[i] - rv[i])));
    CHECK_MSG(e < 1e-11, "blocked attention (double, %s) differs from the reference by %.3g",
              with_doc ? "documents" : "no mask", e);
    free(q); free(k); free(v); free(dout); free(dq); free(dk); free(dv); free(rq); free(rk); free(rv);
    free(out); free(ref); free(lse); free(att); free(ds);
}

TEST(blocked_attention_equals_reference_in_double) {
    check_blocked_attention_f64(1);
    check_blocked_attention_f64(0);
}

/* ---- SwiGLU -------------------------------------------------------------------------- */

typedef struct { double *gate, *up, *dout; size_t n; } swiglu_ctx;

static double swiglu_loss(void *p) {
    swiglu_ctx *c = p;
    double *out = malloc(c->n * sizeof(double));
    mt_swiglu_forward_f64(out, c->gate, c->up, c->n);
    double l = dot_d(out, c->dout, c->n);
    free(out);
    return l;
}

TEST(swiglu_backward_matches_finite_differences) {
    enum { N = 40 };
    swiglu_ctx c = {randn_d(N, 3), randn_d(N, 1), randn_d(N, 1), N};
    double *pg = randn_d(N, 1), *pu = randn_d(N, 1), *dg = copy_d(pg, N), *du = copy_d(pu, N);
    mt_swiglu_backward_f64(dg, du, c.dout, c.gate, c.up, N);
    CHECK_FD("swiglu: dgate", fd_error(swiglu_loss, &c, c.gate, N, dg, pg));
    CHECK_FD("swiglu: dup", fd_error(swiglu_loss, &c, c.up, N, du, pu));
    free(c.gate); free(c.up); free(c.dout); free(pg); free(pu); free(dg); free(du);
}

/* ---- cross-entropy ------------------------------------------------------------------- */

enum { CE_N = 6, CE_V = 5 };
static const int ce_targets[CE_N] = {2, -1, 0, 4, -100, 1};
#define CE_SCALE 0.37

typedef struct { double *logits; } ce_ctx;

static double ce_loss(void *p) {
    ce_ctx *c = p;
    double lse[CE_N];
    return CE_SCALE * mt_cross_entropy_forward_f64(lse, c->logits, ce_targets, NULL, CE_N, CE_V, NULL);
}

TEST(masked_cross_entropy_matches_finite_differences) {
    ce_ctx c = {randn_d(CE_N * CE_V, 2)};
    double lse[CE_N], zero[CE_N * CE_V] = {0}, d[CE_N * CE_V];
    long count = 0;
    double nll = mt_cross_entropy_forward_f64(lse, c.logits, ce_targets, NULL, CE_N, CE_V, &count);
    CHECK_INT_EQ(count, 4);
    double want = 0;
    for (int i = 0; i < CE_N; i++) {
        if (ce_targets[i] < 0) continue;
        double z = 0;
        for (int v = 0; v < CE_V; v++) z += exp(c.logits[i * CE_V + v]);
        want += log(z) - c.logits[i * CE_V + ce_targets[i]];
    }
    CHECK_NEAR(nll, want, 1e-12);
    mt_cross_entropy_backward_f64(d, c.logits, lse, ce_targets, NULL, CE_SCALE, CE_N, CE_V);
    CHECK_FD("cross-entropy: dlogits", fd_error(ce_loss, &c, c.logits, CE_N * CE_V, d, zero));
    for (int v = 0; v < CE_V; v++) CHECK(d[1 * CE_V + v] == 0 && d[4 * CE_V + v] == 0);
    /* in place, as the model uses it */
    double *inplace = copy_d(c.logits, CE_N * CE_V);
    mt_cross_entropy_backward_f64(inplace, inplace, lse, ce_targets, NULL, CE_SCALE, CE_N, CE_V);
    CHECK(memcmp(inplace, d, sizeof d) == 0);
    free(inplace);
    free(c.logits);
}

/* Soft targets (distillation): rows 1 and 4 (ignored by their hard target) and row 2
 * (overriding its hard target) are scored against truncated distributions; row 4's list ends
 * early; the masses do not sum to 1. */
enum { SOFT_K = 3 };
static const int soft_ids[CE_N * SOFT_K] = {-1, 0, 0, 3, 0, 1, 4, 2, -1, -1, 0, 0, 2, -1, 0, -1, 0, 0};
static const float soft_p[CE_N * SOFT_K] = {0, 0, 0, 0.5f, 0.25f, 0.2f, 0.7f, 0.3f, 0, 0, 0, 0, 0.9f, 0, 0, 0, 0, 0};
static const mt_soft_targets soft_targets = {soft_ids, soft_p, SOFT_K};

static double soft_ce_loss(void *p) {
    ce_ctx *c = p;
    double lse[CE_N];
    return CE_SCALE * mt_cross_entropy_forward_f64(lse, c->logits, ce_targets, &soft_targets, CE_N, CE_V, NULL);
}

TEST(soft_target_cross_entropy_matches_finite_differences) {
    ce_ctx c = {randn_d(CE_N * CE_V, 5)};
    double lse[CE_N], zero[CE_N * CE_V] = {0}, d[CE_N * CE_V];
    long count = 0;
    double nll = mt_cross_entropy_forward_f64(lse, c.logits, ce_targets, &soft_targets, CE_N, CE_V, &count);
    CHECK_INT_EQ(count, 6); /* hard rows 0, 3, 5 and soft rows 1, 2, 4 */
    double want = 0;
    for (int i = 0; i < CE_N; i++) {
        double z = 0;
        for (int v = 0; v < CE_V; v++) z += exp(c.logits[i * CE_V + v]);
        z = log(z);
        if (soft_ids[i * SOFT_K] >= 0) {
            for (int j = 0; j < SOFT_K && soft_ids[i * SOFT_K + j] >= 0; j++)
                want += soft_p[i * SOFT_K + j] * (z - c.logits[i * CE_V + soft_ids[i * SOFT_K + j]]);
        } else if (ce_targets[i] >= 0) {
            want += z - c.logits[i * CE_V + ce_targets[i]];
        }
    }
    CHECK_NEAR(nll, want, 1e-12);
    mt_cross_entropy_backward_f64(d, c.logits, lse, ce_targets, &soft_targets, CE_SCALE, CE_N, CE_V);
    CHECK_FD("soft cross-entropy: dlogits", fd_error(soft_ce_loss, &c, c.logits, CE_N * CE_V, d, zero));
    double *inplace = copy_d(c.logits, CE_N * CE_V);
    mt_cross_entropy_backward_f64(inplace, inplace, lse, ce_targets, &soft_targets, CE_SCALE, CE_N, CE_V);
    CHECK(memcmp(inplace, d, sizeof d) == 0);
    free(inplace);
    free(c.logits);
}

/* ---- the whole model ----------------------------------------------------------------- */

enum { MB = 2, MT = 6 };
/* two rows of packed documents; positions restart per document; some targets ignored */
static const int model_doc[MB * MT] = {0, 0, 0, 1, 1, 1, 4, 4, 4, 4, 4, 7};
static const int model_pos[MB * MT] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 4, 0};
static const int model_targets_mask[MB * MT] = {1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0};

typedef struct {
    mt_train_state_f64 *s;
    int inputs[MB * MT], targets[MB * MT];
    double scale;
} model_ctx;

static double model_loss(void *p) {
    model_ctx *c = p;
    double nll = 0;
    mt_status st = mt_train_forward_f64(c->s, c->inputs, c->targets, model_pos, model_doc, c->scale, &nll, NULL);
    if (st) fprintf(stderr, "forward failed: %s\n", mt_last_error());
    return c->scale * nll;
}

/* Random weights at scales where attention is far from uniform and every term matters. */
static mt_model *random_model(const mt_config *cfg) {
    mt_model *m = NULL;
    CHECK_OK(mt_model_alloc(cfg, &m));
    if (!m) return NULL;
    mt_tensor_ref refs[64];
    int n = mt_model_tensors(m, refs, 64);
    for (int i = 0; i < n; i++) {
        int norm = refs[i].kind == MT_T_ATTN_NORM || refs[i].kind == MT_T_FFN_NORM || refs[i].kind == MT_T_NORM_FINAL;
        double std = norm ? 0.2 : refs[i].is_vector ? 0.3 : 1.0 / sqrt(refs[i].cols) * 1.5;
        for (int j = 0; j < refs[i].rows * refs[i].cols; j++)
            refs[i].data[j] = (float)((norm ? 1.0 : 0.0) + std * mt_rng_normal(&rng));
    }
    return m;
}

static void fill_batch(model_ctx *c, int V) {
    long n = 0;
    for (int i = 0; i < MB * MT; i++) {
        c->inputs[i] = (int)(mt_rng_next(&rng) % (uint64_t)V);
        c->targets[i] = model_targets_mask[i] ? (int)(mt_rng_next(&rng) % (uint64_t)V) : -1;
        n += model_targets_mask[i];
    }
    c->scale = 1.0 / (double)n;
}

/* FD of a few random elements of every tensor; returns the worst relative error, where the
 * error of a tensor is max |analytic - numeric| / max |analytic gradient of the tensor|. */
static double model_fd_error(model_ctx *c, const char *label) {
    mt_train_state_f64 *s = c->s;
    mt_tensor_ref refs[64];
    int n = mt_model_tensors(s->model, refs, 64);
    double worst = 0;
    mt_train_zero_grads_f64(s);
    model_loss(c);
    CHECK_OK(mt_train_backward_f64(s));
    double *grads = copy_d(s->grads, s->model->n_params);
    for (int i = 0; i < n; i++) {
        size_t off = (size_t)(refs[i].data - s->model->params), len = (size_t)refs[i].rows * refs[i].cols;
        double gmax = 1e-30, err = 0;
        for (size_t j = 0; j < len; j++) gmax = fmax(gmax, fabs(grads[off + j]));
        for (int sample = 0; sample < 5; sample++) {
            size_t j = off + mt_rng_next(&rng) % len;
            double keep = s->params[j];
            s->params[j] = keep + FD_EPS;
            double up = model_loss(c);
            s->params[j] = keep - FD_EPS;
            double down = model_loss(c);
            s->params[j] = keep;
            err = fmax(err, fabs((up - down) / (2 * FD_EPS) - grads[j]) / gmax);
        }
        if (err > worst) worst = err;
        if (err >= FD_TOL) fprintf(stderr, "  %s: %s rel err %.3g\n", label, refs[i].name, err);
    }
    free(grads);
    return worst;
}

/* GQA 4/2, tied head, interleaved RoPE, no biases */
static mt_config config_tied_interleaved(void) {
    mt_config c = {0};
    c.dim = 16; c.hidden_dim = 24; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 4;
    c.vocab_size = 23; c.max_seq_len = 64; c.norm_eps = 1e-5f; c.rope_theta = 10000;
    c.rope_interleaved = 1; c.tied_embeddings = 1;
    return c;
}

/* MQA (2 heads, 1 KV head), explicit head_dim 12 (2*12 != 16), q/k/v biases, untied head,
 * Llama 3 RoPE scaling (1 high-, 1 medium-, 4 low-frequency pairs), rotate-half RoPE */
static mt_config config_untied_bias_llama3(void) {
    mt_config c = {0};
    c.dim = 16; c.hidden_dim = 20; c.n_layers = 2; c.n_heads = 2; c.n_kv_heads = 1; c.head_dim = 12;
    c.vocab_size = 19; c.max_seq_len = 64; c.norm_eps = 1e-6f; c.rope_theta = 10000;
    c.rope_interleaved = 0; c.tied_embeddings = 0; c.attn_bias = 1;
    c.rope_scaling = MT_ROPE_SCALING_LLAMA3; c.rope_factor = 8; c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4; c.rope_original_max_pos = 64;
    return c;
}

/* max over tensors of max |a - b| / max |b| */
static double grads_rel_diff(const mt_model *m, const float *a, const double *b) {
    mt_tensor_ref refs[64];
    int n = mt_model_tensors(m, refs, 64);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        size_t off = (size_t)(refs[i].data - m->params), len = (size_t)refs[i].rows * refs[i].cols;
        double d = 0, ref = 1e-30;
        for (size_t j = off; j < off + len; j++) {
            d = fmax(d, fabs(a[j] - b[j]));
            ref = fmax(ref, fabs(b[j]));
        }
        worst = fmax(worst, d / ref);
    }
    return worst;
}

static void check_model_gradient(mt_config cfg, const char *label) {
    mt_model *m = random_model(&cfg);
    model_ctx c;
    if (!m) return;
    CHECK_OK(mt_train_create_f64(m, MB, MT, &c.s));
    fill_batch(&c, cfg.vocab_size);
    char what[96];
    snprintf(what, sizeof what, "model %s: FD", label);
    CHECK_FD(what, model_fd_error(&c, label));

    /* the float build of the same source agrees with the double build */
    mt_train_state *sf = NULL;
    CHECK_OK(mt_train_create(m, MB, MT, &sf));
    double nll_f = 0, nll_d = 0;
    CHECK_OK(mt_train_forward(sf, c.inputs, c.targets, model_pos, model_doc, c.scale, &nll_f, NULL));
    CHECK_OK(mt_train_backward(sf));
    mt_train_zero_grads_f64(c.s);
    CHECK_OK(mt_train_forward_f64(c.s, c.inputs, c.targets, model_pos, model_doc, c.scale, &nll_d, NULL));
    CHECK_OK(mt_train_backward_f64(c.s));
    double e = grads_rel_diff(m, sf->grads, c.s->grads);
    fprintf(stderr, "  model %s: float vs double: nll %.9f vs %.9f, grads rel diff %.2e\n", label,
            nll_f, nll_d, e);
    CHECK_NEAR(nll_f, nll_d, 1e-5 * fabs(nll_d));
    CHECK_MSG(e < 1e-4, "%s: float gradients differ from double by %.3g", label, e);
    mt_train_free(sf);
    mt_train_free_f64(c.s);
    mt_model_free(m);
}

TEST(model_gradient_matches_finite_differences) {
    check_model_gradient(config_tied_interleaved(), "tied GQA interleaved");
    check_model_gradient(config_untied_bias_llama3(), "untied bias MQA head_dim llama3");
}

TEST(frozen_tensors_get_no_gradient_and_backward_accumulates) {
    mt_config cfg = config_untied_bias_llama3();
    mt_model *m = random_model(&cfg);
    model_ctx c;
    if (!m) return;
    CHECK_OK(mt_train_create_f64(m, MB, MT, &c.s));
    mt_train_state_f64 *s = c.s;
    fill_batch(&c, cfg.vocab_size);
    size_t n = m->n_params;
    model_loss(&c);
    CHECK_OK(mt_train_backward_f64(s));
    double *g1 = copy_d(s->grads, n), worst = 0;
    /* a second micro-batch (here the same one) adds to the gradient */
    model_loss(&c);
    CHECK_OK(mt_train_backward_f64(s));
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(s->grads[i] - 2 * g1[i]));
    CHECK_MSG(worst < 1e-12, "second backward did not accumulate: %.3g", worst);
    /* the backward consumes its forward */
    CHECK_ERR(mt_train_backward_f64(s), MT_ERR_ARG, "without a forward");

    /* freeze everything but one MLP matrix and one bias */
    CHECK_OK(mt_train_set_trainable_f64(s, NULL, 0));
    CHECK_OK(mt_train_set_trainable_f64(s, "model.layers.0.mlp.up_proj.weight", 1));
    CHECK_OK(mt_train_set_trainable_f64(s, "model.layers.1.self_attn.k_proj.bias", 1));
    CHECK_ERR(mt_train_set_trainable_f64(s, "model.layers.9.mlp.up_proj.weight", 1), MT_ERR_ARG, "no tensor named");
    CHECK(mt_train_grad_f64(s, m->layers[0].wq) == NULL);
    CHECK(mt_train_grad_f64(s, m->layers[0].w_up) == s->grads + (m->layers[0].w_up - m->params));
    mt_train_zero_grads_f64(s);
    model_loss(&c);
    CHECK_OK(mt_train_backward_f64(s));
    size_t up0 = (size_t)(m->layers[0].w_up - m->params), up_len = (size_t)cfg.hidden_dim * cfg.dim;
    size_t bk1 = (size_t)(m->layers[1].bk - m->params), bk_len = (size_t)cfg.head_dim;
    long nonzero_frozen = 0;
    worst = 0;
    for (size_t i = 0; i < n; i++) {
        int trained = (i >= up0 && i < up0 + up_len) || (i >= bk1 && i < bk1 + bk_len);
        if (trained) worst = fmax(worst, fabs(s->grads[i] - g1[i]));
        else nonzero_frozen += s->grads[i] != 0;
    }
    CHECK_INT_EQ(nonzero_frozen, 0);
    CHECK_MSG(worst < 1e-12, "trainable gradients changed when others froze: %.3g", worst);
    free(g1);

    /* bad batches are refused with a message */
    int bad[MB * MT];
    memcpy(bad, c.inputs, sizeof bad);
    bad[3] = cfg.vocab_size;
    CHECK_ERR(mt_train_forward_f64(s, bad, c.targets, model_pos, model_doc, 1, NULL, NULL), MT_ERR_ARG, "outside the vocabulary");
    memcpy(bad, model_pos, sizeof bad);
    bad[5] = MT;
    CHECK_ERR(mt_train_forward_f64(s, c.inputs, c.targets, bad, model_doc, 1, NULL, NULL), MT_ERR_ARG, "position");
    mt_train_free_f64(s);

    /* the memory plan: the activation bytes are what the state allocated */
    mt_train_state *sf = NULL;
    CHECK_OK(mt_train_create(m, MB, MT, &sf));
    if (sf) CHECK_INT_EQ(sf->n_acts * sizeof(float), mt_train_activation_bytes(&cfg, MB, MT));
    CHECK(mt_train_state_bytes(&cfg, MB, MT) > mt_train_activation_bytes(&cfg, MB, MT) + n * sizeof(float));
    CHECK(mt_train_state_bytes(&cfg, 1, MT_TRAIN_MAX_T + 1) == SIZE_MAX);
    mt_train_state *none = NULL;
    CHECK_ERR(mt_train_create(m, 0, 4, &none), MT_ERR_ARG, "outside the limits");
    mt_train_free(sf);
    mt_model_free(m);
}

/* Activation recomputation (MT_TRAIN_RECOMPUTE) reruns each layer's forward in the backward:
 * the same loss and gradients as keeping every activation, from a smaller allocation. */
TEST(recomputation_gives_the_same_gradients_with_less_memory) {
    mt_config cfg = config_tied_interleaved();
    mt_model *m = random_model(&cfg);
    if (!m) return;
    model_ctx c;
    mt_train_state_f64 *keep = NULL, *rec = NULL;
    CHECK_OK(mt_train_create_f64(m, MB, MT, &keep));
    CHECK_OK(mt_train_create_flags_f64(m, MB, MT, MT_TRAIN_RECOMPUTE, &rec));
    if (!keep || !rec) return;
    c.s = keep;
    fill_batch(&c, cfg.vocab_size);
    double nll_keep = 0, nll_rec = 0, worst = 0;
    CHECK_OK(mt_train_forward_f64(keep, c.inputs, c.targets, model_pos, model_doc, c.scale, &nll_keep, NULL));
    CHECK_OK(mt_train_backward_f64(keep));
    CHECK_OK(mt_train_forward_f64(rec, c.inputs, c.targets, model_pos, model_doc, c.scale, &nll_rec, NULL));
    CHECK_OK(mt_train_backward_f64(rec));
    CHECK_NEAR(nll_rec, nll_keep, 1e-12);
    for (size_t i = 0; i < m->n_params; i++) worst = fmax(worst, fabs(rec->grads[i] - keep->grads[i]));
    CHECK_MSG(worst < 1e-12, "recomputed gradients differ by %.3g", worst);
    CHECK_INT_EQ(rec->n_acts * sizeof(double), mt_train_activation_bytes_flags_f64(&cfg, MB, MT, MT_TRAIN_RECOMPUTE));
    CHECK(mt_train_activation_bytes_flags(&cfg, MB, MT, MT_TRAIN_RECOMPUTE) < mt_train_activation_bytes(&cfg, MB, MT));
    mt_train_free_f64(keep);
    mt_train_free_f64(rec);
    mt_model_free(m);
}

/* The packed training forward of each document equals the inference forward (KV cache,
 * positions 0..n-1) on that document alone: document masking and position restarts. */
TEST(packed_training_forward_matches_inference_per_document) {
    mt_config cfg = config_untied_bias_llama3();
    mt_model *m = random_model(&cfg);
    mt_train_state *s = NULL;
    if (!m) return;
    CHECK_OK(mt_train_create(m, MB, MT, &s));
    model_ctx c;
    fill_batch(&c, cfg.vocab_size);
    CHECK_OK(mt_train_forward(s, c.inputs, c.targets, model_pos, model_doc, 1, NULL, NULL));
    int V = cfg.vocab_size;
    float *ref = malloc((size_t)MT * V * sizeof(float));
    double worst = 0;
    for (int start = 0; start < MB * MT;) {
        int end = start + 1;
        while (end < MB * MT && end % MT != 0 && model_doc[end] == model_doc[start]) end++;
        CHECK_OK(mt_model_logits(m, c.inputs + start, end - start, ref));
        for (int i = 0; i < (end - start) * V; i++)
            worst = fmax(worst, fabs(ref[i] - s->logits[(size_t)start * V + i]));
        start = end;
    }
    fprintf(stderr, "  max |packed training logits - per-document inference logits| = %.2e\n", worst);
    CHECK_MSG(worst < 1e-4, "packed training logits differ from inference by %.3g", worst);
    free(ref);
    mt_train_free(s);
    mt_model_free(m);
}

int main(void) {
    mt_set_threads(2);
    mt_rng_seed(&rng, 20240601);
    RUN(linear_backward_matches_finite_differences);
    RUN(embedding_backward_scatter_adds_repeated_tokens);
    RUN(rmsnorm_backward_matches_finite_differences);
    RUN(rope_backward_matches_finite_differences_in_both_layouts);
    RUN(attention_backward_with_document_mask_and_gqa_matches_finite_differences);
    RUN(training_attention_equals_cached_attention_per_document);
    RUN(tiled_attention_matches_reference_across_key_chunks);
    RUN(small_head_attention_matches_reference);
    RUN(blocked_attention_equals_reference_in_double);
    RUN(swiglu_backward_matches_finite_differences);
    RUN(masked_cross_entropy_matches_finite_differences);
    RUN(soft_target_cross_entropy_matches_finite_differences);
    RUN(model_gradient_matches_finite_differences);
    RUN(frozen_tensors_get_no_gradient_and_backward_accumulates);
    RUN(recomputation_gives_the_same_gradients_with_less_memory);
    RUN(packed_training_forward_matches_inference_per_document);
    TEST_MAIN_END();
}
