/* Memory tuning (method "memory"); see memory.c. mt_train_run dispatches here. */
#ifndef MT_TRAIN_MEMORY_H
#define MT_TRAIN_MEMORY_H
#include "memtune.h"

#include <signal.h>

/* opts: resolved (method "memory"); res is filled as mt_train_run documents. stop (may be
 * NULL) becomes nonzero when the run should checkpoint and return (SIGINT/SIGTERM). */
mt_status mt_memory_train(mt_model *m, const char *data_path, const mt_train_options *opts, mt_train_result *res,
                          const volatile sig_atomic_t *stop);

#endif
