/* How a training run reports: the options' progress callback, the stop flag and the test
 * hooks, for the duration of one mt_train_run on its thread. The trainer, memory tuning and
 * the checkpoint code below them report through these calls instead of printing (the
 * library never prints); with no run in progress on the thread they do nothing. */
#ifndef MT_TRAIN_PROGRESS_H
#define MT_TRAIN_PROGRESS_H
#include "memtune.h"
#include <signal.h>

/* Starts reporting for a run with these options (callback, stop flag, quiet, test hooks) on
 * this thread; mt_progress_end stops it. The options are copied. */
void mt_progress_begin(const mt_train_options *o);
void mt_progress_end(void);
/* Sends an event (its method is filled in); records a stop request when the callback
 * returns non-zero. */
void mt_progress_emit(mt_progress *p);
/* An INFO or WARNING (or DRY_RUN) message, printf-style. */
void mt_progress_message(mt_progress_kind kind, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether the run should checkpoint and stop: the stop flag is set or the callback asked. */
int mt_progress_stop_requested(void);
/* The same as a flag memory tuning polls; refreshed by each mt_progress_emit and each call
 * of mt_progress_stop_requested. */
const volatile sig_atomic_t *mt_progress_stop_flag(void);
/* Test hook: milliseconds to pause halfway through a checkpoint write (0: none). */
int mt_progress_test_checkpoint_delay_ms(void);

#endif
