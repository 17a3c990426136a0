/* memtune convert: models between HF directories, GGUF and llama2.c .bin; with --adapter,
 * a LoRA adapter between PEFT directories and llama.cpp's LoRA GGUF. */
#include "cli/cli.h"
#include <stdio.h>
#include <string.h>

/* The adapter at path (PEFT directory or .gguf), for model m, written as format. */
static int convert_adapter(mt_model *m, const char *path, const char *out, const char *format) {
    if (strcmp(format, "gguf") && strcmp(format, "peft")) {
        fprintf(stderr, "memtune: an adapter converts to --format gguf (llama.cpp) or peft\n");
        mt_model_free(m);
        return 2;
    }
    mt_lora *l = NULL;
    if (!strcmp(format, "gguf") && mt_token_rows_present(path))
        fprintf(stderr, "memtune: note: %s also holds trained token rows, which llama.cpp's LoRA GGUF cannot carry; "
                "for llama.cpp merge them into the base (memtune merge --adapter %s --format gguf)\n", path, path);
    mt_status s = mt_lora_load(m, path, &l);
    if (s == MT_OK) s = !strcmp(format, "gguf") ? mt_lora_save_gguf(l, m, out) : mt_lora_save(l, m, out, NULL);
    mt_lora_free(l);
    mt_model_free(m);
    if (s) return cli_fail("convert");
    fprintf(stderr, "wrote %s (%s LoRA adapter)\n", out, format);
    return 0;
}

int cmd_convert(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *out = NULL, *format = NULL, *adapter = NULL, *type = NULL;
    const cli_opt opts[] = {
        {"--model", "-m", OPT_STRING, &model, "model to read (default: bundled stories260K)"},
        {"--tokenizer", "-z", OPT_STRING, &tokenizer, "tokenizer file"},
        {"--adapter", NULL, OPT_STRING, &adapter, "convert this LoRA adapter (PEFT dir or .gguf) made for --model instead"},
        {"--out", "-o", OPT_STRING, &out, "output path: a directory for hf and peft, a file for gguf and llama2c"},
        {"--format", "-f", OPT_STRING, &format, "hf | gguf | llama2c; with --adapter: gguf (llama.cpp LoRA) | peft"},
        {"--type", "-t", OPT_STRING, &type, "gguf weights: f32 (default) | f16 | bf16 | q8_0 | q4_0 | q4_k (llama.cpp's "
         "Q4_K_M mix) | q6_k"},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    if (cli_parse(argc, argv, opts, "usage: memtune convert --model PATH [--adapter DIR] --out PATH --format hf|gguf|llama2c|peft [--type T]", &code)) return code;
    mt_format fmt;
    if (!out || !format) {
        fprintf(stderr, "memtune: convert needs --out and --format\n");
        return 2;
    }
    if (!adapter && mt_format_parse(format, &fmt) != MT_OK) return cli_fail("convert") + 1;
    if (type && (adapter || fmt != MT_FORMAT_GGUF)) {
        fprintf(stderr, "memtune: --type applies to a model written as --format gguf\n");
        return 2;
    }
    mt_model *m;
    if (cli_load_model(cli_model_path(model, argv[0]), tokenizer, &m)) return 1;
    if (adapter) return convert_adapter(m, adapter, out, format);
    mt_status s = type ? mt_model_save_gguf(m, out, type) : mt_model_save(m, out, fmt);
    mt_model_free(m);
    if (s) return cli_fail("convert");
    fprintf(stderr, "wrote %s (%s%s%s)\n", out, format, type ? ", " : "", type ? type : "");
    return 0;
}
