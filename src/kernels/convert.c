/* Weight codecs: matrices stored in fewer bytes than f32, encoded and decoded a row-major
 * matrix at a time (the frozen base of model/base_store.c dequantises one site's weight right
 * before the GEMM that uses it). bf16 is the top half of an f32; Q8_0 is ggml's block (an f16
 * scale d = max|x|/127 and 32 int8 values, x ≈ d·q) laid along each row, a row whose length
 * is not a multiple of 32 ending in a partial block. The scalar conversions are the file
 * formats' (formats/dtype.h), so a stored block reads the same as a GGUF one. */
#include "kernels/kernels.h"
#include "kernels/pool.h"
#include "formats/dtype.h"
#include <math.h>
#include <string.h>

#define QK 32            /* values per Q8_0 block */
#define Q8_BLOCK 34      /* bytes: f16 scale + 32 int8 */

size_t mt_q8_0_row_bytes(size_t cols) { return (cols + QK - 1) / QK * Q8_BLOCK; }

static void q8_encode_row(const float *x, size_t n, uint8_t *dst) {
    for (size_t b = 0; b < n; b += QK, dst += Q8_BLOCK) {
        size_t len = n - b < QK ? n - b : QK;
        float amax = 0;
        for (size_t i = 0; i < len; i++) amax = fmaxf(amax, fabsf(x[b + i]));
        uint16_t dh = mt_f32_to_f16(amax / 127.0f);
        float d = mt_f16_to_f32(dh), inv = d > 0 ? 1.0f / d : 0.0f;
        memcpy(dst, &dh, 2);
        memset(dst + 2, 0, QK);
        for (size_t i = 0; i < len; i++) {
            float q = roundf(x[b + i] * inv);
            dst[2 + i] = (uint8_t)(int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
        }
    }
}

static void q8_decode_row(const uint8_t *src, size_t n, float *x) {
    for (size_t b = 0; b < n; b += QK, src += Q8_BLOCK) {
        size_t len = n - b < QK ? n - b : QK;
        float d = mt_f16_to_f32(mt_load_u16(src));
        for (size_t i = 0; i < len; i++) x[b + i] = d * (float)(int8_t)src[2 + i];
    }
}

void mt_bf16_encode(const float *src, size_t n, uint8_t *dst) {
    for (size_t i = 0; i < n; i++) {
        uint16_t h = mt_f32_to_bf16(src[i]);
        memcpy(dst + 2 * i, &h, 2);
    }
}

typedef struct {
    const float *f;
    float *fout;
    const uint8_t *b;
    uint8_t *bout;
    size_t cols, row_bytes;
} convert_job;

static void bf16_decode_task(void *p, size_t i0, size_t i1, int tid) {
    const convert_job *j = p;
    (void)tid;
    for (size_t i = i0; i < i1; i++) j->fout[i] = mt_bf16_to_f32(mt_load_u16(j->b + 2 * i));
}

void mt_bf16_decode(const uint8_t *src, size_t n, float *dst) {
    convert_job j = {.b = src, .fout = dst};
    mt_parallel_range(n, n > MT_PARALLEL_MIN, bf16_decode_task, &j);
}

static void q8_encode_task(void *p, size_t r0, size_t r1, int tid) {
    const convert_job *j = p;
    (void)tid;
    for (size_t r = r0; r < r1; r++) q8_encode_row(j->f + r * j->cols, j->cols, j->bout + r * j->row_bytes);
}

void mt_q8_0_encode_rows(const float *src, size_t rows, size_t cols, uint8_t *dst) {
    size_t n = rows * cols;
    convert_job j = {.f = src, .bout = dst, .cols = cols, .row_bytes = mt_q8_0_row_bytes(cols)};
    mt_parallel_range(rows, n > MT_PARALLEL_MIN, q8_encode_task, &j);
}

static void q8_decode_task(void *p, size_t r0, size_t r1, int tid) {
    const convert_job *j = p;
    (void)tid;
    for (size_t r = r0; r < r1; r++) q8_decode_row(j->b + r * j->row_bytes, j->cols, j->fout + r * j->cols);
}

void mt_q8_0_decode_rows(const uint8_t *src, size_t rows, size_t cols, float *dst) {
    size_t n = rows * cols;
    convert_job j = {.b = src, .fout = dst, .cols = cols, .row_bytes = mt_q8_0_row_bytes(cols)};
    mt_parallel_range(rows, n > MT_PARALLEL_MIN, q8_decode_task, &j);
}
