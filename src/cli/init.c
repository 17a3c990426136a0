/* memtune init: a randomly initialised model of a preset or config.json shape, saved as an
 * HF directory (or another format with --format). */
#include "cli/cli.h"
#include <stdio.h>

int cmd_init(int argc, char **argv) {
    const char *like = NULL, *config = NULL, *out = NULL, *format = "hf";
    uint64_t seed = 1;
    const cli_opt opts[] = {
        {"--like", NULL, OPT_STRING, &like, "preset: stories260k, stories15m, stories110m, smollm-135m, llama-3.2-1b, qwen2-0.5b"},
        {"--config", NULL, OPT_STRING, &config, "HF config.json giving the shape"},
        {"--seed", NULL, OPT_U64, &seed, "random seed (default 1)", CLI_ANY_SEED},
        {"--out", "-o", OPT_STRING, &out, "output path"},
        {"--format", "-f", OPT_STRING, &format, "hf (default) | gguf | llama2c"},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    if (cli_parse(argc, argv, opts, "usage: memtune init --like NAME|--config FILE [--seed S] --out DIR", &code)) return code;
    if (!out || (!like == !config)) {
        fprintf(stderr, "memtune: init needs --out and exactly one of --like or --config\n");
        return 2;
    }
    mt_config cfg;
    mt_format fmt;
    if (mt_format_parse(format, &fmt) != MT_OK) return cli_fail("init") + 1;
    if ((like ? mt_config_preset(like, &cfg) : mt_config_load_json(config, &cfg)) != MT_OK) return cli_fail("init");
    mt_model *m;
    if (mt_model_init(&cfg, seed, &m) != MT_OK) return cli_fail("init");
    mt_status s = mt_model_save(m, out, fmt);
    fprintf(stderr, "initialised %zu parameters\n", mt_model_param_count(m));
    mt_model_free(m);
    if (s) return cli_fail("init");
    return 0;
}
