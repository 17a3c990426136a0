/* memtune convert: between HF directories, GGUF and llama2.c .bin. */
#include "cli/cli.h"
#include <stdio.h>

int cmd_convert(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *out = NULL, *format = NULL;
    const cli_opt opts[] = {
        {"--model", "-m", OPT_STRING, &model, "model to read (default: bundled stories260K)"},
        {"--tokenizer", "-z", OPT_STRING, &tokenizer, "tokenizer file"},
        {"--out", "-o", OPT_STRING, &out, "output path: a directory for hf, a file for gguf and llama2c"},
        {"--format", "-f", OPT_STRING, &format, "hf | gguf | llama2c"},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    if (cli_parse(argc, argv, opts, "usage: memtune convert --model PATH --out PATH --format hf|gguf|llama2c", &code)) return code;
    mt_format fmt;
    if (!out || !format) {
        fprintf(stderr, "memtune: convert needs --out and --format\n");
        return 2;
    }
    if (mt_format_parse(format, &fmt) != MT_OK) return cli_fail("convert") + 1;
    mt_model *m;
    if (cli_load_model(cli_model_path(model, argv[0]), tokenizer, &m)) return 1;
    mt_status s = mt_model_save(m, out, fmt);
    mt_model_free(m);
    if (s) return cli_fail("convert");
    fprintf(stderr, "wrote %s (%s)\n", out, format);
    return 0;
}
