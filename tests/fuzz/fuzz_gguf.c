/* libFuzzer target: arbitrary bytes as a GGUF model file, as a vocabulary-only GGUF, and
 * through the raw container API (every metadata getter, every readable tensor). */
#include "fuzz_common.h"
#include "formats/gguf.h"

static void use_container(const char *path) {
    mt_gguf g;
    if (mt_gguf_open(path, &g) != MT_OK) return;
    for (size_t i = 0; i < g.n_kv; i++) {
        const char *key = g.kv[i].key;
        int64_t iv;
        double dv;
        int bv;
        char *s = NULL, **strs = NULL;
        float *fs = NULL;
        int32_t *is = NULL;
        uint64_t n;
        mt_gguf_get_int(&g, key, &iv, 1);
        mt_gguf_get_float(&g, key, &dv, 1);
        mt_gguf_get_bool(&g, key, &bv, 1);
        if (mt_gguf_get_string(&g, key, &s, 1) == MT_OK) free(s);
        if (mt_gguf_get_strings(&g, key, &strs, &n, 1) == MT_OK) free(strs);
        if (mt_gguf_get_floats(&g, key, &fs, &n, 1) == MT_OK) free(fs);
        if (mt_gguf_get_ints(&g, key, &is, &n, 1) == MT_OK) free(is);
    }
    for (size_t i = 0; i < g.n_tensors; i++) {
        const mt_gguf_tensor *t = &g.tensors[i];
        if (t->n_elems > (1u << 20)) continue;
        float *buf = malloc((size_t)t->n_elems * sizeof(float) + 1);
        if (buf) mt_gguf_read_f32(&g, t, buf, (size_t)t->n_elems);
        free(buf);
    }
    mt_gguf_close(&g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("model.gguf", data, size);
    mt_model *m = NULL;
    if (mt_model_load(path, NULL, &m) == MT_OK) mt_model_free(m);
    mt_tokenizer *t = NULL;
    if (mt_tokenizer_load_gguf(path, &t) == MT_OK) {
        fuzz_use_tokenizer(t);
        mt_tokenizer_free(t);
    }
    use_container(path);
    return 0;
}
