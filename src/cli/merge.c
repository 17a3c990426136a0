/* memtune merge: fuse LoRA adapters into a model (W += weight·scale·B·A, one adapter after
 * another) and save the result, which then runs exactly as fast as the base. */
#include "cli/cli.h"
#include <stdio.h>
#include <string.h>

int cmd_merge(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *out = NULL, *format = "hf", *base_dtype = "f32";
    int quiet = 0;
    const cli_opt opts[] = {
        {"--model", "-m", OPT_STRING, &model, "base model (default: bundled stories260K)"},
        {"--tokenizer", "-z", OPT_STRING, &tokenizer, "tokenizer file"},
        {"--adapter", NULL, OPT_STRING, NULL, "LoRA adapter (PEFT directory or llama.cpp .gguf); repeatable (required)"},
        {"--adapter-scale", NULL, OPT_FLOAT, NULL, "weight of the i-th --adapter (default 1); repeatable"},
        {"--out", "-o", OPT_STRING, &out, "output: a directory (hf) or a file (gguf, llama2c) (required)"},
        {"--format", "-f", OPT_STRING, &format, "hf (default) | gguf | llama2c"},
        {"--base-dtype", NULL, OPT_STRING, &base_dtype, "merge into the base held as f32 (default) | bf16 | q8_0: "
                                                        "sum in f32, re-quantise, report the largest change"},
        {"--quiet", "-q", OPT_FLAG, &quiet, "no summary on stderr"},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    cli_adapters ad;
    if (cli_take_adapters(&argc, argv, &ad)) return 2;
    if (cli_parse(argc, argv, opts, "usage: memtune merge --model BASE --adapter DIR [--adapter DIR2 --adapter-scale S ...] --out OUT [--format hf|gguf]", &code)) return code;
    if (!ad.n || !out) {
        fprintf(stderr, "memtune: merge needs --adapter DIR and --out OUT\n");
        return 2;
    }
    /* refused before any work: the experts of a memory-tuned adapter cannot be fused, and
     * merging its LoRA and token rows alone would silently drop the memorised facts */
    for (int i = 0; i < ad.n; i++)
        if (mt_mome_present(ad.path[i])) {
            fprintf(stderr, "memtune: merge: %s holds memory experts (mome_config.json, mome.safetensors) from memory "
                    "tuning: a router picks a few of them per token, so they are not a change to the weights and cannot "
                    "be merged; merging the rest (LoRA, token rows) would silently lose the memorised facts. Use it "
                    "unmerged: memtune generate|eval --adapter %s\n", ad.path[i], ad.path[i]);
            return 1;
        }
    mt_format fmt;
    if (mt_format_parse(format, &fmt) != MT_OK) return cli_fail("merge");
    mt_model *m;
    if (cli_load_model(cli_model_path(model, argv[0]), tokenizer, &m)) return 1;
    /* attached first: trained token rows are written into the weights while attached, so
     * saving keeps them; each LoRA is then merged (which detaches it) */
    if (cli_load_adapters(m, &ad)) return 1;
    mt_status s = mt_model_set_base_dtype(m, base_dtype);
    size_t n_params = 0;
    double worst = 0;
    for (int i = 0; i < ad.n && s == MT_OK; i++) {
        double change = 0;
        mt_lora *l = mt_adapter_set_lora(ad.set[i]);
        if (!l) continue;
        s = mt_lora_merge_report(m, l, ad.scale[i], &change);
        if (change > worst) worst = change;
        n_params += mt_lora_param_count(l);
    }
    if (s == MT_OK && strcmp(base_dtype, "f32") && !quiet)
        fprintf(stderr, "memtune: merged in f32 and re-quantised to %s: largest change of a weight %.3g\n", base_dtype, worst);
    /* the file holds f32: the (re-quantised) weights, dequantised */
    if (s == MT_OK) s = mt_model_set_base_dtype(m, "f32");
    if (s == MT_OK) s = mt_model_save(m, out, fmt);
    if (s == MT_OK && !quiet)
        fprintf(stderr, "memtune: merged %d adapter%s (%zu parameters) into %s (%s)\n", ad.n, ad.n > 1 ? "s" : "",
                n_params, out, format);
    mt_model_free(m); /* before the adapters: the merged model keeps the token rows */
    cli_adapters_free(&ad);
    return s ? cli_fail("merge") : 0;
}
