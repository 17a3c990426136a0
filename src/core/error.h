/* Errors as values. Every library function that can fail returns an mt_status and, on
 * failure, leaves a human-readable message (naming the file and the problem) that the
 * caller retrieves with mt_last_error(). The library never exits the process. */
#ifndef MT_CORE_ERROR_H
#define MT_CORE_ERROR_H
#include "memtune.h"

/* Set the thread's error message (printf-style) and return `code`, so callers can write
 * `return mt_error(MT_ERR_FORMAT, "%s: bad magic", path);`. */
mt_status mt_error(mt_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with more context ("loading X: <old message>"). */
mt_status mt_error_prefix(mt_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
