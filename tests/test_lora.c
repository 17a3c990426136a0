/* LoRA: the per-site math against finite differences (double build), the whole model's
 * adapter gradients against finite differences with the base frozen, training forward ==
 * inference forward with an adapter attached, merge == unmerged, PEFT save -> load exact in
 * both RoPE layouts (and an adapter saved from an interleaved model works on the same model
 * in HF layout), and bad adapter files refused with errors naming the file. */
#include "test.h"
#include "model_batch.h"
#include "adapters/lora.h"
#include "core/rng.h"
#include "kernels/kernels.h"
#include "model/adapter.h"
#include "model/model.h"
#include "model/train_model.h"
#include <jansson.h>
#include "core/file.h"
#include "formats/gguf.h"
#include "model/base_store.h"

#define FD_EPS 1e-6
#define FD_TOL 1e-6

static mt_rng rng;

static double *randn_d(size_t n, double scale) {
    double *x = malloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) x[i] = scale * mt_rng_normal(&rng);
    return x;
}

/* ---- the site kernels ------------------------------------------------------------------ */

typedef struct {
    int T, K, N, r;
    double scale, *x, *a, *b, *w, *out, *h;
} site_ctx;

/* L = Σ w · (scale · (x·A^T)·B^T) */
static double site_loss(void *p) {
    site_ctx *c = p;
    memset(c->out, 0, (size_t)c->T * c->N * sizeof(double));
    mt_lora_forward_f64(c->out, c->h, c->x, c->a, c->b, c->scale, c->T, c->K, c->N, c->r);
    double s = 0;
    for (int i = 0; i < c->T * c->N; i++) s += c->w[i] * c->out[i];
    return s;
}

static double fd_check(site_ctx *c, double *x, size_t n, const double *grad, const double *prefill) {
    double worst = 0, scale = 1e-30;
    for (size_t j = 0; j < n; j++) {
        double keep = x[j];
        x[j] = keep + FD_EPS;
        double up = site_loss(c);
        x[j] = keep - FD_EPS;
        double down = site_loss(c);
        x[j] = keep;
        double num = (up - down) / (2 * FD_EPS);
        worst = fmax(worst, fabs((grad[j] - prefill[j]) - num));
        scale = fmax(scale, fabs(num));
    }
    return worst / scale;
}

TEST(lora_site_backward_matches_finite_differences) {
    site_ctx c = {.T = 5, .K = 7, .N = 6, .r = 3, .scale = 2.5};
    c.x = randn_d(35, 1); c.a = randn_d(21, 1); c.b = randn_d(18, 1); c.w = randn_d(30, 1);
    c.out = randn_d(30, 1); c.h = randn_d(15, 1);
    double *pre_x = randn_d(35, 1), *pre_a = randn_d(21, 1), *pre_b = randn_d(18, 1);
    double *dx = malloc(35 * sizeof(double)), *da = malloc(21 * sizeof(double)), *db = malloc(18 * sizeof(double));
    memcpy(dx, pre_x, 35 * sizeof(double)); memcpy(da, pre_a, 21 * sizeof(double)); memcpy(db, pre_b, 18 * sizeof(double));
    double *h = malloc(15 * sizeof(double)), *dh = malloc(15 * sizeof(double));
    mt_lora_backward_f64(dx, da, db, h, dh, c.w, c.x, c.a, c.b, c.scale, c.T, c.K, c.N, c.r);
    double ex = fd_check(&c, c.x, 35, dx, pre_x), ea = fd_check(&c, c.a, 21, da, pre_a), eb = fd_check(&c, c.b, 18, db, pre_b);
    fprintf(stderr, "  rel err dx %.2e dA %.2e dB %.2e\n", ex, ea, eb);
    CHECK(ex < FD_TOL); CHECK(ea < FD_TOL); CHECK(eb < FD_TOL);
    /* merge: x·(W + scale·B·A)^T == x·W^T + scale·(x·A^T)·B^T */
    double *w = randn_d(42, 1), *y1 = malloc(30 * sizeof(double)), *y2 = malloc(30 * sizeof(double));
    mt_matmul_forward_f64(y1, c.x, w, NULL, c.T, c.K, c.N);
    mt_lora_forward_f64(y1, h, c.x, c.a, c.b, c.scale, c.T, c.K, c.N, c.r);
    mt_lora_merge_weight_f64(w, c.a, c.b, c.scale, c.K, c.N, c.r);
    mt_matmul_forward_f64(y2, c.x, w, NULL, c.T, c.K, c.N);
    double d = 0;
    for (int i = 0; i < 30; i++) d = fmax(d, fabs(y1[i] - y2[i]));
    CHECK_MSG(d < 1e-12, "merged weight differs from the adapter term by %.3g", d);
    free(c.x); free(c.a); free(c.b); free(c.w); free(c.out); free(c.h); free(pre_x); free(pre_a); free(pre_b);
    free(dx); free(da); free(db); free(h); free(dh); free(w); free(y1); free(y2);
}

/* ---- the whole model ------------------------------------------------------------------ */

static const int model_mask[MB * MT] = {1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0};

static mt_config config_tied_interleaved(void) {
    mt_config c = {0};
    c.dim = 16; c.hidden_dim = 24; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 4;
    c.vocab_size = 23; c.max_seq_len = 64; c.norm_eps = 1e-5f; c.rope_theta = 10000;
    c.rope_interleaved = 1; c.tied_embeddings = 1;
    return c;
}

static mt_config config_untied_bias(void) {
    mt_config c = {0};
    c.dim = 16; c.hidden_dim = 20; c.n_layers = 2; c.n_heads = 2; c.n_kv_heads = 1; c.head_dim = 12;
    c.vocab_size = 19; c.max_seq_len = 64; c.norm_eps = 1e-6f; c.rope_theta = 10000;
    c.rope_interleaved = 0; c.tied_embeddings = 0; c.attn_bias = 1;
    return c;
}

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

/* an adapter with a non-zero B, so every term of the gradient matters */
static mt_lora *random_lora(const mt_model *m, const char *targets, int rank, int rslora) {
    mt_lora_options o;
    mt_lora_options_default(&o);
    o.rank = rank;
    o.alpha = 3;
    o.rslora = rslora;
    o.targets = targets;
    mt_lora *l = NULL;
    CHECK_OK(mt_lora_create(m, &o, &l));
    if (!l) return NULL;
    for (size_t i = 0; i < l->n_params; i++) l->params[i] += 0.3f * mt_rng_normal(&rng);
    return l;
}

static void fill_batch(model_ctx *c, int V) {
    long n = 0;
    for (int i = 0; i < MB * MT; i++) {
        c->inputs[i] = (int)(mt_rng_next(&rng) % (uint64_t)V);
        c->targets[i] = model_mask[i] ? (int)(mt_rng_next(&rng) % (uint64_t)V) : -1;
        n += model_mask[i];
    }
    c->scale = 1.0 / (double)n;
}

static void check_model_lora_gradient(mt_config cfg, const char *label, int rslora, double dropout) {
    mt_model *m = random_model(&cfg);
    mt_lora *l = m ? random_lora(m, "all", 3, rslora) : NULL;
    if (!l) return;
    CHECK_OK(mt_model_attach_lora(m, l));
    model_ctx c;
    CHECK_OK(mt_train_create_f64(m, MB, MT, &c.s));
    CHECK_OK(mt_train_set_trainable_f64(c.s, NULL, 0));
    fill_batch(&c, cfg.vocab_size);
    mt_train_state_f64 *s = c.s;
    if (dropout > 0) { /* the mask is a function of the key: the same in every evaluation */
        double plain = model_loss(&c);
        s->lora_dropout = dropout;
        s->dropout_key = 77;
        double dropped = model_loss(&c);
        fprintf(stderr, "  %s: loss without dropout %.6f, with %.6f\n", label, plain, dropped);
        CHECK_MSG(fabs(plain - dropped) > 1e-6, "%s: dropout changed nothing", label);
        CHECK(model_loss(&c) == dropped);
    }
    mt_train_zero_grads_f64(s);
    model_loss(&c);
    CHECK_OK(mt_train_backward_f64(s));
    /* the frozen base gets nothing: no gradient memory at all */
    CHECK_MSG(s->grads == NULL, "%s: a frozen base allocated parameter gradients", label);
    /* every A and B of every site: a few random elements each */
    double worst = 0;
    for (int layer = 0; layer < cfg.n_layers; layer++)
        for (int site = 0; site < MT_N_SITES; site++)
            for (int k = 0; k < 2; k++) {
                size_t i = (size_t)layer * MT_N_SITES + site, off = k ? l->b_offset[i] : l->a_offset[i];
                int in, out;
                mt_linear_site_shape(&cfg, site, &in, &out);
                size_t len = (size_t)in * l->rank;
                if (k) len = (size_t)out * l->rank;
                double gmax = 1e-30, err = 0;
                for (size_t j = 0; j < len; j++) gmax = fmax(gmax, fabs(s->lora_grads[off + j]));
                for (int sample = 0; sample < 4; sample++) {
                    size_t j = off + mt_rng_next(&rng) % len;
                    double keep = s->lora_params[j];
                    s->lora_params[j] = keep + FD_EPS;
                    double up = model_loss(&c);
                    s->lora_params[j] = keep - FD_EPS;
                    double down = model_loss(&c);
                    s->lora_params[j] = keep;
                    err = fmax(err, fabs((up - down) / (2 * FD_EPS) - s->lora_grads[j]) / gmax);
                }
                if (err >= FD_TOL) fprintf(stderr, "  %s: layer %d %s lora_%c rel err %.3g\n", label, layer,
                                           mt_lora_site_module(site), k ? 'B' : 'A', err);
                worst = fmax(worst, err);
            }
    fprintf(stderr, "  %s: adapter gradients vs finite differences: worst rel err %.2e\n", label, worst);
    CHECK_MSG(worst < FD_TOL, "%s: adapter gradient rel err %.3g", label, worst);

    /* the float build agrees */
    mt_train_state *sf = NULL;
    CHECK_OK(mt_train_create(m, MB, MT, &sf));
    CHECK_OK(mt_train_set_trainable(sf, NULL, 0));
    sf->lora_dropout = s->lora_dropout;
    sf->dropout_key = s->dropout_key;
    CHECK_OK(mt_train_forward(sf, c.inputs, c.targets, model_pos, model_doc, c.scale, NULL, NULL));
    CHECK_OK(mt_train_backward(sf));
    mt_train_zero_grads_f64(s);
    model_loss(&c);
    CHECK_OK(mt_train_backward_f64(s));
    double d = 0, ref = 1e-30;
    for (size_t i = 0; i < l->n_params; i++) {
        d = fmax(d, fabs(sf->lora_grads[i] - s->lora_grads[i]));
        ref = fmax(ref, fabs(s->lora_grads[i]));
    }
    fprintf(stderr, "  %s: float vs double adapter grads rel diff %.2e\n", label, d / ref);
    CHECK(d / ref < 1e-4);
    mt_train_free(sf);
    mt_train_free_f64(s);
    mt_lora_free(l);
    mt_model_free(m);
}

TEST(model_adapter_gradient_matches_finite_differences_with_frozen_base) {
    check_model_lora_gradient(config_tied_interleaved(), "tied GQA interleaved", 0, 0);
    check_model_lora_gradient(config_untied_bias(), "untied bias MQA rslora", 1, 0);
    check_model_lora_gradient(config_tied_interleaved(), "tied GQA interleaved, dropout 0.3", 0, 0.3);
}

static double max_rel(const float *a, const float *b, size_t n) {
    double d = 0, ref = 1e-30;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        ref = fmax(ref, fabs((double)b[i]));
    }
    return d / ref;
}

static const int ids[9] = {1, 5, 7, 3, 11, 2, 9, 4, 6};

TEST(training_forward_equals_inference_forward_with_adapter_and_merge_equals_unmerged) {
    mt_config cfg = config_untied_bias();
    mt_model *m = random_model(&cfg);
    mt_lora *l = m ? random_lora(m, "q,v,o,down", 4, 0) : NULL;
    if (!l) return;
    int V = cfg.vocab_size, n = 9;
    float *base = malloc((size_t)n * V * sizeof(float)), *with = malloc((size_t)n * V * sizeof(float));
    float *merged = malloc((size_t)n * V * sizeof(float));
    CHECK_OK(mt_model_logits(m, ids, n, base));
    CHECK_OK(mt_model_attach_lora(m, l));
    CHECK_OK(mt_model_logits(m, ids, n, with));
    CHECK_MSG(max_rel(with, base, (size_t)n * V) > 1e-3, "the adapter changed nothing");
    /* one training row holding the same tokens */
    mt_train_state *s = NULL;
    CHECK_OK(mt_train_create(m, 1, n, &s));
    int targets[9] = {-1, -1, -1, -1, -1, -1, -1, -1, -1};
    CHECK_OK(mt_train_forward(s, ids, targets, NULL, NULL, 1, NULL, NULL));
    double e = max_rel(s->logits, with, (size_t)n * V);
    fprintf(stderr, "  training vs inference logits with adapter: rel %.2e\n", e);
    CHECK(e < 1e-5);
    mt_train_free(s);
    /* merge */
    CHECK_OK(mt_lora_merge(m, l));
    CHECK(m->lora == NULL);
    CHECK_OK(mt_model_logits(m, ids, n, merged));
    e = max_rel(merged, with, (size_t)n * V);
    fprintf(stderr, "  merged vs unmerged logits: rel %.2e\n", e);
    CHECK_MSG(e < 1e-5, "merged logits differ from unmerged by %.3g relative", e);
    free(base); free(with); free(merged);
    mt_lora_free(l);
    mt_model_free(m);
}

TEST(several_adapters_apply_unmerged_with_weights_and_merge_to_the_same_logits) {
    mt_config cfg = config_untied_bias();
    mt_model *m = random_model(&cfg);
    mt_lora *l1 = m ? random_lora(m, "q,k,v,o", 3, 0) : NULL, *l2 = l1 ? random_lora(m, "v,gate,down", 2, 1) : NULL;
    if (!l2) return;
    int V = cfg.vocab_size, n = 9;
    size_t nl = (size_t)n * V;
    float *one = malloc(nl * sizeof(float)), *both = malloc(nl * sizeof(float)), *merged = malloc(nl * sizeof(float));
    CHECK_OK(mt_model_attach_lora(m, l1));
    CHECK_OK(mt_model_logits(m, ids, n, one));
    CHECK_OK(mt_model_add_lora(m, l2, -1.5f));
    CHECK_ERR(mt_model_add_lora(m, l2, 1.0f), MT_ERR_ARG, "already attached");
    CHECK_OK(mt_model_logits(m, ids, n, both));
    CHECK_MSG(max_rel(both, one, nl) > 1e-3, "the second adapter changed nothing");
    /* training takes exactly one adapter */
    mt_train_state *s = NULL;
    CHECK_ERR(mt_train_create(m, 1, n, &s), MT_ERR_ARG, "exactly one attached adapter");
    CHECK_OK(mt_model_attach_lora(m, l1));
    /* merge both, one after the other, with their weights: the same logits, all detached */
    CHECK_OK(mt_model_add_lora(m, l2, -1.5f));
    CHECK_OK(mt_lora_merge_scaled(m, l1, 1.0f));
    CHECK_INT_EQ(m->n_loras, 1);
    CHECK(m->lora == l2);
    CHECK_OK(mt_lora_merge_scaled(m, l2, -1.5f));
    CHECK(m->lora == NULL && m->n_loras == 0);
    CHECK_OK(mt_model_logits(m, ids, n, merged));
    double e = max_rel(merged, both, nl);
    fprintf(stderr, "  two adapters (weights 1, -1.5): merged vs unmerged logits rel %.2e\n", e);
    CHECK_MSG(e < 1e-5, "merged logits differ from unmerged by %.3g relative", e);
    free(one); free(both); free(merged);
    mt_lora_free(l1); mt_lora_free(l2);
    mt_model_free(m);
}

TEST(fresh_adapter_starts_at_the_base_exactly) {
    mt_config cfg = config_tied_interleaved();
    mt_model *m = random_model(&cfg);
    mt_lora *l = NULL;
    if (!m) return;
    CHECK_OK(mt_lora_create(m, NULL, &l));
    if (!l) return;
    CHECK_INT_EQ(l->rank, 8);
    CHECK_NEAR(l->scale, 2.0, 0);
    /* A within PEFT's kaiming bound, not all zero; B zero */
    double amax = 0, bmax = 0;
    for (size_t i = 0; i < (size_t)l->n_layers * MT_N_SITES; i++) {
        int in, out;
        mt_linear_site_shape(&cfg, (int)(i % MT_N_SITES), &in, &out);
        for (size_t j = 0; j < (size_t)l->rank * in; j++) amax = fmax(amax, fabs(l->params[l->a_offset[i] + j]) * sqrt(in));
        for (size_t j = 0; j < (size_t)l->rank * out; j++) bmax = fmax(bmax, fabs(l->params[l->b_offset[i] + j]));
    }
    CHECK(amax > 0.5 && amax <= 1.0);
    CHECK(bmax == 0);
    int V = cfg.vocab_size;
    float *a = malloc(9 * V * sizeof(float)), *b = malloc(9 * V * sizeof(float));
    CHECK_OK(mt_model_logits(m, ids, 9, a));
    CHECK_OK(mt_model_attach_lora(m, l));
    CHECK_OK(mt_model_logits(m, ids, 9, b));
    CHECK(memcmp(a, b, 9 * V * sizeof(float)) == 0);
    mt_model_attach_lora(m, NULL);
    free(a); free(b);
    mt_lora_free(l);
    mt_model_free(m);
}

/* m with Q/K rows permuted to the other RoPE layout: the same function */
static mt_model *other_layout(const mt_model *m) {
    mt_config cfg = m->cfg;
    cfg.rope_interleaved = !cfg.rope_interleaved;
    mt_model *o = NULL;
    CHECK_OK(mt_model_alloc(&cfg, &o));
    if (!o) return NULL;
    memcpy(o->params, m->params, m->n_params * sizeof(float));
    for (int l = 0; l < cfg.n_layers; l++) {
        mt_permute_qk_rows(o->layers[l].wq, m->layers[l].wq, cfg.n_heads, cfg.head_dim, cfg.dim, cfg.rope_interleaved);
        mt_permute_qk_rows(o->layers[l].wk, m->layers[l].wk, cfg.n_kv_heads, cfg.head_dim, cfg.dim, cfg.rope_interleaved);
    }
    return o;
}

TEST(peft_save_load_round_trip_is_exact_and_converts_rope_layout) {
    mt_config cfg = config_tied_interleaved();
    mt_model *m = random_model(&cfg), *hf = m ? other_layout(m) : NULL;
    mt_lora *l = hf ? random_lora(m, "all", 2, 0) : NULL, *back = NULL, *in_hf = NULL;
    if (!l) return;
    const char *dir = test_tmpdir("lora_roundtrip");
    CHECK_OK(mt_lora_save(l, m, dir, "stories-test"));
    CHECK_OK(mt_lora_load(m, dir, &back));
    if (!back) return;
    CHECK_INT_EQ(back->n_params, l->n_params);
    CHECK(memcmp(back->params, l->params, l->n_params * sizeof(float)) == 0);
    CHECK(back->rank == l->rank && back->alpha == l->alpha && back->scale == l->scale && back->targets == l->targets);
    /* the file holds HF row order: loaded into the HF-layout twin it computes the same */
    CHECK_OK(mt_lora_load(hf, dir, &in_hf));
    if (!in_hf) return;
    int V = cfg.vocab_size;
    float *a = malloc(9 * V * sizeof(float)), *b = malloc(9 * V * sizeof(float));
    CHECK_OK(mt_model_attach_lora(m, l));
    CHECK_OK(mt_model_logits(m, ids, 9, a));
    CHECK_OK(mt_model_attach_lora(hf, in_hf));
    CHECK_OK(mt_model_logits(hf, ids, 9, b));
    double e = max_rel(a, b, 9 * (size_t)V);
    fprintf(stderr, "  interleaved model + adapter vs HF-layout model + loaded adapter: rel %.2e\n", e);
    CHECK(e < 1e-5);
    /* and an HF-layout save reads back exactly too */
    const char *dir2 = test_tmpdir("lora_roundtrip_hf");
    mt_lora *back2 = NULL;
    CHECK_OK(mt_lora_save(in_hf, hf, dir2, NULL));
    CHECK_OK(mt_lora_load(hf, dir2, &back2));
    if (back2) CHECK(memcmp(back2->params, in_hf->params, l->n_params * sizeof(float)) == 0);
    mt_model_attach_lora(m, NULL);
    mt_model_attach_lora(hf, NULL);
    free(a); free(b);
    mt_lora_free(l); mt_lora_free(back); mt_lora_free(in_hf); mt_lora_free(back2);
    mt_model_free(m); mt_model_free(hf);
}

/* ---- a PEFT adapter written by another tool (tests/reference/make_reference.py) --------- */

static void json_ints_2d(json_t *rows, int *out, int B, int T) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            out[b * T + t] = (int)json_integer_value(json_array_get(json_array_get(rows, (size_t)b), (size_t)t));
}

/* Loads fixtures/<adapter> onto m, runs the reference batch, and compares the logits (1e-5
 * relative to the largest) and the gradient of every A and B (1e-4 relative, per tensor)
 * with PyTorch's. B rows at q/k are permuted back to HF order when m is interleaved. */
static void check_peft_fixture(mt_model *m, const char *adapter, const char *label) {
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/%s/reference.json", adapter);
    json_error_t jerr;
    json_t *ref = json_load_file(path, 0, &jerr);
    CHECK_MSG(ref != NULL, "%s: %s", path, jerr.text);
    snprintf(path, sizeof path, "tests/fixtures/%s", adapter);
    mt_lora *l = NULL;
    CHECK_OK(mt_lora_load(m, path, &l));
    if (!ref || !l) goto done;
    CHECK_NEAR(l->scale, json_number_value(json_object_get(ref, "scale")), 1e-6);
    CHECK_OK(mt_model_attach_lora(m, l));
    json_t *batch = json_object_get(ref, "batch");
    int B = (int)json_integer_value(json_object_get(batch, "B")), T = (int)json_integer_value(json_object_get(batch, "T"));
    int *buf = malloc(4 * (size_t)B * T * sizeof(int)), *inputs = buf, *targets = buf + B * T, *pos = targets + B * T, *doc = pos + B * T;
    json_ints_2d(json_object_get(batch, "inputs"), inputs, B, T);
    json_ints_2d(json_object_get(batch, "targets"), targets, B, T);
    json_ints_2d(json_object_get(batch, "positions"), pos, B, T);
    json_ints_2d(json_object_get(batch, "doc"), doc, B, T);
    long n_targets = (long)json_integer_value(json_object_get(ref, "n_targets"));
    mt_train_state *s = NULL;
    CHECK_OK(mt_train_create(m, B, T, &s));
    CHECK_OK(mt_train_set_trainable(s, NULL, 0));
    double nll = 0;
    CHECK_OK(mt_train_forward(s, inputs, targets, pos, doc, 1.0 / n_targets, &nll, NULL));
    double loss = nll / n_targets, want = json_number_value(json_object_get(ref, "loss"));
    int V = m->cfg.vocab_size;
    double d = 0, scale = 1e-30;
    json_t *lg = json_object_get(ref, "logits");
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int v = 0; v < V; v++) {
                double w = json_number_value(json_array_get(json_array_get(json_array_get(lg, b), t), v));
                d = fmax(d, fabs(s->logits[((size_t)b * T + t) * V + v] - w));
                scale = fmax(scale, fabs(w));
            }
    fprintf(stderr, "  %s: logits rel err %.2e, loss %.8f vs %.8f\n", label, d / scale, loss, want);
    CHECK_MSG(d / scale < 1e-5, "%s: logits differ from PyTorch's by %.3g relative", label, d / scale);
    CHECK_NEAR(loss, want, 1e-5 * want);
    CHECK_OK(mt_train_backward(s));
    json_t *grads = json_object_get(ref, "grads");
    int n_checked = 0;
    double worst = 0;
    char name[160];
    for (int layer = 0; layer < l->n_layers; layer++)
        for (int site = 0; site < MT_N_SITES; site++) {
            size_t i = (size_t)layer * MT_N_SITES + site;
            if (l->a_offset[i] == MT_LORA_NONE) continue;
            int in, out;
            mt_linear_site_shape(&m->cfg, site, &in, &out);
            for (int k = 0; k < 2; k++) {
                size_t len = (size_t)l->rank * (k ? out : in);
                const float *g = s->lora_grads + (k ? l->b_offset[i] : l->a_offset[i]);
                float *hf = NULL;
                int heads = site == MT_SITE_Q ? m->cfg.n_heads : site == MT_SITE_K ? m->cfg.n_kv_heads : 0;
                if (k && heads && m->cfg.rope_interleaved) {
                    hf = malloc(len * sizeof(float));
                    mt_permute_qk_rows(hf, g, heads, m->cfg.head_dim, l->rank, 0);
                    g = hf;
                }
                snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer,
                         site <= MT_SITE_O ? "self_attn" : "mlp", mt_lora_site_module(site), k ? 'B' : 'A');
                json_t *w = json_object_get(grads, name);
                CHECK_MSG(w && json_array_size(w) == len, "%s: reference gradient of %s", label, name);
                if (!w || json_array_size(w) != len) { free(hf); continue; }
                double diff = 0, gs = 1e-30;
                for (size_t j = 0; j < len; j++) {
                    double wj = json_number_value(json_array_get(w, j));
                    diff = fmax(diff, fabs(g[j] - wj));
                    gs = fmax(gs, fabs(wj));
                }
                CHECK_MSG(diff / gs < 1e-4, "%s: gradient of %s: relative error %.3g", label, name, diff / gs);
                worst = fmax(worst, diff / gs);
                n_checked++;
                free(hf);
            }
        }
    CHECK_INT_EQ(n_checked, (int)json_object_size(grads));
    fprintf(stderr, "  %s: %d adapter gradient tensors vs PyTorch, worst rel err %.2e\n", label, n_checked, worst);
    mt_train_free(s);
    free(buf);
done:
    mt_model_attach_lora(m, NULL);
    mt_lora_free(l);
    json_decref(ref);
}

static void check_peft_fixture_both_layouts(const char *adapter) {
    mt_model *m = NULL;
    CHECK_OK(mt_model_load("tests/fixtures/train_llama3_tied", NULL, &m));
    if (!m) return;
    mt_model *il = other_layout(m);
    char label[128];
    snprintf(label, sizeof label, "%s (HF layout)", adapter);
    check_peft_fixture(m, adapter, label);
    snprintf(label, sizeof label, "%s (interleaved layout)", adapter);
    if (il) check_peft_fixture(il, adapter, label);
    mt_model_free(il);
    mt_model_free(m);
}

TEST(peft_adapter_from_another_tool_matches_pytorch_logits_and_gradients) {
    check_peft_fixture_both_layouts("lora_peft_all");
    /* rslora, two targets listed out of order, layers_to_transform [1] */
    check_peft_fixture_both_layouts("lora_peft_qv_layer1");
    mt_model *m = NULL;
    mt_lora *l = NULL, *back = NULL;
    CHECK_OK(mt_model_load("tests/fixtures/train_llama3_tied", NULL, &m));
    CHECK_OK(mt_lora_load(m, "tests/fixtures/lora_peft_qv_layer1", &l));
    if (!l) { mt_model_free(m); return; }
    CHECK(!mt_lora_layer_used(l, 0) && mt_lora_layer_used(l, 1));
    CHECK_NEAR(l->dropout, 0.05, 1e-7);
    CHECK_INT_EQ(l->n_params, (2 * 32 + 64 * 2) + (2 * 32 + 32 * 2)); /* q and v of layer 1 */
    const char *dir = test_tmpdir("lora_layer1");
    CHECK_OK(mt_lora_save(l, m, dir, NULL));
    CHECK_OK(mt_lora_load(m, dir, &back));
    if (back) {
        CHECK(!mt_lora_layer_used(back, 0) && mt_lora_layer_used(back, 1));
        CHECK(back->n_params == l->n_params && !memcmp(back->params, l->params, l->n_params * sizeof(float)));
        CHECK(back->rslora && back->scale == l->scale && back->dropout == l->dropout);
    }
    mt_lora_free(back);
    mt_lora_free(l);
    mt_model_free(m);
}

TEST(layer_lists_parse_and_refuse_bad_entries) {
    unsigned char on[8];
    CHECK_OK(mt_lora_parse_layers("0-2,5", 8, on));
    CHECK(on[0] && on[1] && on[2] && !on[3] && !on[4] && on[5] && !on[6] && !on[7]);
    CHECK_OK(mt_lora_parse_layers(NULL, 8, on));
    CHECK(on[0] && on[7]);
    CHECK_ERR(mt_lora_parse_layers("3-9", 8, on), MT_ERR_ARG, "outside the model's 8 layers");
    CHECK_ERR(mt_lora_parse_layers("2-1", 8, on), MT_ERR_ARG, "bad LoRA layer list");
    CHECK_ERR(mt_lora_parse_layers("a", 8, on), MT_ERR_ARG, "bad LoRA layer list");
    CHECK_ERR(mt_lora_parse_layers("-1", 8, on), MT_ERR_ARG, "bad LoRA layer list");
}

/* ---- llama.cpp's LoRA GGUF ---------------------------------------------------------------- */

TEST(lora_gguf_export_reads_back_exactly_and_applies_to_the_gguf_base_as_merged) {
    mt_model *m = NULL, *mg = NULL;
    mt_lora *l = NULL, *lg = NULL, *back = NULL;
    CHECK_OK(mt_model_load("tests/fixtures/train_llama3_tied", NULL, &m));
    if (m) CHECK_OK(mt_lora_load(m, "tests/fixtures/lora_peft_all", &l));
    if (!l) goto done;
    const char *dir = test_tmpdir("lora_gguf");
    char base[600], ad[600], ad2[600];
    snprintf(base, sizeof base, "%s/base.gguf", dir);
    snprintf(ad, sizeof ad, "%s/adapter.gguf", dir);
    snprintf(ad2, sizeof ad2, "%s/adapter-from-interleaved.gguf", dir);
    CHECK_OK(mt_lora_save_gguf(l, m, ad));
    /* the file as llama.cpp reads it */
    mt_gguf g;
    CHECK_OK(mt_gguf_open(ad, &g));
    char *type = NULL, *atype = NULL, *arch = NULL;
    double alpha = 0;
    CHECK_OK(mt_gguf_get_string(&g, "general.type", &type, 1));
    CHECK_OK(mt_gguf_get_string(&g, "adapter.type", &atype, 1));
    CHECK_OK(mt_gguf_get_string(&g, "general.architecture", &arch, 1));
    CHECK_OK(mt_gguf_get_float(&g, "adapter.lora.alpha", &alpha, 1));
    CHECK(type && !strcmp(type, "adapter") && atype && !strcmp(atype, "lora") && arch && !strcmp(arch, "llama"));
    CHECK_NEAR(alpha, 8, 0);
    const mt_gguf_tensor *ta = mt_gguf_find_tensor(&g, "blk.1.attn_q.weight.lora_a");
    const mt_gguf_tensor *tb = mt_gguf_find_tensor(&g, "blk.1.attn_q.weight.lora_b");
    const mt_gguf_tensor *td = mt_gguf_find_tensor(&g, "blk.0.ffn_down.weight.lora_b");
    CHECK(ta && ta->n_dims == 2 && ta->ne[0] == 32 && ta->ne[1] == 4 && ta->type == MT_GGML_F32);
    CHECK(tb && tb->n_dims == 2 && tb->ne[0] == 4 && tb->ne[1] == 64);
    CHECK(td && td->ne[0] == 4 && td->ne[1] == 32);
    CHECK_INT_EQ(g.n_tensors, 28);
    free(type); free(atype); free(arch);
    mt_gguf_close(&g);
    /* read back into the HF-layout model: exact */
    CHECK_OK(mt_lora_load(m, ad, &back));
    if (back) CHECK(back->n_params == l->n_params && !memcmp(back->params, l->params, l->n_params * sizeof(float)));
    /* the base as GGUF (interleaved Q/K rows) + the GGUF adapter == the HF base + the PEFT adapter == merged */
    CHECK_OK(mt_model_save(m, base, MT_FORMAT_GGUF));
    CHECK_OK(mt_model_load(base, NULL, &mg));
    if (mg) CHECK_OK(mt_lora_load(mg, ad, &lg));
    if (!lg) goto done;
    CHECK(mg->cfg.rope_interleaved);
    CHECK_OK(mt_lora_save_gguf(lg, mg, ad2));
    int V = m->cfg.vocab_size, n = 9;
    size_t nl = (size_t)n * V;
    float *ref = malloc(nl * sizeof(float)), *un = malloc(nl * sizeof(float)), *mer = malloc(nl * sizeof(float));
    CHECK_OK(mt_model_attach_lora(m, l));
    CHECK_OK(mt_model_logits(m, ids, n, ref));
    CHECK_OK(mt_model_attach_lora(mg, lg));
    CHECK_OK(mt_model_logits(mg, ids, n, un));
    CHECK_OK(mt_lora_merge(mg, lg));
    CHECK_OK(mt_model_logits(mg, ids, n, mer));
    double e1 = max_rel(un, ref, nl), e2 = max_rel(mer, un, nl);
    fprintf(stderr, "  GGUF base + GGUF adapter vs HF base + PEFT adapter: rel %.2e; merged vs unmerged: rel %.2e\n", e1, e2);
    CHECK(e1 < 1e-5);
    CHECK(e2 < 1e-5);
    /* written from the interleaved model: the same bytes */
    mt_mapped_file f1, f2;
    CHECK_OK(mt_file_map(ad, &f1));
    CHECK_OK(mt_file_map(ad2, &f2));
    CHECK(f1.size == f2.size && !memcmp(f1.data, f2.data, f1.size));
    mt_file_unmap(&f1);
    mt_file_unmap(&f2);
    /* a model GGUF is not an adapter */
    mt_lora *bad = NULL;
    CHECK_ERR(mt_lora_load(m, base, &bad), MT_ERR_FORMAT, "general.type");
    free(ref); free(un); free(mer);
done:
    mt_model_attach_lora(m, NULL);
    mt_lora_free(l); mt_lora_free(lg); mt_lora_free(back);
    mt_model_free(m); mt_model_free(mg);
}

/* ---- a bf16 / Q8_0 frozen base ------------------------------------------------------------- */

static void check_base_dtype(const char *dtype, double max_err_vs_f32) {
    mt_model *q = NULL, *deq = NULL, *orig = NULL;
    CHECK_OK(mt_model_load("tests/fixtures/train_llama3_tied", NULL, &q));
    CHECK_OK(mt_model_load("tests/fixtures/train_llama3_tied", NULL, &deq));
    CHECK_OK(mt_model_load("tests/fixtures/train_llama3_tied", NULL, &orig));
    mt_lora *l = NULL;
    if (orig) CHECK_OK(mt_lora_load(orig, "tests/fixtures/lora_peft_all", &l));
    if (!l || !q || !deq) goto done;
    size_t params = mt_model_param_count(q), f32_bytes = mt_model_weight_bytes(q);
    CHECK_OK(mt_model_set_base_dtype(q, dtype));
    CHECK_STR_EQ(mt_model_base_dtype(q), dtype);
    /* deq: the same stored values, back in f32 */
    CHECK_OK(mt_model_set_base_dtype(deq, dtype));
    CHECK_OK(mt_model_set_base_dtype(deq, "f32"));
    CHECK(deq->base == NULL);
    CHECK_INT_EQ(mt_model_param_count(q), params);
    CHECK_INT_EQ(mt_model_param_count(deq), params);
    /* site weights of this model: 2 layers x (q 64x32, k and v 32x32, o 32x64, gate and up
     * 40x32, down 32x40); Q8_0 blocks of 32 along rows: 64 + 32 + 32 + 32*2 + 40 + 40 + 32*2
     * = 336 per layer (down's rows of 40 end in a partial block), 34 bytes each */
    size_t sites = 2 * (2048 + 1024 + 1024 + 2048 + 3 * 1280), saved = mt_model_weight_bytes(q);
    size_t want = f32_bytes - sites * 4 + (strcmp(dtype, "bf16") ? 2 * 336 * 34 : sites * 2);
    fprintf(stderr, "  %s: weights %zu bytes (f32 %zu)\n", dtype, saved, f32_bytes);
    CHECK_INT_EQ(saved, want);
    /* the compressed model computes exactly what its dequantised f32 twin computes */
    int V = q->cfg.vocab_size, n = 9;
    size_t nl = (size_t)n * V;
    float *a = malloc(nl * sizeof(float)), *b = malloc(nl * sizeof(float)), *c = malloc(nl * sizeof(float));
    CHECK_OK(mt_model_logits(q, ids, n, a));
    CHECK_OK(mt_model_logits(deq, ids, n, b));
    CHECK_OK(mt_model_logits(orig, ids, n, c));
    double e = max_rel(a, b, nl), eo = max_rel(a, c, nl);
    fprintf(stderr, "  %s: logits vs dequantised f32 twin rel %.2e, vs the f32 original rel %.2e\n", dtype, e, eo);
    CHECK(e < 1e-6);
    CHECK(eo > 0 && eo < max_err_vs_f32);
    /* adapter training on it: the same adapter gradients as on the twin, no base gradients */
    mt_lora *l2 = NULL;
    CHECK_OK(mt_lora_load(q, "tests/fixtures/lora_peft_all", &l2));
    CHECK_OK(mt_model_attach_lora(q, l));
    CHECK_OK(mt_model_attach_lora(deq, l2));
    mt_train_state *sq = NULL, *sd = NULL;
    int targets[9] = {5, 7, 3, -1, 2, 9, 4, 6, 1};
    CHECK_OK(mt_train_create(q, 1, n, &sq));
    CHECK_OK(mt_train_create(deq, 1, n, &sd));
    if (sq && sd) {
        CHECK_OK(mt_train_set_trainable(sq, NULL, 0));
        CHECK_OK(mt_train_set_trainable(sd, NULL, 0));
        CHECK_OK(mt_train_forward(sq, ids, targets, NULL, NULL, 0.125, NULL, NULL));
        CHECK_OK(mt_train_forward(sd, ids, targets, NULL, NULL, 0.125, NULL, NULL));
        CHECK_OK(mt_train_backward(sq));
        CHECK_OK(mt_train_backward(sd));
        double g = max_rel(sq->lora_grads, sd->lora_grads, l->n_params);
        fprintf(stderr, "  %s: adapter gradients vs the f32 twin rel %.2e\n", dtype, g);
        CHECK(g < 1e-6);
        CHECK(sq->grads == NULL);
    }
    mt_train_free(sq);
    mt_train_free(sd);
    /* merge: in f32, re-quantised, the largest change reported and bounded */
    CHECK_OK(mt_model_logits(q, ids, n, a));
    double change = -1, none = -1;
    CHECK_OK(mt_lora_merge_report(q, l, 1.0f, &change));
    CHECK_OK(mt_lora_merge_report(deq, l2, 1.0f, &none));
    CHECK_OK(mt_model_logits(q, ids, n, b));
    e = max_rel(b, a, nl);
    fprintf(stderr, "  %s: merge re-quantised: largest weight change %.3g; merged vs unmerged logits rel %.2e\n",
            dtype, change, e);
    CHECK(change > 0 && change < (strcmp(dtype, "bf16") ? 0.05 : 0.02));
    CHECK(none == 0);
    CHECK(e < max_err_vs_f32);
    CHECK_ERR(mt_model_save(q, "build/tmp/never.gguf", MT_FORMAT_GGUF), MT_ERR_ARG, "f32 first");
    free(a); free(b); free(c);
    mt_lora_free(l2);
done:
    mt_lora_free(l);
    mt_model_free(q); mt_model_free(deq); mt_model_free(orig);
}

TEST(bf16_and_q8_0_base_cut_memory_and_train_and_merge_like_their_f32_twin) {
    check_base_dtype("bf16", 2e-2);
    check_base_dtype("q8_0", 5e-2);
    mt_model *m = NULL;
    CHECK_OK(mt_model_load("tests/fixtures/train_llama3_tied", NULL, &m));
    CHECK_ERR(mt_model_set_base_dtype(m, "q4_0"), MT_ERR_ARG, "unknown base dtype 'q4_0'");
    mt_model_free(m);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f) { fputs(text, f); fclose(f); }
}

TEST(bad_adapters_are_refused_with_clear_errors) {
    mt_config cfg = config_tied_interleaved(), other = config_untied_bias();
    mt_model *m = random_model(&cfg), *m2 = random_model(&other);
    mt_lora *l = NULL, *out = NULL;
    if (!m || !m2) return;
    mt_lora_options o;
    mt_lora_options_default(&o);
    o.rank = 0;
    CHECK_ERR(mt_lora_create(m, &o, &l), MT_ERR_ARG, "rank 0");
    o.rank = 2;
    o.targets = "q,lm_head";
    CHECK_ERR(mt_lora_create(m, &o, &l), MT_ERR_ARG, "lm_head");
    o.targets = "q,k";
    CHECK_OK(mt_lora_create(m, &o, &l));
    const char *dir = test_tmpdir("lora_bad");
    CHECK_OK(mt_lora_save(l, m, dir, NULL));
    /* shapes that do not fit: an adapter for a model of another shape */
    CHECK_ERR(mt_lora_load(m2, dir, &out), MT_ERR_MISMATCH, "adapter_model.safetensors");
    CHECK_ERR(mt_lora_load(m2, dir, &out), MT_ERR_MISMATCH, "needs");
    /* the config says more targets than the file holds */
    write_text(dir, "adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\"]}");
    CHECK_ERR(mt_lora_load(m, dir, &out), MT_ERR_MISMATCH, "v_proj.lora_A.weight is missing");
    /* fewer targets than the file holds: tensors of an unexpected module */
    write_text(dir, "adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"q_proj\"]}");
    CHECK_ERR(mt_lora_load(m, dir, &out), MT_ERR_MISMATCH, "another architecture");
    write_text(dir, "adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 0, \"lora_alpha\": 4, \"target_modules\": [\"q_proj\"]}");
    CHECK_ERR(mt_lora_load(m, dir, &out), MT_ERR_FORMAT, "adapter_config.json: \"r\"");
    write_text(dir, "adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"q_proj\", \"c_attn\"]}");
    CHECK_ERR(mt_lora_load(m, dir, &out), MT_ERR_ARG, "c_attn");
    CHECK_ERR(mt_lora_load(m, dir, &out), MT_ERR_ARG, "adapter_config.json");
    write_text(dir, "adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"q_proj\", \"k_proj\"], \"layers_to_transform\": [0, 2]}");
    CHECK_ERR(mt_lora_load(m, dir, &out), MT_ERR_MISMATCH, "layers_to_transform names layer 2");
    write_text(dir, "adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"q_proj\", \"k_proj\"], \"layers_to_transform\": [1]}");
    CHECK_ERR(mt_lora_load(m, dir, &out), MT_ERR_MISMATCH, "layers.0.self_attn");
    write_text(dir, "adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"q_proj\"], \"rank_pattern\": {\"q_proj\": 4}}");
    CHECK_ERR(mt_lora_load(m, dir, &out), MT_ERR_UNSUPPORTED, "rank_pattern");
    write_text(dir, "adapter_config.json", "{\"peft_type\": \"PREFIX_TUNING\", \"r\": 2}");
    CHECK_ERR(mt_lora_load(m, dir, &out), MT_ERR_UNSUPPORTED, "PREFIX_TUNING");
    write_text(dir, "adapter_config.json", "not json");
    CHECK_ERR(mt_lora_load(m, dir, &out), MT_ERR_FORMAT, "adapter_config.json");
    CHECK_ERR(mt_lora_load(m, "build/tmp/no-such-adapter", &out), MT_ERR_IO, "no-such-adapter");
    /* an adapter for a model with another layer count cannot attach */
    mt_config deeper = cfg;
    deeper.n_layers = 3;
    mt_model *m3 = random_model(&deeper);
    CHECK_ERR(mt_model_attach_lora(m3, l), MT_ERR_MISMATCH, "layers");
    CHECK(out == NULL);
    mt_lora_free(l);
    mt_model_free(m); mt_model_free(m2); mt_model_free(m3);
}

int main(void) {
    mt_set_threads(2);
    mt_rng_seed(&rng, 4242);
    RUN(lora_site_backward_matches_finite_differences);
    RUN(model_adapter_gradient_matches_finite_differences_with_frozen_base);
    RUN(training_forward_equals_inference_forward_with_adapter_and_merge_equals_unmerged);
    RUN(several_adapters_apply_unmerged_with_weights_and_merge_to_the_same_logits);
    RUN(fresh_adapter_starts_at_the_base_exactly);
    RUN(peft_save_load_round_trip_is_exact_and_converts_rope_layout);
    RUN(peft_adapter_from_another_tool_matches_pytorch_logits_and_gradients);
    RUN(lora_gguf_export_reads_back_exactly_and_applies_to_the_gguf_base_as_merged);
    RUN(bf16_and_q8_0_base_cut_memory_and_train_and_merge_like_their_f32_twin);
    RUN(layer_lists_parse_and_refuse_bad_entries);
    RUN(bad_adapters_are_refused_with_clear_errors);
    TEST_MAIN_END();
}
