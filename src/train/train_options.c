/* Range checks of every numeric training option, before anything is loaded or allocated.
 * The C API is as untrusted as the command line: a NaN learning rate, a negative expert
 * count or a billion-token row is refused here, with one message per option naming it (as
 * the CLI spells it), the value and the allowed range (core/check.h). Zero keeps meaning
 * "the default" where the header says so. */
/* Training options by name: the names and value syntax of `memtune train`'s flags
 * ("seq-len" = "64"), for callers that cannot lay out mt_train_options themselves (the
 * Python package through ctypes) and so stay correct when the struct grows. */
#include "memtune.h"
#include "core/check.h"
#include "core/error.h"
#include "model/model.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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
    CHECK_INT("--experts", o->experts, -1, MT_MAX_EXPERTS); /* -1: sized from the facts */
    CHECK_INT("--expert-k", o->expert_k, 1, 1024);
    CHECK_INT("--expert-heads", o->expert_heads, 1, 256);
    CHECK_INT("--expert-context", o->expert_context, 0, 4096);
    CHECK_REAL("--expert-match", o->expert_match, 0, 1);
    CHECK_REAL("--tau", o->tau, 0, 100); /* 0: off */
    CHECK_REAL("--margin", o->margin, 0, 1000);
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

typedef enum { T_STRING, T_INT, T_LONG, T_FLOAT, T_U64, T_FLAG, T_NOT_FLAG } opt_type;

typedef struct {
    const char *name;
    opt_type type;
    size_t offset;
} named_option;

#define OPT(name, type, field) {name, type, offsetof(mt_train_options, field)}
static const named_option options[] = {
    OPT("method", T_STRING, method), OPT("out", T_STRING, out_dir), OPT("eval", T_STRING, eval_data),
    OPT("data-text", T_STRING, data_text),
    OPT("epochs", T_INT, epochs), OPT("steps", T_INT, steps), OPT("lr", T_FLOAT, lr), OPT("batch", T_INT, batch),
    OPT("grad-accum", T_INT, grad_accum), OPT("seq-len", T_INT, seq_len), OPT("warmup", T_INT, warmup),
    OPT("schedule", T_STRING, schedule), OPT("weight-decay", T_FLOAT, weight_decay), OPT("clip", T_FLOAT, clip),
    OPT("eval-every", T_INT, eval_every), OPT("save-every", T_INT, save_every), OPT("log-every", T_INT, log_every),
    OPT("keep-checkpoints", T_INT, keep_checkpoints), OPT("seed", T_U64, seed), OPT("threads", T_INT, threads),
    OPT("recompute", T_FLAG, recompute), OPT("dry-run", T_FLAG, dry_run), OPT("resume", T_FLAG, resume),
    OPT("skip-bad-lines", T_FLAG, skip_bad_lines), OPT("quiet", T_FLAG, quiet),
    OPT("rank", T_INT, lora_rank), OPT("alpha", T_FLOAT, lora_alpha), OPT("rslora", T_FLAG, lora_rslora),
    OPT("targets", T_STRING, lora_targets), OPT("layers", T_STRING, lora_layers), OPT("dropout", T_FLOAT, lora_dropout),
    OPT("base-dtype", T_STRING, base_dtype), OPT("trainable-tokens", T_STRING, trainable_tokens),
    OPT("experts", T_LONG, experts), OPT("expert-k", T_INT, expert_k), OPT("expert-heads", T_INT, expert_heads),
    OPT("expert-sites", T_STRING, expert_sites), OPT("freeze-router", T_FLAG, freeze_router),
    OPT("expert-context", T_INT, expert_context), OPT("expert-match", T_FLOAT, expert_match), OPT("no-memory-lora", T_NOT_FLAG, memory_lora),
    OPT("tau", T_FLOAT, tau), OPT("margin", T_FLOAT, margin), OPT("general", T_STRING, general), OPT("general-limit", T_FLOAT, general_limit),
    OPT("general-weight", T_FLOAT, general_weight), OPT("check-every", T_INT, check_every),
    OPT("rehearsal-weight", T_FLOAT, rehearsal_weight),
};

static int parse_integer(const char *v, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) return 0;
    *out = x;
    return 1;
}

mt_status mt_train_options_set(mt_train_options *o, const char *name, const char *value) {
    if (!o || !name || !value) return mt_error(MT_ERR_ARG, "train option: NULL argument");
    const named_option *n = NULL;
    for (size_t i = 0; i < sizeof options / sizeof *options && !n; i++)
        if (!strcmp(options[i].name, name)) n = &options[i];
    if (!n) return mt_error(MT_ERR_ARG, "unknown train option '%s'", name);
    char *field = (char *)o + n->offset;
    long long x = 0;
    char *end;
    switch (n->type) {
    case T_STRING: *(const char **)field = value; return MT_OK;
    case T_FLAG:
    case T_NOT_FLAG:
        if (strcmp(value, "0") && strcmp(value, "1"))
            return mt_error(MT_ERR_ARG, "train option %s: expected 0 or 1, got '%s'", name, value);
        *(int *)field = (value[0] == '1') == (n->type == T_FLAG);
        return MT_OK;
    case T_INT:
        if (!parse_integer(value, INT_MIN, INT_MAX, &x))
            return mt_error(MT_ERR_ARG, "train option %s: '%s' is not an integer in range", name, value);
        *(int *)field = (int)x;
        return MT_OK;
    case T_LONG:
        if (!parse_integer(value, LONG_MIN, LONG_MAX, &x))
            return mt_error(MT_ERR_ARG, "train option %s: '%s' is not an integer in range", name, value);
        *(long *)field = (long)x;
        return MT_OK;
    case T_U64: {
        errno = 0;
        unsigned long long u = strtoull(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-')
            return mt_error(MT_ERR_ARG, "train option %s: '%s' is not a non-negative integer", name, value);
        *(uint64_t *)field = u;
        return MT_OK;
    }
    case T_FLOAT: {
        errno = 0;
        float f = strtof(value, &end);
        if (errno || end == value || *end || !isfinite(f))
            return mt_error(MT_ERR_ARG, "train option %s: '%s' is not a finite number", name, value);
        *(float *)field = f;
        return MT_OK;
    }
    }
    return mt_error(MT_ERR_ARG, "train option %s: unknown type", name);
}

mt_train_options *mt_train_options_new(void) {
    mt_train_options *o = malloc(sizeof *o);
    if (o) mt_train_options_default(o);
    else mt_error(MT_ERR_NOMEM, "out of memory");
    return o;
}

void mt_train_options_free(mt_train_options *o) { free(o); }

void mt_train_options_set_progress(mt_train_options *o, mt_progress_callback cb, void *user, const volatile int *stop) {
    o->progress = cb;
    o->progress_user = user;
    o->stop = stop;
}
