/* The training pass against PyTorch (tests/reference/make_reference.py, float64 autograd):
 * two small random models loaded from their HF directories (GQA + tied head + explicit
 * head_dim + Llama 3 RoPE scaling; Qwen2 q/k/v biases + untied head) on one packed batch of
 * 2 rows x 16 tokens holding 5 documents, with positions restarting per document and masked
 * targets (-100 for prompt tokens, -1 at document ends). Checked, in memtune's float build:
 *   - the mean loss over target tokens, within 1e-4 relative;
 *   - the gradient of every parameter tensor, max |diff| / max |reference| < 1e-4;
 *   - the loss before each of 10 AdamW steps and after the last (torch.optim.AdamW, lr 1e-3,
 *     betas 0.9/0.999, eps 1e-8, weight decay 0.1 on every parameter), within 1e-4 relative;
 *   - the same loss and gradients with the interleaved RoPE layout (Q/K rows permuted).
 * Relative tolerance 1e-4 is float32 arithmetic's share; the errors found are ~1e-6. */
#include "test.h"
#include "model/model.h"
#include "model/train_model.h"
#include "train/optimizer.h"
#include <jansson.h>

#define TOL 1e-4

typedef struct {
    json_t *ref;
    int B, T;
    int *inputs, *targets, *pos, *doc;
    long n_targets;
} fixture;

static void json_ints(json_t *rows, int *out, int B, int T) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            out[b * T + t] = (int)json_integer_value(json_array_get(json_array_get(rows, (size_t)b), (size_t)t));
}

static int fixture_open(const char *name, fixture *f, mt_model **m) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/%s/reference.json", name);
    json_error_t jerr;
    memset(f, 0, sizeof *f);
    *m = NULL;
    f->ref = json_load_file(path, 0, &jerr);
    CHECK_MSG(f->ref != NULL, "%s: %s", path, jerr.text);
    if (!f->ref) return 0;
    snprintf(path, sizeof path, "tests/fixtures/%s", name);
    CHECK_OK(mt_model_load(path, NULL, m));
    if (!*m) return 0;
    json_t *batch = json_object_get(f->ref, "batch");
    f->B = (int)json_integer_value(json_object_get(batch, "B"));
    f->T = (int)json_integer_value(json_object_get(batch, "T"));
    size_t n = (size_t)f->B * f->T;
    f->inputs = malloc(4 * n * sizeof(int));
    f->targets = f->inputs + n;
    f->pos = f->targets + n;
    f->doc = f->pos + n;
    json_ints(json_object_get(batch, "inputs"), f->inputs, f->B, f->T);
    json_ints(json_object_get(batch, "targets"), f->targets, f->B, f->T);
    json_ints(json_object_get(batch, "positions"), f->pos, f->B, f->T);
    json_ints(json_object_get(batch, "doc"), f->doc, f->B, f->T);
    f->n_targets = (long)json_integer_value(json_object_get(f->ref, "n_targets"));
    return 1;
}

static void fixture_close(fixture *f) {
    free(f->inputs);
    json_decref(f->ref);
}

static double ref_number(const fixture *f, const char *key) {
    return json_number_value(json_object_get(f->ref, key));
}

/* Forward with the mean-over-targets scale; returns the loss. */
static double run_forward(mt_train_state *s, const fixture *f) {
    double nll = 0;
    long count = 0;
    CHECK_OK(mt_train_forward(s, f->inputs, f->targets, f->pos, f->doc, 1.0 / (double)f->n_targets, &nll, &count));
    CHECK_INT_EQ(count, f->n_targets);
    return nll / (double)f->n_targets;
}

/* max |got - want| / max |want| of one tensor's gradient against its JSON list */
static double grad_rel_err(const float *got, json_t *want, size_t n) {
    CHECK_INT_EQ(json_array_size(want), n);
    if (json_array_size(want) != n) return INFINITY;
    double diff = 0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double w = json_number_value(json_array_get(want, i));
        diff = fmax(diff, fabs(got[i] - w));
        scale = fmax(scale, fabs(w));
    }
    return diff / scale;
}

/* Every tensor's gradient against the reference; grads are in the model's layout. When
 * interleaved, Q/K rows are permuted back to the HF layout first. Returns the worst error. */
static double check_all_grads(const mt_model *m, const float *grads, const fixture *f,
                              const char *label, int interleaved) {
    json_t *want = json_object_get(f->ref, "grads");
    mt_tensor_ref refs[64];
    int n = mt_model_tensors(m, refs, 64);
    CHECK_INT_EQ(json_object_size(want), n);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < n; i++) {
        size_t len = (size_t)refs[i].rows * refs[i].cols;
        const float *g = grads + (refs[i].data - m->params);
        float *hf = NULL;
        int is_qk = refs[i].kind == MT_T_WQ || refs[i].kind == MT_T_WK || refs[i].kind == MT_T_BQ ||
                    refs[i].kind == MT_T_BK;
        if (interleaved && is_qk) {
            int heads = refs[i].kind == MT_T_WQ || refs[i].kind == MT_T_BQ ? m->cfg.n_heads : m->cfg.n_kv_heads;
            hf = malloc(len * sizeof(float));
            mt_permute_qk_rows(hf, g, heads, m->cfg.head_dim, refs[i].cols, 0);
            g = hf;
        }
        json_t *w = json_object_get(want, refs[i].name);
        CHECK_MSG(w != NULL, "%s: no reference gradient for %s", label, refs[i].name);
        double e = w ? grad_rel_err(g, w, len) : INFINITY;
        CHECK_MSG(e < TOL, "%s: gradient of %s: relative error %.3g", label, refs[i].name, e);
        if (e > worst) {
            worst = e;
            worst_name = refs[i].name;
        }
        free(hf);
    }
    fprintf(stderr, "  %s: %d gradient tensors, worst relative error %.2e (%s)\n", label, n, worst, worst_name);
    return worst;
}

static void check_loss_and_grads(const char *name) {
    fixture f;
    mt_model *m;
    if (!fixture_open(name, &f, &m)) goto done;
    mt_train_state *s = NULL;
    CHECK_OK(mt_train_create(m, f.B, f.T, &s));
    if (!s) goto done;
    double loss = run_forward(s, &f), want = ref_number(&f, "loss");
    fprintf(stderr, "  %s: loss %.8f, reference %.8f (rel err %.2e)\n", name, loss, want,
            fabs(loss - want) / want);
    CHECK_NEAR(loss, want, TOL * want);
    CHECK_OK(mt_train_backward(s));
    check_all_grads(m, s->grads, &f, name, 0);
    mt_train_free(s);
done:
    mt_model_free(m);
    fixture_close(&f);
}

TEST(gqa_tied_llama3_loss_and_every_gradient_match_pytorch) { check_loss_and_grads("train_llama3_tied"); }
TEST(qwen2_bias_untied_loss_and_every_gradient_match_pytorch) { check_loss_and_grads("train_qwen2_untied"); }

/* The same model with Q/K rows permuted to the interleaved-pair layout must give the same
 * loss and (permuted back) the same gradients. */
TEST(interleaved_rope_layout_gives_the_same_loss_and_gradients) {
    fixture f;
    mt_model *m;
    if (!fixture_open("train_llama3_tied", &f, &m)) goto done;
    const mt_config *c = &m->cfg;
    for (int l = 0; l < c->n_layers; l++) {
        mt_layer *L = &m->layers[l];
        size_t nq = (size_t)c->n_heads * c->head_dim * c->dim, nk = (size_t)c->n_kv_heads * c->head_dim * c->dim;
        float *tmp = malloc(nq * sizeof(float));
        memcpy(tmp, L->wq, nq * sizeof(float));
        mt_permute_qk_rows(L->wq, tmp, c->n_heads, c->head_dim, c->dim, 1);
        memcpy(tmp, L->wk, nk * sizeof(float));
        mt_permute_qk_rows(L->wk, tmp, c->n_kv_heads, c->head_dim, c->dim, 1);
        free(tmp);
    }
    m->cfg.rope_interleaved = 1;
    mt_train_state *s = NULL;
    CHECK_OK(mt_train_create(m, f.B, f.T, &s));
    if (!s) goto done;
    double loss = run_forward(s, &f), want = ref_number(&f, "loss");
    CHECK_NEAR(loss, want, TOL * want);
    CHECK_OK(mt_train_backward(s));
    check_all_grads(m, s->grads, &f, "train_llama3_tied, interleaved", 1);
    mt_train_free(s);
done:
    mt_model_free(m);
    fixture_close(&f);
}

static void check_adamw(const char *name) {
    fixture f;
    mt_model *m;
    mt_adamw opt = {0};
    if (!fixture_open(name, &f, &m)) goto done;
    json_t *cfg = json_object_get(f.ref, "adamw"), *betas = json_object_get(cfg, "betas");
    CHECK_OK(mt_adamw_init(&opt, m->n_params, (float)json_number_value(json_object_get(cfg, "lr")),
                           (float)json_number_value(json_array_get(betas, 0)),
                           (float)json_number_value(json_array_get(betas, 1)),
                           (float)json_number_value(json_object_get(cfg, "eps")),
                           (float)json_number_value(json_object_get(cfg, "weight_decay"))));
    mt_train_state *s = NULL;
    CHECK_OK(mt_train_create(m, f.B, f.T, &s));
    if (!s || !opt.m) goto done;
    json_t *losses = json_object_get(f.ref, "adamw_losses");
    int steps = (int)json_array_size(losses);
    CHECK_INT_EQ(steps, 10);
    double worst = 0;
    for (int i = 0; i <= steps; i++) {
        mt_train_zero_grads(s);
        double loss = run_forward(s, &f);
        double want = i < steps ? json_number_value(json_array_get(losses, (size_t)i))
                                : ref_number(&f, "loss_after_adamw");
        double e = fabs(loss - want) / fabs(want);
        worst = fmax(worst, e);
        CHECK_MSG(e < TOL, "%s: loss %s step %d: %.8f, reference %.8f (rel err %.3g)", name,
                  i < steps ? "before" : "after", i < steps ? i : steps - 1, loss, want, e);
        if (i == steps) break;
        CHECK_OK(mt_train_backward(s));
        mt_adamw_step(&opt, m->params, s->grads);
    }
    fprintf(stderr, "  %s: %d AdamW steps, loss %.6f -> %.6f, worst relative error %.2e\n", name,
            steps, json_number_value(json_array_get(losses, 0)), ref_number(&f, "loss_after_adamw"), worst);
    mt_train_free(s);
done:
    mt_adamw_free(&opt);
    mt_model_free(m);
    fixture_close(&f);
}

TEST(gqa_tied_llama3_ten_adamw_steps_match_pytorch) { check_adamw("train_llama3_tied"); }
TEST(qwen2_bias_untied_ten_adamw_steps_match_pytorch) { check_adamw("train_qwen2_untied"); }

/* Clipping scales to the requested norm (torch's max_norm / (norm + 1e-6)) and leaves a
 * smaller gradient alone. */
TEST(gradient_clipping_scales_to_the_global_norm) {
    float g[4] = {3, 0, -4, 0};
    CHECK_NEAR(mt_grad_clip(g, 4, 1.0), 5.0, 1e-12);
    CHECK_NEAR(mt_grad_norm(g, 4), 1.0, 1e-6);
    CHECK_NEAR(g[0], 0.6, 1e-6);
    CHECK_NEAR(g[2], -0.8, 1e-6);
    float h[2] = {0.3f, 0.4f};
    CHECK_NEAR(mt_grad_clip(h, 2, 1.0), 0.5, 1e-7);
    CHECK(h[0] == 0.3f && h[1] == 0.4f);
}

/* The training loop clips every trained gradient together (mt_grad_clip_spans, which
 * mt_grad_clip is one span of): one global norm over the spans, one factor for all of them. */
TEST(gradient_clipping_over_spans_uses_one_global_norm) {
    float a[2] = {3, 0}, b[2] = {0, -4}, one[4] = {3, 0, 0, -4};
    mt_grad_span spans[3] = {{a, 2}, {NULL, 0}, {b, 2}};
    CHECK_NEAR(mt_grad_clip_spans(spans, 3, 1.0), 5.0, 1e-12);
    CHECK_NEAR(mt_grad_clip(one, 4, 1.0), 5.0, 1e-12);
    CHECK(a[0] == one[0] && a[1] == one[1] && b[0] == one[2] && b[1] == one[3]);
    float c[1] = {7};
    mt_grad_span off = {c, 1};
    CHECK_NEAR(mt_grad_clip_spans(&off, 1, 0), 7.0, 1e-12); /* 0: no clipping */
    CHECK(c[0] == 7);
}

int main(void) {
    mt_set_threads(2);
    RUN(gqa_tied_llama3_loss_and_every_gradient_match_pytorch);
    RUN(qwen2_bias_untied_loss_and_every_gradient_match_pytorch);
    RUN(interleaved_rope_layout_gives_the_same_loss_and_gradients);
    RUN(gqa_tied_llama3_ten_adamw_steps_match_pytorch);
    RUN(qwen2_bias_untied_ten_adamw_steps_match_pytorch);
    RUN(gradient_clipping_scales_to_the_global_norm);
    RUN(gradient_clipping_over_spans_uses_one_global_norm);
    TEST_MAIN_END();
}
