/* Makes tests/fixtures/quant/: GGUF block-quantized tensors and their dequantized values,
 * produced by ggml's own code (the library inside llama.cpp: ggml_quantize_chunk is what
 * llama-quantize calls; the to_float trait is what llama.cpp uses to dequantize). Built and
 * run by make_quant_fixtures.sh against a ggml checkout outside this repository; memtune
 * itself never links ggml.
 *
 * For each type T (q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k):
 *   T.q    ggml's quantization of input.f32 (4 rows of 256 values, imatrix-free: the
 *          reference quantizer, as llama-quantize without --imatrix), then 512 values' worth
 *          of blocks of random bytes (random f16 scales in [-0.5, 0.5]) so that every bit
 *          pattern of the quants and packed scales is exercised, not only those a quantizer
 *          happens to produce;
 *   T.f32  ggml's dequantization of all of T.q (1536 little-endian floats).
 * input.f32: the 1024 inputs (row 0 weight-like N(0, 0.02), row 1 uniform [-1, 1], row 2
 * N(0, 1) with outliers of +-20, row 3 half zeros then positives in [0.5, 1.5]). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ggml.h"

#define ROWS 4
#define COLS 256
#define N_RANDOM 512

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t next_u32(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (uint32_t)(rng >> 32); }
static float uniform(void) { return (next_u32() + 0.5f) / 4294967296.0f; }
static float gauss(void) { return sqrtf(-2.0f * logf(uniform())) * cosf(6.2831853f * uniform()); }

static void put_f16(uint8_t *p, float v) { ggml_fp16_t h = ggml_fp32_to_fp16(v); memcpy(p, &h, 2); }

/* Offsets of the f16 scale fields inside one block of each type. */
static void random_block(enum ggml_type t, uint8_t *b, size_t size) {
    for (size_t i = 0; i < size; i++) b[i] = (uint8_t)next_u32();
    int offs[2] = {-1, -1};
    switch (t) {
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q5_0: case GGML_TYPE_Q8_0: offs[0] = 0; break;
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_1: offs[0] = 0; offs[1] = 2; break;
    case GGML_TYPE_Q2_K: offs[0] = 80; offs[1] = 82; break;
    case GGML_TYPE_Q3_K: offs[0] = 108; break;
    case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: offs[0] = 0; offs[1] = 2; break;
    case GGML_TYPE_Q6_K: offs[0] = 208; break;
    default: abort();
    }
    for (int k = 0; k < 2; k++)
        if (offs[k] >= 0) put_f16(b + offs[k], uniform() - 0.5f);
}

static void write_file(const char *dir, const char *name, const void *data, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) { perror(path); exit(1); }
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]); return 2; }
    const char *dir = argv[1];
    static float input[ROWS * COLS];
    for (int i = 0; i < COLS; i++) {
        input[0 * COLS + i] = 0.02f * gauss();
        input[1 * COLS + i] = 2.0f * uniform() - 1.0f;
        input[2 * COLS + i] = i % 37 == 5 ? (i % 2 ? 20.0f : -20.0f) : gauss();
        input[3 * COLS + i] = i < COLS / 2 ? 0.0f : 0.5f + uniform();
    }
    write_file(dir, "input.f32", input, sizeof input);
    static const struct { enum ggml_type t; const char *name; } types[] = {
        {GGML_TYPE_Q4_0, "q4_0"}, {GGML_TYPE_Q4_1, "q4_1"}, {GGML_TYPE_Q5_0, "q5_0"}, {GGML_TYPE_Q5_1, "q5_1"},
        {GGML_TYPE_Q8_0, "q8_0"}, {GGML_TYPE_Q2_K, "q2_k"}, {GGML_TYPE_Q3_K, "q3_k"}, {GGML_TYPE_Q4_K, "q4_k"},
        {GGML_TYPE_Q5_K, "q5_k"}, {GGML_TYPE_Q6_K, "q6_k"}};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        enum ggml_type t = types[k].t;
        size_t blck = (size_t)ggml_blck_size(t), bsize = ggml_type_size(t);
        size_t n = ROWS * COLS + N_RANDOM, nbytes = n / blck * bsize;
        uint8_t *q = calloc(nbytes, 1);
        float *deq = calloc(n, sizeof *deq);
        ggml_quantize_init(t);
        size_t got = ggml_quantize_chunk(t, input, q, 0, ROWS, COLS, NULL);
        if (got != ROWS * COLS / blck * bsize) { fprintf(stderr, "%s: size %zu\n", types[k].name, got); return 1; }
        for (size_t b = ROWS * COLS / blck; b < n / blck; b++) random_block(t, q + b * bsize, bsize);
        ggml_get_type_traits(t)->to_float(q, deq, (int64_t)n);
        char name[64];
        snprintf(name, sizeof name, "%s.q", types[k].name);
        write_file(dir, name, q, nbytes);
        snprintf(name, sizeof name, "%s.f32", types[k].name);
        write_file(dir, name, deq, n * sizeof *deq);
        free(q);
        free(deq);
    }
    return 0;
}
