/* The mixture of memory experts: product-key routing finds the global top-K of all N
 * experts while scoring only n1 + n2 sub-keys; the backward (inputs, query projection, both
 * sub-key tables, the gates' softmax, expert rows a and b) matches finite differences in
 * double; inside the model its gradients match finite differences with a frozen base; a
 * fresh layer (b = 0) leaves the model's logits exactly as they were; the training forward
 * equals the KV-cache inference forward; save -> load is exact; bad shapes and files fail
 * clearly; the bank's sparse AdamW matches per-row AdamW and its state restores exactly. */
#include "test.h"
#include "model_batch.h"
#include <unistd.h>
#include <sys/stat.h>
#include <stdint.h>
#include <stdlib.h>
#include "core/rng.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "model/mome.h"
#include "model/train_model.h"
#include "model/forward.h"
#include "train/sparse_adam.h"
#include "formats/safetensors.h"
#include <math.h>

#define FD_EPS 1e-6
#define FD_TOL 1e-6
static mt_rng rng;

/* ---- the kernel ---------------------------------------------------------------------- */

enum { KT = 5 };
static const mt_mome_shape ksh = {.C = 6, .n1 = 5, .n2 = 4, .H = 2, .K = 3, .dk = 4, .Cx = 3};
#define KN 20L
static double kscratch[KT * (2 * (5 + 4) + 2 * 3)]; /* mt_mome_scratch_size(&ksh, KT) */

typedef struct {
    double *x, *router, *bank, *w; /* w: fixed weights of the loss Σ w·out */
    double *ctx;                   /* the routing context (no gradient) */
} kernel_ctx;

static const mt_mome_shape *kcur = &ksh; /* the shape and keys kernel_loss uses */
static const float *kkeys;

static double kernel_loss(kernel_ctx *c) {
    double out[KT * 6] = {0}, q[KT * 2 * 4], gate[KT * 2 * 3], z[KT * 2 * 3];
    int idx[KT * 2 * 3];
    mt_mome_forward_f64(out, q, idx, gate, z, c->x, c->ctx, c->router, c->bank, kkeys, kcur, KT, kscratch);
    double s = 0;
    for (int i = 0; i < KT * ksh.C; i++) s += c->w[i] * out[i];
    return s;
}

static double *randn(size_t n, double std) {
    double *p = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) p[i] = std * mt_rng_normal(&rng);
    return p;
}

/* max |analytic - numeric| / max |numeric| over every element of p */
static double fd_all(kernel_ctx *c, double *p, size_t n, const double *grad) {
    double worst = 0, scale = 1e-30;
    for (size_t j = 0; j < n; j++) {
        double keep = p[j];
        p[j] = keep + FD_EPS;
        double up = kernel_loss(c);
        p[j] = keep - FD_EPS;
        double down = kernel_loss(c);
        p[j] = keep;
        double num = (up - down) / (2 * FD_EPS);
        worst = fmax(worst, fabs(grad[j] - num));
        scale = fmax(scale, fabs(num));
    }
    return worst / scale;
}

TEST(product_key_routing_finds_the_global_top_k) {
    size_t rs = mt_mome_router_size(&ksh);
    double *x = randn((size_t)KT * ksh.C, 1), *router = randn(rs, 0.8), *bank = randn(2 * KN * ksh.C, 0.5);
    double *ctx = randn((size_t)KT * ksh.Cx, 1);
    double out[KT * 6] = {0}, q[KT * 2 * 4], gate[KT * 2 * 3], z[KT * 2 * 3];
    int idx[KT * 2 * 3];
    mt_mome_forward_f64(out, q, idx, gate, z, x, ctx, router, bank, NULL, &ksh, KT, kscratch);
    int half = ksh.dk / 2, bad = 0;
    const double *k1 = router + (size_t)ksh.H * ksh.dk * ksh.C, *k2 = k1 + (size_t)ksh.H * ksh.n1 * half;
    for (int t = 0; t < KT; t++)
        for (int h = 0; h < ksh.H; h++) {
            const double *qh = q + (size_t)t * ksh.H * ksh.dk + h * ksh.dk;
            double all[KN];
            for (long e = 0; e < KN; e++) {
                int i = (int)(e / ksh.n2), j = (int)(e % ksh.n2);
                double s1 = 0, s2 = 0;
                for (int c = 0; c < half; c++) {
                    s1 += k1[((size_t)h * ksh.n1 + i) * half + c] * qh[c];
                    s2 += k2[((size_t)h * ksh.n2 + j) * half + c] * qh[half + c];
                }
                all[e] = s1 + s2;
            }
            /* the chosen K must be exactly the K best of all N sums, best first */
            const int *got = idx + ((size_t)t * ksh.H + h) * ksh.K;
            for (int k = 0; k < ksh.K; k++) {
                int rank = 0;
                for (long e = 0; e < KN; e++) rank += all[e] > all[got[k]];
                bad += rank != k;
            }
            double gsum = 0;
            for (int k = 0; k < ksh.K; k++) gsum += gate[((size_t)t * ksh.H + h) * ksh.K + k];
            CHECK_NEAR(gsum, 1.0, 1e-12);
        }
    CHECK_MSG(bad == 0, "%d routed experts are not the global top-K", bad);
    /* the saved query is x·Wq^T + ctx·Wx^T */
    const double *wx = k2 + (size_t)ksh.H * ksh.n2 * half;
    double qerr = 0;
    for (int t = 0; t < KT; t++)
        for (int r = 0; r < ksh.H * ksh.dk; r++) {
            double want = 0;
            for (int c = 0; c < ksh.C; c++) want += router[(size_t)r * ksh.C + c] * x[t * ksh.C + c];
            for (int c = 0; c < ksh.Cx; c++) want += wx[(size_t)r * ksh.Cx + c] * ctx[t * ksh.Cx + c];
            qerr = fmax(qerr, fabs(q[t * ksh.H * ksh.dk + r] - want));
        }
    CHECK_NEAR(qerr, 0, 1e-12);
    free(x), free(router), free(bank), free(ctx);
}

TEST(mome_backward_matches_finite_differences) {
    size_t rs = mt_mome_router_size(&ksh), slots = (size_t)KT * ksh.H * ksh.K;
    kernel_ctx c = {randn((size_t)KT * ksh.C, 1), randn(rs, 0.8), randn(2 * KN * ksh.C, 0.7), randn((size_t)KT * ksh.C, 1),
                    randn((size_t)KT * ksh.Cx, 1)};
    double out[KT * 6] = {0}, q[KT * 2 * 4], gate[KT * 2 * 3], z[KT * 2 * 3];
    int idx[KT * 2 * 3];
    mt_mome_forward_f64(out, q, idx, gate, z, c.x, c.ctx, c.router, c.bank, NULL, &ksh, KT, kscratch);
    double *dx = calloc((size_t)KT * ksh.C, sizeof(double)), *dr = calloc(rs, sizeof(double));
    double *sg = malloc(slots * 2 * ksh.C * sizeof(double)), *dbank = calloc(2 * KN * ksh.C, sizeof(double));
    mt_mome_backward_f64(dx, dr, sg, c.w, c.x, c.ctx, q, idx, gate, z, c.router, c.bank, NULL, &ksh, KT, kscratch);
    /* what the sparse optimizer does: sum the slots of each expert */
    for (size_t sl = 0; sl < slots; sl++)
        for (int j = 0; j < ksh.C; j++) {
            dbank[(size_t)idx[sl] * 2 * ksh.C + j] += sg[sl * 2 * ksh.C + j];
            dbank[(size_t)idx[sl] * 2 * ksh.C + ksh.C + j] += sg[sl * 2 * ksh.C + ksh.C + j];
        }
    double ex = fd_all(&c, c.x, (size_t)KT * ksh.C, dx);
    size_t nq = (size_t)ksh.H * ksh.dk * ksh.C, nx = (size_t)ksh.H * ksh.dk * ksh.Cx, nk = rs - nq - nx;
    double eq = fd_all(&c, c.router, nq, dr), ek = fd_all(&c, c.router + nq, nk, dr + nq);
    double ec = fd_all(&c, c.router + nq + nk, nx, dr + nq + nk);
    double eb = fd_all(&c, c.bank, 2 * KN * ksh.C, dbank);
    fprintf(stderr, "  rel err: input %.2e, query %.2e, sub-keys %.2e, context projection %.2e, expert rows %.2e\n",
            ex, eq, ek, ec, eb);
    CHECK(ex < FD_TOL && eq < FD_TOL && ek < FD_TOL && ec < FD_TOL && eb < FD_TOL);
    /* a frozen router: same input and expert gradients, no router work */
    double *dx2 = calloc((size_t)KT * ksh.C, sizeof(double)), *sg2 = malloc(slots * 2 * ksh.C * sizeof(double));
    mt_mome_backward_f64(dx2, NULL, sg2, c.w, c.x, c.ctx, q, idx, gate, z, c.router, c.bank, NULL, &ksh, KT, kscratch);
    CHECK(memcmp(sg, sg2, slots * 2 * ksh.C * sizeof(double)) == 0);
    free(dx2), free(sg2);
    free(c.x), free(c.router), free(c.bank), free(c.w), free(c.ctx), free(dx), free(dr), free(sg), free(dbank);
}

/* Keyed experts: unset keys change nothing; an expert keyed to one token's context is routed
 * to from that context alone (other tokens pick the next candidates instead), an expert whose
 * key matches no token is never chosen, so with every expert keyed elsewhere a token gets no
 * output at all; the backward still matches finite differences. */
TEST(keyed_experts_answer_only_their_context) {
    mt_mome_shape kk = ksh;
    kk.match = 0.99f;
    size_t rs = mt_mome_router_size(&ksh), slots = (size_t)KT * ksh.H * ksh.K;
    kernel_ctx c = {randn((size_t)KT * ksh.C, 1), randn(rs, 0.8), randn(2 * KN * ksh.C, 0.7), randn((size_t)KT * ksh.C, 1),
                    randn((size_t)KT * ksh.Cx, 1)};
    float keys[KN * 3] = {0};
    double out[KT * 6] = {0}, out2[KT * 6] = {0}, q[KT * 2 * 4], gate[KT * 2 * 3], gate2[KT * 2 * 3], z[KT * 2 * 3];
    int idx[KT * 2 * 3], idx2[KT * 2 * 3];
    mt_mome_forward_f64(out, q, idx, gate, z, c.x, c.ctx, c.router, c.bank, NULL, &ksh, KT, kscratch);
    mt_mome_forward_f64(out2, q, idx2, gate2, z, c.x, c.ctx, c.router, c.bank, keys, &kk, KT, kscratch);
    CHECK(memcmp(out, out2, sizeof out) == 0 && memcmp(idx, idx2, sizeof idx) == 0); /* no key set: unkeyed */
    /* token 0 claims its experts (both heads) */
    for (int k = 0; k < ksh.H * ksh.K; k++)
        for (int j = 0; j < ksh.Cx; j++) keys[idx[k] * ksh.Cx + j] = (float)c.ctx[j];
    memset(out2, 0, sizeof out2);
    mt_mome_forward_f64(out2, q, idx2, gate2, z, c.x, c.ctx, c.router, c.bank, keys, &kk, KT, kscratch);
    CHECK(memcmp(out2, out, ksh.C * sizeof(double)) == 0 && memcmp(idx2, idx, ksh.H * ksh.K * sizeof(int)) == 0);
    int foreign = 0;
    for (size_t sl = (size_t)ksh.H * ksh.K; sl < slots; sl++)
        for (int k = 0; k < ksh.H * ksh.K; k++) foreign += gate2[sl] > 0 && idx2[sl] == idx[k];
    CHECK_MSG(foreign == 0, "%d slots of other tokens chose experts keyed to token 0", foreign);
    /* the backward with keys matches finite differences (input and expert rows) */
    double *dx = calloc((size_t)KT * ksh.C, sizeof(double)), *sg = malloc(slots * 2 * ksh.C * sizeof(double));
    double *dbank = calloc(2 * KN * ksh.C, sizeof(double)), *dr = calloc(rs, sizeof(double));
    mt_mome_backward_f64(dx, dr, sg, c.w, c.x, c.ctx, q, idx2, gate2, z, c.router, c.bank, keys, &kk, KT, kscratch);
    for (size_t sl = 0; sl < slots; sl++)
        for (int j = 0; j < 2 * ksh.C; j++) dbank[(size_t)idx2[sl] * 2 * ksh.C + j] += sg[sl * 2 * ksh.C + j];
    kcur = &kk, kkeys = keys;
    double ex = fd_all(&c, c.x, (size_t)KT * ksh.C, dx), eb = fd_all(&c, c.bank, 2 * KN * ksh.C, dbank);
    fprintf(stderr, "  keyed: rel err input %.2e, expert rows %.2e\n", ex, eb);
    CHECK(ex < FD_TOL && eb < FD_TOL);
    /* every expert keyed to a context no token has: no output anywhere */
    for (long e = 0; e < KN; e++)
        for (int j = 0; j < ksh.Cx; j++) keys[e * ksh.Cx + j] = (float)mt_rng_normal(&rng);
    memset(out2, 0, sizeof out2);
    mt_mome_forward_f64(out2, q, idx2, gate2, z, c.x, c.ctx, c.router, c.bank, keys, &kk, KT, kscratch);
    double most = 0;
    for (int i = 0; i < KT * ksh.C; i++) most = fmax(most, fabs(out2[i]));
    CHECK_NEAR(most, 0, 0);
    kcur = &ksh, kkeys = NULL;
    free(c.x), free(c.router), free(c.bank), free(c.w), free(c.ctx), free(dx), free(sg), free(dbank), free(dr);
}

/* The routing context: decayed sums of fixed token codes, restarted at position 0, the same
 * whether a sequence is coded at once or chunk by chunk (the KV-cache path). */
TEST(routing_context_codes_the_document_so_far) {
    mt_mome_context_spec cs = {.dim = 16, .n_decays = 2, .decays = {0, 0.9f}};
    int W = mt_mome_context_width(&cs);
    int ids[8] = {7, 3, 11, 5, 7, 3, 11, 5}, pos[8] = {0, 1, 2, 3, 0, 1, 2, 3};
    double ctx[8 * 32], acc[8 * 32], ctx2[8 * 32], acc2[8 * 32];
    mt_mome_context_f64(ctx, acc, ids, pos, 8, &cs, NULL);
    /* a document starting at position 0 is coded as if alone */
    CHECK(memcmp(ctx, ctx + 4 * W, 4 * W * sizeof(double)) == 0);
    /* in two chunks, carrying the running sums: the same */
    int pos2[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    mt_mome_context_f64(ctx, acc, ids, pos2, 8, &cs, NULL);
    mt_mome_context_f64(ctx2, acc2, ids, pos2, 5, &cs, NULL);
    mt_mome_context_f64(ctx2 + 5 * W, acc2 + 5 * W, ids + 5, pos2 + 5, 3, &cs, acc2 + 4 * W);
    CHECK(memcmp(ctx, ctx2, sizeof ctx) == 0);
    /* every block has unit RMS; decay 0 codes the current token alone (the same token, the same
     * block), decay 0.9 remembers what came before (the same token, another block) */
    double worst = 0;
    for (int t = 0; t < 8; t++)
        for (int b = 0; b < 2; b++) {
            double ss = 0;
            for (int j = 0; j < 16; j++) ss += ctx[t * W + b * 16 + j] * ctx[t * W + b * 16 + j];
            worst = fmax(worst, fabs(ss / 16 - 1));
        }
    CHECK_NEAR(worst, 0, 1e-12);
    CHECK(memcmp(ctx, ctx + 4 * W, 16 * sizeof(double)) == 0);
    double differs = 0;
    for (int j = 16; j < 32; j++) differs = fmax(differs, fabs(ctx[j] - ctx[4 * W + j]));
    CHECK(differs > 0.1);
    /* codes are ±1 and differ between tokens */
    int same = 0;
    for (int j = 0; j < 16; j++) {
        CHECK(fabs(fabs(acc[j]) - 1) < 1e-12);
        same += acc[j] == acc[W + j];
    }
    CHECK(same < 16);
}

/* ---- in the model -------------------------------------------------------------------- */

static const int model_mask[MB * MT] = {1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 1};

static mt_config small_config(void) {
    mt_config c = {0};
    c.dim = 16; c.hidden_dim = 24; c.n_layers = 3; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 4;
    c.vocab_size = 23; c.max_seq_len = 64; c.norm_eps = 1e-5f; c.rope_theta = 10000;
    c.rope_interleaved = 1; c.tied_embeddings = 1;
    return c;
}

static mt_model *random_model(const mt_config *cfg) {
    mt_model *m = NULL;
    CHECK_OK(mt_model_alloc(cfg, &m));
    for (size_t i = 0; m && i < m->n_params; i++) m->params[i] = (float)(0.4 * mt_rng_normal(&rng));
    return m;
}

static mt_mome_options small_options(int context_dim) {
    mt_mome_options o;
    mt_mome_options_default(&o);
    o.experts = 36, o.k = 3, o.heads = 2, o.query_dim = 6, o.sites = "0,2", o.seed = 9, o.context_dim = context_dim;
    return o;
}

static mt_mome *small_mome(mt_model *m, int trained) {
    mt_mome_options o = small_options(4);
    mt_mome *mm = NULL;
    CHECK_OK(mt_mome_create(m, &o, &mm));
    if (mm && trained) /* as if trained: b no longer zero */
        for (size_t i = 0; i < mm->n_sites * mm->bank_size; i++) mm->bank[i] = (float)(0.5 * mt_rng_normal(&rng));
    return mm;
}

static double fd_at(model_ctx *c, double *p, double grad, double gmax) {
    double keep = *p;
    *p = keep + FD_EPS;
    double up = model_loss(c);
    *p = keep - FD_EPS;
    double down = model_loss(c);
    *p = keep;
    return fabs((up - down) / (2 * FD_EPS) - grad) / gmax;
}

TEST(model_memory_expert_gradients_match_finite_differences_with_frozen_base) {
    mt_config cfg = small_config();
    mt_model *m = random_model(&cfg);
    mt_mome *mm = m ? small_mome(m, 1) : NULL;
    if (!mm) return;
    CHECK_OK(mt_model_attach_mome(m, mm));
    model_ctx c;
    CHECK_OK(mt_train_create_f64(m, MB, MT, &c.s));
    CHECK_OK(mt_train_set_trainable_f64(c.s, NULL, 0));
    long n = 0;
    for (int i = 0; i < MB * MT; i++) {
        c.inputs[i] = (int)(mt_rng_next(&rng) % 23);
        c.targets[i] = model_mask[i] ? (int)(mt_rng_next(&rng) % 23) : -1;
        n += model_mask[i];
    }
    c.scale = 1.0 / n;
    mt_train_state_f64 *s = c.s;
    mt_train_zero_grads_f64(s);
    model_loss(&c);
    CHECK_OK(mt_train_backward_f64(s));
    /* router: every element of both sites */
    size_t nr = mm->n_sites * mm->router_size;
    double gmax = 1e-30, worst = 0;
    for (size_t j = 0; j < nr; j++) gmax = fmax(gmax, fabs(s->mome_router_grads[j]));
    for (size_t j = 0; j < nr; j++) worst = fmax(worst, fd_at(&c, s->mome_router + j, s->mome_router_grads[j], gmax));
    fprintf(stderr, "  router (query + sub-keys, 2 sites): rel err %.2e\n", worst);
    CHECK_MSG(worst < FD_TOL, "router gradient rel err %.3g", worst);
    /* expert rows: the summed slot gradients of a few used experts, a and b */
    size_t BT = MB * MT, slots = BT * mm->shape.H * mm->shape.K, C = (size_t)cfg.dim;
    double *dbank = calloc(mm->n_sites * mm->bank_size, sizeof(double));
    for (int site = 0; site < mm->n_sites; site++)
        for (size_t sl = 0; sl < slots; sl++) {
            int e = s->mome_idx[site * slots + sl];
            const double *g = s->mome_slot_grads + (site * slots + sl) * 2 * C;
            double *da = dbank + site * mm->bank_size + e * 2 * C, *db = da + C;
            for (size_t j = 0; j < C; j++) da[j] += g[j], db[j] += g[C + j];
        }
    gmax = 1e-30, worst = 0;
    for (size_t j = 0; j < mm->n_sites * mm->bank_size; j++) gmax = fmax(gmax, fabs(dbank[j]));
    for (int site = 0; site < mm->n_sites; site++)
        for (int sample = 0; sample < 6; sample++) {
            int e = s->mome_idx[site * slots + mt_rng_next(&rng) % slots];
            int which = sample % 2;
            size_t at = site * mm->bank_size + e * 2 * C + (which ? C : 0) + mt_rng_next(&rng) % C;
            worst = fmax(worst, fd_at(&c, s->mome_bank + at, dbank[at], gmax));
        }
    /* an expert no token chose has zero gradient and zero effect */
    fprintf(stderr, "  expert rows a, b (chosen experts): rel err %.2e\n", worst);
    CHECK_MSG(worst < FD_TOL, "expert row gradient rel err %.3g", worst);
    double base_max = 0; /* a frozen base gets no gradient (or no gradient buffer at all) */
    for (size_t i = 0; s->grads && i < m->n_params; i++) base_max = fmax(base_max, fabs(s->grads[i]));
    CHECK(base_max == 0);
    free(dbank);
    mt_train_free_f64(s);
    mt_model_free(m);
    mt_mome_free(mm);
}

TEST(fresh_layer_is_the_base_and_training_forward_equals_inference) {
    mt_config cfg = small_config();
    mt_model *m = random_model(&cfg);
    mt_mome *mm = m ? small_mome(m, 0) : NULL;
    if (!mm) return;
    int ids[6] = {1, 5, 3, 9, 12, 4};
    size_t V = (size_t)cfg.vocab_size;
    float *l0 = malloc(6 * V * sizeof(float)), *l1 = malloc(6 * V * sizeof(float));
    CHECK_OK(mt_model_logits(m, ids, 6, l0));
    CHECK_OK(mt_model_attach_mome(m, mm));
    CHECK_OK(mt_model_logits(m, ids, 6, l1));
    CHECK_MSG(memcmp(l0, l1, 6 * V * sizeof(float)) == 0, "a fresh memory layer changed the logits");
    for (size_t i = 0; i < mm->n_sites * mm->bank_size; i++) mm->bank[i] = (float)(0.5 * mt_rng_normal(&rng));
    CHECK_OK(mt_model_attach_mome(m, mm)); /* drops the KV cache */
    CHECK_OK(mt_model_logits(m, ids, 6, l1));
    double changed = 0;
    for (size_t i = 0; i < 6 * V; i++) changed = fmax(changed, fabs(l1[i] - l0[i]));
    CHECK_MSG(changed > 1e-3, "a trained memory layer did not change the logits");
    mt_train_state *s = NULL;
    CHECK_OK(mt_train_create(m, 1, 6, &s));
    int targets[6] = {-1, -1, -1, -1, -1, -1};
    CHECK_OK(mt_train_forward(s, ids, targets, NULL, NULL, 1, NULL, NULL));
    double d = 0;
    for (size_t i = 0; s && i < 6 * V; i++) d = fmax(d, fabs(s->logits[i] - l1[i]));
    fprintf(stderr, "  |training logits - inference logits| = %.2e\n", d);
    CHECK_MSG(d < 1e-4, "training and inference disagree by %.3g", d);
    mt_train_free(s);
    /* save -> load: same logits */
    const char *dir = "build/tests/tmp_mome";
    CHECK_OK(mt_mome_save(mm, dir));
    CHECK(mt_mome_present(dir));
    mt_adapter_set *set = NULL;
    CHECK_OK(mt_model_attach_mome(m, NULL));
    CHECK_OK(mt_adapter_set_load(m, dir, &set));
    float *l2 = malloc(6 * V * sizeof(float));
    CHECK_OK(mt_model_logits(m, ids, 6, l2));
    CHECK_MSG(memcmp(l1, l2, 6 * V * sizeof(float)) == 0, "logits differ after save -> load");
    CHECK_OK(mt_model_attach_mome(m, NULL));
    mt_adapter_set_free(set);
    free(l0), free(l1), free(l2);
    mt_mome_free(mm);
    mt_model_free(m);
}

/* Decoding token by token through the KV cache (the routing context carried between calls)
 * gives the logits of the whole sequence at once; a layer without a context saves and loads
 * as one (files from before the context). */
TEST(kv_cache_decoding_equals_the_whole_sequence) {
    mt_config cfg = small_config();
    mt_model *m = random_model(&cfg);
    mt_mome *mm = m ? small_mome(m, 1) : NULL;
    if (!mm) return;
    CHECK_OK(mt_model_attach_mome(m, mm));
    enum { N = 9 };
    int ids[N] = {1, 5, 3, 9, 12, 4, 5, 3, 7};
    size_t V = (size_t)cfg.vocab_size;
    float *all = malloc(N * V * sizeof(float)), *one = malloc(V * sizeof(float));
    CHECK_OK(mt_model_logits(m, ids, N, all));
    double d = 0;
    for (int t = 0; t < N; t++) {
        CHECK_OK(mt_forward(m, ids + t, 1, t, one, 0));
        for (size_t v = 0; v < V; v++) d = fmax(d, fabs(one[v] - all[t * V + v]));
    }
    fprintf(stderr, "  |token-by-token logits - whole-sequence logits| = %.2e\n", d);
    CHECK_MSG(d < 1e-4, "the KV-cache path disagrees by %.3g", d);
    /* without the context the logits change (it takes part in routing) */
    mt_mome_options o = small_options(0);
    mt_mome *plain = NULL;
    CHECK_OK(mt_mome_create(m, &o, &plain));
    if (plain) {
        CHECK(plain->shape.Cx == 0 && plain->router_size < mm->router_size);
        const char *dir = "build/tests/tmp_mome_plain";
        CHECK_OK(mt_mome_save(plain, dir));
        mt_mome *back = NULL;
        CHECK_OK(mt_mome_load(m, dir, &back));
        CHECK(back && back->shape.Cx == 0 && back->router_size == plain->router_size);
        mt_mome_free(back);
    }
    mt_mome_free(plain);
    CHECK_OK(mt_model_attach_mome(m, NULL));
    free(all), free(one);
    mt_mome_free(mm);
    mt_model_free(m);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) fputs(text, f), fclose(f);
}

TEST(bad_shapes_and_files_are_refused) {
    mt_config cfg = small_config();
    mt_model *m = random_model(&cfg);
    if (!m) return;
    mt_mome_options o;
    mt_mome_options_default(&o);
    mt_mome *mm = NULL;
    o.experts = 37; /* prime: 37 x 1 */
    CHECK_ERR(mt_mome_create(m, &o, &mm), MT_ERR_ARG, "factors as 37 x 1");
    o.experts = 64, o.k = 0;
    CHECK_ERR(mt_mome_create(m, &o, &mm), MT_ERR_ARG, "--expert-k 0");
    o.k = 4, o.sites = "0,7";
    CHECK_ERR(mt_mome_create(m, &o, &mm), MT_ERR_ARG, "--expert-sites");
    o.sites = "last", o.query_dim = 5;
    CHECK_ERR(mt_mome_create(m, &o, &mm), MT_ERR_ARG, "must be even");
    CHECK(mm == NULL);
    o.query_dim = 4;
    CHECK_OK(mt_mome_create(m, &o, &mm));
    const char *dir = "build/tests/tmp_mome_bad";
    if (mm) CHECK_OK(mt_mome_save(mm, dir));
    /* a model of another width */
    mt_config other = cfg;
    other.dim = 8, other.head_dim = 2;
    mt_model *m2 = random_model(&other);
    mt_mome *back = NULL;
    if (m2) CHECK_ERR(mt_mome_load(m2, dir, &back), MT_ERR_MISMATCH, "width 16");
    FILE *f = fopen("build/tests/tmp_mome_bad/mome.safetensors", "r+b");
    if (f) { /* truncate the tensor data */
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fclose(f);
        CHECK(truncate("build/tests/tmp_mome_bad/mome.safetensors", len - 8) == 0);
        CHECK(mt_mome_load(m, dir, &back) != MT_OK);
    }
    /* a context the config cannot mean */
    if (mm) {
        CHECK_OK(mt_mome_save(mm, dir));
        const char *cfg_path = "build/tests/tmp_mome_bad/mome_config.json";
        char text[1024];
        snprintf(text, sizeof text, "{\"type\": \"memtune-mome\", \"experts\": 64, \"n1\": 8, \"n2\": 8, \"heads\": 4, "
                 "\"k\": 4, \"query_dim\": 4, \"layers\": [2], \"dim\": 16, \"n_layers\": 3, "
                 "\"context\": {\"dim\": 32, \"decays\": [%s]}}", "0.5, 1.5");
        write_text(cfg_path, text);
        CHECK_ERR(mt_mome_load(m, dir, &back), MT_ERR_FORMAT, "context decay 1");
        snprintf(text, sizeof text, "{\"type\": \"memtune-mome\", \"experts\": 64, \"n1\": 8, \"n2\": 8, \"heads\": 4, "
                 "\"k\": 4, \"query_dim\": 4, \"layers\": [2], \"dim\": 16, \"n_layers\": 3, "
                 "\"context\": {\"dim\": 0, \"decays\": []}}");
        write_text(cfg_path, text);
        CHECK_ERR(mt_mome_load(m, dir, &back), MT_ERR_FORMAT, "\"context\" needs");
        /* a config that names a context whose tensor the file lacks */
        snprintf(text, sizeof text, "{\"type\": \"memtune-mome\", \"experts\": 64, \"n1\": 8, \"n2\": 8, \"heads\": 4, "
                 "\"k\": 4, \"query_dim\": 4, \"layers\": [2], \"dim\": 16, \"n_layers\": 3}");
        write_text(cfg_path, text);
        CHECK_ERR(mt_mome_load(m, dir, &back), MT_ERR_MISMATCH, "names no \"context\"");
    }
    o.context_dim = 2000;
    mt_mome *wide = NULL;
    CHECK_ERR(mt_mome_create(m, &o, &wide), MT_ERR_ARG, "--expert-context 2000");
    mt_mome_free(mm);
    mt_model_free(m2);
    mt_model_free(m);
}

/* The layout of files from before the banks were mapped: each site's parts together. */
static void write_site_by_site(const mt_mome *mm, const char *path) {
    const mt_mome_shape *sh = &mm->shape;
    size_t nq = (size_t)sh->H * sh->dk * sh->C, n1 = (size_t)sh->H * sh->n1 * (sh->dk / 2);
    const char *part[5] = {"query", "keys1", "keys2", "experts", "context_query"};
    long rows[5] = {(long)sh->H * sh->dk, (long)sh->H * sh->n1, (long)sh->H * sh->n2, mm->n_experts, (long)sh->H * sh->dk};
    int cols[5] = {sh->C, sh->dk / 2, sh->dk / 2, 2 * sh->C, sh->Cx};
    size_t off[5] = {0, nq, nq + n1, 0, mt_mome_context_offset(sh)};
    mt_st_desc d[10];
    char names[10][96];
    int n = 0;
    for (int site = 0; site < mm->n_sites && n < 10; site++)
        for (int k = 0; k < 5; k++, n++) {
            snprintf(names[n], sizeof names[n], "model.layers.%d.mome.%s", mm->layers[site], part[k]);
            d[n] = (mt_st_desc){.name = names[n], .dtype = "F32", .n_dims = 2, .shape = {rows[k], cols[k]}};
        }
    mt_st_writer w;
    CHECK_OK(mt_st_writer_open(&w, path, d, n, NULL));
    for (int i = 0; i < n; i++) {
        int site = i / 5, k = i % 5;
        const float *base = k == 3 ? mm->bank + site * mm->bank_size : mm->router + site * mm->router_size;
        CHECK_OK(mt_st_writer_put_f32(&w, base + off[k], (size_t)rows[k] * cols[k]));
    }
    CHECK_OK(mt_st_writer_commit(&w));
}

/* The banks are memory-mapped on load (mt_mome_save keeps them back to back), copy-on-write;
 * a file laid out site by site is read instead; the values are exact either way; a NaN in a
 * mapped bank is refused. */
TEST(bank_is_mapped_on_load_or_read_when_it_cannot_be) {
    mt_config cfg = small_config();
    mt_model *m = random_model(&cfg);
    mt_mome *mm = m ? small_mome(m, 1) : NULL, *back = NULL, *again = NULL;
    if (!mm) return;
    size_t bank_bytes = mm->n_sites * mm->bank_size * sizeof(float), router_bytes = mm->n_sites * mm->router_size * sizeof(float);
    const char *dir = "build/tests/tmp_mome_map", *file = "build/tests/tmp_mome_map/mome.safetensors";
    CHECK_OK(mt_mome_save(mm, dir));
    CHECK_OK(mt_mome_load(m, dir, &back));
    if (back) {
        CHECK(back->bank_file.data != NULL);
        CHECK(memcmp(back->bank, mm->bank, bank_bytes) == 0 && memcmp(back->router, mm->router, router_bytes) == 0);
        back->bank[0] += 1; /* the process's copy changes, the file does not */
        CHECK_OK(mt_mome_load(m, dir, &again));
        CHECK(again && again->bank[0] == mm->bank[0]);
        mt_mome_free(again), mt_mome_free(back);
    }
    write_site_by_site(mm, file);
    back = NULL;
    CHECK_OK(mt_mome_load(m, dir, &back));
    CHECK(back && back->bank_file.data == NULL);
    CHECK(back && memcmp(back->bank, mm->bank, bank_bytes) == 0 && memcmp(back->router, mm->router, router_bytes) == 0);
    mt_mome_free(back);
    CHECK_OK(mt_mome_save(mm, dir));
    FILE *f = fopen(file, "r+b");
    if (f) { /* the last value of the last site's bank */
        float nan = NAN;
        fseek(f, -(long)sizeof nan, SEEK_END);
        fwrite(&nan, sizeof nan, 1, f);
        fclose(f);
    }
    back = NULL;
    CHECK_ERR(mt_mome_load(m, dir, &back), MT_ERR_FORMAT, "non-finite value in model.layers.2.mome.experts");
    CHECK(back == NULL);
    mt_mome_free(mm);
    mt_model_free(m);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Trains (as if) rows `rows` of every site: b no longer zero. */
static void touch_rows(mt_mome *mm, const long *rows, int n) {
    for (int site = 0; site < mm->n_sites; site++)
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 2 * mm->shape.C; c++)
                mm->bank[site * mm->bank_size + (size_t)rows[i] * 2 * mm->shape.C + c] = (float)(0.5 * mt_rng_normal(&rng));
}

/* The size rule: an adapter file holds the router and the rows that can change the output (b !=
 * 0) with their ids, so it grows with the rows touched (exactly 2C floats + one id per row and
 * site) and not with the bank (N = 1024 and N = 16384 with the same rows: the same bank bytes);
 * loading it gives the same logits; a bank almost all touched keeps the dense layout. */
TEST(adapter_files_grow_with_touched_rows_not_with_the_bank) {
    mt_config cfg = small_config();
    mt_model *m = random_model(&cfg);
    if (!m) return;
    const long rows[6] = {3, 17, 100, 511, 700, 1000};
    long size[2][2], router_bytes[2];
    const long experts[2] = {1024, 16384};
    const char *dir = "build/tests/tmp_mome_sparse", *file = "build/tests/tmp_mome_sparse/mome.safetensors";
    int ids[6] = {1, 5, 3, 9, 12, 4};
    size_t V = (size_t)cfg.vocab_size;
    float *l0 = malloc(6 * V * sizeof(float)), *l1 = malloc(6 * V * sizeof(float));
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 2; t++) {
            mt_mome_options o = small_options(4);
            o.experts = experts[b], o.k = 4;
            mt_mome *mm = NULL, *back = NULL;
            CHECK_OK(mt_mome_create(m, &o, &mm));
            if (!mm) continue;
            touch_rows(mm, rows, t ? 6 : 3);
            router_bytes[b] = (long)(mm->n_sites * mm->router_size * sizeof(float));
            CHECK_OK(mt_mome_save(mm, dir));
            size[b][t] = file_size(file);
            CHECK_OK(mt_model_attach_mome(m, mm));
            CHECK_OK(mt_model_logits(m, ids, 6, l0));
            CHECK_OK(mt_mome_load(m, dir, &back));
            if (back) {
                CHECK(back->bank_file.data == NULL); /* sparse: read, not mapped */
                CHECK_OK(mt_model_attach_mome(m, back));
                CHECK_OK(mt_model_logits(m, ids, 6, l1));
                CHECK_MSG(memcmp(l0, l1, 6 * V * sizeof(float)) == 0, "logits differ after a sparse save -> load");
            }
            CHECK_OK(mt_model_attach_mome(m, NULL));
            mt_mome_free(back), mt_mome_free(mm);
        }
    long row_bytes = 2 * cfg.dim * (long)sizeof(float) + (long)sizeof(int32_t), sites = 2;
    fprintf(stderr, "  files: N=1024: %ld, %ld bytes; N=16384: %ld, %ld bytes (3, 6 rows touched)\n", size[0][0],
            size[0][1], size[1][0], size[1][1]);
    CHECK_INT_EQ(size[0][1] - size[0][0], 3 * sites * row_bytes); /* 3 more rows per site */
    CHECK_INT_EQ(size[1][1] - size[1][0], 3 * sites * row_bytes);
    CHECK(llabs((size[1][0] - router_bytes[1]) - (size[0][0] - router_bytes[0])) < 512); /* header names aside */
    CHECK(size[1][0] < router_bytes[1] + 6 * sites * row_bytes + 4096); /* not 16384 rows */
    /* all rows touched: the dense layout, mapped on load */
    mt_mome *full = small_mome(m, 1), *back = NULL;
    if (full) {
        CHECK_OK(mt_mome_save(full, dir));
        CHECK_OK(mt_mome_load(m, dir, &back));
        CHECK(back && back->bank_file.data != NULL);
        mt_mome_free(back);
    }
    mt_mome_free(full);
    free(l0), free(l1);
    mt_model_free(m);
}

/* ---- the bank's optimizer ------------------------------------------------------------- */

enum { SA_ROWS = 10, SA_W = 3 };

/* One sparse step: slot gradients summed per row, then AdamW on those rows alone. */
static void sparse_step(mt_sparse_adam *o, mt_sparse_rows *g, float *table, const long *ids, const float *grads,
                        long n, long step) {
    CHECK_OK(mt_sparse_rows_gather(g, ids, grads, n, SA_W));
    CHECK_OK(mt_sparse_adam_update(o, table, g, step, 0.01f, 0));
}

TEST(sparse_adam_matches_per_row_adamw_and_restores_exactly) {
    const long ids1[4] = {4, 1, 4, 7}, ids2[2] = {1, 9}, ids3[3] = {9, 4, 2};
    float g1[4 * SA_W], g2[2 * SA_W], g3[3 * SA_W], table[SA_ROWS * SA_W];
    for (int i = 0; i < 4 * SA_W; i++) g1[i] = mt_rng_normal(&rng);
    for (int i = 0; i < 2 * SA_W; i++) g2[i] = mt_rng_normal(&rng);
    for (int i = 0; i < 3 * SA_W; i++) g3[i] = mt_rng_normal(&rng);
    for (int i = 0; i < SA_ROWS * SA_W; i++) table[i] = mt_rng_normal(&rng);
    double ref[SA_ROWS * SA_W], m[SA_ROWS * SA_W] = {0}, v[SA_ROWS * SA_W] = {0};
    for (int i = 0; i < SA_ROWS * SA_W; i++) ref[i] = table[i];
    mt_sparse_adam o;
    mt_sparse_rows g = {0};
    CHECK_OK(mt_sparse_adam_init(&o, SA_W));
    sparse_step(&o, &g, table, ids1, g1, 4, 1);
    sparse_step(&o, &g, table, ids2, g2, 2, 2);
    /* the reference: per touched row, summed gradient, AdamW with the global step's bias */
    const long *steps_ids[2] = {ids1, ids2};
    const float *steps_g[2] = {g1, g2};
    long steps_n[2] = {4, 2};
    for (int st = 0; st < 2; st++) {
        double sum[SA_ROWS * SA_W] = {0};
        int touched[SA_ROWS] = {0};
        for (long k = 0; k < steps_n[st]; k++) {
            touched[steps_ids[st][k]] = 1;
            for (int j = 0; j < SA_W; j++) sum[steps_ids[st][k] * SA_W + j] += steps_g[st][k * SA_W + j];
        }
        double bc1 = 1 - pow(0.9, st + 1), bc2 = 1 - pow(0.999, st + 1);
        for (int r = 0; r < SA_ROWS; r++)
            for (int j = 0; touched[r] && j < SA_W; j++) {
                int i = r * SA_W + j;
                m[i] = 0.9 * m[i] + 0.1 * sum[i], v[i] = 0.999 * v[i] + 0.001 * sum[i] * sum[i];
                ref[i] -= 0.01 * (m[i] / bc1) / (sqrt(v[i] / bc2) + 1e-8);
            }
    }
    double worst = 0;
    for (int i = 0; i < SA_ROWS * SA_W; i++) worst = fmax(worst, fabs(ref[i] - table[i]));
    CHECK_NEAR(worst, 0, 1e-6);
    CHECK_INT_EQ(mt_sparse_adam_rows(&o), 4); /* rows 1, 4, 7, 9: the others have no state */

    /* export -> restore into a fresh state: the next step is bit for bit the same */
    long ids[4];
    mt_sparse_adam_ids(&o, ids);
    CHECK(ids[0] == 1 && ids[1] == 4 && ids[2] == 7 && ids[3] == 9);
    mt_sparse_adam r;
    CHECK_OK(mt_sparse_adam_init(&r, SA_W));
    CHECK_OK(mt_sparse_adam_restore(&r, ids, 4, SA_ROWS, o.m, o.v));
    float copy[SA_ROWS * SA_W];
    memcpy(copy, table, sizeof table);
    sparse_step(&o, &g, table, ids3, g3, 3, 3);
    sparse_step(&r, &g, copy, ids3, g3, 3, 3);
    CHECK(memcmp(copy, table, sizeof table) == 0);
    CHECK_INT_EQ(mt_sparse_adam_rows(&r), 5);
    mt_sparse_adam_free(&r);

    /* a checkpoint's bad ids are refused */
    const long dup[3] = {1, 4, 1}, far[2] = {1, SA_ROWS};
    CHECK_OK(mt_sparse_adam_init(&r, SA_W));
    CHECK_ERR(mt_sparse_adam_restore(&r, dup, 3, SA_ROWS, o.m, o.v), MT_ERR_FORMAT, "appears twice");
    mt_sparse_adam_free(&r);
    CHECK_OK(mt_sparse_adam_init(&r, SA_W));
    CHECK_ERR(mt_sparse_adam_restore(&r, far, 2, SA_ROWS, o.m, o.v), MT_ERR_FORMAT, "out of range");
    mt_sparse_adam_free(&r);
    mt_sparse_adam_free(&o);
    mt_sparse_rows_free(&g);
}

int main(void) {
    mt_set_threads(2);
    mt_rng_seed(&rng, 777);
    RUN(product_key_routing_finds_the_global_top_k);
    RUN(mome_backward_matches_finite_differences);
    RUN(keyed_experts_answer_only_their_context);
    RUN(routing_context_codes_the_document_so_far);
    RUN(model_memory_expert_gradients_match_finite_differences_with_frozen_base);
    RUN(fresh_layer_is_the_base_and_training_forward_equals_inference);
    RUN(kv_cache_decoding_equals_the_whole_sequence);
    RUN(bad_shapes_and_files_are_refused);
    RUN(bank_is_mapped_on_load_or_read_when_it_cannot_be);
    RUN(adapter_files_grow_with_touched_rows_not_with_the_bank);
    RUN(sparse_adam_matches_per_row_adamw_and_restores_exactly);
    TEST_MAIN_END();
}
