/* libFuzzer target: arbitrary bytes as the model.safetensors of a Hugging Face directory
 * whose config.json is fixed (a small model), and through the raw safetensors reader. */
#include "fuzz_common.h"
#include "formats/safetensors.h"

static const char config[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 16, "
    "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 16, "
    "\"max_position_embeddings\": 32, \"rms_norm_eps\": 1e-5, \"tie_word_embeddings\": true}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_write("config.json", (const uint8_t *)config, sizeof config - 1);
    const char *path = fuzz_write("model.safetensors", data, size);
    mt_safetensors st;
    if (mt_safetensors_open(path, &st) == MT_OK) {
        mt_safetensors_metadata(&st, "format");
        for (int i = 0; i < st.n_tensors; i++) {
            const mt_st_tensor *t = mt_safetensors_find(&st, st.tensors[i].name);
            if (!t || t->n_elems > (1u << 20)) continue;
            float *buf = malloc((size_t)t->n_elems * sizeof(float) + 1);
            if (buf) mt_safetensors_read_f32(&st, t, buf, (size_t)t->n_elems);
            free(buf);
        }
        mt_safetensors_close(&st);
    }
    mt_model *m = NULL;
    if (mt_model_load(fuzz_dir(), NULL, &m) == MT_OK) mt_model_free(m);
    return 0;
}
