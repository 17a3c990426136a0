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
#include "formats/safetensors.h"
#include "core/file.h"
#include <jansson.h>

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

#define EMBED_T "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"
#define HEAD_T "base_model.model.lm_head.token_adapter.trainable_tokens_delta"

/* rows [n, dim] of tensor `name` in dir/file, or NULL when absent */
static float *read_st_rows(const char *dir, const char *file, const char *name, int n, int dim) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    mt_safetensors st;
    if (mt_safetensors_open(path, &st) != MT_OK) return NULL;
    const mt_st_tensor *t = mt_safetensors_find(&st, name);
    float *v = NULL;
    if (t && t->n_dims == 2 && t->shape[0] == n && t->shape[1] == dim) {
        v = malloc((size_t)n * dim * sizeof(float));
        if (mt_safetensors_read_f32(&st, t, v, (size_t)n * dim) != MT_OK) free(v), v = NULL;
    }
    mt_safetensors_close(&st);
    return v;
}

static json_t *read_json(const char *dir, const char *file) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return json_load_file(path, 0, NULL);
}

static int file_in(const char *dir, const char *file) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return mt_file_exists(path);
}

/* A LoRA adapter with trained token rows, saved in the order the trainer (LoRA, then rows)
 * or memory tuning (rows, then LoRA) uses: either way the result is PEFT's layout, the
 * tensors hold the trained rows themselves (not differences), a tied head stores nothing,
 * and loading it back gives the same logits. */
static void check_peft_layout(int tied, int rows_first) {
    mt_config cfg = small_config(tied);
    mt_model *m = random_model(&cfg);
    if (!m) return;
    int ids[2] = {5, 3}, prompt[4] = {1, 5, 3, 9}, n_sets = tied ? 1 : 2;
    size_t V = (size_t)cfg.vocab_size;
    float *l1 = malloc(4 * V * sizeof(float)), *l2 = malloc(4 * V * sizeof(float));
    mt_lora *l = NULL;
    mt_token_rows *r = NULL;
    CHECK_OK(mt_lora_create(m, NULL, &l));
    CHECK_OK(mt_token_rows_create(m, ids, 2, &r));
    if (!l || !r) return;
    for (size_t i = 0; i < l->n_params; i++) l->params[i] = 0.1f * (float)mt_rng_normal(&rng);
    for (size_t i = 0; i < (size_t)n_sets * 2 * cfg.dim; i++) r->values[i] += 0.5f * (float)mt_rng_normal(&rng);
    CHECK_OK(mt_model_attach_token_rows(m, r));
    CHECK_OK(mt_model_add_lora(m, l, 1.0f));
    CHECK_OK(mt_model_logits(m, prompt, 4, l1));
    const char *dir = test_tmpdir(tied ? "rows_peft_tied" : "rows_peft_untied");
    if (rows_first) {
        CHECK_OK(mt_token_rows_save(r, dir));
        CHECK(file_in(dir, "trainable_tokens.json"));
        CHECK_OK(mt_lora_save(l, m, dir, NULL));
    } else {
        CHECK_OK(mt_lora_save(l, m, dir, NULL));
        CHECK_OK(mt_token_rows_save(r, dir));
    }
    /* the trainer's order leaves no file of memtune's own; memory tuning's keeps its copy */
    CHECK(rows_first || (!file_in(dir, "trainable_tokens.json") && !file_in(dir, "trainable_tokens.safetensors")));
    json_t *cfgj = read_json(dir, "adapter_config.json"), *idx = json_object_get(cfgj, "trainable_token_indices");
    json_t *embed_ids = tied ? idx : json_object_get(idx, "embed_tokens");
    CHECK_MSG(json_is_array(embed_ids) && json_array_size(embed_ids) == 2 &&
              json_integer_value(json_array_get(embed_ids, 0)) == 5, "trainable_token_indices is not PEFT's form");
    CHECK(tied ? json_is_array(idx) : json_equal(json_object_get(idx, "lm_head"), embed_ids));
    CHECK_STR_EQ(json_string_value(json_object_get(cfgj, "peft_type")), "LORA");
    json_decref(cfgj);
    float *e = read_st_rows(dir, "adapter_model.safetensors", EMBED_T, 2, cfg.dim);
    float *h = read_st_rows(dir, "adapter_model.safetensors", HEAD_T, 2, cfg.dim);
    CHECK(e != NULL);
    CHECK(tied ? h == NULL : h != NULL);
    if (e) CHECK(memcmp(e, r->values, (size_t)2 * cfg.dim * sizeof(float)) == 0); /* full rows */
    if (h) CHECK(memcmp(h, r->values + 2 * cfg.dim, (size_t)2 * cfg.dim * sizeof(float)) == 0);
    free(e), free(h);

    mt_model_drop_lora(m, l);
    CHECK_OK(mt_model_attach_token_rows(m, NULL));
    mt_adapter_set *a = NULL;
    CHECK(mt_token_rows_present(dir));
    CHECK_OK(mt_adapter_set_load(m, dir, &a));
    CHECK_OK(mt_model_logits(m, prompt, 4, l2));
    double d = 0;
    for (size_t i = 0; i < 4 * V; i++) d = fmax(d, fabs(l2[i] - l1[i]));
    CHECK_MSG(d < 1e-5, "tied %d rows_first %d: logits after reload differ by %.3g", tied, rows_first, d);
    mt_adapter_set_free(a);
    mt_token_rows_free(r);
    mt_lora_free(l);
    free(l1), free(l2);
    mt_model_free(m);
}

TEST(rows_are_written_in_peft_layout_tied_and_untied_in_either_save_order) {
    check_peft_layout(1, 0);
    check_peft_layout(0, 0);
    check_peft_layout(1, 1);
    check_peft_layout(0, 1);
}

static void write_text_file(const char *dir, const char *file, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "w");
    if (f) fputs(text, f), fclose(f);
}

static void write_rows_st(const char *dir, const char *file, const char *const *names, int n_t, const float *v, int n,
                          int dim) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    mt_st_desc d[2];
    for (int k = 0; k < n_t; k++) d[k] = (mt_st_desc){.name = names[k], .dtype = "F32", .n_dims = 2, .shape = {n, dim}};
    mt_st_writer w;
    CHECK_OK(mt_st_writer_open(&w, path, d, n_t, NULL));
    for (int k = 0; k < n_t; k++) CHECK_OK(mt_st_writer_put_f32(&w, v + (size_t)k * n * dim, (size_t)n * dim));
    CHECK_OK(mt_st_writer_commit(&w));
}

/* What PEFT writes for LoraConfig(target_modules=["q_proj"], trainable_token_indices=[4, 6])
 * on an untied model: only the embedding's rows (a list trains the input embedding), no
 * lm_head tensor; the LoRA tensors next to them. And memtune's files from before the PEFT
 * layout (differences, no "rows" key) still load as base + difference. */
TEST(peft_adapters_and_earlier_memtune_rows_load) {
    mt_config cfg = small_config(0);
    mt_model *m = random_model(&cfg);
    if (!m) return;
    int dim = cfg.dim;
    float rows[4 * 16];
    for (int i = 0; i < 4 * dim; i++) rows[i] = (float)mt_rng_normal(&rng);
    const char *dir = test_tmpdir("rows_from_peft");
    write_text_file(dir, "adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, "
                    "\"target_modules\": [\"q_proj\"], \"trainable_token_indices\": [4, 6]}");
    mt_lora *l = NULL;
    CHECK_OK(mt_lora_create(m, NULL, &l));
    /* LoRA tensors from memtune's own writer, then PEFT's row tensor added beside them */
    mt_lora_options o;
    mt_lora_options_default(&o);
    o.rank = 2;
    o.targets = "q";
    mt_lora *lq = NULL;
    CHECK_OK(mt_lora_create(m, &o, &lq));
    if (lq) CHECK_OK(mt_lora_save(lq, m, dir, NULL));
    write_text_file(dir, "adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, "
                    "\"target_modules\": [\"q_proj\"], \"trainable_token_indices\": [4, 6]}");
    {
        char path[512];
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        mt_safetensors st;
        CHECK_OK(mt_safetensors_open(path, &st));
        int n = st.n_tensors;
        mt_st_desc *d = calloc((size_t)n + 1, sizeof *d);
        for (int i = 0; i < n; i++) {
            d[i] = (mt_st_desc){.name = st.tensors[i].name, .dtype = st.tensors[i].dtype, .n_dims = 2};
            memcpy(d[i].shape, st.tensors[i].shape, sizeof d[i].shape);
        }
        d[n] = (mt_st_desc){.name = EMBED_T, .dtype = "F32", .n_dims = 2, .shape = {2, dim}};
        mt_st_writer w;
        CHECK_OK(mt_st_writer_open(&w, path, d, n + 1, NULL));
        for (int i = 0; i < n; i++) CHECK_OK(mt_st_writer_put(&w, st.tensors[i].data, st.tensors[i].nbytes));
        CHECK_OK(mt_st_writer_put_f32(&w, rows, (size_t)2 * dim));
        CHECK_OK(mt_st_writer_commit(&w));
        mt_safetensors_close(&st);
        free(d);
    }
    mt_token_rows *r = NULL;
    CHECK(mt_token_rows_present(dir));
    CHECK_OK(mt_token_rows_load(m, dir, &r));
    if (r) {
        CHECK_INT_EQ(r->n, 2);
        CHECK_INT_EQ(r->ids[1], 6);
        CHECK(memcmp(r->values, rows, (size_t)2 * dim * sizeof(float)) == 0);
        /* the untied head is not trained by a list: its rows stay the base's */
        CHECK(memcmp(r->values + 2 * dim, m->output + (size_t)4 * dim, (size_t)dim * sizeof(float)) == 0);
        mt_token_rows_free(r);
    }
    mt_adapter_set *a = NULL;
    CHECK_OK(mt_adapter_set_load(m, dir, &a)); /* the LoRA reader accepts the row tensors */
    mt_adapter_set_free(a);
    write_text_file(dir, "adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"q_proj\"], "
                    "\"trainable_token_indices\": {\"embed_tokens\": [4, 6], \"lm_head\": [4]}}");
    CHECK_ERR(mt_token_rows_load(m, dir, &r), MT_ERR_UNSUPPORTED, "other ids for lm_head");

    /* memtune before the PEFT layout: trainable_tokens.* holding trained minus base rows */
    const char *old = test_tmpdir("rows_old_memtune");
    write_text_file(old, "trainable_tokens.json", "{\"trainable_token_indices\": [4, 6], \"tied\": false}");
    const char *names[2] = {EMBED_T, HEAD_T};
    write_rows_st(old, "trainable_tokens.safetensors", names, 2, rows, 2, dim);
    CHECK_OK(mt_token_rows_load(m, old, &r));
    if (r) {
        double d = 0;
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < dim; j++) {
                    const float *w = k ? m->output : m->tok_embd;
                    float want = w[(size_t)r->ids[i] * dim + j] + rows[(k * 2 + i) * dim + j];
                    d = fmax(d, fabs(r->values[(size_t)(k * 2 + i) * dim + j] - want));
                }
        CHECK_MSG(d == 0, "old delta rows loaded wrong by %.3g", d);
        mt_token_rows_free(r);
    }
    mt_lora_free(l);
    mt_lora_free(lq);
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
    RUN(rows_are_written_in_peft_layout_tied_and_untied_in_either_save_order);
    RUN(peft_adapters_and_earlier_memtune_rows_load);
    RUN(bad_token_ids_are_refused);
    TEST_MAIN_END();
}
