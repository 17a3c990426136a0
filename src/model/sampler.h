/* Token sampling: greedy, temperature, top-k, top-p, seeded. The random source and the
 * top-p rule are those of llama2.c's run.c, so a seeded run reproduces its published
 * samples token for token. */
#ifndef MT_MODEL_SAMPLER_H
#define MT_MODEL_SAMPLER_H
#include <stdint.h>

typedef struct { float prob; int index; } mt_prob_index;

/* A constraint on what may be sampled (a grammar, say): mask sets the logits of forbidden
 * tokens to -inf before sampling, accept is told the token that was picked. Each returns 0,
 * or -1 with mt_last_error() set, which makes mt_sampler_sample return -2. allows (optional)
 * says whether one token would survive the mask (1, 0, or -1 on an error): greedy sampling
 * then tries the most likely token first and builds the mask only when it is refused, which
 * picks the same token (the first maximum of the masked logits is that of the raw ones when
 * it is allowed). */
typedef struct {
    int (*mask)(void *ctx, float *logits, int vocab_size);
    int (*accept)(void *ctx, int token);
    void *ctx;
    int (*allows)(void *ctx, int token);
} mt_sampler_constraint;

typedef struct {
    int vocab_size;
    float temperature;
    int top_k;
    float top_p;
    uint64_t rng_state;
    mt_prob_index *candidates; /* [vocab_size] scratch */
    mt_sampler_constraint constraint; /* none when mask is NULL (mt_sampler_init) */
} mt_sampler;

int mt_sampler_init(mt_sampler *s, int vocab_size, float temperature, int top_k, float top_p, uint64_t seed);
void mt_sampler_free(mt_sampler *s);
/* Picks the next token from logits[vocab_size] (modified in place); -1 when a logit is NaN
 * or infinite (nothing to sample from: the caller reports the model's output as broken);
 * -2 when the constraint failed (mt_last_error says why). */
int mt_sampler_sample(mt_sampler *s, float *logits);
int mt_argmax(const float *x, int n);

#endif
