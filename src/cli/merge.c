/* memtune merge: fuse a LoRA adapter into a model (W += scale·B·A) and save the result, which
 * then runs exactly as fast as the base. */
#include "cli/cli.h"
#include <stdio.h>
#include <string.h>

int cmd_merge(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *adapter = NULL, *out = NULL, *format = "hf";
    int quiet = 0;
    const cli_opt opts[] = {
        {"--model", "-m", OPT_STRING, &model, "base model (default: bundled stories260K)"},
        {"--tokenizer", "-z", OPT_STRING, &tokenizer, "tokenizer file"},
        {"--adapter", NULL, OPT_STRING, &adapter, "PEFT LoRA adapter directory (required)"},
        {"--out", "-o", OPT_STRING, &out, "output: a directory (hf) or a file (gguf, llama2c) (required)"},
        {"--format", "-f", OPT_STRING, &format, "hf (default) | gguf | llama2c"},
        {"--quiet", "-q", OPT_FLAG, &quiet, "no summary on stderr"},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    if (cli_parse(argc, argv, opts, "usage: memtune merge --model BASE --adapter DIR --out OUT [--format hf|gguf]", &code)) return code;
    if (!adapter || !out) {
        fprintf(stderr, "memtune: merge needs --adapter DIR and --out OUT\n");
        return 2;
    }
    mt_format fmt;
    if (mt_format_parse(format, &fmt) != MT_OK) return cli_fail("merge");
    mt_model *m;
    mt_lora *lora = NULL;
    if (cli_load_model(cli_model_path(model, argv[0]), tokenizer, &m)) return 1;
    mt_token_rows *rows = NULL;
    mt_status s = mt_lora_load(m, adapter, &lora);
    if (s == MT_OK) s = mt_lora_merge(m, lora);
    /* trained token rows are written into the weights while attached, so saving keeps them */
    if (s == MT_OK && mt_token_rows_present(adapter) && !(s = mt_token_rows_load(m, adapter, &rows)))
        s = mt_model_attach_token_rows(m, rows);
    if (s == MT_OK) s = mt_model_save(m, out, fmt);
    if (s == MT_OK && !quiet)
        fprintf(stderr, "memtune: merged %zu adapter parameters into %s (%s)\n", mt_lora_param_count(lora), out, format);
    mt_lora_free(lora);
    mt_model_free(m); /* before the rows: the merged model keeps them */
    mt_token_rows_free(rows);
    return s ? cli_fail("merge") : 0;
}
