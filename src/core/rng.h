/* Seeded random numbers (xoshiro256** seeded by splitmix64): reproducible across runs and
 * machines, and small enough to checkpoint (the whole state is four words). */
#ifndef MT_CORE_RNG_H
#define MT_CORE_RNG_H
#include <stdint.h>

typedef struct { uint64_t s[4]; } mt_rng;

void mt_rng_seed(mt_rng *r, uint64_t seed);
uint64_t mt_rng_next(mt_rng *r);
float mt_rng_uniform(mt_rng *r);     /* [0, 1) */
float mt_rng_normal(mt_rng *r);      /* N(0, 1) */
double mt_now_seconds(void);         /* monotonic clock */

#endif
