/* Forward kernels against simple double-precision references, and the two RoPE layouts
 * against each other through the Q/K row permutation. */
#include "test.h"
#include "core/rng.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "model/sampler.h"
#include "kernels/simd.h"

static void randn(float *x, size_t n, mt_rng *r) { for (size_t i = 0; i < n; i++) x[i] = mt_rng_normal(r); }

TEST(matmul_matches_naive_for_gemm_and_gemv) {
    mt_rng r; mt_rng_seed(&r, 1);
    enum { T = 5, K = 37, N = 23 };
    float x[T * K], w[N * K], b[N], out[T * N], out1[N];
    randn(x, T * K, &r); randn(w, N * K, &r); randn(b, N, &r);
    mt_matmul_forward(out, x, w, b, T, K, N);
    mt_matmul_forward(out1, x, w, b, 1, K, N);
    double worst = 0;
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double s = b[n];
            for (int k = 0; k < K; k++) s += (double)x[t * K + k] * w[n * K + k];
            worst = fmax(worst, fabs(s - out[t * N + n]));
            if (t == 0) worst = fmax(worst, fabs(s - out1[n]));
        }
    CHECK_MSG(worst < 1e-4, "max diff %.3g", worst);
}

/* decode's own matrix-vector kernel (matvec.c, used for N·K >= 65536): row lengths with
 * 8-float and scalar tails after the 32-float blocks (301), one shorter than a block (17),
 * and an exact multiple (1024), against a double-precision dot product */
TEST(matvec_matches_naive_for_large_shapes) {
    mt_rng r; mt_rng_seed(&r, 11);
    const int shapes[][2] = {{263, 301}, {4100, 17}, {96, 1024}};
    for (int s = 0; s < 3; s++) {
        int N = shapes[s][0], K = shapes[s][1];
        float *x = malloc((size_t)K * sizeof(float)), *w = malloc((size_t)N * K * sizeof(float));
        float *b = malloc((size_t)N * sizeof(float)), *out = malloc((size_t)N * sizeof(float));
        randn(x, K, &r); randn(w, (size_t)N * K, &r); randn(b, N, &r);
        mt_matmul_forward(out, x, w, b, 1, K, N);
        double worst = 0;
        for (int n = 0; n < N; n++) {
            double sum = b[n];
            for (int k = 0; k < K; k++) sum += (double)x[k] * w[(size_t)n * K + k];
            worst = fmax(worst, fabs(sum - out[n]) / (1 + fabs(sum)));
        }
        CHECK_MSG(worst < 1e-5, "N=%d K=%d: max relative diff %.3g", N, K, worst);
        free(x), free(w), free(b), free(out);
    }
}

TEST(rmsnorm_matches_naive) {
    mt_rng r; mt_rng_seed(&r, 2);
    enum { T = 3, C = 50 };
    float x[T * C], w[C], out[T * C];
    randn(x, T * C, &r); randn(w, C, &r);
    mt_rmsnorm_forward(out, x, w, T, C, 1e-5f);
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int i = 0; i < C; i++) ss += (double)x[t * C + i] * x[t * C + i];
        double inv = 1 / sqrt(ss / C + 1e-5);
        for (int i = 0; i < C; i++) CHECK_NEAR(out[t * C + i], x[t * C + i] * inv * w[i], 1e-5);
    }
}

TEST(rope_layouts_agree_through_row_permutation) {
    mt_config c = {0};
    c.dim = 32; c.n_heads = 2; c.head_dim = 16; c.rope_theta = 10000;
    mt_rng r; mt_rng_seed(&r, 3);
    float *ct, *st;
    CHECK_OK(mt_rope_tables(&c, 40, &ct, &st));
    enum { T = 3, D = 32 };
    float hf[T * D], il[T * D], back[T * D];
    randn(hf, T * D, &r);
    /* treat each row as a [2 heads x 16] "weight" with one column */
    for (int t = 0; t < T; t++) mt_permute_qk_rows(il + t * D, hf + t * D, 2, 16, 1, 1);
    int pos[T] = {0, 7, 39};
    mt_rope_forward(hf, pos, T, 2, 16, 0, ct, st);
    mt_rope_forward(il, pos, T, 2, 16, 1, ct, st);
    for (int t = 0; t < T; t++) mt_permute_qk_rows(back + t * D, il + t * D, 2, 16, 1, 0);
    for (int i = 0; i < T * D; i++) CHECK_NEAR(back[i], hf[i], 1e-6);
    /* position 0 is the identity; position 7 rotates pair 0 by exactly 7 radians */
    CHECK_NEAR(ct[7 * 8 + 0], cos(7.0), 1e-6);
    CHECK_NEAR(st[7 * 8 + 0], sin(7.0), 1e-6);
    free(ct); free(st);
}

TEST(llama3_rope_scaling_divides_low_frequencies) {
    mt_config c = {0};
    c.head_dim = 32; c.rope_theta = 500000; c.rope_scaling = MT_ROPE_SCALING_LLAMA3;
    c.rope_factor = 8; c.rope_low_freq_factor = 1; c.rope_high_freq_factor = 4; c.rope_original_max_pos = 64;
    float *ct, *st;
    CHECK_OK(mt_rope_tables(&c, 2, &ct, &st));
    /* position 1: angle = inv_freq. Pair 0 (wavelen 2*pi < 16) is unscaled; the last pair
     * (wavelen far above 64) is divided by the factor. */
    double inv0 = 1.0, inv15 = 1.0 / pow(500000.0, 30.0 / 32.0) / 8.0;
    CHECK_NEAR(atan2(st[16 + 0], ct[16 + 0]), inv0, 1e-6);
    CHECK_NEAR(atan2(st[16 + 15], ct[16 + 15]), inv15, 1e-9);
    free(ct); free(st);
}

/* the worst |difference| between mt_attention_cached_forward over a cache of P0 + T rows
 * and a double-precision softmax(q·k/sqrt(hd))·v of every row t over keys [0, P0 + t] */
static double cached_attention_error(int H, int KV, int HD, int P0, int T, unsigned seed) {
    mt_rng r; mt_rng_seed(&r, seed);
    int ctx = P0 + T;
    float *q = malloc((size_t)T * H * HD * sizeof(float)), *out = malloc((size_t)T * H * HD * sizeof(float));
    float *k = malloc((size_t)ctx * KV * HD * sizeof(float)), *v = malloc((size_t)ctx * KV * HD * sizeof(float));
    float *scratch = malloc(mt_attention_cached_scratch(mt_kernels_threads(), ctx, H, HD) * sizeof(float));
    double *s = malloc((size_t)ctx * sizeof(double)), worst = 0;
    randn(q, (size_t)T * H * HD, &r); randn(k, (size_t)ctx * KV * HD, &r); randn(v, (size_t)ctx * KV * HD, &r);
    mt_attention_cached_forward(out, q, k, v, T, P0, H, KV, HD, scratch);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            int kvh = h / (H / KV), n = P0 + t + 1;
            double mx = -1e300, z = 0;
            for (int j = 0; j < n; j++) {
                s[j] = 0;
                for (int d = 0; d < HD; d++) s[j] += (double)q[((size_t)t * H + h) * HD + d] * k[((size_t)j * KV + kvh) * HD + d];
                s[j] /= sqrt((double)HD);
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < n; j++) z += exp(s[j] - mx);
            for (int d = 0; d < HD; d++) {
                double o = 0;
                for (int j = 0; j < n; j++) o += exp(s[j] - mx) / z * v[((size_t)j * KV + kvh) * HD + d];
                worst = fmax(worst, fabs(out[((size_t)t * H + h) * HD + d] - o));
            }
        }
    free(q), free(out), free(k), free(v), free(scratch), free(s);
    return worst;
}

/* small heads (a dot per key), and wider ones: one decoded row (decode.c: serial and threaded,
 * head_dim 40, 48, 64, 80 = 64 + 16, 20 = 16 + a scalar tail, 128; key counts with partial blocks
 * and partial groups of four), prompt chunks in 64-row blocks starting at a cache position
 * that is not a multiple of 64, a chunk longer than one block, and a chunk from position 0 */
TEST(cached_gqa_attention_matches_naive) {
    const int cases[][5] = {/* H, KV, HD, P0, T */
                            {4, 2, 8, 3, 4},   {6, 2, 40, 0, 1},  {6, 2, 40, 150, 1}, {6, 3, 40, 500, 1},
                            {6, 2, 40, 70, 100}, {4, 4, 24, 0, 64}, {6, 2, 40, 5, 3},  {6, 2, 64, 300, 1},
                            {4, 2, 80, 100, 1}, {4, 2, 20, 90, 1},  {8, 2, 128, 40, 1}, {6, 6, 48, 200, 1}};
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        const int *c = cases[i];
        double err = cached_attention_error(c[0], c[1], c[2], c[3], c[4], 4 + i);
        CHECK_MSG(err < 1e-5, "H=%d KV=%d HD=%d P0=%d T=%d: max diff %.3g", c[0], c[1], c[2], c[3], c[4], err);
    }
}

/* The vectorised exp that the float kernels use, against libm over its whole range. */
TEST(vector_exp_is_within_3_ulp_of_libm) {
    double worst = 0;
    for (float x = -87.0f; x < 88.0f; x += 0.0137f) {
        double want = exp((double)x), got = mt_exp_approx(x);
        worst = fmax(worst, fabs(got - want) / want);
    }
    CHECK_MSG(worst < 3.6e-7, "max relative error %.3g", worst);
    CHECK(mt_exp_approx(0.0f) == 1.0f);
    CHECK(mt_exp_approx(-1000.0f) < 1e-37f && mt_exp_approx(-1000.0f) >= 0.0f);
}

static double rel_diff(const float *f, const double *d, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(f[i] - d[i]) / (1e-3 + fabs(d[i])));
    return worst;
}

/* The float kernels (vectorised, fast exp, threads) against their double twins, which run
 * the plain arithmetic with libm's exp: SwiGLU, RMSNorm and cross-entropy, forward and
 * backward, on rows long enough for several work chunks. */
TEST(vectorised_float_kernels_match_double_twins) {
    mt_rng r; mt_rng_seed(&r, 11);
    enum { N = 40000, T = 7, C = 301, V = 5003 };
    float *f = malloc(6 * N * sizeof(float));
    double *d = malloc(6 * N * sizeof(double));
    for (int i = 0; i < 6 * N; i++) d[i] = f[i] = 3 * mt_rng_normal(&r);
    /* swiglu: inputs gate, up, dout = f[0..3N); outputs at 3N.. */
    mt_swiglu_forward(f + 3 * N, f, f + N, N);
    mt_swiglu_forward_f64(d + 3 * N, d, d + N, N);
    CHECK_MSG(rel_diff(f + 3 * N, d + 3 * N, N) < 1e-5, "swiglu forward %.3g", rel_diff(f + 3 * N, d + 3 * N, N));
    memset(f + 3 * N, 0, 2 * N * sizeof(float)); memset(d + 3 * N, 0, 2 * N * sizeof(double));
    mt_swiglu_backward(f + 3 * N, f + 4 * N, f + 2 * N, f, f + N, N);
    mt_swiglu_backward_f64(d + 3 * N, d + 4 * N, d + 2 * N, d, d + N, N);
    CHECK_MSG(rel_diff(f + 3 * N, d + 3 * N, 2 * N) < 2e-4, "swiglu backward %.3g", rel_diff(f + 3 * N, d + 3 * N, 2 * N));
    /* rmsnorm: x = [0, T*C), w = [N, N+C), dout = [2N, ..); out at 3N, dx at 4N, dw at 5N */
    float rf[T]; double rd[T];
    mt_rmsnorm_forward_save(f + 3 * N, rf, f, f + N, T, C, 1e-5f);
    mt_rmsnorm_forward_save_f64(d + 3 * N, rd, d, d + N, T, C, 1e-5f);
    CHECK(rel_diff(f + 3 * N, d + 3 * N, T * C) < 1e-5);
    memset(f + 4 * N, 0, 2 * N * sizeof(float)); memset(d + 4 * N, 0, 2 * N * sizeof(double));
    mt_rmsnorm_backward(f + 4 * N, f + 5 * N, f + 2 * N, f, f + N, rf, T, C);
    mt_rmsnorm_backward_f64(d + 4 * N, d + 5 * N, d + 2 * N, d, d + N, rd, T, C);
    CHECK(rel_diff(f + 4 * N, d + 4 * N, T * C) < 1e-4);
    CHECK(rel_diff(f + 5 * N, d + 5 * N, C) < 1e-4);
    /* cross-entropy over T rows of V logits (one row ignored); dlogits in place */
    int targets[T] = {5, 0, -100, V - 1, 17, 4000, 2};
    float lf[T]; double ld[T]; long nf, nd;
    double nll_f = mt_cross_entropy_forward(lf, f, targets, NULL, T, V, &nf);
    double nll_d = mt_cross_entropy_forward_f64(ld, d, targets, NULL, T, V, &nd);
    CHECK_INT_EQ(nf, nd);
    CHECK_NEAR(nll_f, nll_d, 1e-5 * fabs(nll_d));
    mt_cross_entropy_backward(f, f, lf, targets, NULL, 0.25, T, V);
    mt_cross_entropy_backward_f64(d, d, ld, targets, NULL, 0.25, T, V);
    double worst = 0;
    for (int i = 0; i < T * V; i++) worst = fmax(worst, fabs(f[i] - d[i]));
    CHECK_MSG(worst < 1e-6, "cross-entropy gradient differs by %.3g", worst);
    free(f); free(d);
}

TEST(sampler_greedy_topk_topp) {
    float logits[6] = {0.1f, 2.0f, 0.3f, 1.9f, -1.0f, 0.0f}, l2[6];
    mt_sampler s;
    CHECK(mt_sampler_init(&s, 6, 0.0f, 0, 1.0f, 1));
    memcpy(l2, logits, sizeof l2);
    CHECK_INT_EQ(mt_sampler_sample(&s, l2), 1);
    mt_sampler_free(&s);
    /* top-k 2 only ever returns the two most likely tokens */
    CHECK(mt_sampler_init(&s, 6, 1.0f, 2, 1.0f, 42));
    int seen[6] = {0};
    for (int i = 0; i < 400; i++) { memcpy(l2, logits, sizeof l2); seen[mt_sampler_sample(&s, l2)]++; }
    CHECK(seen[1] > 0 && seen[3] > 0 && seen[0] + seen[2] + seen[4] + seen[5] == 0);
    mt_sampler_free(&s);
    /* top-p tiny keeps only the argmax */
    CHECK(mt_sampler_init(&s, 6, 1.0f, 0, 0.01f, 5));
    for (int i = 0; i < 50; i++) { memcpy(l2, logits, sizeof l2); CHECK_INT_EQ(mt_sampler_sample(&s, l2), 1); }
    mt_sampler_free(&s);
    /* plain sampling visits every token eventually */
    CHECK(mt_sampler_init(&s, 6, 1.0f, 0, 1.0f, 9));
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 3000; i++) { memcpy(l2, logits, sizeof l2); seen[mt_sampler_sample(&s, l2)]++; }
    for (int i = 0; i < 6; i++) CHECK(seen[i] > 0);
    mt_sampler_free(&s);
}

int main(void) {
    mt_set_threads(2);
    RUN(matmul_matches_naive_for_gemm_and_gemv);
    RUN(matvec_matches_naive_for_large_shapes);
    RUN(rmsnorm_matches_naive);
    RUN(rope_layouts_agree_through_row_permutation);
    RUN(llama3_rope_scaling_divides_low_frequencies);
    RUN(cached_gqa_attention_matches_naive);
    RUN(vector_exp_is_within_3_ulp_of_libm);
    RUN(vectorised_float_kernels_match_double_twins);
    RUN(sampler_greedy_topk_topp);
    TEST_MAIN_END();
}
