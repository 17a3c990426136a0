/* memtune generate: prints only the generated text on stdout; speed goes to stderr. */
#include "cli/cli.h"
#include <string.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int print_text(const char *text, size_t len, void *user) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *prompt = "", *grammar_path = NULL, *schema_path = NULL;
    int n = 256, new_tokens = -1, top_k = 0, threads = 0, no_echo = 0, quiet = 0, context = 0, samples = 1, dequantize = 0;
    float temperature = 1.0f, top_p = 0.9f;
    uint64_t seed = 0;
    const cli_opt opts[] = {
        {"--model", "-m", OPT_STRING, &model, "model: llama2.c .bin, .gguf or HF directory (default: $MEMTUNE_MODEL or bundled stories260K)"},
        {"--adapter", NULL, OPT_STRING, NULL, "LoRA adapter (PEFT directory or llama.cpp .gguf), applied unmerged; repeatable"},
        {"--adapter-scale", NULL, OPT_FLOAT, NULL, "weight of the i-th --adapter (default 1); repeatable"},
        {"--tokenizer", "-z", OPT_STRING, &tokenizer, "tokenizer file (llama2.c .bin or tokenizer.json)"},
        {"--prompt", "-i", OPT_STRING, &prompt, "prompt text (default empty: start from BOS)"},
        {"-n", NULL, OPT_INT, &n, "tokens of output, echoed prompt tokens included, as llama2.c's -n (default 256)", 1, INT_MAX},
        {"--max-new-tokens", NULL, OPT_INT, &new_tokens, "tokens to generate after the prompt (overrides -n)", 0, INT_MAX},
        {"--temperature", "-t", OPT_FLOAT, &temperature, "sampling temperature; 0 = greedy (default 1.0)", CLI_LIBRARY_RANGE},
        {"--top-k", "-k", OPT_INT, &top_k, "sample from the k most likely tokens (default 0 = off)", CLI_LIBRARY_RANGE},
        {"--top-p", "-p", OPT_FLOAT, &top_p, "nucleus sampling threshold (default 0.9; 1 = off)", CLI_LIBRARY_RANGE},
        {"--seed", "-s", OPT_U64, &seed, "random seed (default: time)", CLI_ANY_SEED},
        {"--threads", NULL, OPT_INT, &threads, "threads (default: all cores)", 0, MT_MAX_THREADS},
        {"--context", "-c", OPT_INT, &context, "context length (default: the model's, capped at 4096)", 0, MT_MAX_CONTEXT},
        {"--no-echo", NULL, OPT_FLAG, &no_echo, "do not print the prompt before the generated text"},
        {"--quiet", "-q", OPT_FLAG, &quiet, "no speed report on stderr"},
        {"--grammar", NULL, OPT_STRING, &grammar_path, "GBNF grammar file (llama.cpp syntax): the generated text always matches it"},
        {"--json-schema", NULL, OPT_STRING, &schema_path, "JSON Schema file: the generated text is JSON that validates against it"},
        {"--samples", NULL, OPT_INT, &samples, "draw N samples (seeds S, S+1, ...), each ended by a newline (default 1)", 1, INT_MAX},
        {"--dequantize", NULL, OPT_FLAG, &dequantize, "a quantized GGUF's weights as f32 (default: decode on its blocks)"},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    cli_adapters ad;
    if (cli_take_adapters(&argc, argv, &ad)) return 2;
    if (cli_parse(argc, argv, opts, "usage: memtune generate [--model PATH] [--prompt TEXT] [-n N] [--temperature T] ...", &code)) return code;
    mt_generate_options o;
    mt_generate_options_default(&o);
    o.temperature = temperature;
    o.top_k = top_k;
    o.top_p = top_p;
    o.seed = seed;
    o.echo_prompt = !no_echo;
    o.max_new_tokens = new_tokens >= 0 ? new_tokens : n;
    o.limit_includes_prompt = new_tokens < 0 && !no_echo;
    if (mt_generate_options_validate(&o)) { /* before loading anything */
        cli_adapters_free(&ad);
        return cli_bad_option();
    }
    mt_grammar *grammar = NULL;
    if ((code = cli_load_grammar(grammar_path, schema_path, &grammar))) {
        cli_adapters_free(&ad);
        return code;
    }
    o.grammar = grammar;
    mt_set_threads(threads);
    mt_model *m;
    mt_load_options lo = {.tokenizer_path = tokenizer, .keep_quantized = !dequantize};
    if (mt_model_load(cli_model_path(model, argv[0]), &lo, &m) != MT_OK) {
        cli_adapters_free(&ad);
        mt_grammar_free(grammar);
        return cli_fail("cannot load model");
    }
    cli_context_from_env(m);
    if (cli_load_adapters(m, &ad)) {
        cli_adapters_free(&ad);
        mt_grammar_free(grammar);
        return 1;
    }
    if (context > 0 && mt_model_set_context(m, context) != MT_OK) {
        mt_model_free(m);
        cli_adapters_free(&ad);
        mt_grammar_free(grammar);
        return cli_fail("generate");
    }
    mt_generate_stats st, total = {0};
    int context_full = 0, ctx_used = 0;
    mt_status s = MT_OK;
    if (samples > 1 && !seed) seed = (uint64_t)time(NULL);
    for (int i = 0; i < samples && s == MT_OK; i++) {
        o.seed = seed ? seed + (uint64_t)i : 0;
        s = mt_generate(m, prompt, &o, print_text, NULL, &st);
        printf("\n");
        total.prompt_tokens += st.prompt_tokens;
        total.prompt_seconds += st.prompt_seconds;
        total.generated_tokens += st.generated_tokens;
        total.generate_seconds += st.generate_seconds;
        if (st.stop_reason && !strcmp(st.stop_reason, "context"))
            context_full = 1, ctx_used = st.prompt_tokens + st.generated_tokens;
    }
    st = total;
    mt_model_free(m);
    cli_adapters_free(&ad);
    mt_grammar_free(grammar);
    if (s) return cli_fail("generate");
    if (context_full) /* fewer tokens than asked for: say why, even with -q */
        fprintf(stderr, "memtune: generate: stopped where the context of %d tokens is full\n", ctx_used);
    if (!quiet)
        fprintf(stderr, "prompt: %d tokens in %.3f s; generated %d tokens at %.1f tokens/s\n",
                st.prompt_tokens, st.prompt_seconds, st.generated_tokens,
                st.generate_seconds > 0 ? st.generated_tokens / st.generate_seconds : 0.0);
    return 0;
}
