#include "core/json.h"
#include "core/error.h"
#include "core/file.h"
#include <stdlib.h>

mt_status mt_json_load_file(const char *path, size_t max_bytes, size_t flags, json_t **out) {
    char *text;
    size_t len;
    *out = NULL;
    mt_status s = mt_file_read_all(path, max_bytes, &text, &len);
    if (s) return s;
    json_error_t err;
    *out = json_loadb(text, len, flags, &err);
    free(text);
    if (!*out) return mt_error(MT_ERR_FORMAT, "%s: not valid JSON: %s (line %d)", path, err.text, err.line);
    return MT_OK;
}
