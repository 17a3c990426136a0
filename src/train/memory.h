/* Memory tuning (method "memory"); see memory.c. mt_train_run dispatches here. */
#ifndef MT_TRAIN_MEMORY_H
#define MT_TRAIN_MEMORY_H
#include "memtune.h"

/* opts: resolved (method "memory"); res is filled as mt_train_run documents. A stop request
 * (train/progress.h) checkpoints and returns. */
mt_status mt_memory_train(mt_model *m, const char *data_path, const mt_train_options *opts, mt_train_result *res);

#endif
