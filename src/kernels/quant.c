/* GGUF block quantization: dequantizers for the ten common ggml block types and the
 * reference quantizers memtune writes with (see quant.h for the block layouts).
 *
 * Every function here reproduces ggml's scalar reference (ggml-quants.c) operation for
 * operation, in the same order and in float: dequantized values and quantized bytes are
 * defined bit for bit by that code, and tests/test_quant.c compares both with fixtures that
 * ggml itself produced. The build compiles C11 with -ffp-contract=off (ISO mode's default),
 * so no multiply-add is fused here and the roundings match ggml's baseline x86-64 build. */
#include "kernels/quant.h"
#include "kernels/quant_avx2.h"
#include "formats/dtype.h"
#include "kernels/simd.h"
#include <math.h>
#include "kernels/pool.h"
#include <stdlib.h>
#include <string.h>

#define QK_K 256
/* the block loops inline into each CPU-specific clone of rows_dot (kernels/simd.h) */
#define HOT static inline __attribute__((always_inline))

mt_qtype_size mt_qtype_size_of(uint32_t type) {
    switch (type) {
    case MT_QTYPE_F32: return (mt_qtype_size){1, 4};
    case MT_QTYPE_F16: case MT_QTYPE_BF16: return (mt_qtype_size){1, 2};
    case MT_QTYPE_Q4_0: return (mt_qtype_size){32, 18};
    case MT_QTYPE_Q4_1: return (mt_qtype_size){32, 20};
    case MT_QTYPE_Q5_0: return (mt_qtype_size){32, 22};
    case MT_QTYPE_Q5_1: return (mt_qtype_size){32, 24};
    case MT_QTYPE_Q8_0: return (mt_qtype_size){32, 34};
    case MT_QTYPE_Q2_K: return (mt_qtype_size){QK_K, 84};
    case MT_QTYPE_Q3_K: return (mt_qtype_size){QK_K, 110};
    case MT_QTYPE_Q4_K: return (mt_qtype_size){QK_K, 144};
    case MT_QTYPE_Q5_K: return (mt_qtype_size){QK_K, 176};
    case MT_QTYPE_Q6_K: return (mt_qtype_size){QK_K, 210};
    default: return (mt_qtype_size){0, 0};
    }
}

size_t mt_qtype_bytes(uint32_t type, size_t n) {
    mt_qtype_size s = mt_qtype_size_of(type);
    return s.block ? n / s.block * s.bytes : 0;
}

HOT float f16_at(const uint8_t *p) { return mt_f16_to_f32(mt_load_u16(p)); }

/* ---- 32-value blocks ---- */

HOT void dequant_q4_0(const uint8_t *b, float *y) {
    float d = f16_at(b);
#pragma omp simd
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((b[2 + j] & 0x0f) - 8) * d;
        y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
    }
}

HOT void dequant_q4_1(const uint8_t *b, float *y) {
    float d = f16_at(b), m = f16_at(b + 2);
#pragma omp simd
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(b[4 + j] & 0x0f) * d + m;
        y[j + 16] = (float)(b[4 + j] >> 4) * d + m;
    }
}

/* Q5_*: bit j of the u32 qh is the fifth bit of value j. */
HOT void dequant_q5_0(const uint8_t *b, float *y) {
    float d = f16_at(b);
    uint32_t qh = mt_load_u32(b + 2);
#pragma omp simd
    for (int j = 0; j < 16; j++) {
        int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (float)(((b[6 + j] & 0x0f) | h0) - 16) * d;
        y[j + 16] = (float)(((b[6 + j] >> 4) | h1) - 16) * d;
    }
}

HOT void dequant_q5_1(const uint8_t *b, float *y) {
    float d = f16_at(b), m = f16_at(b + 2);
    uint32_t qh = mt_load_u32(b + 4);
#pragma omp simd
    for (int j = 0; j < 16; j++) {
        int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (float)((b[8 + j] & 0x0f) | h0) * d + m;
        y[j + 16] = (float)((b[8 + j] >> 4) | h1) * d + m;
    }
}

HOT void dequant_q8_0(const uint8_t *b, float *y) {
    float d = f16_at(b);
#pragma omp simd
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

/* ---- 256-value super-blocks ---- */

HOT void dequant_q2_k(const uint8_t *b, float *y) {
    const uint8_t *scales = b, *q = b + 16;
    float d = f16_at(b + 80), dmin = f16_at(b + 82);
    int is = 0;
    for (int n = 0; n < QK_K; n += 128, q += 32)
        for (int shift = 0; shift < 8; shift += 2)
            for (int half = 0; half < 2; half++) {
                uint8_t sc = scales[is++];
                float dl = d * (float)(sc & 0x0f), ml = dmin * (float)(sc >> 4);
#pragma omp simd
                for (int l = 0; l < 16; l++) y[l] = dl * (float)((q[16 * half + l] >> shift) & 3) - ml;
                y += 16;
            }
}

/* Q4_K/Q5_K: eight 6-bit scales and mins packed in 12 bytes. */
HOT void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q3_K: sixteen 6-bit scales in 12 bytes: low nibbles in bytes 0-7, high 2-bit pairs in 8-11. */
HOT void q3_k_scales(const uint8_t *packed, int8_t out[16]) {
    uint32_t aux[4];
    const uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
    memcpy(aux, packed, 12);
    uint32_t tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
    aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
    aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
    aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
    memcpy(out, aux, 16);
}

HOT void dequant_q3_k(const uint8_t *b, float *y) {
    const uint8_t *hm = b, *q = b + 32;
    float d_all = f16_at(b + 108);
    int8_t scales[16];
    q3_k_scales(b + 96, scales);
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < QK_K; n += 128, q += 32)
        for (int shift = 0; shift < 8; shift += 2, m <<= 1)
            for (int half = 0; half < 2; half++) {
                float dl = d_all * (float)(scales[is++] - 32);
#pragma omp simd
                for (int l = 0; l < 16; l++) {
                    int k = 16 * half + l;
                    y[l] = dl * (float)((int8_t)((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4));
                }
                y += 16;
            }
}

HOT void dequant_q4_k(const uint8_t *b, float *y) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    const uint8_t *scales = b + 4, *q = b + 16;
    for (int j = 0; j < 8; j += 2, q += 32) {
        uint8_t sc, m;
        scale_min_k4(j, scales, &sc, &m);
        float d1 = d * (float)sc, m1 = dmin * (float)m;
        scale_min_k4(j + 1, scales, &sc, &m);
        float d2 = d * (float)sc, m2 = dmin * (float)m;
#pragma omp simd
        for (int l = 0; l < 32; l++) y[l] = d1 * (float)(q[l] & 0x0f) - m1;
#pragma omp simd
        for (int l = 0; l < 32; l++) y[32 + l] = d2 * (float)(q[l] >> 4) - m2;
        y += 64;
    }
}

HOT void dequant_q5_k(const uint8_t *b, float *y) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < 8; j += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
        uint8_t sc, m;
        scale_min_k4(j, scales, &sc, &m);
        float d1 = d * (float)sc, m1 = dmin * (float)m;
        scale_min_k4(j + 1, scales, &sc, &m);
        float d2 = d * (float)sc, m2 = dmin * (float)m;
#pragma omp simd
        for (int l = 0; l < 32; l++) y[l] = d1 * (float)((ql[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
#pragma omp simd
        for (int l = 0; l < 32; l++) y[32 + l] = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        y += 64;
    }
}

HOT void dequant_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = f16_at(b + 208);
    for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
#pragma omp simd
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = (int8_t)((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = (int8_t)((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

void mt_dequantize(uint32_t type, const uint8_t *src, float *dst, size_t n) {
    mt_qtype_size s = mt_qtype_size_of(type);
    void (*block)(const uint8_t *, float *) = NULL;
    switch (type) {
    case MT_QTYPE_F32: if (n) memcpy(dst, src, n * 4); return;
    case MT_QTYPE_F16: for (size_t i = 0; i < n; i++) dst[i] = mt_f16_to_f32(mt_load_u16(src + 2 * i)); return;
    case MT_QTYPE_BF16: for (size_t i = 0; i < n; i++) dst[i] = mt_bf16_to_f32(mt_load_u16(src + 2 * i)); return;
    case MT_QTYPE_Q4_0: block = dequant_q4_0; break;
    case MT_QTYPE_Q4_1: block = dequant_q4_1; break;
    case MT_QTYPE_Q5_0: block = dequant_q5_0; break;
    case MT_QTYPE_Q5_1: block = dequant_q5_1; break;
    case MT_QTYPE_Q8_0: block = dequant_q8_0; break;
    case MT_QTYPE_Q2_K: block = dequant_q2_k; break;
    case MT_QTYPE_Q3_K: block = dequant_q3_k; break;
    case MT_QTYPE_Q4_K: block = dequant_q4_k; break;
    case MT_QTYPE_Q5_K: block = dequant_q5_k; break;
    case MT_QTYPE_Q6_K: block = dequant_q6_k; break;
    default: return;
    }
    for (size_t b = 0; b < n / s.block; b++) block(src + b * s.bytes, dst + b * s.block);
}

/* ---- quantizers (ggml's quantize_row_*_ref) ---- */

#define GROUP_MAX_EPS 1e-15f

static void put_f16(uint8_t *p, float v) {
    uint16_t h = mt_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* Round to nearest by the 1.5·2^23 trick, as ggml does (ties to even, |x| < 2^22). */
static int nearest_int(float x) {
    float v = x + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static int clamp_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static void quant_q8_0(const float *x, uint8_t *b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, d);
    for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

/* Q4_0/Q5_0: the scale maps the value of largest magnitude (sign included) to -8 / -16. */
static float signed_absmax(const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

static void quant_q4_0(const float *x, uint8_t *b) {
    float d = signed_absmax(x) / -8, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, d);
    for (int j = 0; j < 16; j++) {
        int q0 = (int8_t)(x[j] * id + 8.5f), q1 = (int8_t)(x[j + 16] * id + 8.5f);
        b[2 + j] = (uint8_t)((q0 < 15 ? q0 : 15) | (q1 < 15 ? q1 : 15) << 4);
    }
}

static void quant_q5_0(const float *x, uint8_t *b) {
    float d = signed_absmax(x) / -16, id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t qh = 0;
    put_f16(b, d);
    for (int j = 0; j < 16; j++) {
        int q0 = (int8_t)(x[j] * id + 16.5f), q1 = (int8_t)(x[j + 16] * id + 16.5f);
        q0 = q0 < 31 ? q0 : 31;
        q1 = q1 < 31 ? q1 : 31;
        b[6 + j] = (uint8_t)((q0 & 0x0f) | (q1 & 0x0f) << 4);
        qh |= (uint32_t)((q0 & 0x10) >> 4) << j;
        qh |= (uint32_t)((q1 & 0x10) >> 4) << (j + 16);
    }
    memcpy(b + 2, &qh, 4);
}

/* Q6_K's per-16 scale: the best of 19 trial scales around nmax / max by weighted least
 * squares (ggml's make_qx_quants, rmse_type 1: weights x^2). L gets q + nmax. */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q4_K's per-32 scale and min: 21 trial scales, each with the least-squares scale and min
 * for its rounding, weighted by av_x + |x| (ggml's make_qkx2_quants with rmin -1, rdelta
 * 0.1, nstep 20, squared error). Returns the scale; *the_min gets minus the offset. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min) {
    const float rmin = -1.0f, rdelta = 0.1f;
    const int nstep = 20;
    uint8_t Laux[32];
    float min = x[0], max = x[0], sum_w = weights[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best_error = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * L[i] + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

static void quant_q4_k(const float *x, uint8_t *b) {
    uint8_t L[QK_K], *scales_out = b + 4, *q = b + 16;
    float weights[32], mins[8], scales[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j]);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(scales_out, 0, 12);
    for (int j = 0; j < 8; j++) {
        /* ggml stores nearest_int in a uint8_t before clamping to 63: keep that wrap-around */
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]), lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = (uint8_t)((ls & 0x0f) | ((lm & 0x0f) << 4));
            scales_out[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales_out[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    put_f16(b, max_scale / 63.f);
    put_f16(b + 2, max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        scale_min_k4(j, scales_out, &sc, &m);
        float d = f16_at(b) * sc;
        if (d == 0.0f) continue;
        float dm = f16_at(b + 2) * m;
        for (int i = 0; i < 32; i++) L[32 * j + i] = (uint8_t)clamp_int(nearest_int((x[32 * j + i] + dm) / d), 0, 15);
    }
    for (int j = 0; j < QK_K; j += 64, q += 32)
        for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
}

static void quant_q6_k(const float *x, uint8_t *b) {
    int8_t L[QK_K];
    float scales[16], max_scale = 0, max_abs_scale = 0;
    uint8_t *ql = b, *qh = b + 128;
    int8_t *sc = (int8_t *)(b + 192);
    for (int ib = 0; ib < 16; ib++) {
        scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
        if (fabsf(scales[ib]) > max_abs_scale) {
            max_abs_scale = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    memset(b, 0, 210);
    if (max_abs_scale < GROUP_MAX_EPS) return; /* all zeros, d = +0 */
    float iscale = -128.f / max_scale;
    put_f16(b + 208, 1 / iscale);
    for (int ib = 0; ib < 16; ib++) {
        int v = nearest_int(iscale * scales[ib]);
        sc[ib] = (int8_t)(v < 127 ? v : 127);
    }
    for (int j = 0; j < 16; j++) {
        float d = f16_at(b + 208) * sc[j];
        if (d == 0.0f) continue;
        for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(clamp_int(nearest_int(x[16 * j + i] / d), -32, 31) + 32);
    }
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
        for (int l = 0; l < 32; l++) {
            uint8_t q1 = L[j + l] & 0xf, q2 = L[j + l + 32] & 0xf, q3 = L[j + l + 64] & 0xf, q4 = L[j + l + 96] & 0xf;
            ql[l] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                              ((L[j + l + 96] >> 4) << 6));
        }
}

int mt_qtype_can_quantize(uint32_t type) {
    switch (type) {
    case MT_QTYPE_F32: case MT_QTYPE_F16: case MT_QTYPE_BF16: case MT_QTYPE_Q8_0: case MT_QTYPE_Q4_0:
    case MT_QTYPE_Q5_0: case MT_QTYPE_Q4_K: case MT_QTYPE_Q6_K: return 1;
    default: return 0;
    }
}

void mt_quantize(uint32_t type, const float *src, uint8_t *dst, size_t n) {
    void (*block)(const float *, uint8_t *) = NULL;
    switch (type) {
    case MT_QTYPE_F32: if (n) memcpy(dst, src, n * 4); return;
    case MT_QTYPE_F16:
    case MT_QTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = type == MT_QTYPE_F16 ? mt_f32_to_f16(src[i]) : mt_f32_to_bf16(src[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
        return;
    case MT_QTYPE_Q8_0: block = quant_q8_0; break;
    case MT_QTYPE_Q4_0: block = quant_q4_0; break;
    case MT_QTYPE_Q5_0: block = quant_q5_0; break;
    case MT_QTYPE_Q4_K: block = quant_q4_k; break;
    case MT_QTYPE_Q6_K: block = quant_q6_k; break;
    default: return;
    }
    mt_qtype_size s = mt_qtype_size_of(type);
    for (size_t b = 0; b < n / s.block; b++) block(src + b * s.block, dst + b * s.bytes);
}

typedef struct {
    uint32_t type;
    const float *src, *x, *xsum;
    uint8_t *dst;
    const uint8_t *w;
    float *out;
    size_t rows, cols;
    int avx2;
} quant_job;

#define QUANT_ROWS 16 /* rows a task */

static void quantize_task(void *p, int task, int tid) {
    const quant_job *j = p;
    (void)tid;
    size_t row_bytes = mt_qtype_bytes(j->type, j->cols), r1 = ((size_t)task + 1) * QUANT_ROWS;
    for (size_t r = (size_t)task * QUANT_ROWS; r < r1 && r < j->rows; r++)
        mt_quantize(j->type, j->src + r * j->cols, j->dst + r * row_bytes, j->cols);
}

void mt_quantize_rows(uint32_t type, const float *src, uint8_t *dst, size_t rows, size_t cols) {
    quant_job j = {.type = type, .src = src, .dst = dst, .rows = rows, .cols = cols};
    mt_parallel_if(rows * cols > 65536, (int)((rows + QUANT_ROWS - 1) / QUANT_ROWS), quantize_task, &j);
}

/* ---- matrix-vector products on the blocks (decoding) ---- */

/* Σ_i row[i]·x[i] for one row of n values: each block is dequantized into registers-sized
 * scratch (exactly mt_dequantize's values) and multiplied there, so the f32 matrix never
 * exists; the sums run in 8 lanes, which the compiler turns into one AVX2 register in the
 * x86-64-v3 clone (n is a multiple of 8: every block is). */
#if defined(__GNUC__) && defined(__x86_64__)
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
#define HSUM8(a) ((((a)[0] + (a)[4]) + ((a)[1] + (a)[5])) + (((a)[2] + (a)[6]) + ((a)[3] + (a)[7])))
HOT float block_dot(const float *restrict y, const float *restrict x, int n) {
    v8f a = {0};
    for (int i = 0; i < n; i += 8) {
        v8f yv, xv;
        memcpy(&yv, y + i, 32), memcpy(&xv, x + i, 32);
        a += yv * xv;
    }
    return HSUM8(a);
}
/* the 8 int8 quants at q widened to floats */
#define WIDEN8(q) __builtin_convertvector(((v8i){(int8_t)(q)[0], (int8_t)(q)[1], (int8_t)(q)[2], (int8_t)(q)[3], \
                                                 (int8_t)(q)[4], (int8_t)(q)[5], (int8_t)(q)[6], (int8_t)(q)[7]}), v8f)
#endif

/* Q8_0 multiplies the int8 quants by x and scales the block's sum once. */
HOT float row_dot_q8_0(const uint8_t *row, const float *x, size_t n) {
    float sum = 0;
    for (size_t b = 0; b < n / 32; b++, row += 34, x += 32) {
        v8f a = {0};
        for (int j = 0; j < 32; j += 8) {
            v8f xv;
            memcpy(&xv, x + j, 32);
            a += WIDEN8(row + 2 + j) * xv;
        }
        sum += f16_at(row) * HSUM8(a);
    }
    return sum;
}

/* The other types: each block dequantized into y (L1-resident), then a vector dot. */
#define ROW_DOT(name, dequant, BLOCK, BYTES)                                                                      \
    HOT float name(const uint8_t *row, const float *x, size_t n) {                                 \
        float y[BLOCK], sum = 0;                                                                              \
        for (size_t b = 0; b < n / (BLOCK); b++) {                                                            \
            dequant(row + b * (BYTES), y);                                                                    \
            sum += block_dot(y, x + b * (BLOCK), BLOCK);                                                      \
        }                                                                                                     \
        return sum;                                                                                           \
    }
ROW_DOT(row_dot_q4_0, dequant_q4_0, 32, 18)
ROW_DOT(row_dot_q4_1, dequant_q4_1, 32, 20)
ROW_DOT(row_dot_q5_0, dequant_q5_0, 32, 22)
ROW_DOT(row_dot_q5_1, dequant_q5_1, 32, 24)
ROW_DOT(row_dot_q2_k, dequant_q2_k, QK_K, 84)
ROW_DOT(row_dot_q3_k, dequant_q3_k, QK_K, 110)
ROW_DOT(row_dot_q4_k, dequant_q4_k, QK_K, 144)
ROW_DOT(row_dot_q5_k, dequant_q5_k, QK_K, 176)
ROW_DOT(row_dot_q6_k, dequant_q6_k, QK_K, 210)

HOT float row_dot(uint32_t type, const uint8_t *row, const float *x, size_t n) {
    switch (type) {
    case MT_QTYPE_Q8_0: return row_dot_q8_0(row, x, n);
    case MT_QTYPE_Q4_0: return row_dot_q4_0(row, x, n);
    case MT_QTYPE_Q4_1: return row_dot_q4_1(row, x, n);
    case MT_QTYPE_Q5_0: return row_dot_q5_0(row, x, n);
    case MT_QTYPE_Q5_1: return row_dot_q5_1(row, x, n);
    case MT_QTYPE_Q2_K: return row_dot_q2_k(row, x, n);
    case MT_QTYPE_Q3_K: return row_dot_q3_k(row, x, n);
    case MT_QTYPE_Q4_K: return row_dot_q4_k(row, x, n);
    case MT_QTYPE_Q5_K: return row_dot_q5_k(row, x, n);
    case MT_QTYPE_Q6_K: return row_dot_q6_k(row, x, n);
    default: return 0; /* F32/F16/BF16 sites never reach here: the loader keeps only block types */
    }
}

MT_SIMD_CLONES
static void rows_dot(uint32_t type, float *out, const float *x, const uint8_t *w, size_t K, int n0, int n1) {
    size_t row_bytes = mt_qtype_bytes(type, K);
    for (int n = n0; n < n1; n++) out[n] = row_dot(type, w + (size_t)n * row_bytes, x, K);
}

#if defined(__GNUC__) && defined(__x86_64__)
/* rows n0..n1 through the AVX2 kernels (quant_avx2.c) for the types they cover; 0 for others */
static int rows_dot_avx2(uint32_t type, float *out, const float *x, const float *xsum, const uint8_t *w, size_t K,
                         int n0, int n1) {
    size_t rb = mt_qtype_bytes(type, K);
    switch (type) {
    case MT_QTYPE_Q8_0: for (int n = n0; n < n1; n++) out[n] = mt_row_dot_q8_0_avx2(w + n * rb, x, K); return 1;
    case MT_QTYPE_Q4_0: for (int n = n0; n < n1; n++) out[n] = mt_row_dot_q4_0_avx2(w + n * rb, x, K); return 1;
    case MT_QTYPE_Q5_0: for (int n = n0; n < n1; n++) out[n] = mt_row_dot_q5_0_avx2(w + n * rb, x, K); return 1;
    case MT_QTYPE_Q6_K: for (int n = n0; n < n1; n++) out[n] = mt_row_dot_q6_k_avx2(w + n * rb, x, K); return 1;
    case MT_QTYPE_Q4_K:
        if (!xsum) return 0;
        for (int n = n0; n < n1; n++) out[n] = mt_row_dot_q4_k_avx2(w + n * rb, x, xsum, K);
        return 1;
    default: return 0;
    }
}
#else
static int rows_dot_avx2(uint32_t type, float *out, const float *x, const float *xsum, const uint8_t *w, size_t K,
                         int n0, int n1) {
    (void)type, (void)out, (void)x, (void)xsum, (void)w, (void)K, (void)n0, (void)n1;
    return 0;
}
#endif

static void quant_matvec_task(void *p, size_t n0, size_t n1, int tid) {
    const quant_job *j = p;
    (void)tid;
    if (!j->avx2 || !rows_dot_avx2(j->type, j->out, j->x, j->xsum, j->w, j->cols, (int)n0, (int)n1))
        rows_dot(j->type, j->out, j->x, j->w, j->cols, (int)n0, (int)n1);
}

void mt_quant_matvec(uint32_t type, float *out, const float *x, const uint8_t *w, int K, int N) {
    int avx2 = mt_quant_avx2_usable();
    float *xsum = NULL; /* Σx per 32 values, for the types whose blocks carry an offset */
    if (avx2 && type == MT_QTYPE_Q4_K && (xsum = malloc((size_t)K / 32 * sizeof(float))))
        for (int i = 0; i < K / 32; i++) {
            float s = 0;
            for (int j = 0; j < 32; j++) s += x[32 * i + j];
            xsum[i] = s;
        }
    quant_job j = {.type = type, .out = out, .x = x, .xsum = xsum, .w = w, .cols = (size_t)K, .avx2 = avx2};
    mt_parallel_range((size_t)N, (size_t)N * K >= 65536, quant_matvec_task, &j);
    free(xsum);
}
