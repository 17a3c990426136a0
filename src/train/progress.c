/* The reporting state of the training run on this thread (see progress.h). Thread-local so
 * two runs on two threads report each to its own callback, and so the checkpoint code can
 * report skipped files without every caller passing the callback down. */
#include "train/progress.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    int active;
    char method[16];
    mt_progress_callback cb;
    void *user;
    const volatile int *stop;
    volatile sig_atomic_t stop_now;
    int checkpoint_delay_ms;
} progress_state;

static _Thread_local progress_state current;

void mt_progress_begin(const mt_train_options *o) {
    memset(&current, 0, sizeof current);
    current.active = 1;
    snprintf(current.method, sizeof current.method, "%s", o->method ? o->method : "auto");
    current.cb = o->progress;
    current.user = o->progress_user;
    current.stop = o->stop;
    current.checkpoint_delay_ms = o->test_checkpoint_delay_ms > 0 ? o->test_checkpoint_delay_ms : 0;
}

void mt_progress_end(void) { memset(&current, 0, sizeof current); }

int mt_progress_stop_requested(void) {
    if (current.stop && *current.stop) current.stop_now = 1;
    return current.stop_now;
}

const volatile sig_atomic_t *mt_progress_stop_flag(void) { return &current.stop_now; }

void mt_progress_emit(mt_progress *p) {
    if (!current.active) return;
    p->method = current.method;
    if (current.cb && current.cb(p, current.user)) current.stop_now = 1;
    mt_progress_stop_requested();
}

void mt_progress_message(mt_progress_kind kind, const char *fmt, ...) {
    if (!current.active || !current.cb) return;
    char text[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    mt_progress p = {.kind = kind, .message = text};
    mt_progress_emit(&p);
}

int mt_progress_test_checkpoint_delay_ms(void) { return current.checkpoint_delay_ms; }

const char *mt_progress_kind_name(mt_progress_kind k) {
    switch (k) {
    case MT_PROGRESS_INFO: return "info";
    case MT_PROGRESS_WARNING: return "warning";
    case MT_PROGRESS_STEP: return "step";
    case MT_PROGRESS_EVAL: return "eval";
    case MT_PROGRESS_CHECK: return "check";
    case MT_PROGRESS_GUARD: return "guard";
    case MT_PROGRESS_STOPPED: return "stopped";
    case MT_PROGRESS_STEP_END: return "step_end";
    case MT_PROGRESS_DRY_RUN: return "dry_run";
    case MT_PROGRESS_RECALL: return "recall";
    }
    return "unknown";
}
