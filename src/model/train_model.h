/* The model's training pass: forward over a packed batch [B, T] that keeps every activation
 * the backward needs, masked cross-entropy, and the backward that accumulates parameter
 * gradients.
 *
 * A training state is made for one model and one batch shape. It holds (llm.c style) all
 * activations in one allocation whose size is computed in one function
 * (mt_train_state_bytes tells a --dry-run the cost before anything is allocated), and all
 * gradients in one allocation that mirrors the model's parameter layout: the gradient of the
 * tensor at model pointer p is grads + (p - m->params). Tied embeddings therefore get the
 * gradient of both uses (lookup and head) in the one embedding matrix.
 *
 * A step of gradient accumulation:
 *     mt_train_zero_grads(s);
 *     for each micro-batch:
 *         mt_train_forward(s, inputs, targets, pos, doc, 1.0 / total_targets, &nll, &n);
 *         mt_train_backward(s);          // grads += d(scale * Σ NLL)/d(params)
 *     optimizer step on m->params with s->grads
 *
 * Packed batches: row b holds several documents back to back; doc[b*T + t] names the
 * document of each token (documents are contiguous runs of equal ids; token t attends to
 * the tokens s <= t of its own run) and
 * pos[b*T + t] its position inside that document (RoPE uses it). targets[i] < 0 (-1, -100)
 * are not scored.
 *
 * Trainable flags: every tensor (in mt_model_tensors order, by its HF name) starts
 * trainable. A frozen tensor gets no weight gradient (its grads region stays as it is and no
 * GEMM is spent on it), while the gradients with respect to activations still flow through
 * it to everything below. A LoRA adapter freezes the base with
 * mt_train_set_trainable(s, NULL, 0) and receives activation gradients at its linear sites.
 *
 * Attention is tiled (kernels/attention.c): only a log-sum-exp per query row and head is
 * saved, never the T x T probabilities, so a state grows linearly in T.
 *
 * The double-precision twin (mt_train_state_f64, mt_train_create_f64, ...) runs the same
 * source text in double on an owned double copy of the parameters (s->params); it exists so
 * the whole model's gradient can be checked against finite differences (tests/test_grad.c).
 * In the float build s->params is m->params itself. */
#ifndef MT_MODEL_TRAIN_MODEL_H
#define MT_MODEL_TRAIN_MODEL_H
#include <stddef.h>
#include "kernels/kernels.h"
#include "model/model.h"

/* Batch limits, which also keep every size product far from overflowing size_t. */
#define MT_TRAIN_MAX_T (1 << 16)
#define MT_TRAIN_MAX_TOKENS (1 << 24) /* B * T */

/* Flags of a training state (mt_train_create_flags).
 * MT_TRAIN_RECOMPUTE: activation recomputation. The forward keeps only each layer's input
 * (the residual stream); the backward reruns a layer's forward from it just before that
 * layer's backward. Activation memory drops from n_layers layers' worth to one (plus the
 * residual stream) for about one more forward pass of compute. */
#define MT_TRAIN_RECOMPUTE 1

#define MT_TR_REAL float
#define MT_TR_FN(name) name
#include "model/train_model_decl.h"
#undef MT_TR_REAL
#undef MT_TR_FN
#define MT_TR_REAL double
#define MT_TR_FN(name) name##_f64
#include "model/train_model_decl.h"
#undef MT_TR_REAL
#undef MT_TR_FN

#endif
