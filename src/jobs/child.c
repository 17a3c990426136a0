/* The trainer's side of a job (mt_jobs_run_child, run by `memtune job-run RUN_DIR`): reads
 * RUN_DIR/spec.json (the model, threads and `memtune train` options the job was created
 * with), trains on RUN_DIR/train.jsonl into RUN_DIR itself, always resuming from the newest
 * valid checkpoint there, and reports as it goes:
 *   RUN_DIR/events.jsonl  one JSON line per progress event (the runner copies them into the
 *                         job's events); a line cut by a kill is dropped at the next start
 *   RUN_DIR/result.json   the run's figures, written atomically at the end
 *   RUN_DIR/error.txt     the error, if the run fails */
#include "memtune_jobs.h"
#include "core/error.h"
#include "core/file.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    FILE *fp;
} child_events;

static void put(child_events *ev, json_t *o) {
    if (!o || !ev->fp) {
        json_decref(o);
        return;
    }
    json_object_set_new(o, "t", json_integer((json_int_t)time(NULL)));
    char *line = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (line) {
        fprintf(ev->fp, "%s\n", line);
        fflush(ev->fp);
        free(line);
    }
}

static json_t *real(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static int on_progress(const mt_progress *p, void *user) {
    child_events *ev = user;
    switch (p->kind) {
    case MT_PROGRESS_INFO:
    case MT_PROGRESS_WARNING:
        put(ev, json_pack("{s:s, s:s}", "type", p->kind == MT_PROGRESS_INFO ? "info" : "warning", "message", p->message ? p->message : ""));
        break;
    case MT_PROGRESS_STEP:
        if (p->logged)
            put(ev, json_pack("{s:s, s:I, s:I, s:o, s:o, s:o}", "type", "step", "step", (json_int_t)p->step, "total_steps",
                              (json_int_t)p->total_steps, "loss", real(p->window_loss ? p->window_loss : p->loss), "lr", real(p->lr),
                              "grad_norm", real(p->grad_norm)));
        break;
    case MT_PROGRESS_EVAL:
        put(ev, json_pack("{s:s, s:I, s:o}", "type", "eval", "step", (json_int_t)p->step, "eval_loss", real(p->eval_loss)));
        break;
    case MT_PROGRESS_CHECK:
        put(ev, json_pack("{s:s, s:I, s:i, s:i, s:i, s:o, s:o}", "type", "check", "step", (json_int_t)p->step, "facts", p->facts,
                          "facts_memorised", p->facts_memorised, "facts_exact", p->facts_exact, "general_perplexity",
                          real(p->general_perplexity), "base_perplexity", real(p->base_perplexity)));
        break;
    case MT_PROGRESS_GUARD:
        put(ev, json_pack("{s:s, s:s}", "type", "guard", "message", "the perplexity guard raised the weight of general text"));
        break;
    case MT_PROGRESS_STOPPED:
        put(ev, json_pack("{s:s, s:I, s:s}", "type", "stopped", "step", (json_int_t)p->step, "message", "stopped after saving a checkpoint"));
        break;
    default: break;
    }
    return 0;
}

/* events.jsonl without a last line a kill cut short */
static void drop_partial_line(const char *path) {
    char *text = NULL;
    size_t len = 0;
    if (mt_file_read_all(path, (size_t)1 << 30, &text, &len) || !len || text[len - 1] == '\n') {
        free(text);
        return;
    }
    char *last = memrchr(text, '\n', len);
    if (truncate(path, last ? (off_t)(last - text + 1) : 0)) { /* nothing better to do */
    }
    free(text);
}

mt_status mt_jobs_run_child(const char *run_dir, const volatile int *stop, int *interrupted) {
    *interrupted = 0;
    char *spec_path = mt_path_join(run_dir, "spec.json"), *ev_path = mt_path_join(run_dir, "events.jsonl");
    char *data = mt_path_join(run_dir, "train.jsonl"), *valid = mt_path_join(run_dir, "valid.jsonl");
    char *result_path = mt_path_join(run_dir, "result.json"), *error_path = mt_path_join(run_dir, "error.txt");
    json_t *spec = NULL;
    mt_model *m = NULL;
    child_events ev = {0};
    mt_status s = spec_path && ev_path && data && valid && result_path && error_path ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    json_error_t je;
    if (!s && !(spec = json_load_file(spec_path, JSON_REJECT_DUPLICATES, &je)))
        s = mt_error(MT_ERR_FORMAT, "%s: %s", spec_path, je.text);
    const char *model = json_string_value(json_object_get(spec, "model"));
    json_t *args = json_object_get(spec, "args");
    if (!s && (!model || !json_is_array(args) || !json_is_integer(json_object_get(spec, "threads"))))
        s = mt_error(MT_ERR_FORMAT, "%s: needs model, threads and args", spec_path);
    mt_train_options o;
    mt_train_options_default(&o);
    for (size_t i = 0; !s && i < json_array_size(args); i++) {
        json_t *pair = json_array_get(args, i);
        const char *name = json_string_value(json_array_get(pair, 0)), *value = json_string_value(json_array_get(pair, 1));
        if (!name || !value) s = mt_error(MT_ERR_FORMAT, "%s: args[%zu] is not [name, value]", spec_path, i);
        else s = mt_train_options_set(&o, name, value);
    }
    if (!s) {
        o.out_dir = run_dir;
        o.resume = 1;
        o.threads = (int)json_integer_value(json_object_get(spec, "threads"));
        o.eval_data = mt_file_exists(valid) ? valid : NULL;
        o.progress = on_progress;
        o.progress_user = &ev;
        o.stop = stop;
        s = mt_train_options_validate(NULL, &o);
    }
    if (!s) {
        drop_partial_line(ev_path);
        if (!(ev.fp = fopen(ev_path, "a"))) s = mt_error(MT_ERR_IO, "%s: cannot write", ev_path);
    }
    if (!s) {
        mt_load_options lo = {.tokenizer_path = json_string_value(json_object_get(spec, "tokenizer"))};
        s = mt_model_load(model, &lo, &m);
    }
    mt_train_result r;
    memset(&r, 0, sizeof r);
    if (!s) s = mt_train_run(m, data, &o, &r);
    if (!s && r.interrupted) *interrupted = 1;
    else if (!s) {
        json_t *res = json_pack("{s:I, s:I, s:o, s:o, s:f}", "steps", (json_int_t)r.steps, "tokens", (json_int_t)r.tokens,
                                "train_loss", real(r.train_loss), "eval_loss", real(r.eval_loss), "seconds", r.seconds);
        if (res && !isnan(r.perplexity_ratio)) { /* memory tuning */
            json_object_set_new(res, "completed", json_boolean(r.completed));
            json_object_set_new(res, "recall", real(r.recall));
            json_object_set_new(res, "perplexity_ratio", real(r.perplexity_ratio));
        }
        char *text = res ? json_dumps(res, JSON_INDENT(1)) : NULL;
        json_decref(res);
        s = text ? mt_write_file_atomic(result_path, text, strlen(text)) : mt_error(MT_ERR_NOMEM, "out of memory");
        free(text);
    }
    if (s && error_path) {
        const char *msg = mt_last_error();
        char *copy = strdup(msg ? msg : "failed");
        if (copy) {
            mt_write_file_atomic(error_path, copy, strlen(copy));
            mt_error(s, "%s", copy); /* the message again (the write may have set another) */
            free(copy);
        }
    }
    if (ev.fp) fclose(ev.fp);
    mt_model_free(m);
    json_decref(spec);
    free(spec_path);
    free(ev_path);
    free(data);
    free(valid);
    free(result_path);
    free(error_path);
    return s;
}
