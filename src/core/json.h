/* JSON files through Jansson: read an untrusted file (size-limited) and parse it, with an
 * error naming the file, the problem and the line. */
#ifndef MT_CORE_JSON_H
#define MT_CORE_JSON_H
#include <jansson.h>
#include <stddef.h>
#include "memtune.h"

/* *out is a new reference on success (json_decref it). flags are Jansson decode flags. */
mt_status mt_json_load_file(const char *path, size_t max_bytes, size_t flags, json_t **out);

#endif
