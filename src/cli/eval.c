/* memtune eval --text FILE: perplexity of a text file, one JSON object on stdout. */
#include "cli/cli.h"
#include <stdio.h>

int cmd_eval(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *text = NULL, *data = NULL, *report = NULL;
    int threads = 0;
    const cli_opt opts[] = {
        {"--model", "-m", OPT_STRING, &model, "model path (default: bundled stories260K)"},
        {"--adapter", NULL, OPT_STRING, NULL, "LoRA adapter (PEFT directory or llama.cpp .gguf), applied unmerged; repeatable"},
        {"--adapter-scale", NULL, OPT_FLOAT, NULL, "weight of the i-th --adapter (default 1); repeatable"},
        {"--tokenizer", "-z", OPT_STRING, &tokenizer, "tokenizer file"},
        {"--text", NULL, OPT_STRING, &text, "UTF-8 text file to score in windows of the context length"},
        {"--data", NULL, OPT_STRING, &data, "JSONL prompt/answer examples: exact match and answer NLL"},
        {"--report", NULL, OPT_STRING, &report, "with --data: write a JSON line per example here"},
        {"--threads", NULL, OPT_INT, &threads, "threads (default: all cores)"},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    cli_adapters ad;
    if (cli_take_adapters(&argc, argv, &ad)) return 2;
    if (cli_parse(argc, argv, opts, "usage: memtune eval [--model PATH] --text FILE | --data FILE.jsonl [--report FILE]", &code)) return code;
    if (!text == !data) {
        fprintf(stderr, "memtune: eval needs --text FILE or --data FILE\n");
        return 2;
    }
    mt_set_threads(threads);
    mt_model *m;
    if (cli_load_model(cli_model_path(model, argv[0]), tokenizer, &m)) return 1;
    if (cli_load_adapters(m, &ad)) return 1;
    if (data) {
        mt_data_score ds;
        mt_status s = mt_eval_data_file(m, data, report, &ds);
        mt_model_free(m);
        cli_adapters_free(&ad);
        if (s) return cli_fail("eval");
        printf("{\"examples\": %ld, \"exact_match\": %.6f, \"nll\": %.6f, \"answer_tokens\": %ld}\n",
               ds.examples, ds.exact_match, ds.nll, ds.answer_tokens);
        return 0;
    }
    mt_text_score sc;
    mt_status s = mt_eval_text_file(m, text, &sc);
    mt_model_free(m);
    cli_adapters_free(&ad);
    if (s) return cli_fail("eval");
    printf("{\"tokens\": %ld, \"nll\": %.6f, \"perplexity\": %.6f}\n", sc.tokens, sc.nll, sc.perplexity);
    return 0;
}
