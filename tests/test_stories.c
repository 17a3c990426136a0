/* The real model: stories260K reproduces llama2.c's published outputs (greedy from BOS,
 * greedy from a prompt, seeded top-p sampling) from both the llama2.c .bin and the GGUF
 * that llama.cpp wrote; its loss on a TinyStories paragraph matches the float64 reference;
 * and conversions .bin -> HF -> GGUF -> .bin keep the logits identical. */
#include "test.h"
#include <jansson.h>
#include "model/forward.h"

typedef struct { char buf[65536]; size_t len; } text_buf;

static int collect(const char *text, size_t len, void *user) {
    text_buf *b = user;
    if (b->len + len < sizeof b->buf) {
        memcpy(b->buf + b->len, text, len);
        b->len += len;
        b->buf[b->len] = 0;
    }
    return 0;
}

static json_t *reference_case(json_t *ref, int i) { return json_array_get(json_object_get(ref, "cases"), (size_t)i); }

static void check_case(mt_model *m, json_t *c, const char *label) {
    mt_generate_options o;
    mt_generate_options_default(&o);
    const char *prompt = json_string_value(json_object_get(c, "prompt"));
    o.max_new_tokens = (int)json_integer_value(json_object_get(c, "steps"));
    o.limit_includes_prompt = 1;
    json_t *temp = json_object_get(c, "temperature");
    o.temperature = temp ? (float)json_number_value(temp) : 0.0f;
    if (json_object_get(c, "topp")) o.top_p = (float)json_number_value(json_object_get(c, "topp"));
    if (json_object_get(c, "seed")) o.seed = (uint64_t)json_integer_value(json_object_get(c, "seed"));
    static text_buf out;
    out.len = 0;
    out.buf[0] = 0;
    CHECK_OK(mt_generate(m, prompt, &o, collect, &out, NULL));
    const char *want = json_string_value(json_object_get(c, "text"));
    CHECK_MSG(strcmp(out.buf, want) == 0, "%s:\n got  [%s]\n want [%s]", label, out.buf, want);
}

static void check_all_cases(const char *model_path, int context) {
    json_error_t e;
    json_t *ref = json_load_file(test_asset("models/stories260K/reference_outputs.json"), 0, &e);
    CHECK(ref != NULL);
    mt_model *m = NULL;
    CHECK_OK(mt_model_load(model_path, NULL, &m));
    if (!m || !ref) { json_decref(ref); mt_model_free(m); return; }
    if (context) CHECK_OK(mt_model_set_context(m, context));
    check_case(m, reference_case(ref, 0), "greedy 200 from BOS");
    check_case(m, reference_case(ref, 1), "greedy 256 from BOS");
    check_case(m, reference_case(ref, 2), "greedy 64 from 'Once upon a time'");
    check_case(m, reference_case(ref, 3), "seeded top-p 0.9");
    mt_model_free(m);
    json_decref(ref);
}

TEST(bin_reproduces_llama2c_outputs) { check_all_cases(test_asset("models/stories260K/stories260K.bin"), 0); }
TEST(gguf_reproduces_llama2c_outputs) { check_all_cases(test_asset("models/stories260K/stories260K.gguf"), 512); }

/* llama.cpp's converter wrote context_length 128 into the GGUF: by default memtune honours
 * it and stops there. */
TEST(gguf_context_length_is_honoured) {
    mt_model *m = NULL;
    CHECK_OK(mt_model_load(test_asset("models/stories260K/stories260K.gguf"), NULL, &m));
    if (!m) return;
    CHECK_INT_EQ(mt_model_config(m)->max_seq_len, 128);
    mt_generate_options o;
    mt_generate_options_default(&o);
    o.temperature = 0;
    o.max_new_tokens = 500;
    mt_generate_stats st;
    CHECK_OK(mt_generate(m, "", &o, NULL, NULL, &st));
    CHECK_INT_EQ(st.generated_tokens, 127);
    CHECK_STR_EQ(st.stop_reason, "context");
    mt_model_free(m);
}

static int stop_after_first(const char *text, size_t len, void *user) {
    (void)text, (void)len, (void)user;
    return 1;
}

/* The stats say why generation ended: max_tokens, a full context, the callback, a complete
 * grammar match, EOS. */
TEST(generate_says_why_it_stopped) {
    mt_model *m = NULL;
    CHECK_OK(mt_model_load(test_asset("models/stories260K/stories260K.bin"), NULL, &m));
    if (!m) return;
    mt_generate_options o;
    mt_generate_options_default(&o);
    o.temperature = 0;
    o.echo_prompt = 0;
    mt_generate_stats st;
    o.max_new_tokens = 5;
    CHECK_OK(mt_generate(m, "Once upon a time", &o, NULL, NULL, &st));
    CHECK_INT_EQ(st.generated_tokens, 5);
    CHECK_STR_EQ(st.stop_reason, "max_tokens");
    CHECK_OK(mt_generate(m, "Once upon a time", &o, stop_after_first, NULL, &st));
    CHECK_INT_EQ(st.generated_tokens, 1);
    CHECK_STR_EQ(st.stop_reason, "callback");
    mt_grammar *g = NULL;
    CHECK_OK(mt_grammar_compile("root ::= \" there\"", 17, &g));
    o.grammar = g;
    o.max_new_tokens = 50;
    CHECK_OK(mt_generate(m, "Once upon a time", &o, NULL, NULL, &st));
    CHECK_STR_EQ(st.stop_reason, "grammar");
    o.grammar = NULL;
    mt_grammar_free(g);
    o.max_new_tokens = 400; /* stories end with EOS long before the 512-token context */
    CHECK_OK(mt_generate(m, "Once upon a time", &o, NULL, NULL, &st));
    CHECK_STR_EQ(st.stop_reason, st.generated_tokens < 400 ? "eos" : "max_tokens");
    CHECK_OK(mt_model_set_context(m, 16));
    o.max_new_tokens = 100;
    CHECK_OK(mt_generate(m, "Once upon a time", &o, NULL, NULL, &st));
    CHECK_STR_EQ(st.stop_reason, "context");
    CHECK_INT_EQ(st.prompt_tokens + st.generated_tokens, 16);
    mt_model_free(m);
}

TEST(paragraph_loss_matches_reference) {
    json_error_t e;
    json_t *ref = json_load_file(test_asset("models/stories260K/reference_loss_first_paragraph.json"), 0, &e);
    CHECK(ref != NULL);
    mt_model *m = NULL;
    CHECK_OK(mt_model_load(test_asset("models/stories260K/stories260K.bin"), NULL, &m));
    if (!m || !ref) { json_decref(ref); mt_model_free(m); return; }
    const char *text = json_string_value(json_object_get(ref, "text"));
    mt_text_score sc;
    CHECK_OK(mt_eval_text(m, text, strlen(text), &sc));
    json_t *ids = json_object_get(ref, "ids");
    CHECK_INT_EQ(sc.tokens, (long)json_array_size(ids) - 1);
    CHECK_NEAR(sc.nll, json_number_value(json_object_get(ref, "mean_nll")), 1e-4);
    /* logits at position 0 after BOS */
    float logits[512];
    int bos = 1;
    CHECK_OK(mt_model_logits(m, &bos, 1, logits));
    json_t *want = json_object_get(ref, "logits_pos0_after_BOS");
    double worst = 0;
    for (int i = 0; i < 512; i++) worst = fmax(worst, fabs(logits[i] - json_number_value(json_array_get(want, (size_t)i))));
    CHECK_MSG(worst < 1e-4 * 10, "max |logit diff| %.3g", worst);
    fprintf(stderr, "  nll %.6f (reference %.6f), max logit diff %.2e\n", sc.nll,
            json_number_value(json_object_get(ref, "mean_nll")), worst);
    mt_model_free(m);
    json_decref(ref);
}

static void logits_of(const char *path, float *out, const int *ids, int n) {
    mt_model *m = NULL;
    CHECK_OK(mt_model_load(path, NULL, &m));
    if (!m) return;
    CHECK_OK(mt_model_logits(m, ids, n, out));
    mt_model_free(m);
}

TEST(round_trip_bin_hf_gguf_bin_keeps_logits) {
    const char *dir = test_tmpdir("stories_roundtrip");
    char hf[600], gguf[600], bin[600];
    snprintf(hf, sizeof hf, "%s/hf", dir);
    snprintf(gguf, sizeof gguf, "%s/model.gguf", dir);
    snprintf(bin, sizeof bin, "%s/model.bin", dir);
    mt_model *m = NULL;
    CHECK_OK(mt_model_load(test_asset("models/stories260K/stories260K.bin"), NULL, &m));
    if (!m) return;
    CHECK_OK(mt_model_save(m, hf, MT_FORMAT_HF));
    mt_model_free(m);
    m = NULL;
    CHECK_OK(mt_model_load(hf, NULL, &m));
    if (!m) return;
    CHECK_OK(mt_model_save(m, gguf, MT_FORMAT_GGUF));
    mt_model_free(m);
    m = NULL;
    CHECK_OK(mt_model_load(gguf, NULL, &m));
    if (!m) return;
    CHECK_OK(mt_model_save(m, bin, MT_FORMAT_LLAMA2C));
    mt_model_free(m);
    int ids[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315};
    int n = sizeof ids / sizeof ids[0];
    static float a[12 * 512], b[12 * 512], c[12 * 512], d[12 * 512];
    logits_of(test_asset("models/stories260K/stories260K.bin"), a, ids, n);
    logits_of(hf, b, ids, n);
    logits_of(gguf, c, ids, n);
    logits_of(bin, d, ids, n);
    /* HF stores Q/K rotate-half, so its attention sums in another order: equal to rounding
     * (relative to the largest logit: 1.05e-5 absolute seen on an AMD EPYC under ASan; a wrong
     * permutation differs by O(1)) */
    double worst = 0, top = 0;
    for (int i = 0; i < n * 512; i++) worst = fmax(worst, fabs(a[i] - b[i])), top = fmax(top, fabs(a[i]));
    CHECK_MSG(worst < 1e-6 * top, "HF logits differ by %.3g (largest logit %.3g)", worst, top);
    CHECK(memcmp(a, c, sizeof a) == 0);
    CHECK(memcmp(a, d, sizeof a) == 0);
    /* the tokenizer survives every hop */
    mt_model *m2 = NULL;
    CHECK_OK(mt_model_load(bin, NULL, &m2));
    if (m2 && mt_model_tokenizer(m2)) {
        int *got = NULL, ng = 0;
        CHECK_OK(mt_tokenize(mt_model_tokenizer(m2), "Once upon a time", 1, &got, &ng));
        CHECK_INT_EQ(ng, 5);
        if (ng == 5) CHECK(memcmp(got, ids, 5 * sizeof(int)) == 0);
        free(got);
    } else CHECK_MSG(0, "round-tripped .bin has no tokenizer");
    mt_model_free(m2);
}

/* mt_set_threads is public: raising the thread count between forwards of one model must
 * grow its attention scratch (a prompt chunk late in the context uses every thread's share;
 * the sanitizer build catches an overflow) and give the logits of a run that used the new
 * count from the start */
TEST(more_threads_between_forwards_of_one_model) {
    enum { P = 400, T = 64 };
    int ids[P + T];
    for (int i = 0; i < P + T; i++) ids[i] = 1 + (37 * i + 11) % 500;
    mt_model *a = NULL, *b = NULL;
    CHECK_OK(mt_model_load(test_asset("models/stories260K/stories260K.bin"), NULL, &a));
    CHECK_OK(mt_model_load(test_asset("models/stories260K/stories260K.bin"), NULL, &b));
    if (!a || !b) return;
    int V = mt_model_config(a)->vocab_size;
    float *la = malloc((size_t)V * sizeof(float)), *lb = malloc((size_t)V * sizeof(float));
    mt_set_threads(1);
    CHECK_OK(mt_forward(a, ids, P, 0, la, 0));
    mt_set_threads(2);
    CHECK_OK(mt_forward(a, ids + P, T, P, la, 0));
    CHECK_OK(mt_forward(b, ids, P + T, 0, lb, 0));
    double worst = 0;
    for (int i = 0; i < V; i++) worst = fmax(worst, fabs((double)la[i] - lb[i]));
    CHECK_MSG(worst < 1e-4, "logits differ by %.3g", worst);
    free(la), free(lb);
    mt_model_free(a), mt_model_free(b);
}

int main(void) {
    mt_set_threads(2);
    RUN(bin_reproduces_llama2c_outputs);
    RUN(gguf_reproduces_llama2c_outputs);
    RUN(gguf_context_length_is_honoured);
    RUN(generate_says_why_it_stopped);
    RUN(paragraph_loss_matches_reference);
    RUN(round_trip_bin_hf_gguf_bin_keeps_logits);
    RUN(more_threads_between_forwards_of_one_model);
    TEST_MAIN_END();
}
