/* Thread-local error message storage behind mt_last_error(). */
#include "core/error.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char error_message[1024];

mt_status mt_error(mt_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    return code;
}

mt_status mt_error_prefix(mt_status code, const char *fmt, ...) {
    char prefix[512], old[sizeof error_message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, error_message, sizeof old);
    size_t n = strlen(prefix);
    memcpy(error_message, prefix, n);
    error_message[n] = 0;
    strncat(error_message, ": ", sizeof error_message - n - 1);
    strncat(error_message, old, sizeof error_message - n - 3);
    return code;
}

const char *mt_last_error(void) { return error_message; }

const char *mt_status_name(mt_status s) {
    switch (s) {
    case MT_OK: return "ok";
    case MT_ERR_IO: return "i/o error";
    case MT_ERR_FORMAT: return "malformed input";
    case MT_ERR_NOMEM: return "out of memory";
    case MT_ERR_ARG: return "invalid argument";
    case MT_ERR_UNSUPPORTED: return "unsupported";
    case MT_ERR_MISMATCH: return "mismatch";
    case MT_ERR_SQL: return "sql error";
    }
    return "unknown error";
}
