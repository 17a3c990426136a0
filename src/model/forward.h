/* Inference forward pass with a KV cache. */
#ifndef MT_MODEL_FORWARD_H
#define MT_MODEL_FORWARD_H
#include "model/model.h"

/* Runs ids[0..T) at positions pos..pos+T-1 (the cache must hold positions < pos). Writes
 * logits for every row to logits[T*vocab] when all_logits, else only the last row's to
 * logits[vocab]. */
mt_status mt_forward(mt_model *m, const int *ids, int T, int pos, float *logits, int all_logits);
/* Context length of the inference state: mt_model_set_context's, else the model's capped at
 * 4096 so KV caches of long-context models stay small. */
int mt_infer_context(const mt_model *m);
void mt_infer_free(mt_model *m);

#endif
