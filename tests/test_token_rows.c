/* Trainable token rows (PEFT's trainable_token_indices): their gradient against finite
 * differences in double (tied head: embedding and head uses add up; untied: two row sets),
 * a frozen base gets nothing, attach/detach restores the base exactly, inference uses the
 * trained rows, save -> load is exact, and bad ids are refused. */
#include "test.h"
#include "model_batch.h"
#include "core/rng.h"
#include "model/adapter.h"
#include "model/model.h"
#include "model/train_model.h"

#define FD_EPS 1e-6
#define FD_TOL 1e-6
static const int model_mask[MB * MT] = {1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 1};
static mt_rng rng;

static mt_config small_config(int tied) {
    mt_config c = {0};
    c.dim = 16; c.hidden_dim = 24; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 4;
    c.vocab_size = 23; c.max_seq_len = 64; c.norm_eps = 1e-5f; c.rope_theta = 10000;
    c.rope_interleaved = 1; c.tied_embeddings = tied;
    return c;
}

static mt_model *random_model(const mt_config *cfg) {
    mt_model *m = NULL;
    CHECK_OK(mt_model_alloc(cfg, &m));
    if (!m) return NULL;
    for (size_t i = 0; i < m->n_params; i++) m->params[i] = (float)(0.4 * mt_rng_normal(&rng));
    return m;
}

/* inputs and targets drawn from a few ids so the trained rows occur as both */
static void fill_batch(model_ctx *c, const int *ids, int n_ids, int V) {
    long n = 0;
    for (int i = 0; i < MB * MT; i++) {
        int pick = (int)(mt_rng_next(&rng) % 3);
        c->inputs[i] = pick ? ids[mt_rng_next(&rng) % (uint64_t)n_ids] : (int)(mt_rng_next(&rng) % (uint64_t)V);
        c->targets[i] = model_mask[i] ? (i % 2 ? ids[i % n_ids] : (int)(mt_rng_next(&rng) % (uint64_t)V)) : -1;
        n += model_mask[i];
    }
    c->scale = 1.0 / (double)n;
}

static void check_row_gradient(int tied) {
    mt_config cfg = small_config(tied);
    mt_model *m = random_model(&cfg);
    int ids[3] = {2, 7, 11};
    mt_token_rows *r = NULL;
    if (!m) return;
    CHECK_OK(mt_token_rows_create(m, ids, 3, &r));
    CHECK_OK(mt_model_attach_token_rows(m, r));
    model_ctx c;
    CHECK_OK(mt_train_create_f64(m, MB, MT, &c.s));
    CHECK_OK(mt_train_set_trainable_f64(c.s, NULL, 0));
    fill_batch(&c, ids, 3, cfg.vocab_size);
    mt_train_state_f64 *s = c.s;
    mt_train_zero_grads_f64(s);
    model_loss(&c);
    CHECK_OK(mt_train_backward_f64(s));
    /* a frozen base has no parameter gradients at all (not even an allocation) */
    CHECK_MSG(s->grads == NULL, "a frozen base allocated parameter gradients");
    /* every element of every trained row: perturb the model's row, compare with row_grads */
    double worst = 0, gmax = 1e-30;
    int n_entries = (1 + r->untied) * r->n;
    for (size_t j = 0; j < (size_t)n_entries * cfg.dim; j++) gmax = fmax(gmax, fabs(s->row_grads[j]));
    for (int e = 0; e < n_entries; e++) {
        float *row = (e >= r->n ? m->output : m->tok_embd) + (size_t)ids[e % r->n] * cfg.dim;
        for (int j = 0; j < cfg.dim; j++) {
            size_t at = (size_t)(row - m->params) + j;
            double keep = s->params[at];
            s->params[at] = keep + FD_EPS;
            double up = model_loss(&c);
            s->params[at] = keep - FD_EPS;
            double down = model_loss(&c);
            s->params[at] = keep;
            worst = fmax(worst, fabs((up - down) / (2 * FD_EPS) - s->row_grads[(size_t)e * cfg.dim + j]) / gmax);
        }
    }
    fprintf(stderr, "  %s head: token row gradients vs finite differences: rel err %.2e (max |g| %.3g)\n",
            tied ? "tied" : "untied", worst, gmax);
    CHECK_MSG(gmax > 1e-6 && worst < FD_TOL, "token row gradient rel err %.3g", worst);

    /* the float build agrees */
    mt_train_state *sf = NULL;
    CHECK_OK(mt_train_create(m, MB, MT, &sf));
    CHECK_OK(mt_train_set_trainable(sf, NULL, 0));
    CHECK_OK(mt_train_forward(sf, c.inputs, c.targets, model_pos, model_doc, c.scale, NULL, NULL));
    CHECK_OK(mt_train_backward(sf));
    mt_train_zero_grads_f64(s);
    model_loss(&c);
    CHECK_OK(mt_train_backward_f64(s));
    double d = 0;
    for (size_t j = 0; j < (size_t)n_entries * cfg.dim; j++) d = fmax(d, fabs(sf->row_grads[j] - s->row_grads[j]));
    CHECK_MSG(d / gmax < 1e-4, "float vs double row grads rel diff %.3g", d / gmax);
    mt_train_free(sf);
    mt_train_free_f64(s);
    mt_token_rows_free(r);
    mt_model_free(m);
}

TEST(token_row_gradients_match_finite_differences_tied_and_untied) {
    check_row_gradient(1);
    check_row_gradient(0);
}

TEST(attach_uses_trained_rows_detach_restores_base_and_files_round_trip) {
    mt_config cfg = small_config(0);
    mt_model *m = random_model(&cfg);
    if (!m) return;
    float *base = malloc(m->n_params * sizeof(float));
    memcpy(base, m->params, m->n_params * sizeof(float));
    int ids[2] = {5, 3}, prompt[4] = {1, 5, 3, 9};
    size_t V = (size_t)cfg.vocab_size;
    float *l0 = malloc(4 * V * sizeof(float)), *l1 = malloc(4 * V * sizeof(float)), *l2 = malloc(4 * V * sizeof(float));
    CHECK_OK(mt_model_logits(m, prompt, 4, l0));
    mt_token_rows *r = NULL, *back = NULL;
    CHECK_OK(mt_token_rows_create(m, ids, 2, &r));
    if (!r) return;
    for (size_t i = 0; i < (size_t)4 * cfg.dim; i++) r->values[i] += 0.5f * (float)mt_rng_normal(&rng);
    CHECK_OK(mt_model_attach_token_rows(m, r));
    CHECK_OK(mt_model_logits(m, prompt, 4, l1));
    double changed = 0;
    for (size_t i = 0; i < 4 * V; i++) changed = fmax(changed, fabs(l1[i] - l0[i]));
    CHECK_MSG(changed > 1e-3, "attached rows did not change the logits (%.3g)", changed);
    const char *dir = "build/tests/tmp_token_rows";
    CHECK_OK(mt_token_rows_save(r, dir));
    CHECK(mt_token_rows_present(dir));
    CHECK_OK(mt_model_attach_token_rows(m, NULL));
    CHECK(memcmp(base, m->params, m->n_params * sizeof(float)) == 0);
    CHECK_OK(mt_token_rows_load(m, dir, &back));
    if (back) {
        CHECK_INT_EQ(mt_token_rows_count(back), 2);
        CHECK_INT_EQ(mt_token_rows_ids(back)[0], 5);
        double d = 0;
        for (size_t i = 0; i < (size_t)4 * cfg.dim; i++) d = fmax(d, fabs(back->values[i] - r->values[i]));
        CHECK_MSG(d < 1e-6, "loaded rows differ by %.3g", d);
        CHECK_OK(mt_model_attach_token_rows(m, back));
        CHECK_OK(mt_model_logits(m, prompt, 4, l2));
        d = 0;
        for (size_t i = 0; i < 4 * V; i++) d = fmax(d, fabs(l2[i] - l1[i]));
        CHECK_MSG(d < 1e-5, "logits after load differ by %.3g", d);
        mt_token_rows_free(back); /* detaches */
        CHECK(memcmp(base, m->params, m->n_params * sizeof(float)) == 0);
    }
    mt_token_rows_free(r);
    free(base), free(l0), free(l1), free(l2);
    mt_model_free(m);
}

TEST(bad_token_ids_are_refused) {
    mt_config cfg = small_config(1);
    mt_model *m = random_model(&cfg);
    mt_token_rows *r = NULL;
    if (!m) return;
    int twice[2] = {4, 4}, outside[1] = {23}, neg[1] = {-1};
    CHECK_ERR(mt_token_rows_create(m, twice, 2, &r), MT_ERR_ARG, "listed twice");
    CHECK_ERR(mt_token_rows_create(m, outside, 1, &r), MT_ERR_ARG, "outside the vocabulary");
    CHECK_ERR(mt_token_rows_create(m, neg, 1, &r), MT_ERR_ARG, "outside the vocabulary");
    CHECK_ERR(mt_token_rows_create(m, neg, 0, &r), MT_ERR_ARG, "0 ids");
    CHECK(r == NULL);
    mt_model_free(m);
}

int main(void) {
    mt_set_threads(2);
    mt_rng_seed(&rng, 5150);
    RUN(token_row_gradients_match_finite_differences_tied_and_untied);
    RUN(attach_uses_trained_rows_detach_restores_base_and_files_round_trip);
    RUN(bad_token_ids_are_refused);
    TEST_MAIN_END();
}
