#include "train/schedule.h"
#include "core/error.h"
#include <math.h>
#include <string.h>

mt_status mt_schedule_parse(const char *name, mt_schedule_kind *out) {
    if (!name || !strcmp(name, "cosine")) *out = MT_SCHED_COSINE;
    else if (!strcmp(name, "linear")) *out = MT_SCHED_LINEAR;
    else if (!strcmp(name, "constant")) *out = MT_SCHED_CONSTANT;
    else return mt_error(MT_ERR_ARG, "unknown schedule '%s' (cosine, linear or constant)", name);
    return MT_OK;
}

float mt_schedule_lr(mt_schedule_kind kind, float peak, long step, long warmup, long total) {
    if (step < warmup) return peak * (float)(step + 1) / (float)warmup;
    if (kind == MT_SCHED_CONSTANT || total <= warmup) return peak;
    double progress = (double)(step - warmup) / (double)(total - warmup);
    if (progress > 1) progress = 1;
    if (kind == MT_SCHED_LINEAR) return (float)(peak * (1.0 - progress));
    return (float)(peak * 0.5 * (1.0 + cos(M_PI * progress)));
}
