/* Range checks with one message shape (see check.h). */
#include "core/check.h"
#include "core/error.h"
#include <math.h>
#include <stdio.h>

mt_status mt_check_int(const char *name, long long v, long long lo, long long hi) {
    if (v >= lo && v <= hi) return MT_OK;
    return mt_error(MT_ERR_ARG, "%s %lld: must be an integer in [%lld, %lld]", name, v, lo, hi);
}

mt_status mt_check_real(const char *name, double v, double lo, double hi) {
    if (isfinite(v) && v >= lo && v <= hi) return MT_OK;
    return mt_error(MT_ERR_ARG, "%s %g: must be a finite number in [%.16g, %.16g]", name, v, lo, hi);
}

const char *mt_json_number(char *buf, size_t size, const char *fmt, double v) {
    if (isfinite(v)) snprintf(buf, size, fmt, v);
    else snprintf(buf, size, "null");
    return buf;
}

mt_status mt_check_finite_weights(const float *w, size_t n, long step) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(w[i]))
            return mt_error(MT_ERR_ARG, "step %ld made the weights non-finite (weight %zu is %g): nothing was saved; "
                            "lower --lr, --weight-decay or set --clip", step, i, (double)w[i]);
    return MT_OK;
}
