#include "model/sampler.h"
#include "core/check.h"
#include "kernels/kernels.h"
#include <limits.h>
#include <math.h>
#include <stdlib.h>

mt_status mt_generate_options_validate(const mt_generate_options *o) {
    mt_status s;
    if (!o) return MT_OK;
    if ((s = mt_check_int("--max-new-tokens", o->max_new_tokens, 0, INT_MAX)) ||
        (s = mt_check_real("--temperature", o->temperature, 0, MT_MAX_TEMPERATURE)) ||
        (s = mt_check_int("--top-k", o->top_k, 0, INT_MAX)) || (s = mt_check_real("--top-p", o->top_p, 0, 1)))
        return s;
    return MT_OK;
}

int mt_sampler_init(mt_sampler *s, int vocab_size, float temperature, int top_k, float top_p, uint64_t seed) {
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->rng_state = seed ? seed : 1;
    s->constraint = (mt_sampler_constraint){0};
    s->candidates = malloc((size_t)vocab_size * sizeof(mt_prob_index));
    return s->candidates != NULL;
}

void mt_sampler_free(mt_sampler *s) {
    free(s->candidates);
    s->candidates = NULL;
}

/* xorshift* as in llama2.c run.c */
static uint32_t random_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float random_f32(uint64_t *state) { return (random_u32(state) >> 8) / 16777216.0f; }

int mt_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int sample_multinomial(const float *probs, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += probs[i];
        if (coin < cdf) return i;
    }
    return n - 1;
}

static int by_prob_desc(const void *a, const void *b) {
    float pa = ((const mt_prob_index *)a)->prob, pb = ((const mt_prob_index *)b)->prob;
    return (pa < pb) - (pa > pb);
}

/* Smallest set of most likely tokens whose probability exceeds top_p. Tokens below
 * (1 - top_p) / (n - 1) cannot be in that set and are dropped before sorting. */
static int sample_top_p(mt_sampler *s, const float *probs, float coin) {
    int n = s->vocab_size, n0 = 0;
    float cutoff = (1.0f - s->top_p) / (n - 1);
    for (int i = 0; i < n; i++)
        if (probs[i] >= cutoff) {
            s->candidates[n0].index = i;
            s->candidates[n0++].prob = probs[i];
        }
    if (n0 == 0) return mt_argmax(probs, n); /* top_p so small that no token reaches the cutoff */
    qsort(s->candidates, (size_t)n0, sizeof(mt_prob_index), by_prob_desc);
    float cumulative = 0.0f;
    int last = n0 - 1;
    for (int i = 0; i < n0; i++) {
        cumulative += s->candidates[i].prob;
        if (cumulative > s->top_p) {
            last = i;
            break;
        }
    }
    float r = coin * cumulative, cdf = 0.0f;
    for (int i = 0; i <= last; i++) {
        cdf += s->candidates[i].prob;
        if (r < cdf) return s->candidates[i].index;
    }
    return s->candidates[last].index;
}

/* Zero all but the k most likely tokens and renormalise. */
static void apply_top_k(mt_sampler *s, float *probs) {
    int n = s->vocab_size;
    if (s->top_k <= 0 || s->top_k >= n) return;
    for (int i = 0; i < n; i++) {
        s->candidates[i].index = i;
        s->candidates[i].prob = probs[i];
    }
    qsort(s->candidates, (size_t)n, sizeof(mt_prob_index), by_prob_desc);
    double kept = 0.0;
    for (int i = 0; i < s->top_k; i++) kept += s->candidates[i].prob;
    for (int i = s->top_k; i < n; i++) probs[s->candidates[i].index] = 0.0f;
    for (int i = 0; i < n; i++) probs[i] = (float)(probs[i] / kept);
}

static int sample_unconstrained(mt_sampler *s, float *logits) {
    /* tokens a constraint masked are -inf: the range is that of the others */
    float lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < s->vocab_size; i++) {
        if (logits[i] == -INFINITY) continue;
        lo = fminf(lo, logits[i]);
        hi = fmaxf(hi, logits[i]);
    }
    /* a temperature so small that the logits overflow samples the most likely token anyway */
    if (!(s->temperature > 0.0f) || !isfinite(hi / s->temperature) || !isfinite(lo / s->temperature))
        return mt_argmax(logits, s->vocab_size);
    for (int i = 0; i < s->vocab_size; i++) logits[i] /= s->temperature;
    mt_softmax_inplace(logits, s->vocab_size);
    apply_top_k(s, logits);
    float coin = random_f32(&s->rng_state);
    if (s->top_p > 0.0f && s->top_p < 1.0f) return sample_top_p(s, logits, coin);
    return sample_multinomial(logits, s->vocab_size, coin);
}

int mt_sampler_sample(mt_sampler *s, float *logits) {
    /* NaN or inf logits have no distribution to sample from (and NaN would send top-p past
     * the end of its candidates): refuse them, the caller reports it */
    for (int i = 0; i < s->vocab_size; i++)
        if (!isfinite(logits[i])) return -1;
    const mt_sampler_constraint *c = &s->constraint;
    if (c->mask && c->allows && !(s->temperature > 0.0f)) { /* greedy: the best token, if the constraint allows it */
        int best = mt_argmax(logits, s->vocab_size), ok = c->allows(c->ctx, best);
        if (ok < 0) return -2;
        if (ok) return c->accept && c->accept(c->ctx, best) ? -2 : best;
    }
    if (c->mask && c->mask(c->ctx, logits, s->vocab_size)) return -2;
    int token = sample_unconstrained(s, logits);
    /* multinomial rounding can fall off the end onto a masked token (probability 0) */
    if (c->mask && s->temperature > 0.0f && !(logits[token] > 0.0f)) token = mt_argmax(logits, s->vocab_size);
    if (c->accept && c->accept(c->ctx, token)) return -2;
    return token;
}
