/* Learning-rate schedules: linear warmup from 0 to the peak over `warmup` steps, then
 * cosine or linear decay to 0 at `total` steps, or constant. */
#ifndef MT_TRAIN_SCHEDULE_H
#define MT_TRAIN_SCHEDULE_H
#include "memtune.h"

typedef enum { MT_SCHED_COSINE, MT_SCHED_LINEAR, MT_SCHED_CONSTANT } mt_schedule_kind;

mt_status mt_schedule_parse(const char *name, mt_schedule_kind *out);
/* lr for step (0-based) of total */
float mt_schedule_lr(mt_schedule_kind kind, float peak, long step, long warmup, long total);

#endif
