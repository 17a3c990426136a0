/* Contexts: one loaded model, many sequences. Two contexts running at once in two threads
 * give exactly the text mt_generate gives; a context that applies a LoRA adapter and
 * trainable token rows (neither attached to the model) gives bit for bit the logits and text
 * of the model with the same adapters attached; and its position, reset and adapter-set
 * errors behave as documented. */
#include "test.h"
#include <pthread.h>
#include "core/rng.h"
#include "model/adapter.h"
#include "model/context.h"
#include "model/forward.h"
#include "model/sampler.h"

typedef struct { char buf[8192]; size_t len; } text_buf;

static int collect(const char *text, size_t len, void *user) {
    text_buf *b = user;
    if (b->len + len < sizeof b->buf) {
        memcpy(b->buf + b->len, text, len);
        b->len += len;
        b->buf[b->len] = 0;
    }
    return 0;
}

static mt_generate_options greedy(int n) {
    mt_generate_options o;
    mt_generate_options_default(&o);
    o.temperature = 0;
    o.max_new_tokens = n;
    o.echo_prompt = 0;
    return o;
}

typedef struct {
    mt_context *c;
    const char *prompt;
    text_buf out;
    mt_status s;
} job;

static void *run_job(void *p) {
    job *j = p;
    mt_generate_options o = greedy(60);
    j->out.len = 0;
    j->out.buf[0] = 0;
    j->s = mt_context_generate(j->c, j->prompt, &o, collect, &j->out, NULL);
    return NULL;
}

static mt_model *load(void) {
    mt_model *m = NULL;
    CHECK_OK(mt_model_load(test_asset("models/stories260K/stories260K.bin"), NULL, &m));
    return m;
}

TEST(two_contexts_in_two_threads_equal_generate) {
    mt_model *m = load();
    if (!m) return;
    const char *prompts[2] = {"Once upon a time", "Lily and Tom went"};
    text_buf want[2];
    for (int i = 0; i < 2; i++) {
        mt_generate_options o = greedy(60);
        want[i].len = 0;
        want[i].buf[0] = 0;
        CHECK_OK(mt_generate(m, prompts[i], &o, collect, &want[i], NULL));
        CHECK(want[i].len > 20);
    }
    job jobs[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        jobs[i] = (job){.prompt = prompts[i]};
        CHECK_OK(mt_context_create(m, 256, &jobs[i].c));
    }
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, run_job, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK_OK(jobs[i].s);
        CHECK_STR_EQ(jobs[i].out.buf, want[i].buf);
        CHECK(mt_context_pos(jobs[i].c) > 0);
        CHECK_INT_EQ(mt_context_size(jobs[i].c), 256);
        mt_context_free(jobs[i].c);
    }
    mt_model_free(m);
}

TEST(context_adapters_equal_model_attached_adapters) {
    mt_model *m = load();
    if (!m) return;
    const mt_config *cfg = mt_model_config(m);
    mt_lora_options lo;
    mt_lora_options_default(&lo);
    lo.rank = 4;
    mt_lora *l = NULL;
    CHECK_OK(mt_lora_create(m, &lo, &l));
    mt_rng rng;
    mt_rng_seed(&rng, 7);
    for (size_t i = 0; i < l->n_params; i++) l->params[i] += 0.05f * mt_rng_normal(&rng); /* B nonzero too */
    int ids[2] = {mt_tokenizer_eos(mt_model_tokenizer(m)), 100};
    mt_token_rows *r = NULL;
    CHECK_OK(mt_token_rows_create(m, ids, 2, &r));
    for (size_t i = 0; i < (size_t)2 * cfg->dim; i++) r->values[i] += 0.3f * mt_rng_normal(&rng);

    int prompt[6] = {1, 100, 200, 300, 100, 50};
    size_t V = (size_t)cfg->vocab_size;
    float *attached = malloc(V * sizeof(float)), *ctx_logits = malloc(V * sizeof(float));
    /* the model with both attached (its default context) */
    CHECK_OK(mt_model_attach_lora(m, l));
    CHECK_OK(mt_model_attach_token_rows(m, r));
    /* in the same two pieces the context decodes below: one 6-row GEMM and two 3-row ones may
     * round differently (OpenBLAS picks its kernel by shape and CPU) */
    CHECK_OK(mt_forward(m, prompt, 3, 0, attached, 0));
    CHECK_OK(mt_forward(m, prompt + 3, 3, 3, attached, 0));
    mt_generate_options o = greedy(40);
    text_buf want = {0};
    CHECK_OK(mt_generate(m, "Once upon", &o, collect, &want, NULL));
    CHECK_OK(mt_model_attach_token_rows(m, NULL));
    CHECK_OK(mt_model_attach_lora(m, NULL));

    /* a context with the same adapters, the model bare */
    mt_context *c = NULL;
    CHECK_OK(mt_context_create(m, 0, &c));
    CHECK_OK(mt_context_add_lora(c, l, 1.0f));
    CHECK_OK(mt_context_set_token_rows(c, r));
    CHECK_OK(mt_context_decode(c, prompt, 3, ctx_logits));
    CHECK_OK(mt_context_decode(c, prompt + 3, 3, ctx_logits));
    CHECK_INT_EQ(mt_context_pos(c), 6);
    CHECK_MSG(memcmp(attached, ctx_logits, V * sizeof(float)) == 0, "context logits differ from the attached model's");
    text_buf got = {0};
    CHECK_OK(mt_context_generate(c, "Once upon", &o, collect, &got, NULL));
    CHECK_STR_EQ(got.buf, want.buf);

    /* the bare model does not see the context's adapters */
    float *bare = malloc(V * sizeof(float));
    CHECK_OK(mt_forward(m, prompt, 6, 0, bare, 0));
    CHECK(memcmp(bare, ctx_logits, V * sizeof(float)) != 0);
    mt_context_clear_adapters(c);
    CHECK_INT_EQ(mt_context_pos(c), 0);
    CHECK_OK(mt_context_decode(c, prompt, 6, ctx_logits));
    CHECK_MSG(memcmp(bare, ctx_logits, V * sizeof(float)) == 0, "cleared context differs from the bare model");

    /* errors: past the context, bad ids */
    mt_context_reset(c);
    CHECK_ERR(mt_context_decode(c, prompt, 0, ctx_logits), MT_ERR_ARG, "exceeds the context");
    int bad = cfg->vocab_size;
    CHECK_ERR(mt_context_decode(c, &bad, 1, ctx_logits), MT_ERR_ARG, "out of range");
    mt_context_free(c);
    free(bare);
    free(attached);
    free(ctx_logits);
    mt_token_rows_free(r);
    mt_lora_free(l);
    mt_model_free(m);
}

/* n contexts decoding one token each: a batched step gives exactly the logits of n single
 * decodes, with different prompts, positions and adapters per context */
static void check_batch_equals_single(mt_model *m, const mt_lora *l, const char *label) {
    enum { N = 5 };
    const mt_config *cfg = mt_model_config(m);
    size_t V = (size_t)cfg->vocab_size;
    mt_context *a[N], *b[N];
    float *la[N], *lb[N];
    int next[N];
    for (int i = 0; i < N; i++) {
        CHECK_OK(mt_context_create(m, 64, &a[i]));
        CHECK_OK(mt_context_create(m, 64, &b[i]));
        if (l && i % 2) {
            CHECK_OK(mt_context_add_lora(a[i], l, 0.5f + i));
            CHECK_OK(mt_context_add_lora(b[i], l, 0.5f + i));
        }
        la[i] = malloc(V * sizeof(float));
        lb[i] = malloc(V * sizeof(float));
        int prompt[8];
        for (int t = 0; t < 2 + i; t++) prompt[t] = (7 * t + 13 * i + 1) % cfg->vocab_size;
        CHECK_OK(mt_context_decode(a[i], prompt, 2 + i, la[i]));
        CHECK_OK(mt_context_decode(b[i], prompt, 2 + i, lb[i]));
    }
    for (int step = 0; step < 4; step++) {
        for (int i = 0; i < N; i++) {
            next[i] = mt_argmax(la[i], cfg->vocab_size);
            CHECK_OK(mt_context_decode(a[i], &next[i], 1, la[i]));
        }
        CHECK_OK(mt_contexts_decode_batch(b, next, N, lb));
        for (int i = 0; i < N; i++) {
            CHECK_INT_EQ(mt_context_pos(a[i]), mt_context_pos(b[i]));
            CHECK_MSG(memcmp(la[i], lb[i], V * sizeof(float)) == 0, "%s: step %d context %d: batched logits differ",
                      label, step, i);
        }
    }
    CHECK_ERR(mt_contexts_decode_batch(b, next, 0, lb), MT_ERR_ARG, "out of range");
    mt_context *twice[2] = {b[0], b[0]};
    CHECK_ERR(mt_contexts_decode_batch(twice, next, 2, lb), MT_ERR_ARG, "twice");
    for (int i = 0; i < N; i++) {
        mt_context_free(a[i]);
        mt_context_free(b[i]);
        free(la[i]);
        free(lb[i]);
    }
}

TEST(batched_decode_equals_single_decodes) {
    mt_model *m = load();
    if (!m) return;
    mt_lora_options lo;
    mt_lora_options_default(&lo);
    lo.rank = 2;
    mt_lora *l = NULL;
    CHECK_OK(mt_lora_create(m, &lo, &l));
    for (size_t i = 0; i < l->n_params; i++) l->params[i] += 0.01f * (float)((i * 37) % 11);
    check_batch_equals_single(m, l, "stories260K"); /* small matrices: OpenBLAS sgemv */
    mt_lora_free(l);
    mt_model_free(m);
    /* matrices over 65536 weights go through mt_matvec: its batched form must agree too */
    mt_config c = {.dim = 256, .hidden_dim = 704, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .vocab_size = 600,
                   .max_seq_len = 64, .tied_embeddings = 0};
    CHECK_OK(mt_model_init(&c, 3, &m));
    if (m) check_batch_equals_single(m, NULL, "dim 256 random");
    mt_model_free(m);
}

int main(void) {
    /* a thread that did not call mt_set_threads still runs kernels with its count (scratch sized for it) */
    mt_set_threads(1);
    RUN(two_contexts_in_two_threads_equal_generate);
    mt_set_threads(2);
    RUN(two_contexts_in_two_threads_equal_generate);
    RUN(context_adapters_equal_model_attached_adapters);
    RUN(batched_decode_equals_single_decodes);
    TEST_MAIN_END();
}
