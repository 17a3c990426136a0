/* memtune info: config, parameter count and memory needs, as JSON. */
#include "cli/cli.h"
#include <stdio.h>

int cmd_info(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL;
    int ctx = 0;
    const cli_opt opts[] = {
        {"--model", "-m", OPT_STRING, &model, "model path (default: bundled stories260K)"},
        {"--tokenizer", "-z", OPT_STRING, &tokenizer, "tokenizer file"},
        {"--context", NULL, OPT_INT, &ctx, "context length for the memory estimate (default: the model's, capped at 4096)", 0, MT_MAX_CONTEXT},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    if (cli_parse(argc, argv, opts, "usage: memtune info [--model PATH]", &code)) return code;
    mt_model *m;
    if (cli_load_model(cli_model_path(model, argv[0]), tokenizer, &m)) return 1;
    const mt_config *c = mt_model_config(m);
    if (ctx <= 0) ctx = c->max_seq_len < 4096 ? c->max_seq_len : 4096;
    mt_tokenizer *t = mt_model_tokenizer(m);
    printf("{\n  \"arch\": \"%s\",\n  \"dim\": %d,\n  \"hidden_dim\": %d,\n  \"n_layers\": %d,\n"
           "  \"n_heads\": %d,\n  \"n_kv_heads\": %d,\n  \"head_dim\": %d,\n  \"vocab_size\": %d,\n"
           "  \"context_length\": %d,\n  \"rms_norm_eps\": %g,\n  \"rope_theta\": %g,\n"
           "  \"rope_layout\": \"%s\",\n  \"rope_scaling\": %s,\n  \"tied_embeddings\": %s,\n"
           "  \"attention_bias\": %s,\n  \"parameters\": %zu,\n  \"weights_bytes_f32\": %zu,\n"
           "  \"inference_bytes\": %zu,\n  \"inference_context\": %d,\n  \"tokenizer\": %s\n}\n",
           c->arch, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim,
           c->vocab_size, c->max_seq_len, c->norm_eps, c->rope_theta,
           c->rope_interleaved ? "interleaved" : "rotate_half",
           c->rope_scaling == MT_ROPE_SCALING_LLAMA3 ? "\"llama3\"" : "null",
           c->tied_embeddings ? "true" : "false", c->attn_bias ? "true" : "false",
           mt_model_param_count(m), mt_model_param_count(m) * 4, mt_model_inference_bytes(m, ctx), ctx,
           t ? "true" : "false");
    mt_model_free(m);
    return 0;
}
