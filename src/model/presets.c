/* Named model shapes for `memtune init --like NAME`, tests and benchmarks. The numbers are
 * those of the published models' configs. */
#include "model/model.h"
#include "core/error.h"
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct {
    const char *name;
    const char *arch;
    int dim, hidden, layers, heads, kv_heads, head_dim, vocab, ctx;
    float eps, theta;
    int interleaved, tied, bias, llama3_scaling;
} preset;

static const preset presets[] = {
    {"stories260k", "llama", 64, 172, 5, 8, 4, 8, 512, 512, 1e-5f, 10000.f, 1, 1, 0, 0},
    {"stories15m", "llama", 288, 768, 6, 6, 6, 48, 32000, 256, 1e-5f, 10000.f, 1, 1, 0, 0},
    {"stories110m", "llama", 768, 2048, 12, 12, 12, 64, 32000, 1024, 1e-5f, 10000.f, 1, 1, 0, 0},
    {"smollm-135m", "llama", 576, 1536, 30, 9, 3, 64, 49152, 2048, 1e-5f, 10000.f, 0, 1, 0, 0},
    {"llama-3.2-1b", "llama", 2048, 8192, 16, 32, 8, 64, 128256, 131072, 1e-5f, 500000.f, 0, 1, 0, 1},
    {"qwen2-0.5b", "qwen2", 896, 4864, 24, 14, 2, 64, 151936, 32768, 1e-6f, 1000000.f, 0, 1, 1, 0},
};

mt_status mt_config_preset(const char *name, mt_config *out) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        const preset *p = &presets[i];
        if (strcasecmp(name, p->name) != 0) continue;
        memset(out, 0, sizeof *out);
        snprintf(out->arch, sizeof out->arch, "%s", p->arch);
        out->dim = p->dim;
        out->hidden_dim = p->hidden;
        out->n_layers = p->layers;
        out->n_heads = p->heads;
        out->n_kv_heads = p->kv_heads;
        out->head_dim = p->head_dim;
        out->vocab_size = p->vocab;
        out->max_seq_len = p->ctx;
        out->norm_eps = p->eps;
        out->rope_theta = p->theta;
        out->rope_interleaved = p->interleaved;
        out->tied_embeddings = p->tied;
        out->attn_bias = p->bias;
        if (p->llama3_scaling) {
            out->rope_scaling = MT_ROPE_SCALING_LLAMA3;
            out->rope_factor = 32.f;
            out->rope_low_freq_factor = 1.f;
            out->rope_high_freq_factor = 4.f;
            out->rope_original_max_pos = 8192;
        }
        out->bos_id = 1;
        out->eos_id = 2;
        out->pad_id = -1;
        return MT_OK;
    }
    return mt_error(MT_ERR_ARG, "unknown preset '%s' (known: stories260k, stories15m, stories110m, "
                    "smollm-135m, llama-3.2-1b, qwen2-0.5b)", name);
}
