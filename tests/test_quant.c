/* GGUF block quantization: every common ggml type dequantizes exactly as ggml does, the
 * quantizers memtune writes with produce ggml's bytes, and GGUF tensors of other types are
 * refused by name. The fixtures in tests/fixtures/quant/ were made by ggml's own code
 * (tests/reference/make_quant_fixtures.sh); see that script for what each file holds. */
#include "test.h"
#include "kernels/quant.h"
#include "formats/gguf.h"
#include "model/model.h"
#include "formats/formats.h"
#include "model/forward.h"
#include "model/base_store.h"
#include "tokenizer/tokenizer.h"
#include <stdint.h>

#define FIXTURES "tests/fixtures/quant/"
#define N_QUANTIZED 1024 /* input.f32: 4 rows of 256, quantized by ggml */
#define N_TOTAL 1536     /* then 512 values of random-byte blocks */

static void *read_file_or_die(const char *name, size_t *len) {
    char path[512];
    snprintf(path, sizeof path, FIXTURES "%s", name);
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(*len ? *len : 1);
    if (!buf || fread(buf, 1, *len, f) != *len) { fprintf(stderr, "cannot read %s\n", path); exit(2); }
    fclose(f);
    return buf;
}

static const struct { uint32_t type; const char *name; } types[] = {
    {MT_QTYPE_Q4_0, "q4_0"}, {MT_QTYPE_Q4_1, "q4_1"}, {MT_QTYPE_Q5_0, "q5_0"}, {MT_QTYPE_Q5_1, "q5_1"},
    {MT_QTYPE_Q8_0, "q8_0"}, {MT_QTYPE_Q2_K, "q2_k"}, {MT_QTYPE_Q3_K, "q3_k"}, {MT_QTYPE_Q4_K, "q4_k"},
    {MT_QTYPE_Q5_K, "q5_k"}, {MT_QTYPE_Q6_K, "q6_k"}};
#define N_TYPES (sizeof types / sizeof types[0])

/* Number of floats whose bits differ (NaN-free fixtures: equal bits = equal values). */
static int count_bit_differences(const float *a, const float *b, size_t n, size_t *first) {
    int diff = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) != 0 && diff++ == 0) *first = i;
    return diff;
}

TEST(test_every_type_dequantizes_bit_for_bit_as_ggml) {
    for (size_t k = 0; k < N_TYPES; k++) {
        char name[32];
        size_t qlen, flen, first = 0;
        snprintf(name, sizeof name, "%s.q", types[k].name);
        uint8_t *q = read_file_or_die(name, &qlen);
        snprintf(name, sizeof name, "%s.f32", types[k].name);
        float *want = read_file_or_die(name, &flen);
        CHECK_INT_EQ(flen, N_TOTAL * 4);
        CHECK_INT_EQ(qlen, mt_qtype_bytes(types[k].type, N_TOTAL));
        float *got = calloc(N_TOTAL, sizeof *got);
        mt_dequantize(types[k].type, q, got, N_TOTAL);
        int diff = count_bit_differences(got, want, N_TOTAL, &first);
        CHECK_MSG(diff == 0, "%s: %d of %d values differ, first at %zu: %.9g vs ggml %.9g", types[k].name, diff,
                  N_TOTAL, first, got[first], want[first]);
        free(q);
        free(want);
        free(got);
    }
}

/* The fixtures' quantized part round-trips through the random-block part too: a sanity
 * check that the test compares something (dequantized values are not all zero). */
TEST(test_fixtures_are_not_degenerate) {
    size_t flen;
    float *want = read_file_or_die("q4_k.f32", &flen);
    int nonzero = 0;
    for (size_t i = 0; i < flen / 4; i++) nonzero += want[i] != 0.0f;
    CHECK(nonzero > 1000);
    free(want);
}

TEST(test_quantizers_write_ggml_reference_bytes) {
    size_t ilen;
    float *input = read_file_or_die("input.f32", &ilen);
    CHECK_INT_EQ(ilen, N_QUANTIZED * 4);
    for (size_t k = 0; k < N_TYPES; k++) {
        if (!mt_qtype_can_quantize(types[k].type)) continue;
        char name[32];
        size_t qlen, nbytes = mt_qtype_bytes(types[k].type, N_QUANTIZED);
        snprintf(name, sizeof name, "%s.q", types[k].name);
        uint8_t *want = read_file_or_die(name, &qlen), *got = calloc(nbytes, 1);
        mt_quantize(types[k].type, input, got, N_QUANTIZED);
        size_t first = 0;
        int diff = 0;
        for (size_t i = 0; i < nbytes; i++)
            if (got[i] != want[i] && diff++ == 0) first = i;
        CHECK_MSG(diff == 0, "%s: %d of %zu bytes differ from ggml's, first at byte %zu (block %zu): %u vs %u",
                  types[k].name, diff, nbytes, first, first / mt_qtype_size_of(types[k].type).bytes, got[first],
                  want[first]);
        free(want);
        free(got);
    }
    free(input);
}

TEST(test_quantize_dequantize_error_is_small) {
    /* relative RMS error of quantizing the N(0, 0.02) row: a wrong scale packing fails this */
    size_t ilen;
    float *input = read_file_or_die("input.f32", &ilen);
    static const struct { uint32_t type; double max_rel; } cases[] = {
        {MT_QTYPE_Q8_0, 0.01}, {MT_QTYPE_Q6_K, 0.03}, {MT_QTYPE_Q5_0, 0.08}, {MT_QTYPE_Q4_K, 0.12},
        {MT_QTYPE_Q4_0, 0.15}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        uint8_t q[256 * 2];
        float back[256];
        mt_quantize(cases[k].type, input, q, 256);
        mt_dequantize(cases[k].type, q, back, 256);
        double e2 = 0, x2 = 0;
        for (int i = 0; i < 256; i++) e2 += (back[i] - input[i]) * (double)(back[i] - input[i]), x2 += input[i] * (double)input[i];
        CHECK_MSG(sqrt(e2 / x2) < cases[k].max_rel, "type %u: relative error %.4f", cases[k].type, sqrt(e2 / x2));
    }
    free(input);
}

/* A GGUF holding one tensor of each block type reads back as the fixtures' values, and an
 * IQ4_XS tensor in the same file is refused with its name and type. */
TEST(test_gguf_reads_every_block_type_and_refuses_iq_types_by_name) {
    const char *dir = test_tmpdir("quant_gguf");
    char path[600];
    snprintf(path, sizeof path, "%s/types.gguf", dir);
    mt_gguf_writer w;
    mt_gguf_writer_init(&w);
    mt_gguf_add_string(&w, "general.architecture", "llama");
    for (size_t k = 0; k < N_TYPES; k++) {
        uint64_t ne[2] = {256, N_TOTAL / 256};
        mt_gguf_add_tensor_typed(&w, types[k].name, 2, ne, types[k].type);
    }
    uint64_t iq_ne[2] = {256, 1};
    mt_gguf_add_tensor_typed(&w, "blk.0.attn_q.weight", 2, iq_ne, 23 /* IQ4_XS */);
    CHECK_OK(mt_gguf_writer_begin(&w, path));
    for (size_t k = 0; k < N_TYPES; k++) {
        char name[32];
        size_t qlen;
        snprintf(name, sizeof name, "%s.q", types[k].name);
        uint8_t *q = read_file_or_die(name, &qlen);
        CHECK_OK(mt_gguf_writer_put(&w, q, qlen));
        free(q);
    }
    CHECK_OK(mt_gguf_writer_put(&w, "", 0)); /* gguf.c does not know IQ4_XS's size: 0 bytes declared */
    CHECK_OK(mt_gguf_writer_commit(&w));
    mt_gguf_writer_free(&w);

    mt_gguf g;
    CHECK_OK(mt_gguf_open(path, &g));
    float *got = calloc(N_TOTAL, sizeof *got);
    for (size_t k = 0; k < N_TYPES; k++) {
        const mt_gguf_tensor *t = mt_gguf_find_tensor(&g, types[k].name);
        CHECK(t != NULL);
        if (!t) continue;
        char name[32];
        size_t flen, first = 0;
        snprintf(name, sizeof name, "%s.f32", types[k].name);
        float *want = read_file_or_die(name, &flen);
        CHECK_OK(mt_gguf_read_f32(&g, t, got, N_TOTAL));
        CHECK_MSG(count_bit_differences(got, want, N_TOTAL, &first) == 0, "%s from GGUF differs at %zu",
                  types[k].name, first);
        free(want);
    }
    const mt_gguf_tensor *iq = mt_gguf_find_tensor(&g, "blk.0.attn_q.weight");
    CHECK(iq != NULL);
    if (iq) {
        CHECK_ERR(mt_gguf_read_f32(&g, iq, got, 256), MT_ERR_UNSUPPORTED, "IQ4_XS");
        CHECK(strstr(mt_last_error(), "blk.0.attn_q.weight") != NULL);
    }
    free(got);
    mt_gguf_close(&g);
}

static mt_config small_config(int dim, int hidden, int n_layers, int tied) {
    mt_config c = {0};
    snprintf(c.arch, sizeof c.arch, "llama");
    c.dim = dim; c.hidden_dim = hidden; c.n_layers = n_layers; c.n_heads = 4; c.n_kv_heads = 2;
    c.head_dim = dim / 4; c.vocab_size = 300; c.max_seq_len = 64; c.norm_eps = 1e-5f; c.rope_theta = 10000;
    c.rope_interleaved = 1; c.tied_embeddings = tied; c.bos_id = 1; c.eos_id = 2; c.pad_id = -1;
    return c;
}

static uint32_t tensor_type(const mt_gguf *g, const char *name) {
    const mt_gguf_tensor *t = mt_gguf_find_tensor(g, name);
    return t ? t->type : 9999;
}

/* Every tensor of `typed` is the quantization (ggml's reference, mt_quantize) of the same
 * tensor in the F32 file `plain`: the writer quantizes the layout llama.cpp reads. */
static void check_typed_matches_f32(const mt_gguf *typed, const mt_gguf *plain) {
    for (size_t i = 0; i < typed->n_tensors; i++) {
        const mt_gguf_tensor *t = &typed->tensors[i], *f = mt_gguf_find_tensor(plain, t->name);
        CHECK(f != NULL && f->type == MT_QTYPE_F32 && f->n_elems == t->n_elems);
        if (!f) continue;
        size_t nbytes = mt_qtype_bytes(t->type, t->n_elems);
        uint8_t *q = malloc(nbytes + 1);
        float *x = malloc(t->n_elems * sizeof(float));
        memcpy(x, f->data, t->n_elems * sizeof(float));
        mt_quantize_rows(t->type, x, q, t->n_elems / t->ne[0], t->ne[0]);
        CHECK_MSG(t->nbytes == nbytes && memcmp(q, t->data, nbytes) == 0, "%s (%s) is not the quantized F32 tensor",
                  t->name, mt_ggml_type_name(t->type));
        free(q);
        free(x);
    }
}

static double max_logit_diff(mt_model *a, mt_model *b, double *scale) {
    int ids[6] = {1, 17, 42, 99, 5, 250};
    size_t V = (size_t)a->cfg.vocab_size;
    float *la = malloc(6 * V * sizeof(float)), *lb = malloc(6 * V * sizeof(float));
    CHECK_OK(mt_model_logits(a, ids, 6, la));
    CHECK_OK(mt_model_logits(b, ids, 6, lb));
    double d = 0, m = 0;
    for (size_t i = 0; i < 6 * V; i++) d = fmax(d, fabs(la[i] - lb[i])), m = fmax(m, fabs(la[i]));
    free(la);
    free(lb);
    *scale = m;
    return d;
}

/* convert --type: per-tensor types as llama-quantize chooses them (Q4_K_M's mix over 8
 * layers, the head in Q6_K, rows of 96 values falling back Q4_K -> Q5_0, Q6_K -> Q8_0,
 * vectors F32), data equal to ggml's quantization of the F32 tensors, and the files load
 * back to logits near the F32 model's (a loose bound: random weights of std 0.02 make every
 * quantization error show; the exact checks are the bytes above and test_quant's fixtures). */
TEST(test_gguf_writer_types_follow_llama_quantize_and_load_back) {
    const char *dir = test_tmpdir("quant_write");
    char f32[600], typed[600];
    snprintf(f32, sizeof f32, "%s/m.f32.gguf", dir);
    mt_config cfg = small_config(256, 512, 8, 0);
    mt_model *m = NULL, *back = NULL;
    CHECK_OK(mt_model_init(&cfg, 7, &m));
    if (!m) return;
    CHECK_OK(mt_model_save_gguf(m, f32, "f32"));
    mt_gguf plain;
    CHECK_OK(mt_gguf_open(f32, &plain));
    static const struct { const char *type; double tol; } cases[] = {
        {"f16", 1e-3}, {"bf16", 1e-2}, {"q8_0", 0.05}, {"q6_k", 0.1}, {"q4_k", 0.35}, {"q4_0", 0.4}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        snprintf(typed, sizeof typed, "%s/m.%s.gguf", dir, cases[k].type);
        CHECK_OK(mt_model_save_gguf(m, typed, cases[k].type));
        mt_gguf g;
        if (mt_gguf_open(typed, &g) != MT_OK) continue;
        CHECK_INT_EQ(tensor_type(&g, "blk.0.attn_norm.weight"), MT_QTYPE_F32);
        if (!strcmp(cases[k].type, "q4_k")) {
            int64_t ft = 0;
            CHECK_OK(mt_gguf_get_int(&g, "general.file_type", &ft, 1));
            CHECK_INT_EQ(ft, 15); /* LLAMA_FTYPE_MOSTLY_Q4_K_M */
            CHECK_INT_EQ(tensor_type(&g, "output.weight"), MT_QTYPE_Q6_K);
            CHECK_INT_EQ(tensor_type(&g, "token_embd.weight"), MT_QTYPE_Q4_K);
            CHECK_INT_EQ(tensor_type(&g, "blk.0.attn_q.weight"), MT_QTYPE_Q4_K);
            /* use_more_bits over 8 layers: 0, 3, 6, 7 */
            static const uint32_t v_types[8] = {14, 12, 12, 14, 12, 12, 14, 14};
            for (int l = 0; l < 8; l++) {
                char name[64];
                snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);
                CHECK_INT_EQ(tensor_type(&g, name), v_types[l]);
                snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
                CHECK_INT_EQ(tensor_type(&g, name), v_types[l]);
            }
        } else if (!strcmp(cases[k].type, "q4_0")) {
            CHECK_INT_EQ(tensor_type(&g, "blk.3.attn_v.weight"), MT_QTYPE_Q4_0);
            CHECK_INT_EQ(tensor_type(&g, "output.weight"), MT_QTYPE_Q6_K);
        } else if (!strcmp(cases[k].type, "q8_0")) {
            CHECK_INT_EQ(tensor_type(&g, "output.weight"), MT_QTYPE_Q8_0);
        }
        check_typed_matches_f32(&g, &plain);
        mt_gguf_close(&g);
        CHECK_OK(mt_model_load(typed, NULL, &back));
        if (back) {
            double scale, d = max_logit_diff(m, back, &scale);
            CHECK_MSG(d <= cases[k].tol * scale, "%s: logits differ by %.3g (scale %.3g)", cases[k].type, d, scale);
            CHECK_MSG(strcmp(cases[k].type, "f16") == 0 || d > 0, "%s: no rounding at all?", cases[k].type);
            mt_model_free(back);
            back = NULL;
        }
    }
    mt_gguf_close(&plain);
    mt_model_free(m);

    /* 96-wide rows (as smollm-135m's 576): not whole 256-value blocks */
    cfg = small_config(96, 256, 2, 1);
    CHECK_OK(mt_model_init(&cfg, 8, &m));
    if (!m) return;
    snprintf(typed, sizeof typed, "%s/narrow.q4_k.gguf", dir);
    CHECK_OK(mt_model_save_gguf(m, typed, "q4_k"));
    mt_gguf g;
    if (mt_gguf_open(typed, &g) == MT_OK) {
        CHECK_INT_EQ(tensor_type(&g, "token_embd.weight"), MT_QTYPE_Q8_0); /* tied: the head's Q6_K -> Q8_0 */
        CHECK_INT_EQ(tensor_type(&g, "blk.1.attn_q.weight"), MT_QTYPE_Q5_0);
        CHECK_INT_EQ(tensor_type(&g, "blk.0.attn_v.weight"), MT_QTYPE_Q5_0); /* use_more_bits(0, 2) is false */
        CHECK_INT_EQ(tensor_type(&g, "blk.1.attn_v.weight"), MT_QTYPE_Q8_0); /* Q6_K -> Q8_0 */
        CHECK_INT_EQ(tensor_type(&g, "blk.1.ffn_down.weight"), MT_QTYPE_Q6_K); /* 256 wide */
        mt_gguf_close(&g);
    }
    CHECK_ERR(mt_model_save_gguf(m, typed, "q3_k"), MT_ERR_ARG, "unknown GGUF tensor type 'q3_k'");
    mt_model_free(m);
}

/* A Qwen2 model is written as llama.cpp's converter writes it: architecture qwen2, qwen2.*
 * keys, Q/K rows in HF order (the safetensors rows, bit for bit), biases; it loads back to
 * the same logits. */
TEST(test_qwen2_is_written_as_arch_qwen2) {
    const char *dir = test_tmpdir("quant_qwen2");
    char path[600];
    snprintf(path, sizeof path, "%s/q.gguf", dir);
    mt_model *m = NULL, *back = NULL;
    CHECK_OK(mt_model_load("tests/fixtures/qwen2_bias", NULL, &m));
    if (!m) return;
    CHECK_STR_EQ(m->cfg.arch, "qwen2");
    CHECK_OK(mt_model_save(m, path, MT_FORMAT_GGUF));
    mt_gguf g;
    if (mt_gguf_open(path, &g) == MT_OK) {
        char *arch = NULL;
        CHECK_OK(mt_gguf_get_string(&g, "general.architecture", &arch, 1));
        CHECK_STR_EQ(arch, "qwen2");
        free(arch);
        CHECK(mt_gguf_find(&g, "qwen2.block_count") != NULL && mt_gguf_find(&g, "llama.block_count") == NULL);
        CHECK(mt_gguf_find(&g, "memtune.arch") == NULL);
        CHECK(mt_gguf_find_tensor(&g, "blk.0.attn_k.bias") != NULL);
        int n;
        mt_tensor_ref *refs = mt_model_tensor_list(m, &n);
        for (int i = 0; refs && i < n; i++)
            if (refs[i].kind == MT_T_WK && refs[i].layer == 0) {
                const mt_gguf_tensor *t = mt_gguf_find_tensor(&g, "blk.0.attn_k.weight");
                CHECK(t && t->type == MT_QTYPE_F32 &&
                      memcmp(t->data, refs[i].data, (size_t)refs[i].rows * refs[i].cols * 4) == 0);
            }
        free(refs);
        mt_gguf_close(&g);
    }
    CHECK_OK(mt_model_load(path, NULL, &back));
    if (back) {
        double scale, d = max_logit_diff(m, back, &scale);
        CHECK_MSG(d <= 1e-5 * scale, "qwen2 GGUF logits differ by %.3g", d);
        CHECK_INT_EQ(back->cfg.rope_interleaved, 0);
        mt_model_free(back);
    }
    mt_model_free(m);
}

/* SmolLM's unk is <|endoftext|>, a special token: CONTROL in the GGUF, as llama.cpp's
 * converter writes it (UNKNOWN makes llama.cpp warn "control-looking token ... was not
 * control-type"). A SentencePiece vocabulary keeps its <unk> UNKNOWN. */
TEST(test_gguf_writes_a_special_unk_of_bpe_as_control) {
    const char *dir = test_tmpdir("quant_unk");
    char path[600];
    mt_tokenizer *tok = NULL;
    CHECK_OK(mt_tokenizer_load_hf(test_asset("tokenizers/smollm/tokenizer.json"), &tok, NULL));
    if (!tok) return;
    mt_config cfg = small_config(32, 64, 1, 1);
    cfg.vocab_size = mt_tokenizer_vocab_size(tok);
    mt_model *m = NULL;
    CHECK_OK(mt_model_init(&cfg, 3, &m));
    if (!m) return;
    m->tok = tok;
    int unk = mt_tokenizer_unk(tok);
    CHECK(unk >= 0);
    snprintf(path, sizeof path, "%s/smollm.gguf", dir);
    CHECK_OK(mt_model_save(m, path, MT_FORMAT_GGUF));
    mt_gguf g;
    if (unk >= 0 && mt_gguf_open(path, &g) == MT_OK) {
        int32_t *types = NULL;
        uint64_t n = 0;
        CHECK_OK(mt_gguf_get_ints(&g, "tokenizer.ggml.token_type", &types, &n, 1));
        if (types && (uint64_t)unk < n) CHECK_INT_EQ(types[unk], MT_TOKTYPE_CONTROL);
        free(types);
        mt_gguf_close(&g);
    }
    mt_model_free(m);

    CHECK_OK(mt_model_load(test_asset("models/stories260K/stories260K.bin"), NULL, &m));
    if (!m) return;
    snprintf(path, sizeof path, "%s/stories.gguf", dir);
    CHECK_OK(mt_model_save(m, path, MT_FORMAT_GGUF));
    if (mt_gguf_open(path, &g) == MT_OK) {
        int32_t *types = NULL;
        uint64_t n = 0;
        CHECK_OK(mt_gguf_get_ints(&g, "tokenizer.ggml.token_type", &types, &n, 1));
        if (types && n > 0) CHECK_INT_EQ(types[0], MT_TOKTYPE_UNKNOWN);
        free(types);
        mt_gguf_close(&g);
    }
    mt_model_free(m);
}

/* Decoding from a quantized GGUF kept in its blocks (mt_load_options.keep_quantized): one
 * token at a time through the KV cache, the matrix-vector products run on the blocks, and
 * the logits stay within 1e-3 (relative to their largest) of the same file dequantized to
 * f32; a prompt of several tokens (dequantized per matrix) gives exactly the f32 logits. The
 * weights take the file's bytes, not four per parameter. */
TEST(test_decoding_on_kept_blocks_matches_the_dequantized_model) {
    const char *dir = test_tmpdir("quant_keep");
    mt_config cfg = small_config(256, 512, 2, 1);
    mt_model *m = NULL;
    CHECK_OK(mt_model_init(&cfg, 11, &m));
    if (!m) return;
    static const char *const types[] = {"q8_0", "q4_k", "q6_k", "q4_0"};
    int ids[5] = {1, 17, 42, 99, 5};
    size_t V = (size_t)cfg.vocab_size;
    float *a = malloc(5 * V * sizeof(float)), *b = malloc(5 * V * sizeof(float));
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        char path[600];
        snprintf(path, sizeof path, "%s/m.%s.gguf", dir, types[k]);
        CHECK_OK(mt_model_save_gguf(m, path, types[k]));
        mt_model *f32 = NULL, *kept = NULL;
        mt_load_options keep = {.keep_quantized = 1};
        CHECK_OK(mt_model_load(path, NULL, &f32));
        CHECK_OK(mt_model_load(path, &keep, &kept));
        if (!f32 || !kept) continue;
        CHECK_STR_EQ(mt_model_base_dtype(kept), "gguf");
        CHECK_STR_EQ(mt_model_base_dtype(f32), "f32");
        CHECK_MSG(mt_model_weight_bytes(kept) * 2 < mt_model_weight_bytes(f32), "%s: kept weights take %zu bytes, f32 %zu",
                  types[k], mt_model_weight_bytes(kept), mt_model_weight_bytes(f32));
        for (int t = 0; t < 5; t++) { /* decoding: T = 1 at positions 0..4 */
            CHECK_OK(mt_forward(f32, &ids[t], 1, t, a + t * V, 0));
            CHECK_OK(mt_forward(kept, &ids[t], 1, t, b + t * V, 0));
        }
        double d = 0, scale = 0;
        for (size_t i = 0; i < 5 * V; i++) d = fmax(d, fabs(a[i] - b[i])), scale = fmax(scale, fabs(a[i]));
        CHECK_MSG(d <= 1e-3 * scale, "%s: decoding on the blocks differs by %.3g (scale %.3g)", types[k], d, scale);
        CHECK_OK(mt_model_logits(f32, ids, 5, a));
        CHECK_OK(mt_model_logits(kept, ids, 5, b));
        CHECK_MSG(memcmp(a, b, 5 * V * sizeof(float)) == 0, "%s: a prompt on the kept model differs", types[k]);
        mt_model_free(f32);
        mt_model_free(kept);
    }
    free(a);
    free(b);
    mt_model_free(m);
}

/* mt_quant_matvec against dot products with the dequantized rows, every block type. */
TEST(test_quant_matvec_equals_dequantized_dot_products) {
    for (size_t k = 0; k < N_TYPES; k++) {
        char name[32];
        size_t qlen;
        snprintf(name, sizeof name, "%s.q", types[k].name);
        uint8_t *q = read_file_or_die(name, &qlen);
        int K = 256, N = N_TOTAL / 256;
        float x[256], out[8], w[N_TOTAL];
        for (int i = 0; i < K; i++) x[i] = (float)sin(0.37 * i);
        mt_dequantize(types[k].type, q, w, N_TOTAL);
        mt_quant_matvec(types[k].type, out, x, q, K, N);
        for (int n = 0; n < N; n++) {
            double want = 0, mag = 0;
            for (int i = 0; i < K; i++) want += (double)w[n * K + i] * x[i], mag += fabs((double)w[n * K + i] * x[i]);
            CHECK_MSG(fabs(out[n] - want) <= 1e-5 * mag + 1e-30, "%s row %d: %.9g vs %.9g", types[k].name, n, out[n], want);
        }
        free(q);
    }
}

/* The same over rows of several super-blocks (K = 768), for the types memtune writes: the AVX2
 * kernels step x and the per-32 sums of x across blocks (one block would not show a wrong
 * stride), on the machine's kernel and at several row counts (one thread's share and more). */
TEST(test_quant_matvec_over_many_blocks) {
    const uint32_t types[] = {MT_QTYPE_Q8_0, MT_QTYPE_Q4_0, MT_QTYPE_Q5_0, MT_QTYPE_Q4_K, MT_QTYPE_Q6_K};
    enum { K = 768, N = 96 };
    float *w = malloc(sizeof(float) * K * N), *d = malloc(sizeof(float) * K * N), x[K], out[N];
    uint8_t *q = malloc((size_t)K * N * 2); /* Q8_0 takes 34 bytes per 32 values */
    for (int i = 0; i < K * N; i++) w[i] = (float)sin(0.013 * i * (1 + i % 7)) * (i % 5 == 0 ? 3.0f : 0.2f);
    for (int i = 0; i < K; i++) x[i] = (float)cos(0.11 * i) + (i % 96 == 0 ? 4.0f : 0.0f);
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        mt_quantize_rows(types[t], w, q, N, K);
        mt_dequantize(types[t], q, d, (size_t)K * N);
        for (int rows = 1; rows <= N; rows += N - 1) {
            mt_quant_matvec(types[t], out, x, q, K, rows);
            for (int n = 0; n < rows; n++) {
                double want = 0, mag = 0;
                for (int i = 0; i < K; i++) want += (double)d[n * K + i] * x[i], mag += fabs((double)d[n * K + i] * x[i]);
                CHECK_MSG(fabs(out[n] - want) <= 1e-5 * mag, "type %u row %d of %d: %.9g vs %.9g", types[t], n, rows,
                          out[n], want);
            }
        }
    }
    free(w), free(d), free(q);
}

int main(void) {
    mt_set_threads(2);
    RUN(test_every_type_dequantizes_bit_for_bit_as_ggml);
    RUN(test_fixtures_are_not_degenerate);
    RUN(test_quantizers_write_ggml_reference_bytes);
    RUN(test_quantize_dequantize_error_is_small);
    RUN(test_gguf_reads_every_block_type_and_refuses_iq_types_by_name);
    RUN(test_gguf_writer_types_follow_llama_quantize_and_load_back);
    RUN(test_qwen2_is_written_as_arch_qwen2);
    RUN(test_gguf_writes_a_special_unk_of_bpe_as_control);
    RUN(test_decoding_on_kept_blocks_matches_the_dequantized_model);
    RUN(test_quant_matvec_equals_dequantized_dot_products);
    RUN(test_quant_matvec_over_many_blocks);
    TEST_MAIN_END();
}
