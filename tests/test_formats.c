/* Model file formats: the real stories260K files load (llama2.c .bin and llama.cpp's GGUF
 * give identical weights), every format round-trips bit for bit (including the RoPE row
 * permutation between layouts), and malformed files, made here by patching good ones, fail
 * with the right status and a message that names the problem. */
#include "test.h"
#include "core/file.h"
#include "formats/dtype.h"
#include "formats/formats.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#define STORIES_BIN "models/stories260K/stories260K.bin"
#define STORIES_GGUF "models/stories260K/stories260K.gguf"

/* ---- helpers ---- */

static char *path_in(const char *dir, const char *name) {
    static char buf[16][1024];
    static int next = 0;
    char *b = buf[next++ % 16];
    snprintf(b, sizeof buf[0], "%s/%s", dir, name);
    return b;
}

static unsigned char *read_bytes(const char *path, size_t *len) {
    char *data = NULL;
    if (mt_file_read_all(path, (size_t)1 << 30, &data, len) != MT_OK) {
        fprintf(stderr, "cannot read %s: %s\n", path, mt_last_error());
        exit(2);
    }
    return (unsigned char *)data;
}

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(data, 1, len, fp) != len || fclose(fp) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

static void copy_file(const char *src, const char *dst) {
    size_t len;
    unsigned char *d = read_bytes(src, &len);
    write_bytes(dst, d, len);
    free(d);
}

static size_t find_bytes(const unsigned char *hay, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0) return i;
    fprintf(stderr, "pattern \"%s\" not found\n", needle);
    exit(2);
}

/* Copies src to dst with the bytes at offset replaced. */
static void patch_copy(const char *src, const char *dst, size_t offset, const void *bytes, size_t n) {
    size_t len;
    unsigned char *d = read_bytes(src, &len);
    memcpy(d + offset, bytes, n);
    write_bytes(dst, d, len);
    free(d);
}

/* Replaces the first occurrence of `from` with `to` in a file (lengths may differ). */
static void replace_in_file(const char *path, const char *from, const char *to) {
    size_t len;
    unsigned char *d = read_bytes(path, &len);
    size_t at = find_bytes(d, len, from), nf = strlen(from), nt = strlen(to);
    unsigned char *out = malloc(len - nf + nt);
    memcpy(out, d, at);
    memcpy(out + at, to, nt);
    memcpy(out + at + nt, d + at + nf, len - at - nf);
    write_bytes(path, out, len - nf + nt);
    free(out);
    free(d);
}

static void check_config_equal(const mt_config *a, const mt_config *b, int same_layout) {
    CHECK_STR_EQ(a->arch, b->arch);
    CHECK_INT_EQ(a->dim, b->dim);
    CHECK_INT_EQ(a->hidden_dim, b->hidden_dim);
    CHECK_INT_EQ(a->n_layers, b->n_layers);
    CHECK_INT_EQ(a->n_heads, b->n_heads);
    CHECK_INT_EQ(a->n_kv_heads, b->n_kv_heads);
    CHECK_INT_EQ(a->head_dim, b->head_dim);
    CHECK_INT_EQ(a->vocab_size, b->vocab_size);
    CHECK_INT_EQ(a->max_seq_len, b->max_seq_len);
    CHECK(a->norm_eps == b->norm_eps);
    CHECK(a->rope_theta == b->rope_theta);
    if (same_layout) CHECK_INT_EQ(a->rope_interleaved, b->rope_interleaved);
    CHECK_INT_EQ(a->tied_embeddings, b->tied_embeddings);
    CHECK_INT_EQ(a->attn_bias, b->attn_bias);
    CHECK_INT_EQ(a->rope_scaling, b->rope_scaling);
    CHECK(a->rope_factor == b->rope_factor);
    CHECK(a->rope_low_freq_factor == b->rope_low_freq_factor);
    CHECK(a->rope_high_freq_factor == b->rope_high_freq_factor);
    CHECK_INT_EQ(a->rope_original_max_pos, b->rope_original_max_pos);
    CHECK_INT_EQ(a->bos_id, b->bos_id);
    CHECK_INT_EQ(a->eos_id, b->eos_id);
    CHECK_INT_EQ(a->pad_id, b->pad_id);
}

static void check_params_equal(const mt_model *a, const mt_model *b) {
    CHECK_INT_EQ(a->n_params, b->n_params);
    if (a->n_params != b->n_params) return;
    for (size_t i = 0; i < a->n_params; i++)
        if (memcmp(&a->params[i], &b->params[i], sizeof(float)) != 0) {
            CHECK_MSG(0, "parameter %zu differs: %.9g vs %.9g", i, a->params[i], b->params[i]);
            return;
        }
    CHECK(1);
}

static mt_model *load_or_die(const char *path) {
    mt_model *m = NULL;
    CHECK_OK(mt_model_load(path, NULL, &m));
    if (!m) exit(1);
    return m;
}

static void check_encodes(const mt_tokenizer *t, const char *text, const int *want, int n_want) {
    int *ids = NULL, n = 0;
    CHECK_OK(mt_tokenize(t, text, 1, &ids, &n));
    CHECK_INT_EQ(n, n_want);
    for (int i = 0; i < n && i < n_want; i++) CHECK_INT_EQ(ids[i], want[i]);
    free(ids);
}

static const int once_upon_ids[] = {1, 403, 407, 261, 378};

/* A small model with every feature the llama2.c format lacks: rotate-half RoPE, q/k/v
 * biases (non-zero, so their permutation is tested), an untied head, an explicit head_dim
 * and Llama 3 RoPE scaling. */
static mt_model *feature_model(const char *arch) {
    mt_config c = {0};
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    c.dim = 48;
    c.hidden_dim = 96;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 16;
    c.vocab_size = 300;
    c.max_seq_len = 64;
    c.norm_eps = 1e-6f;
    c.rope_theta = 10000.0f;
    c.rope_interleaved = 0;
    c.tied_embeddings = 0;
    c.attn_bias = 1;
    c.rope_scaling = MT_ROPE_SCALING_LLAMA3;
    c.rope_factor = 8.0f;
    c.rope_low_freq_factor = 1.0f;
    c.rope_high_freq_factor = 8.0f;
    c.rope_original_max_pos = 700; /* two frequencies fall in the blended band */
    c.bos_id = 1;
    c.eos_id = 2;
    c.pad_id = 0;
    mt_model *m = NULL;
    CHECK_OK(mt_model_init(&c, 42, &m));
    if (!m) exit(1);
    for (int l = 0; l < c.n_layers; l++)
        for (int i = 0; i < c.n_heads * c.head_dim; i++) {
            m->layers[l].bq[i] = 0.01f * (float)(i + 1);
            if (i < c.n_kv_heads * c.head_dim) {
                m->layers[l].bk[i] = -0.02f * (float)(i + 1);
                m->layers[l].bv[i] = 0.03f * (float)(i + 1);
            }
        }
    return m;
}

/* ---- real files ---- */

TEST(test_stories260k_bin_loads_with_its_tokenizer) {
    mt_model *m = load_or_die(test_asset(STORIES_BIN));
    const mt_config *c = &m->cfg;
    CHECK_INT_EQ(c->dim, 64);
    CHECK_INT_EQ(c->hidden_dim, 172);
    CHECK_INT_EQ(c->n_layers, 5);
    CHECK_INT_EQ(c->n_heads, 8);
    CHECK_INT_EQ(c->n_kv_heads, 4);
    CHECK_INT_EQ(c->head_dim, 8);
    CHECK_INT_EQ(c->vocab_size, 512);
    CHECK_INT_EQ(c->max_seq_len, 512);
    CHECK_INT_EQ(c->tied_embeddings, 1);
    CHECK_INT_EQ(c->rope_interleaved, 1);
    CHECK_INT_EQ(m->n_params, 264128 - 4096);
    CHECK(m->tok != NULL);
    if (m->tok) {
        CHECK_INT_EQ(mt_tokenizer_vocab_size(m->tok), 512);
        check_encodes(m->tok, "Once upon a time", once_upon_ids, 5);
    }
    mt_model_free(m);
}

TEST(test_stories260k_gguf_weights_equal_bin) {
    mt_model *bin = load_or_die(test_asset(STORIES_BIN));
    mt_model *gguf = load_or_die(test_asset(STORIES_GGUF));
    mt_config want = bin->cfg;
    want.max_seq_len = 128; /* llama.cpp's converter writes its own default */
    check_config_equal(&gguf->cfg, &want, 1);
    check_params_equal(gguf, bin);
    CHECK(gguf->tok != NULL);
    if (gguf->tok) check_encodes(gguf->tok, "Once upon a time", once_upon_ids, 5);
    mt_model_free(bin);
    mt_model_free(gguf);
}

/* ---- round trips ---- */

TEST(test_roundtrip_bin_hf_gguf_bin_is_bit_exact) {
    const char *dir = test_tmpdir("formats_roundtrip_stories");
    mt_model *orig = load_or_die(test_asset(STORIES_BIN));
    CHECK_OK(mt_model_save(orig, path_in(dir, "hf"), MT_FORMAT_HF));
    mt_model *hf = load_or_die(path_in(dir, "hf"));
    CHECK_INT_EQ(hf->cfg.rope_interleaved, 0);
    check_config_equal(&hf->cfg, &orig->cfg, 0);
    CHECK_OK(mt_model_save(hf, path_in(dir, "m.gguf"), MT_FORMAT_GGUF));
    mt_model *gguf = load_or_die(path_in(dir, "m.gguf"));
    check_config_equal(&gguf->cfg, &orig->cfg, 1);
    check_params_equal(gguf, orig);
    CHECK_OK(mt_mkdir_p(path_in(dir, "bin")));
    CHECK_OK(mt_model_save(gguf, path_in(dir, "bin/m.bin"), MT_FORMAT_LLAMA2C));
    mt_model *back = load_or_die(path_in(dir, "bin/m.bin"));
    check_config_equal(&back->cfg, &orig->cfg, 1);
    check_params_equal(back, orig);
    CHECK(back->tok != NULL);
    if (back->tok) check_encodes(back->tok, "Once upon a time", once_upon_ids, 5);
    mt_model_free(orig);
    mt_model_free(hf);
    mt_model_free(gguf);
    mt_model_free(back);
}

/* saved_arch: what HF can express: transformers' Mistral has no q/k/v biases, so a Mistral
 * with biases is written (and reloads) as a Llama with attention_bias. */
static void roundtrip_feature_model(const char *arch, const char *saved_arch) {
    const char *dir = test_tmpdir("formats_roundtrip_features");
    mt_model *orig = feature_model(arch);
    mt_config want = orig->cfg;
    snprintf(want.arch, sizeof want.arch, "%s", saved_arch);
    CHECK_OK(mt_model_save(orig, path_in(dir, "hf"), MT_FORMAT_HF));
    mt_model *hf = load_or_die(path_in(dir, "hf"));
    check_config_equal(&hf->cfg, &want, 1);
    check_params_equal(hf, orig);
    CHECK_OK(mt_model_save(hf, path_in(dir, "m.gguf"), MT_FORMAT_GGUF));
    mt_model *gguf = load_or_die(path_in(dir, "m.gguf"));
    CHECK_INT_EQ(gguf->cfg.rope_interleaved, 1);
    check_config_equal(&gguf->cfg, &want, 0);
    CHECK_OK(mt_model_save(gguf, path_in(dir, "hf2"), MT_FORMAT_HF));
    mt_model *back = load_or_die(path_in(dir, "hf2"));
    check_config_equal(&back->cfg, &want, 1);
    check_params_equal(back, orig);
    CHECK_ERR(mt_model_save(orig, path_in(dir, "m.bin"), MT_FORMAT_LLAMA2C), MT_ERR_UNSUPPORTED, "attention biases");
    mt_model_free(orig);
    mt_model_free(hf);
    mt_model_free(gguf);
    mt_model_free(back);
}

TEST(test_roundtrip_rotate_half_bias_untied_llama3_through_hf_and_gguf) {
    roundtrip_feature_model("llama", "llama");
    roundtrip_feature_model("qwen2", "qwen2");
    roundtrip_feature_model("mistral", "llama");
}

/* The permutation is not only self-consistent: a model and its conversion to the other RoPE
 * layout compute the same logits. */
static void check_same_logits(mt_model *a, mt_model *b) {
    int ids[6] = {1, 5, 9, 2, 7, 3};
    size_t n = 6 * (size_t)a->cfg.vocab_size;
    float *la = malloc(n * sizeof(float)), *lb = malloc(n * sizeof(float));
    CHECK_OK(mt_model_logits(a, ids, 6, la));
    CHECK_OK(mt_model_logits(b, ids, 6, lb));
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)la[i] - lb[i]));
    CHECK_NEAR(worst, 0.0, 1e-4);
    free(la);
    free(lb);
}

TEST(test_converted_models_give_the_same_logits) {
    const char *dir = test_tmpdir("formats_logits");
    mt_model *bin = load_or_die(test_asset(STORIES_BIN));
    CHECK_OK(mt_model_save(bin, path_in(dir, "hf"), MT_FORMAT_HF));
    mt_model *hf = load_or_die(path_in(dir, "hf"));
    check_same_logits(bin, hf);
    mt_model *feat = feature_model("qwen2");
    CHECK_OK(mt_model_save(feat, path_in(dir, "f.gguf"), MT_FORMAT_GGUF));
    mt_model *gguf = load_or_die(path_in(dir, "f.gguf"));
    check_same_logits(feat, gguf);
    mt_model_free(bin);
    mt_model_free(hf);
    mt_model_free(feat);
    mt_model_free(gguf);
}

/* Files from llama.cpp carry Llama 3 scaling only as rope_freqs.weight: hide memtune's own
 * keys and check the parameters are recovered from the tensor. */
static void check_llama3_derived(mt_model *orig, const char *dir) {
    CHECK_OK(mt_model_save(orig, path_in(dir, "m.gguf"), MT_FORMAT_GGUF));
    size_t len;
    unsigned char *d = read_bytes(path_in(dir, "m.gguf"), &len);
    for (size_t i = 0; i + 13 <= len; i++)
        if (memcmp(d + i, "memtune.rope.", 13) == 0) d[i] = 'x';
    write_bytes(path_in(dir, "derived.gguf"), d, len);
    free(d);
    mt_model *m = load_or_die(path_in(dir, "derived.gguf"));
    CHECK_INT_EQ(m->cfg.rope_scaling, MT_ROPE_SCALING_LLAMA3);
    CHECK(m->cfg.rope_factor == orig->cfg.rope_factor);
    CHECK_NEAR(m->cfg.rope_low_freq_factor, orig->cfg.rope_low_freq_factor, 1e-6);
    CHECK_NEAR(m->cfg.rope_high_freq_factor, orig->cfg.rope_high_freq_factor, 1e-3);
    CHECK_INT_EQ(m->cfg.rope_original_max_pos, orig->cfg.rope_original_max_pos);
    mt_model_free(m);
}

TEST(test_gguf_llama3_scaling_recovered_from_rope_freqs) {
    const char *dir = test_tmpdir("formats_llama3");
    mt_model *fitted = feature_model("llama");
    check_llama3_derived(fitted, dir);
    mt_model_free(fitted);
    /* Llama 3.2's published parameters, at Llama 3.2's head_dim and theta. */
    mt_config c = {0};
    c.dim = 128, c.hidden_dim = 32, c.n_layers = 1, c.n_heads = 2, c.vocab_size = 16, c.max_seq_len = 64;
    c.rope_theta = 500000.0f, c.rope_scaling = MT_ROPE_SCALING_LLAMA3, c.rope_factor = 32.0f;
    c.rope_low_freq_factor = 1.0f, c.rope_high_freq_factor = 4.0f, c.rope_original_max_pos = 8192;
    c.tied_embeddings = 1, c.bos_id = c.eos_id = c.pad_id = -1;
    mt_model *published = NULL;
    CHECK_OK(mt_model_init(&c, 1, &published));
    if (published) check_llama3_derived(published, dir);
    mt_model_free(published);
}

/* Weights stored as BF16 and F16 safetensors load as those dtypes' values; a tied model's
 * extra lm_head and unknown tensors are ignored; a sharded checkpoint with an index loads
 * the same as one file. */
static void write_checkpoint(const mt_model *m, const char *file, const char *dtype, int first, int last,
                             int extras) {
    int n;
    mt_tensor_ref *refs = mt_model_tensor_list(m, &n);
    mt_st_desc descs[256];
    int k = 0;
    for (int i = first; i < last; i++, k++)
        descs[k] = (mt_st_desc){refs[i].name, dtype, refs[i].is_vector ? 1 : 2, {refs[i].rows, refs[i].cols}};
    if (extras) {
        descs[k++] = (mt_st_desc){"lm_head.weight", "F32", 2, {m->cfg.vocab_size, m->cfg.dim}};
        descs[k++] = (mt_st_desc){"model.rotary_emb.inv_freq", "F32", 1, {4}};
    }
    mt_st_writer w;
    CHECK_OK(mt_st_writer_open(&w, file, descs, k, NULL));
    for (int i = first; i < last; i++) CHECK_OK(mt_st_writer_put_f32(&w, refs[i].data, (size_t)refs[i].rows * refs[i].cols));
    if (extras) {
        CHECK_OK(mt_st_writer_put_f32(&w, m->tok_embd, (size_t)m->cfg.vocab_size * m->cfg.dim));
        CHECK_OK(mt_st_writer_put_f32(&w, m->tok_embd, 4));
    }
    CHECK_OK(mt_st_writer_commit(&w));
    free(refs);
}

TEST(test_hf_bf16_f16_and_sharded_checkpoints_load) {
    const char *dir = test_tmpdir("formats_hf_dtypes");
    mt_model *m = load_or_die(test_asset(STORIES_BIN));
    CHECK_OK(mt_model_save(m, path_in(dir, "hf"), MT_FORMAT_HF));
    mt_model *hf = load_or_die(path_in(dir, "hf"));
    int n = mt_model_tensors(hf, NULL, 0);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        write_checkpoint(hf, path_in(dir, "hf/model.safetensors"), bf16 ? "BF16" : "F16", 0, n, 0);
        mt_model *got = load_or_die(path_in(dir, "hf"));
        int exact = 1;
        for (size_t j = 0; j < hf->n_params; j++) {
            float x = hf->params[j];
            float want = bf16 ? mt_bf16_to_f32(mt_f32_to_bf16(x)) : mt_f16_to_f32(mt_f32_to_f16(x));
            exact &= memcmp(&got->params[j], &want, 4) == 0;
        }
        CHECK_MSG(exact, "%s values differ", bf16 ? "BF16" : "F16");
        mt_model_free(got);
    }
    /* two shards plus an index; the second shard also holds lm_head (the model is tied) */
    write_checkpoint(hf, path_in(dir, "hf/model-00001-of-00002.safetensors"), "F32", 0, n / 2, 0);
    write_checkpoint(hf, path_in(dir, "hf/model-00002-of-00002.safetensors"), "F32", n / 2, n, 1);
    remove(path_in(dir, "hf/model.safetensors"));
    mt_tensor_ref *refs = mt_model_tensor_list(hf, &n);
    FILE *fp = fopen(path_in(dir, "hf/model.safetensors.index.json"), "w");
    fprintf(fp, "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {");
    for (int i = 0; i < n; i++)
        fprintf(fp, "\"%s\": \"model-0000%d-of-00002.safetensors\", ", refs[i].name, i < n / 2 ? 1 : 2);
    fprintf(fp, "\"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}");
    fclose(fp);
    free(refs);
    mt_model *sharded = load_or_die(path_in(dir, "hf"));
    check_params_equal(sharded, hf);
    mt_model_free(sharded);
    mt_model_free(hf);
    mt_model_free(m);
}

/* Half-precision conversions on values whose encodings are known. */
TEST(test_half_precision_conversions) {
    CHECK(mt_f16_to_f32(0x3c00) == 1.0f);
    CHECK(mt_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(mt_f16_to_f32(0x0001) == 5.9604644775390625e-08f);
    CHECK(mt_f16_to_f32(0xc000) == -2.0f);
    CHECK(isinf(mt_f16_to_f32(0x7c00)));
    CHECK(isnan(mt_f16_to_f32(0x7e00)));
    CHECK_INT_EQ(mt_f32_to_f16(1.0f), 0x3c00);
    CHECK_INT_EQ(mt_f32_to_f16(65520.0f), 0x7c00);      /* rounds up to infinity */
    CHECK_INT_EQ(mt_f32_to_f16(65519.0f), 0x7bff);
    CHECK_INT_EQ(mt_f32_to_f16(1.0f / 3.0f), 0x3555);
    CHECK_INT_EQ(mt_f32_to_f16(5.9604644775390625e-08f), 0x0001);
    CHECK_INT_EQ(mt_f32_to_f16(2.98023223876953125e-08f), 0x0000); /* tie to even: 0 */
    CHECK_INT_EQ(mt_f32_to_f16(8.94069671630859375e-08f), 0x0002); /* 1.5 ulp: tie to even 2 */
    CHECK_INT_EQ(mt_f32_to_f16(-0.0f), 0x8000);
    CHECK_INT_EQ(mt_f32_to_f16(1.00048828125f), 0x3c00);  /* halfway between 1 and next: even */
    CHECK_INT_EQ(mt_f32_to_f16(1.00146484375f), 0x3c02);  /* halfway between odd and even: up */
    for (uint32_t h = 0; h < 0x7c00; h += 37) CHECK_INT_EQ(mt_f32_to_f16(mt_f16_to_f32((uint16_t)h)), h);
    CHECK(mt_bf16_to_f32(0x3f80) == 1.0f);
    CHECK_INT_EQ(mt_f32_to_bf16(1.0f), 0x3f80);
    CHECK_INT_EQ(mt_f32_to_bf16(mt_bits_to_f32(0x3f808000)), 0x3f80); /* tie: even */
    CHECK_INT_EQ(mt_f32_to_bf16(mt_bits_to_f32(0x3f818000)), 0x3f82);
    CHECK(isnan(mt_bf16_to_f32(mt_f32_to_bf16(NAN))));
}

/* F16, BF16 and Q8_0 GGUF tensors dequantise to the values they encode. */
TEST(test_gguf_f16_bf16_q8_0_tensors_dequantise) {
    const char *path = path_in(test_tmpdir("formats_gguf_types"), "types.gguf");
    uint16_t f16[32], bf16[32];
    uint8_t q8[34];
    uint16_t scale = 0x3800; /* f16 0.5 */
    memcpy(q8, &scale, 2);
    for (int i = 0; i < 32; i++) {
        f16[i] = (uint16_t)(0x3c00 + i);  /* 1 + i/1024 */
        bf16[i] = (uint16_t)(0xc000 + i); /* -2 - i/64 */
        q8[2 + i] = (uint8_t)(int8_t)(i - 16);
    }
    mt_gguf_writer w;
    mt_gguf_writer_init(&w);
    mt_gguf_add_string(&w, "general.architecture", "test");
    uint64_t ne[1] = {32};
    mt_gguf_add_tensor_typed(&w, "f16", 1, ne, MT_GGML_F16);
    mt_gguf_add_tensor_typed(&w, "bf16", 1, ne, MT_GGML_BF16);
    mt_gguf_add_tensor_typed(&w, "q8", 1, ne, MT_GGML_Q8_0);
    CHECK_OK(mt_gguf_writer_begin(&w, path));
    CHECK_OK(mt_gguf_writer_put(&w, f16, sizeof f16));
    CHECK_OK(mt_gguf_writer_put(&w, bf16, sizeof bf16));
    CHECK_OK(mt_gguf_writer_put(&w, q8, sizeof q8));
    CHECK_OK(mt_gguf_writer_commit(&w));
    mt_gguf_writer_free(&w);
    mt_gguf g;
    CHECK_OK(mt_gguf_open(path, &g));
    float out[32];
    CHECK_OK(mt_gguf_read_f32(&g, mt_gguf_find_tensor(&g, "f16"), out, 32));
    for (int i = 0; i < 32; i += 7) CHECK(out[i] == 1.0f + (float)i / 1024);
    CHECK_OK(mt_gguf_read_f32(&g, mt_gguf_find_tensor(&g, "bf16"), out, 32));
    for (int i = 0; i < 32; i += 7) CHECK(out[i] == -2.0f - (float)i / 64);
    CHECK_OK(mt_gguf_read_f32(&g, mt_gguf_find_tensor(&g, "q8"), out, 32));
    for (int i = 0; i < 32; i += 7) CHECK(out[i] == 0.5f * (float)(i - 16));
    mt_gguf_close(&g);
}

/* ---- malformed llama2.c files ---- */

TEST(test_llama2c_rejects_truncated_and_bad_headers) {
    const char *dir = test_tmpdir("formats_bad_bin");
    size_t len;
    unsigned char *d = read_bytes(test_asset(STORIES_BIN), &len);
    write_bytes(path_in(dir, "short.bin"), d, 1000000);
    CHECK_ERR(mt_model_load(path_in(dir, "short.bin"), NULL, &(mt_model *){0}), MT_ERR_FORMAT,
              "short.bin: truncated: expected 1056540 bytes, file has 1000000");
    write_bytes(path_in(dir, "tiny.bin"), d, 20);
    CHECK_ERR(mt_model_load(path_in(dir, "tiny.bin"), NULL, &(mt_model *){0}), MT_ERR_FORMAT, "too small");
    free(d);
    int32_t v = -64;
    patch_copy(test_asset(STORIES_BIN), path_in(dir, "neg.bin"), 0, &v, 4);
    CHECK_ERR(mt_model_load(path_in(dir, "neg.bin"), NULL, &(mt_model *){0}), MT_ERR_FORMAT, "dim = -64");
    v = 7;
    patch_copy(test_asset(STORIES_BIN), path_in(dir, "heads.bin"), 12, &v, 4);
    CHECK_ERR(mt_model_load(path_in(dir, "heads.bin"), NULL, &(mt_model *){0}), MT_ERR_FORMAT,
              "dim 64 is not divisible by n_heads 7");
    v = 3;
    patch_copy(test_asset(STORIES_BIN), path_in(dir, "kv.bin"), 16, &v, 4);
    CHECK_ERR(mt_model_load(path_in(dir, "kv.bin"), NULL, &(mt_model *){0}), MT_ERR_FORMAT, "not a multiple of 3 KV");
    v = 1 << 30;
    patch_copy(test_asset(STORIES_BIN), path_in(dir, "huge.bin"), 4, &v, 4);
    CHECK_ERR(mt_model_load(path_in(dir, "huge.bin"), NULL, &(mt_model *){0}), MT_ERR_FORMAT, "implausibly large");
    CHECK_ERR(mt_model_load(path_in(dir, "absent.bin"), NULL, &(mt_model *){0}), MT_ERR_IO, "absent.bin");
}

TEST(test_llama2c_tokenizer_must_fit_and_be_unambiguous) {
    const char *dir = test_tmpdir("formats_bin_tokenizer");
    mt_load_options opts = {.tokenizer_path = test_asset("tokenizers/llama2-spm/tokenizer.bin")};
    mt_model *m = NULL;
    CHECK_ERR(mt_model_load(test_asset(STORIES_BIN), &opts, &m), MT_ERR_MISMATCH, "32000 tokens");
    CHECK(strstr(mt_last_error(), "stories260K.bin") != NULL);
    copy_file(test_asset(STORIES_BIN), path_in(dir, "m.bin"));
    m = load_or_die(path_in(dir, "m.bin"));
    CHECK(m->tok == NULL); /* no tokenizer beside it: loads without one */
    mt_model_free(m);
    copy_file(test_asset("models/stories260K/tok512.bin"), path_in(dir, "tok512.bin"));
    copy_file(test_asset("models/stories260K/tok512.bin"), path_in(dir, "tokenizer.bin"));
    CHECK_ERR(mt_model_load(path_in(dir, "m.bin"), NULL, &m), MT_ERR_ARG, "--tokenizer");
    opts.tokenizer_path = path_in(dir, "tok512.bin");
    CHECK_OK(mt_model_load(path_in(dir, "m.bin"), &opts, &m));
    if (m) CHECK(m->tok != NULL);
    mt_model_free(m);
}

/* ---- malformed GGUF files ---- */

TEST(test_gguf_rejects_malformed_files) {
    const char *dir = test_tmpdir("formats_bad_gguf");
    const char *src = test_asset(STORIES_GGUF);
    size_t len;
    unsigned char *d = read_bytes(src, &len);
    mt_model *m = NULL;
    patch_copy(src, path_in(dir, "magic.gguf"), 0, "GGUX", 4);
    CHECK_ERR(mt_model_load(path_in(dir, "magic.gguf"), NULL, &m), MT_ERR_FORMAT, "bad magic");
    uint32_t version = 2;
    patch_copy(src, path_in(dir, "v2.gguf"), 4, &version, 4);
    CHECK_ERR(mt_model_load(path_in(dir, "v2.gguf"), NULL, &m), MT_ERR_UNSUPPORTED, "GGUF version 2");
    /* tensor descriptor: name, n_dims (4), ne[1] (8), type (4), offset (8) */
    size_t info = find_bytes(d, len, "output_norm.weight") + strlen("output_norm.weight");
    uint64_t far = (uint64_t)1 << 40;
    patch_copy(src, path_in(dir, "offset.gguf"), info + 16, &far, 8);
    CHECK_ERR(mt_model_load(path_in(dir, "offset.gguf"), NULL, &m), MT_ERR_FORMAT,
              "output_norm.weight: data at offset 1099511627776");
    uint32_t iq4_xs = 23; /* a type memtune does not read (test_quant.c covers those it does) */
    patch_copy(src, path_in(dir, "type.gguf"), info + 12, &iq4_xs, 4);
    CHECK_ERR(mt_model_load(path_in(dir, "type.gguf"), NULL, &m), MT_ERR_UNSUPPORTED,
              "tensor output_norm.weight has type IQ4_XS (23)");
    size_t arch = find_bytes(d, len, "general.architecture") + strlen("general.architecture");
    patch_copy(src, path_in(dir, "string.gguf"), arch + 4, &far, 8);
    CHECK_ERR(mt_model_load(path_in(dir, "string.gguf"), NULL, &m), MT_ERR_FORMAT,
              "general.architecture: string length 1099511627776");
    patch_copy(src, path_in(dir, "arch.gguf"), arch + 12, "qwen3", 5);
    CHECK_ERR(mt_model_load(path_in(dir, "arch.gguf"), NULL, &m), MT_ERR_UNSUPPORTED,
              "GGUF architecture 'qwen3' is not supported");
    uint64_t many = (uint64_t)1 << 40;
    patch_copy(src, path_in(dir, "count.gguf"), 8, &many, 8);
    CHECK_ERR(mt_model_load(path_in(dir, "count.gguf"), NULL, &m), MT_ERR_FORMAT, "implausible counts");
    size_t blocks = find_bytes(d, len, "llama.block_count") + strlen("llama.block_count");
    uint32_t n_blocks = 1000;
    patch_copy(src, path_in(dir, "blocks.gguf"), blocks + 4, &n_blocks, 4);
    CHECK_ERR(mt_model_load(path_in(dir, "blocks.gguf"), NULL, &m), MT_ERR_FORMAT,
              "parameters, more than the 1171200 bytes of tensor data");
    size_t emb = find_bytes(d, len, "token_embd.weight") + strlen("token_embd.weight");
    uint64_t rows = 500;
    patch_copy(src, path_in(dir, "shape.gguf"), emb + 4 + 8, &rows, 8);
    CHECK_ERR(mt_model_load(path_in(dir, "shape.gguf"), NULL, &m), MT_ERR_MISMATCH, "output.weight has shape");
    free(d);
}

/* Every prefix of a valid file is an error, never a crash (run under ASan). */
TEST(test_truncated_files_fail_cleanly) {
    const char *dir = test_tmpdir("formats_truncated");
    const char *files[] = {test_asset(STORIES_GGUF), test_asset(STORIES_BIN)};
    for (int f = 0; f < 2; f++) {
        size_t len;
        unsigned char *d = read_bytes(files[f], &len);
        int failures = 0;
        for (size_t cut = 0; cut < len; cut += cut < 16384 ? 61 : 50021) {
            const char *p = path_in(dir, f == 0 ? "t.gguf" : "t.bin");
            write_bytes(p, d, cut);
            mt_model *m = NULL;
            if (mt_model_load(p, NULL, &m) == MT_OK) failures++;
            mt_model_free(m);
        }
        CHECK_INT_EQ(failures, 0);
        free(d);
    }
}

/* ---- malformed Hugging Face checkpoints ---- */

static const char *fresh_hf_dir(const char *name) {
    const char *dir = test_tmpdir(name);
    mt_model *m = load_or_die(test_asset(STORIES_BIN));
    CHECK_OK(mt_model_save(m, dir, MT_FORMAT_HF));
    mt_model_free(m);
    return dir;
}

static void write_raw_safetensors(const char *path, const char *header, size_t data_bytes) {
    size_t hl = strlen(header);
    unsigned char *buf = calloc(8 + hl + data_bytes, 1);
    uint64_t len64 = hl;
    memcpy(buf, &len64, 8);
    memcpy(buf + 8, header, hl);
    write_bytes(path, buf, 8 + hl + data_bytes);
    free(buf);
}

TEST(test_safetensors_rejects_malformed_files) {
    const char *dir = test_tmpdir("formats_bad_safetensors");
    mt_safetensors st;
    const char *p = path_in(dir, "a.safetensors");
    write_raw_safetensors(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    CHECK_OK(mt_safetensors_open(p, &st));
    mt_safetensors_close(&st);
    size_t len;
    unsigned char *d = read_bytes(p, &len);
    uint64_t big = len;
    memcpy(d, &big, 8);
    write_bytes(p, d, len);
    free(d);
    CHECK_ERR(mt_safetensors_open(p, &st), MT_ERR_FORMAT, "header length");
    write_raw_safetensors(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8);
    CHECK_ERR(mt_safetensors_open(p, &st), MT_ERR_FORMAT, "outside the 8-byte data region");
    write_raw_safetensors(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
    CHECK_ERR(mt_safetensors_open(p, &st), MT_ERR_FORMAT, "8 bytes for 3 elements");
    write_raw_safetensors(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}", 8);
    CHECK_ERR(mt_safetensors_open(p, &st), MT_ERR_FORMAT, "overflowing shape");
    write_raw_safetensors(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8);
    CHECK_ERR(mt_safetensors_open(p, &st), MT_ERR_FORMAT, "data_offsets [8, 0]");
    write_raw_safetensors(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8);
    CHECK_ERR(mt_safetensors_open(p, &st), MT_ERR_FORMAT, "not valid JSON");
    write_raw_safetensors(p, "[1]", 0);
    CHECK_ERR(mt_safetensors_open(p, &st), MT_ERR_FORMAT, "not a JSON object");
    write_bytes(p, "abc", 3);
    CHECK_ERR(mt_safetensors_open(p, &st), MT_ERR_FORMAT, "too small");
}

TEST(test_hf_rejects_bad_checkpoints) {
    mt_model *m = NULL;
    const char *dir = fresh_hf_dir("formats_bad_hf_shape");
    replace_in_file(path_in(dir, "config.json"), "\"intermediate_size\": 172", "\"intermediate_size\": 173");
    CHECK_ERR(mt_model_load(dir, NULL, &m), MT_ERR_MISMATCH,
              "model.layers.0.mlp.gate_proj.weight has shape [172, 64] but config.json");

    dir = fresh_hf_dir("formats_bad_hf_missing");
    replace_in_file(path_in(dir, "model.safetensors"), "model.layers.3.mlp.up_proj.weight",
                    "model.layers.3.mlp.up_proj.weighx");
    CHECK_ERR(mt_model_load(dir, NULL, &m), MT_ERR_FORMAT, "missing tensor model.layers.3.mlp.up_proj.weight");

    dir = fresh_hf_dir("formats_bad_hf_untied");
    replace_in_file(path_in(dir, "config.json"), "\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    CHECK_ERR(mt_model_load(dir, NULL, &m), MT_ERR_FORMAT, "missing tensor lm_head.weight");

    dir = fresh_hf_dir("formats_bad_hf_json");
    write_bytes(path_in(dir, "config.json"), "{\"hidden_size\": 64,", 19);
    CHECK_ERR(mt_model_load(dir, NULL, &m), MT_ERR_FORMAT, "config.json: not valid JSON");

    dir = fresh_hf_dir("formats_bad_hf_arch");
    replace_in_file(path_in(dir, "config.json"), "LlamaForCausalLM", "GPT2LMHeadModel");
    CHECK_ERR(mt_model_load(dir, NULL, &m), MT_ERR_UNSUPPORTED, "architecture GPT2LMHeadModel is not supported");

    dir = fresh_hf_dir("formats_bad_hf_rope");
    replace_in_file(path_in(dir, "config.json"), "\"rope_scaling\": null",
                    "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}");
    CHECK_ERR(mt_model_load(dir, NULL, &m), MT_ERR_UNSUPPORTED, "rope scaling type 'yarn'");

    dir = fresh_hf_dir("formats_bad_hf_headerlen");
    uint64_t big = (uint64_t)1 << 40;
    patch_copy(path_in(dir, "model.safetensors"), path_in(dir, "model.safetensors"), 0, &big, 8);
    CHECK_ERR(mt_model_load(dir, NULL, &m), MT_ERR_FORMAT, "model.safetensors: header length 1099511627776");

    dir = fresh_hf_dir("formats_bad_hf_offsets");
    replace_in_file(path_in(dir, "model.safetensors"), ",1040128]", ",9040128]");
    CHECK_ERR(mt_model_load(dir, NULL, &m), MT_ERR_FORMAT, "outside the");

    dir = fresh_hf_dir("formats_bad_hf_huge");
    replace_in_file(path_in(dir, "config.json"), "\"num_hidden_layers\": 5", "\"num_hidden_layers\": 1000");
    CHECK_ERR(mt_model_load(dir, NULL, &m), MT_ERR_FORMAT, "more than the");

    dir = fresh_hf_dir("formats_bad_hf_nodir");
    remove(path_in(dir, "config.json"));
    CHECK_ERR(mt_model_load(dir, NULL, &m), MT_ERR_FORMAT, "no config.json");
    CHECK(m == NULL);
}

/* A tensor stored as I64 (right size, wrong dtype) is refused by name. */
TEST(test_hf_unsupported_dtype_is_named) {
    const char *dir = fresh_hf_dir("formats_bad_hf_dtype");
    mt_model *hf = load_or_die(dir);
    int n;
    mt_tensor_ref *refs = mt_model_tensor_list(hf, &n);
    mt_st_desc *descs = calloc((size_t)n, sizeof *descs);
    for (int i = 0; i < n; i++)
        descs[i] = (mt_st_desc){refs[i].name, i == 3 ? "I64" : "F32", refs[i].is_vector ? 1 : 2,
                                {refs[i].rows, refs[i].cols}};
    mt_st_writer w;
    CHECK_OK(mt_st_writer_open(&w, path_in(dir, "model.safetensors"), descs, n, NULL));
    for (int i = 0; i < n; i++) {
        size_t len = (size_t)refs[i].rows * refs[i].cols;
        if (i == 3) {
            void *zeros = calloc(len, 8);
            CHECK_OK(mt_st_writer_put(&w, zeros, len * 8));
            free(zeros);
        } else CHECK_OK(mt_st_writer_put_f32(&w, refs[i].data, len));
    }
    CHECK_OK(mt_st_writer_commit(&w));
    char want[160];
    snprintf(want, sizeof want, "tensor %s has dtype I64", refs[3].name);
    mt_model *m = NULL;
    CHECK_ERR(mt_model_load(dir, NULL, &m), MT_ERR_UNSUPPORTED, want);
    free(descs);
    free(refs);
    mt_model_free(hf);
}

TEST(test_hf_tokenizer_larger_than_model_is_a_mismatch) {
    const char *dir = fresh_hf_dir("formats_hf_big_tokenizer");
    copy_file(test_asset("tokenizers/smollm/tokenizer.json"), path_in(dir, "tokenizer.json"));
    copy_file(test_asset("tokenizers/smollm/tokenizer_config.json"), path_in(dir, "tokenizer_config.json"));
    mt_model *m = NULL;
    CHECK_ERR(mt_model_load(dir, NULL, &m), MT_ERR_MISMATCH, "49153 tokens"); /* 49152 + [PAD] */
}

TEST(test_format_names_parse) {
    mt_format f;
    CHECK_OK(mt_format_parse("hf", &f));
    CHECK_INT_EQ(f, MT_FORMAT_HF);
    CHECK_OK(mt_format_parse("GGUF", &f));
    CHECK_INT_EQ(f, MT_FORMAT_GGUF);
    CHECK_OK(mt_format_parse("llama2c", &f));
    CHECK_INT_EQ(f, MT_FORMAT_LLAMA2C);
    CHECK_ERR(mt_format_parse("onnx", &f), MT_ERR_ARG, "unknown format 'onnx'");
}

int main(void) {
    RUN(test_stories260k_bin_loads_with_its_tokenizer);
    RUN(test_stories260k_gguf_weights_equal_bin);
    RUN(test_roundtrip_bin_hf_gguf_bin_is_bit_exact);
    RUN(test_roundtrip_rotate_half_bias_untied_llama3_through_hf_and_gguf);
    RUN(test_converted_models_give_the_same_logits);
    RUN(test_gguf_llama3_scaling_recovered_from_rope_freqs);
    RUN(test_hf_bf16_f16_and_sharded_checkpoints_load);
    RUN(test_half_precision_conversions);
    RUN(test_gguf_f16_bf16_q8_0_tensors_dequantise);
    RUN(test_llama2c_rejects_truncated_and_bad_headers);
    RUN(test_llama2c_tokenizer_must_fit_and_be_unambiguous);
    RUN(test_gguf_rejects_malformed_files);
    RUN(test_truncated_files_fail_cleanly);
    RUN(test_safetensors_rejects_malformed_files);
    RUN(test_hf_rejects_bad_checkpoints);
    RUN(test_hf_unsupported_dtype_is_named);
    RUN(test_hf_tokenizer_larger_than_model_is_a_mismatch);
    RUN(test_format_names_parse);
    TEST_MAIN_END();
}
