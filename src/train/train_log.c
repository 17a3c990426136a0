#include "train/train_log.h"
#include "core/check.h"
#include "train/progress.h"
#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int push(long **steps, double **vals, int *n, int *cap, long step, double v) {
    if (*n == *cap) {
        int c = *cap ? *cap * 2 : 256;
        long *s2 = realloc(*steps, (size_t)c * sizeof **steps);
        if (!s2) return 0;
        *steps = s2;
        double *v2 = realloc(*vals, (size_t)c * sizeof **vals);
        if (!v2) return 0;
        *vals = v2;
        *cap = c;
    }
    (*steps)[*n] = step;
    (*vals)[(*n)++] = v;
    return 1;
}

/* A resumed run plots the whole history: reload earlier points from metrics.jsonl. */
static void reload_history(mt_train_log *l, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        json_error_t e;
        json_t *o = json_loads(line, 0, &e);
        json_t *step = json_object_get(o, "step"), *loss = json_object_get(o, "loss"),
               *eval = json_object_get(o, "eval_loss");
        if (json_is_integer(step) && json_is_number(loss))
            push(&l->train_step, &l->train_loss, &l->n_train, &l->cap_train, (long)json_integer_value(step), json_number_value(loss));
        if (json_is_integer(step) && json_is_number(eval))
            push(&l->eval_step, &l->eval_loss, &l->n_eval, &l->cap_eval, (long)json_integer_value(step), json_number_value(eval));
        json_decref(o);
    }
    fclose(f);
}

mt_status mt_metrics_drop_after(const char *path, long step) {
    FILE *f = fopen(path, "r");
    if (!f) return MT_OK; /* nothing logged yet */
    char *kept = NULL, line[4096];
    size_t len = 0;
    FILE *out = open_memstream(&kept, &len);
    int dropped = 0;
    while (out && fgets(line, sizeof line, f)) {
        json_error_t e;
        json_t *o = json_loads(line, 0, &e);
        json_t *at = json_object_get(o, "step");
        if (json_is_integer(at) && json_integer_value(at) > step) dropped = 1;
        else fputs(line, out);
        json_decref(o);
    }
    fclose(f);
    if (!out) return mt_error(MT_ERR_NOMEM, "out of memory");
    fclose(out);
    mt_status s = dropped ? mt_write_file_atomic(path, kept, len) : MT_OK;
    free(kept);
    return s;
}

mt_status mt_train_log_open(mt_train_log *l, const char *dir, long total_steps, int quiet, int resume, long resume_step) {
    memset(l, 0, sizeof *l);
    char *path = mt_path_join(dir, "metrics.jsonl");
    if (!path) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_status ds = resume ? mt_metrics_drop_after(path, resume_step) : MT_OK;
    if (ds) {
        free(path);
        return ds;
    }
    if (resume) reload_history(l, path);
    l->metrics = fopen(path, resume ? "a" : "w");
    mt_status s = l->metrics ? MT_OK : mt_error(MT_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    free(path);
    l->quiet = quiet;
    l->total_steps = total_steps;
    l->start_time = mt_now_seconds();
    return s;
}

void mt_train_log_step(mt_train_log *l, long step, double loss, float lr, double grad_norm,
                       double tokens_per_s, int write_line) {
    if (!write_line) return;
    push(&l->train_step, &l->train_loss, &l->n_train, &l->cap_train, step, loss);
    double elapsed = mt_now_seconds() - l->start_time;
    if (l->metrics) {
        char b[4][32]; /* JSON has no NaN or inf: a non-finite value is written as null */
        fprintf(l->metrics, "{\"step\": %ld, \"loss\": %s, \"lr\": %s, \"grad_norm\": %s, "
                "\"tokens_per_s\": %s, \"elapsed_s\": %.2f}\n", step, mt_json_number(b[0], 32, "%.6f", loss),
                mt_json_number(b[1], 32, "%.6g", lr), mt_json_number(b[2], 32, "%.6g", grad_norm),
                mt_json_number(b[3], 32, "%.1f", tokens_per_s), elapsed);
        fflush(l->metrics);
    }
}

void mt_train_log_eval(mt_train_log *l, long step, double eval_loss) {
    push(&l->eval_step, &l->eval_loss, &l->n_eval, &l->cap_eval, step, eval_loss);
    if (l->metrics) {
        char b[32];
        fprintf(l->metrics, "{\"step\": %ld, \"eval_loss\": %s}\n", step, mt_json_number(b, sizeof b, "%.6f", eval_loss));
        fflush(l->metrics);
    }
    mt_progress p = {.kind = MT_PROGRESS_EVAL, .step = step, .total_steps = l->total_steps, .eval_loss = eval_loss};
    mt_progress_emit(&p);
}

static void svg_series(mt_atomic_file *f, const long *steps, const double *vals, int n, long max_step,
                       double lo, double hi, const char *color) {
    if (n == 0) return;
    mt_atomic_printf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", color);
    for (int i = 0; i < n; i++) {
        double x = 60 + 520.0 * steps[i] / (max_step ? max_step : 1);
        double y = 20 + 300.0 * (hi - vals[i]) / (hi - lo);
        mt_atomic_printf(f, "%.1f,%.1f ", x, y);
    }
    mt_atomic_printf(f, "\"/>\n");
}

static mt_status write_svg(const mt_train_log *l, const char *path) {
    double lo = INFINITY, hi = -INFINITY;
    long max_step = 1;
    for (int i = 0; i < l->n_train; i++) { lo = fmin(lo, l->train_loss[i]); hi = fmax(hi, l->train_loss[i]); if (l->train_step[i] > max_step) max_step = l->train_step[i]; }
    for (int i = 0; i < l->n_eval; i++) { lo = fmin(lo, l->eval_loss[i]); hi = fmax(hi, l->eval_loss[i]); if (l->eval_step[i] > max_step) max_step = l->eval_step[i]; }
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-9) hi = lo + 1;
    mt_atomic_file f;
    mt_status s = mt_atomic_open(&f, path);
    if (s) return s;
    mt_atomic_printf(&f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"380\" font-family=\"sans-serif\" font-size=\"12\">\n"
                     "<rect width=\"640\" height=\"380\" fill=\"white\"/>\n"
                     "<line x1=\"60\" y1=\"320\" x2=\"580\" y2=\"320\" stroke=\"black\"/><line x1=\"60\" y1=\"20\" x2=\"60\" y2=\"320\" stroke=\"black\"/>\n"
                     "<text x=\"52\" y=\"24\" text-anchor=\"end\">%.3g</text><text x=\"52\" y=\"320\" text-anchor=\"end\">%.3g</text>\n"
                     "<text x=\"60\" y=\"338\">0</text><text x=\"580\" y=\"338\" text-anchor=\"end\">%ld</text>\n"
                     "<text x=\"320\" y=\"360\" text-anchor=\"middle\">step</text>\n"
                     "<text x=\"470\" y=\"40\" fill=\"#1f77b4\">train loss</text><text x=\"470\" y=\"56\" fill=\"#d62728\">eval loss</text>\n",
                     hi, lo, max_step);
    svg_series(&f, l->train_step, l->train_loss, l->n_train, max_step, lo, hi, "#1f77b4");
    svg_series(&f, l->eval_step, l->eval_loss, l->n_eval, max_step, lo, hi, "#d62728");
    mt_atomic_printf(&f, "</svg>\n");
    return mt_atomic_commit(&f);
}

mt_status mt_train_log_close(mt_train_log *l, const char *dir) {
    mt_status s = MT_OK;
    if (dir) {
        char *path = mt_path_join(dir, "loss.svg");
        s = path ? write_svg(l, path) : mt_error(MT_ERR_NOMEM, "out of memory");
        free(path);
    }
    if (l->metrics) fclose(l->metrics);
    free(l->train_step);
    free(l->eval_step);
    free(l->train_loss);
    free(l->eval_loss);
    memset(l, 0, sizeof *l);
    return s;
}
