/* Range checks of every numeric training option, before anything is loaded or allocated.
 * The C API is as untrusted as the command line: a NaN learning rate, a negative expert
 * count or a billion-token row is refused here, with one message per option naming it (as
 * the CLI spells it), the value and the allowed range (core/check.h). Zero keeps meaning
 * "the default" where the header says so. */
#include "core/check.h"
#include "core/error.h"
#include "model/model.h"
#include <limits.h>

#define CHECK_INT(name, v, lo, hi) if ((s = mt_check_int(name, v, lo, hi))) return s
#define CHECK_REAL(name, v, lo, hi) if ((s = mt_check_real(name, v, lo, hi))) return s

mt_status mt_train_options_validate(const mt_model *m, const mt_train_options *o) {
    mt_status s;
    if (!o) return MT_OK;
    CHECK_INT("--epochs", o->epochs, 0, 1000000);
    CHECK_INT("--steps", o->steps, 0, INT_MAX);
    CHECK_REAL("--lr", o->lr, 0, 10);
    CHECK_INT("--batch", o->batch, 1, MT_MAX_BATCH);
    CHECK_INT("--grad-accum", o->grad_accum, 1, 65536);
    CHECK_INT("--seq-len", o->seq_len, 0, m ? m->cfg.max_seq_len : MT_MAX_CONTEXT);
    CHECK_INT("--warmup", o->warmup, 0, INT_MAX);
    CHECK_REAL("--weight-decay", o->weight_decay, 0, 10);
    CHECK_REAL("--clip", o->clip, 0, 1e6);
    CHECK_INT("--eval-every", o->eval_every, -1, INT_MAX); /* -1: ten evals per run */
    CHECK_INT("--save-every", o->save_every, 0, INT_MAX);
    CHECK_INT("--log-every", o->log_every, 0, INT_MAX);
    CHECK_INT("--keep-checkpoints", o->keep_checkpoints, 0, 1000000);
    CHECK_INT("--threads", o->threads, 0, MT_MAX_THREADS);
    CHECK_INT("n_data", o->n_data, 0, o->data ? INT_MAX : 0);
    CHECK_INT("--rank", o->lora_rank, 1, 65536);
    CHECK_REAL("--alpha", o->lora_alpha, 0, 1e6);
    CHECK_REAL("--dropout", o->lora_dropout, 0, 0.99);
    CHECK_INT("--experts", o->experts, 0, MT_MAX_EXPERTS);
    CHECK_INT("--expert-k", o->expert_k, 1, 1024);
    CHECK_INT("--expert-heads", o->expert_heads, 1, 256);
    CHECK_INT("--expert-context", o->expert_context, 0, 4096);
    CHECK_REAL("--tau", o->tau, 1e-6, 100);
    CHECK_REAL("--general-limit", o->general_limit, 1, 1000);
    CHECK_REAL("--general-weight", o->general_weight, 0, 1000);
    CHECK_INT("--check-every", o->check_every, 0, INT_MAX);
    CHECK_REAL("--rehearsal-weight", o->rehearsal_weight, 0, 1000);
    /* the batch buffers hold grad_accum * batch * seq_len tokens: keep that addressable */
    if (m && (long long)o->grad_accum * o->batch * (o->seq_len > 0 ? o->seq_len : m->cfg.max_seq_len) > MT_MAX_BATCH_TOKENS)
        return mt_error(MT_ERR_ARG, "--grad-accum %d x --batch %d x --seq-len %d: more than %d tokens per step",
                        o->grad_accum, o->batch, o->seq_len > 0 ? o->seq_len : m->cfg.max_seq_len, MT_MAX_BATCH_TOKENS);
    return MT_OK;
}
