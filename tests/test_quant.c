/* GGUF block quantization: every common ggml type dequantizes exactly as ggml does, the
 * quantizers memtune writes with produce ggml's bytes, and GGUF tensors of other types are
 * refused by name. The fixtures in tests/fixtures/quant/ were made by ggml's own code
 * (tests/reference/make_quant_fixtures.sh); see that script for what each file holds. */
#include "test.h"
#include "kernels/quant.h"
#include "formats/gguf.h"
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

int main(void) {
    RUN(test_every_type_dequantizes_bit_for_bit_as_ggml);
    RUN(test_fixtures_are_not_degenerate);
    RUN(test_quantizers_write_ggml_reference_bytes);
    RUN(test_quantize_dequantize_error_is_small);
    RUN(test_gguf_reads_every_block_type_and_refuses_iq_types_by_name);
    TEST_MAIN_END();
}
