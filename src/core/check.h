/* Range checks for untrusted numbers (options from the C API or the command line, fields
 * of model configs). One message shape for every option, so each one names the option, the
 * value given and what is allowed:
 *     "--top-p nan: must be a finite number in [0, 1]"
 *     "--threads 10000: must be an integer in [0, 1024]"
 * NaN and infinities are always refused. */
#ifndef MT_CORE_CHECK_H
#define MT_CORE_CHECK_H
#include "memtune.h"
#include <stddef.h>

/* MT_OK when lo <= v <= hi, else MT_ERR_ARG with the message above. */
mt_status mt_check_int(const char *name, long long v, long long lo, long long hi);
/* MT_OK when v is finite and lo <= v <= hi. */
mt_status mt_check_real(const char *name, double v, double lo, double hi);

/* A double as a JSON value: the number with printf format fmt ("%.6g"), or null when it is
 * NaN or infinite (JSON has no such tokens). Returns buf. */
const char *mt_json_number(char *buf, size_t size, const char *fmt, double v);

/* MT_OK when every weight is finite; else MT_ERR_ARG saying that step `step` made them
 * non-finite, so nothing is saved (a checkpoint or model of NaNs is worse than none). */
mt_status mt_check_finite_weights(const float *w, size_t n, long step);

#endif
