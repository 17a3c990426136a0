/* What the end of a memory-tuning run writes (see memory_run.h): every fact answered by real
 * greedy decoding (DIR/facts.jsonl and the recall), DIR/report.json and DIR/adapter. */
#include "core/atomic_dir.h"
#include "core/check.h"
#include "core/error.h"
#include "core/file.h"
#include "dataset/greedy.h"
#include "train/memory_run.h"
#include "train/progress.h"
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Before each fact of the final recall: how far it is (a stop request may come in reply). */
static void recall_progress(const memory_run *r, int answered) {
    mt_progress p = {.kind = MT_PROGRESS_RECALL, .step = r->loop.step, .total_steps = r->o.steps, .facts = r->n_facts,
                     .facts_answered = answered};
    mt_progress_emit(&p);
}

/* Answers every fact by real greedy decoding; writes DIR/facts.jsonl; returns the recall. A stop
 * request ends it between two facts (*stopped = 1): facts.jsonl is then left as it was. */
mt_status mt_memory_final_answers(memory_run *r, double *recall, double *mean_nll, double *max_nll, int *stopped) {
    char *path = mt_path_join(r->o.out_dir, "facts.jsonl");
    mt_atomic_file f;
    mt_status s = path ? mt_atomic_open(&f, path) : mt_error(MT_ERR_NOMEM, "out of memory");
    int exact_n = 0;
    *mean_nll = 0, *max_nll = 0;
    for (int i = 0; s == MT_OK && i < r->n_facts; i++) {
        recall_progress(r, i);
        /* the stop flag, or a reply to the event above */
        if (mt_progress_stop_requested()) {
            *stopped = 1;
            if (!r->o.quiet)
                mt_progress_message(MT_PROGRESS_INFO, "stopped during the final recall (%d/%d facts answered); the adapter "
                                    "and the checkpoint are saved: --resume finishes the run", i, r->n_facts);
            break;
        }
        char *produced = NULL;
        int exact = 0;
        const mt_example *e = &r->data.items[i];
        s = mt_eval_greedy_example(r->m, &r->b, e, &produced, &exact);
        if (s) break;
        exact_n += exact;
        *mean_nll += r->fact_nll[i] / r->n_facts;
        *max_nll = fmax(*max_nll, r->fact_max_nll[i]);
        json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:b, s:b, s:f, s:f, s:f}", "index", i + 1, "input", fact_input(e),
                              "expected", fact_output(e), "produced", produced, "exact", exact,
                              "memorised", exact && robust(r, r->fact_margin[i], r->fact_max_nll[i]), "nll", r->fact_nll[i],
                              "max_token_nll", r->fact_max_nll[i], "min_margin", r->fact_margin[i]);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        s = line ? mt_atomic_printf(&f, "%s\n", line) : mt_error(MT_ERR_NOMEM, "out of memory");
        free(line);
        json_decref(o);
        free(produced);
    }
    if (path && s == MT_OK && !*stopped) s = mt_atomic_commit(&f);
    else if (path) mt_atomic_abort(&f);
    free(path);
    *recall = r->n_facts ? (double)exact_n / r->n_facts : 0;
    return s;
}

mt_status mt_memory_write_report(memory_run *r, const char *status, double recall, double mean_nll, double max_nll,
                                 double seconds, long restored_step) {
    const mt_mome *mm = r->mome;
    double min_margin = INFINITY;
    for (int f = 0; f < r->n_facts; f++) min_margin = fmin(min_margin, r->fact_margin[f]);
    json_t *o = json_pack("{s:s, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:f, s:I, s:f, s:{s:f, s:f, s:f, s:f, s:s?, s:I, s:f, s:f, s:i}, "
                          "s:{s:I, s:i, s:i, s:i, s:b, s:i, s:I}, s:i, s:f}",
                          "status", status, "facts", r->n_facts, "memorised", r->n_ok, "recall", recall,
                          "mean_answer_nll", mean_nll, "max_answer_nll", max_nll, "tau", (double)r->o.tau,
                          "margin", (double)r->o.margin, "min_answer_margin", min_margin,
                          "steps", (json_int_t)r->loop.step, "seconds", seconds, "tokens", (json_int_t)r->loop.tokens,
                          "tokens_per_s", seconds > 0 ? r->loop.tokens / seconds : 0.0,
                          "perplexity", "before", r->ppl_base, "after", r->ppl_last, "ratio", r->ppl_last / r->ppl_base,
                          "limit", (double)r->o.general_limit, "general", r->o.general,
                          "distilled_tokens", (json_int_t)r->n_distill_rows * r->T, "distill_weight",
                          (double)r->o.general_weight, "distill_weight_final", (double)r->distill_weight,
                          "guard_trips", r->guard_trips,
                          "experts", "per_site", (json_int_t)(mm ? mm->n_experts : 0), "sites", mm ? mm->n_sites : 0,
                          "k", mm ? mm->shape.K : 0, "heads", mm ? mm->shape.H : 0,
                          "router_trained", mm && !mm->freeze_router, "context", mm ? mm->context.dim : 0,
                          "rows_with_optimizer_state", (json_int_t)(mm ? mt_sparse_adam_rows(&r->bank_opt) : 0),
                          "trainable_token_rows", r->rows ? r->rows->n : 0, "lr", (double)r->o.lr);
    if (o) json_object_set_new(o, "restored_from_step", restored_step >= 0 ? json_integer(restored_step) : json_null());
    char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    json_decref(o);
    char *path = mt_path_join(r->o.out_dir, "report.json");
    mt_status s = text && path ? mt_write_file_atomic(path, text, strlen(text)) : mt_error(MT_ERR_NOMEM, "out of memory");
    free(text), free(path);
    return s;
}

mt_status mt_memory_save_adapter(memory_run *r) {
    char *dir = mt_path_join(r->o.out_dir, "adapter"), *part;
    mt_atomic_dir staged = {0}; /* whole or absent, even on a full disk (core/atomic_dir.h) */
    mt_status s = dir ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    /* the loss guard runs before each update; this one sees the last (core/check.h) */
    if (!s && r->lora) s = mt_check_finite_weights(r->lora->params, r->lora->n_params, r->loop.step);
    if (!s && r->rows) s = mt_check_finite_weights(r->rows->values, (size_t)(1 + r->rows->untied) * r->rows->n * r->rows->dim, r->loop.step);
    if (!s) s = mt_atomic_dir_open(&staged, dir);
    part = staged.tmp_path;
    if (!s && r->rows) s = mt_token_rows_save(r->rows, part);
    if (!s && r->mome) s = mt_mome_save(r->mome, part);
    if (!s && r->lora) s = mt_lora_save(r->lora, r->m, part, NULL);
    if (part && s) mt_atomic_dir_abort(&staged);
    else if (part) s = mt_atomic_dir_commit(&staged);
    if (!s && !r->o.quiet) mt_progress_message(MT_PROGRESS_INFO, "saved %s", dir);
    free(dir);
    return s;
}
