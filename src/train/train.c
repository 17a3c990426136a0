/* The entry point of every training run: options checked, the method resolved ("auto" looks
 * at the data), threads set for this call, reporting begun on this thread; then the method's
 * run (trainer.c: full and LoRA; memory.c: memory tuning), each over the one loop (loop.c). */
#include "core/error.h"
#include "dataset/data.h"
#include "kernels/kernels.h"
#include "train/memory.h"
#include "dist/dist.h"
#include "train/progress.h"
#include "train/trainer.h"
#include <math.h>
#include <string.h>

void mt_train_options_default(mt_train_options *o) {
    memset(o, 0, sizeof *o);
    o->method = "auto";
    o->out_dir = "memtune-out";
    o->epochs = 3;
    o->lr = 0; /* the method's default */
    o->batch = 4;
    o->grad_accum = 1;
    o->schedule = NULL; /* the method's: cosine, constant for memory tuning */
    o->clip = 1.0f;
    o->save_every = 100;
    o->log_every = 10;
    o->keep_checkpoints = 2;
    o->seed = 1;
    o->shuffle = 1;
    o->eval_every = -1; /* -1: choose (10 evals per run) */
    o->lora_rank = 8;
    o->lora_alpha = 16;
    o->experts = -1; /* memory: sized from the facts and the model */
    o->expert_k = 4;
    o->expert_heads = 2;
    o->expert_context = 32;
    o->expert_match = 0.99f;
    o->tau = 0; /* memory: the NLL bound is off; the margin decides */
    o->margin = 2.0f;
    o->general_limit = 1.05f;
    o->general_weight = 1.0f;
    o->rehearsal_weight = 0.25f;
    o->memory_lora = 1;
}

/* "auto": memory tuning when every example is a {"input","output"} fact, else full. */
static mt_status resolve_method(mt_train_options *o, const char *data_path) {
    if (o->method && strcmp(o->method, "auto")) return MT_OK;
    mt_dataset ds = {0};
    mt_status s = data_path ? mt_dataset_load_jsonl(&ds, data_path, o->skip_bad_lines) : MT_OK;
    if (!s && o->data_text) s = mt_dataset_load_jsonl_text(&ds, "examples", o->data_text, strlen(o->data_text), o->skip_bad_lines);
    for (int i = 0; !s && i < o->n_data; i++) s = mt_dataset_load_jsonl(&ds, o->data[i], o->skip_bad_lines);
    int facts = !s && ds.n > 0;
    for (int i = 0; facts && i < ds.n; i++) facts = ds.items[i].is_fact;
    mt_dataset_free(&ds);
    o->method = facts ? "memory" : "full";
    return s;
}

mt_status mt_train_run(mt_model *m, const char *data_path, const mt_train_options *opts, mt_train_result *res) {
    mt_train_result local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    res->eval_loss = NAN;
    res->perplexity_ratio = NAN;
    mt_train_options o;
    if (opts) o = *opts;
    else mt_train_options_default(&o);
    mt_dist_error_reset(o.dist);
    if (!data_path && !o.data_text) return mt_error(MT_ERR_ARG, "no training data: give a JSONL file or examples in memory");
    mt_status rs = mt_train_options_validate(m, &o);
    if (rs) mt_dist_error_shared(o.dist, mt_dist_rank(o.dist) == 0); /* dist: the same options on every rank */
    if (rs == MT_OK) rs = resolve_method(&o, data_path);
    if (rs) return rs;
    int memory = !strcmp(o.method, "memory");
    if (memory && mt_dist_is_multi(o.dist)) { /* dist: not yet */
        mt_dist_error_shared(o.dist, mt_dist_rank(o.dist) == 0);
        return mt_error(MT_ERR_UNSUPPORTED, "--method memory does not run on several ranks yet (data-parallel "
                        "training covers --method full and lora): run it as one process");
    }
    if (!memory && o.lr == 0) o.lr = 1e-4f;
    int threads_before = mt_kernels_threads();
    if (o.threads) mt_set_threads(o.threads);
    mt_progress_begin(&o);
    mt_status s = memory ? mt_memory_train(m, data_path, &o, res) : mt_finetune_train(m, data_path, &o, res);
    mt_progress_end();
    if (o.threads) mt_set_threads(threads_before);
    return s;
}

mt_status mt_train(mt_model *m, const char *data_path, const mt_train_options *opts) {
    return mt_train_run(m, data_path, opts, NULL);
}
