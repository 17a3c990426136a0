/* The packed micro-batch the whole-model gradient tests share: MB rows of MT tokens holding
 * several documents (doc ids and positions inside each document), and the double-precision
 * loss of a training state on it, for finite differences. Each test keeps its own mask. */
#ifndef MT_TESTS_MODEL_BATCH_H
#define MT_TESTS_MODEL_BATCH_H
#include <stdio.h>
#include "memtune.h"
#include "model/train_model.h"

enum { MB = 2, MT = 6 };
static const int model_doc[MB * MT] = {0, 0, 0, 1, 1, 1, 4, 4, 4, 4, 4, 7};
static const int model_pos[MB * MT] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 4, 0};

typedef struct {
    mt_train_state_f64 *s;
    int inputs[MB * MT], targets[MB * MT];
    double scale;
} model_ctx;

/* scale * Σ NLL of the batch in c, from the double training forward */
static inline double model_loss(model_ctx *c) {
    double nll = 0;
    if (mt_train_forward_f64(c->s, c->inputs, c->targets, model_pos, model_doc, c->scale, &nll, NULL))
        fprintf(stderr, "forward failed: %s\n", mt_last_error());
    return c->scale * nll;
}
#endif
