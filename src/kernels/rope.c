/* Rotary position embeddings in both weight layouts: interleaved pairs (x[2i], x[2i+1]) as
 * llama2.c and GGUF store Q/K, and rotate-half pairs (x[i], x[i + d/2]) as Hugging Face does.
 * Frequencies follow theta^(-2i/d), with Llama 3's piecewise scaling when configured. The
 * backward is the rotation by -angle (a rotation's transpose). The rotations are compiled in
 * float here and in double by kernels_f64.c (see real.h); the tables are float only. */
#include "kernels/kernels.h"
#include "kernels/pool.h"
#include "core/error.h"
#include <math.h>
#include <stdlib.h>
#include "kernels/real.h"

#ifndef MT_REAL_DOUBLE

static double llama3_scaled(const mt_config *c, double inv_freq) {
    const double two_pi = 6.283185307179586;
    double low_wavelen = c->rope_original_max_pos / c->rope_low_freq_factor;
    double high_wavelen = c->rope_original_max_pos / c->rope_high_freq_factor;
    double wavelen = two_pi / inv_freq;
    if (wavelen < high_wavelen) return inv_freq;
    if (wavelen > low_wavelen) return inv_freq / c->rope_factor;
    double smooth = (c->rope_original_max_pos / wavelen - c->rope_low_freq_factor) /
                    (c->rope_high_freq_factor - c->rope_low_freq_factor);
    return (1.0 - smooth) * inv_freq / c->rope_factor + smooth * inv_freq;
}

mt_status mt_rope_tables(const mt_config *c, int n_pos, float **cos_out, float **sin_out) {
    int half = c->head_dim / 2;
    float *ct = malloc((size_t)n_pos * half * sizeof(float));
    float *st = malloc((size_t)n_pos * half * sizeof(float));
    if (!ct || !st) {
        free(ct);
        free(st);
        return mt_error(MT_ERR_NOMEM, "out of memory for RoPE tables");
    }
    for (int i = 0; i < half; i++) {
        /* float exponent as PyTorch computes inv_freq (arange(0, d, 2).float() / d) */
        double inv_freq = 1.0 / pow((double)c->rope_theta, (double)(2 * i) / c->head_dim);
        if (c->rope_scaling == MT_ROPE_SCALING_LLAMA3) inv_freq = llama3_scaled(c, inv_freq);
        for (int p = 0; p < n_pos; p++) {
            double a = (double)p * inv_freq;
            ct[(size_t)p * half + i] = (float)cos(a);
            st[(size_t)p * half + i] = (float)sin(a);
        }
    }
    *cos_out = ct;
    *sin_out = st;
    return MT_OK;
}
#endif

/* Rotates every head of every row by its position's angles; sign -1 rotates backwards. */
typedef struct {
    real *x;
    const int *pos;
    int n_heads, head_dim, interleaved;
    const float *cos_t, *sin_t;
    real sign;
} R(rope_job);

static void R(rope_task)(void *p, size_t r0, size_t r1, int tid) {
    const R(rope_job) *j = p;
    (void)tid;
    int n_heads = j->n_heads, head_dim = j->head_dim, half = head_dim / 2;
    /* element pair (a, b) of rotation i: interleaved (2i, 2i+1), rotate-half (i, i+half) */
    int stride_i = j->interleaved ? 2 : 1, offset_b = j->interleaved ? 1 : half;
    const float *cos_t = j->cos_t, *sin_t = j->sin_t;
    const int *pos = j->pos;
    real *x = j->x, sign = j->sign;
    for (size_t r = r0; r < r1; r++) {
        int t = (int)(r / (size_t)n_heads), h = (int)(r % (size_t)n_heads);
        {
            real *v = x + ((size_t)t * n_heads + h) * head_dim;
            const float *c = cos_t + (size_t)pos[t] * half, *s = sin_t + (size_t)pos[t] * half;
            for (int i = 0; i < half; i++) {
                real *a = v + i * stride_i, *b = a + offset_b;
                real x0 = *a, x1 = *b, si = sign * s[i];
                *a = x0 * c[i] - x1 * si;
                *b = x0 * si + x1 * c[i];
            }
        }
    }
}

static void rope_rotate(real *x, const int *pos, int T, int n_heads, int head_dim, int interleaved,
                        const float *cos_t, const float *sin_t, real sign) {
    R(rope_job) j = {x, pos, n_heads, head_dim, interleaved, cos_t, sin_t, sign};
    mt_parallel_range((size_t)T * n_heads, T > 1, R(rope_task), &j);
}

void R(mt_rope_forward)(real *x, const int *pos, int T, int n_heads, int head_dim, int interleaved,
                        const float *cos_t, const float *sin_t) {
    rope_rotate(x, pos, T, n_heads, head_dim, interleaved, cos_t, sin_t, 1);
}

void R(mt_rope_backward)(real *dx, const int *pos, int T, int n_heads, int head_dim, int interleaved,
                         const float *cos_t, const float *sin_t) {
    rope_rotate(dx, pos, T, n_heads, head_dim, interleaved, cos_t, sin_t, -1);
}
