/* The forward pass against PyTorch: random models of three real shapes (GQA + tied head;
 * untied + explicit head_dim + rope theta 500000 + Llama 3 rope scaling; Qwen2 with q/k/v
 * bias), stored as HF directories in F32, BF16 and F16 by tests/reference/make_reference.py
 * with float64 reference logits. memtune must match within 1e-4 relative. */
#include "test.h"
#include <jansson.h>

static double rel_err(const float *got, const double *want, int n) {
    double max_diff = 0, max_ref = 1e-30;
    for (int i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        if (d > max_diff) max_diff = d;
        if (fabs(want[i]) > max_ref) max_ref = fabs(want[i]);
    }
    return max_diff / max_ref;
}

static double lse_of(const float *x, int n) {
    double mx = x[0], sum = 0;
    for (int i = 1; i < n; i++) mx = fmax(mx, x[i]);
    for (int i = 0; i < n; i++) sum += exp(x[i] - mx);
    return mx + log(sum);
}

static void json_doubles(json_t *arr, double *out, int n) {
    for (int i = 0; i < n; i++) out[i] = json_number_value(json_array_get(arr, (size_t)i));
}

static void check_prompt(mt_model *m, json_t *p, const char *name) {
    json_t *tokens = json_object_get(p, "tokens");
    int T = (int)json_array_size(tokens), V = mt_model_config(m)->vocab_size;
    int ids[64];
    for (int t = 0; t < T; t++) ids[t] = (int)json_integer_value(json_array_get(tokens, (size_t)t));
    float *logits = malloc((size_t)T * V * sizeof(float));
    CHECK_OK(mt_model_logits(m, ids, T, logits));
    double want[512];
    json_t *prefix = json_object_get(p, "logits_prefix");
    int P = (int)json_array_size(json_array_get(prefix, 0));
    double worst = 0;
    for (int t = 0; t < T; t++) {
        json_doubles(json_array_get(prefix, (size_t)t), want, P);
        double e = rel_err(logits + (size_t)t * V, want, P);
        if (e > worst) worst = e;
        double lse = lse_of(logits + (size_t)t * V, V);
        double want_lse = json_number_value(json_array_get(json_object_get(p, "logsumexp"), (size_t)t));
        CHECK_NEAR(lse, want_lse, 1e-4 * fmax(1.0, fabs(want_lse)));
        int am = 0;
        for (int v = 1; v < V; v++) if (logits[(size_t)t * V + v] > logits[(size_t)t * V + am]) am = v;
        CHECK_INT_EQ(am, json_integer_value(json_array_get(json_object_get(p, "argmax"), (size_t)t)));
    }
    json_doubles(json_object_get(p, "logits_last"), want, V);
    double e_last = rel_err(logits + (size_t)(T - 1) * V, want, V);
    CHECK_MSG(worst < 1e-4, "%s: logits prefix relative error %.3g", name, worst);
    CHECK_MSG(e_last < 1e-4, "%s: last-row logits relative error %.3g", name, e_last);
    double nll = 0;
    for (int t = 0; t + 1 < T; t++)
        nll += lse_of(logits + (size_t)t * V, V) - logits[(size_t)t * V + ids[t + 1]];
    nll /= T - 1;
    CHECK_NEAR(nll, json_number_value(json_object_get(p, "mean_nll")), 1e-4);
    fprintf(stderr, "  %s T=%d: max rel err %.2e (prefix) %.2e (last row), mean nll %.6f\n", name, T,
            worst, e_last, nll);
    free(logits);
}

static void check_fixture(const char *dir, const char *ref_dir) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/%s/reference.json", ref_dir);
    json_error_t jerr;
    json_t *ref = json_load_file(path, 0, &jerr);
    CHECK_MSG(ref != NULL, "%s: %s", path, jerr.text);
    if (!ref) return;
    snprintf(path, sizeof path, "tests/fixtures/%s", dir);
    mt_model *m = NULL;
    CHECK_OK(mt_model_load(path, NULL, &m));
    if (m) {
        json_t *prompts = json_object_get(ref, "prompts");
        for (size_t i = 0; i < json_array_size(prompts); i++) check_prompt(m, json_array_get(prompts, i), dir);
        mt_model_free(m);
    }
    json_decref(ref);
}

TEST(gqa_tied_f32_matches_pytorch) { check_fixture("gqa_tied", "gqa_tied"); }
TEST(sharded_safetensors_match_pytorch) { check_fixture("gqa_tied_sharded", "gqa_tied"); }
TEST(llama3_scaling_untied_bf16_matches_pytorch) { check_fixture("llama3_untied", "llama3_untied"); }
TEST(qwen2_bias_f16_matches_pytorch) { check_fixture("qwen2_bias", "qwen2_bias"); }

int main(void) {
    mt_set_threads(2);
    RUN(gqa_tied_f32_matches_pytorch);
    RUN(sharded_safetensors_match_pytorch);
    RUN(llama3_scaling_untied_bf16_matches_pytorch);
    RUN(qwen2_bias_f16_matches_pytorch);
    TEST_MAIN_END();
}
