/* memtune grammar benchmark: what a constrained decoding step costs next to the model's
 * forward. Decodes N tokens at temperature 1 (seeded) unconstrained and then under each
 * grammar given, timing with the thread's CPU clock (one thread), so the numbers hold on a
 * shared, loaded machine: forward ms/token, mask+accept ms/token, and the slowdown of
 * constrained over unconstrained decoding. When a grammar completes, decoding starts over
 * from the prompt (a fresh parse), so every run decodes N tokens.
 *
 * --greedy: temperature 0, and each grammar run twice: with the sampler's one-token check first
 * (the default in generate/eval) and with the full mask at every step (the picks are the same).
 *
 * usage: bench_grammar MODEL TOKENIZER N [--greedy] NAME=GRAMMAR.gbnf|NAME=SCHEMA.json ...
 * One JSON line per run on stdout. */
#include "memtune.h"
#include "grammar/matcher.h"
#include "model/forward.h"
#include "model/sampler.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float temperature = 1.0f; /* --greedy: 0, and each grammar twice (check-first, full mask) */

static int run(mt_model *m, const char *name, const mt_grammar *g, int n_tokens, int check_first) {
    const mt_config *cfg = mt_model_config(m);
    int V = cfg->vocab_size, *prompt = NULL, n_prompt = 0;
    if (mt_tokenize(mt_model_tokenizer(m), "The answer, as JSON:", 1, &prompt, &n_prompt)) return 1;
    float *logits = malloc((size_t)V * sizeof(float));
    mt_sampler s;
    mt_grammar_matcher *gm = NULL;
    double t_build = cpu_now();
    if (g && mt_grammar_matcher_new(g, mt_model_tokenizer(m), &gm)) return 1;
    t_build = cpu_now() - t_build;
    if (!logits || !mt_sampler_init(&s, V, temperature, 0, 1.0f, 1234)) return 1;
    if (gm) s.constraint = (mt_sampler_constraint){mt_grammar_hook_mask, mt_grammar_hook_accept, gm, check_first ? mt_grammar_hook_allows : NULL};
    double t_fwd = 0, t_sample = 0;
    int pos = 0, restarts = 0;
    for (int k = 0; k < n_tokens; k++) {
        double t0 = cpu_now();
        if (pos == 0 || pos + 1 >= mt_infer_context(m)) { /* (re)start from the prompt */
            if (mt_forward(m, prompt, n_prompt, 0, logits, 0)) return 1;
            pos = n_prompt;
            if (gm) mt_grammar_matcher_reset(gm, 0);
        }
        double t1 = cpu_now();
        int next = mt_sampler_sample(&s, logits);
        double t2 = cpu_now();
        if (next < 0) {
            fprintf(stderr, "%s: %s\n", name, mt_last_error());
            return 1;
        }
        if (gm && mt_grammar_matcher_finished(gm)) {
            pos = 0;
            restarts++;
        } else if (mt_forward(m, &next, 1, pos++, logits, 0)) {
            return 1;
        }
        t_fwd += (t1 - t0) + (cpu_now() - t2);
        t_sample += t2 - t1;
    }
    printf("{\"run\": \"%s%s\", \"tokens\": %d, \"completed\": %d, \"forward_ms_per_token\": %.3f, "
           "\"sample_ms_per_token\": %.3f, \"matcher_build_ms\": %.1f, \"cpu_tokens_per_s\": %.1f}\n",
           name, temperature > 0 ? "" : check_first ? " greedy check-first" : " greedy full-mask", n_tokens, restarts, 1e3 * t_fwd / n_tokens, 1e3 * t_sample / n_tokens, 1e3 * t_build,
           n_tokens / (t_fwd + t_sample));
    fflush(stdout);
    mt_grammar_matcher_free(gm);
    mt_sampler_free(&s);
    free(logits);
    free(prompt);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_grammar MODEL TOKENIZER N [--greedy] [NAME=FILE.gbnf|NAME=FILE.json ...]\n");
        return 2;
    }
    mt_set_threads(1);
    mt_load_options lo = {.tokenizer_path = argv[2][0] ? argv[2] : NULL};
    mt_model *m;
    if (mt_model_load(argv[1], &lo, &m)) {
        fprintf(stderr, "%s\n", mt_last_error());
        return 1;
    }
    int n = atoi(argv[3]);
    int first = 4;
    if (argc > 4 && !strcmp(argv[4], "--greedy")) temperature = 0.0f, first = 5;
    int rc = run(m, "unconstrained", NULL, n, 1);
    for (int i = first; i < argc && !rc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) return 2;
        *eq = 0;
        const char *path = eq + 1;
        size_t len = strlen(path);
        mt_grammar *g = NULL;
        mt_status s = len > 5 && !strcmp(path + len - 5, ".json") ? mt_grammar_load_json_schema(path, &g) : mt_grammar_load(path, &g);
        if (s) {
            fprintf(stderr, "%s\n", mt_last_error());
            return 1;
        }
        rc = run(m, argv[i], g, n, 1);
        if (!rc && temperature == 0.0f) rc = run(m, argv[i], g, n, 0);
        mt_grammar_free(g);
    }
    mt_model_free(m);
    return rc;
}
