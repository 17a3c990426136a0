/* Filtering question -> SQL files (such as LLM-generated training queries) down to the lines
 * whose SQL runs in the sandbox and returns something, with counts of what was dropped and
 * why. Kept lines are written unchanged except for an added "result": the SQL's result as
 * text, so a reader sees what each query answers. */
#include "core/error.h"
#include "core/file.h"
#include "eval/sql.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILTER_FILE_BYTES ((size_t)1 << 30)

static int has_value(const mt_sql_result *r) {
    for (long i = 0; i < r->rows * r->cols; i++)
        if (r->cells[i].type != MT_CELL_NULL) return 1;
    return 0;
}

/* Counts the reason in stats->reasons (an object: reason -> count). */
static void count_reason(json_t *reasons, const char *why) {
    char key[200];
    snprintf(key, sizeof key, "%s", why);
    json_t *n = json_object_get(reasons, key);
    json_object_set_new(reasons, key, json_integer(n ? json_integer_value(n) + 1 : 1));
}

/* Decides one line; returns the line to keep (new reference) or NULL. */
static json_t *filter_line(mt_sql_db *db, const char *line, size_t len, json_t *seen, mt_filter_stats *st, json_t *reasons) {
    json_error_t jerr;
    json_t *o = json_loadb(line, len, 0, &jerr);
    const char *q = json_string_value(json_object_get(o, "question")), *sql = json_string_value(json_object_get(o, "sql"));
    if (!json_is_object(o) || !q || !sql) {
        st->bad_json++;
        count_reason(reasons, "not a JSON object with string \"question\" and \"sql\"");
        json_decref(o);
        return NULL;
    }
    char *key = mt_strdup_printf("%s\n%s", q, sql);
    mt_sql_result *r = NULL;
    json_t *keep = NULL;
    if (key && json_object_get(seen, key)) {
        st->duplicates++;
        count_reason(reasons, "duplicate of an earlier line");
    } else if (mt_sql_query(db, sql, &r) != MT_OK) {
        st->sql_error++;
        count_reason(reasons, mt_last_error());
    } else if (!has_value(r)) {
        st->empty_result++;
        count_reason(reasons, r->rows ? "result holds only NULLs" : "result is empty");
    } else {
        char *text = mt_sql_result_text(r);
        if (text) json_object_set_new(o, "result", json_string(text));
        free(text);
        if (key) json_object_set_new(seen, key, json_true());
        keep = json_incref(o);
    }
    mt_sql_result_free(r);
    free(key);
    json_decref(o);
    return keep;
}

static mt_status filter_buffer(mt_sql_db *db, const char *buf, size_t len, mt_atomic_file *f, mt_filter_stats *st, json_t *reasons) {
    json_t *seen = json_object();
    mt_status s = seen ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    for (size_t start = 0; s == MT_OK && start < len;) {
        const char *nl = memchr(buf + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - buf) : len, a = start;
        while (a < end && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\r')) a++;
        if (a < end) {
            st->read++;
            json_t *keep = filter_line(db, buf + a, end - a, seen, st, reasons);
            char *out = keep ? json_dumps(keep, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
            if (keep && !out) s = mt_error(MT_ERR_NOMEM, "out of memory");
            if (out) s = mt_atomic_printf(f, "%s\n", out), st->kept++;
            free(out);
            json_decref(keep);
        }
        start = end + 1;
    }
    json_decref(seen);
    return s;
}

mt_status mt_data_filter_sql(const char *db_path, const char *in_path, const char *out_path, const mt_sql_limits *limits,
                             mt_filter_stats *stats) {
    memset(stats, 0, sizeof *stats);
    if (!in_path || !out_path) return mt_error(MT_ERR_ARG, "filter needs an input and an output path");
    char *buf = NULL;
    size_t len = 0;
    mt_sql_db *db = NULL;
    json_t *reasons = json_object();
    mt_status s = mt_file_read_all(in_path, MAX_FILTER_FILE_BYTES, &buf, &len);
    if (s == MT_OK) s = mt_sql_open(db_path, limits, &db);
    if (s == MT_OK && !reasons) s = mt_error(MT_ERR_NOMEM, "out of memory");
    mt_atomic_file f;
    if (s == MT_OK) s = mt_atomic_open(&f, out_path);
    if (s == MT_OK) {
        s = filter_buffer(db, buf, len, &f, stats, reasons);
        if (s == MT_OK) s = mt_atomic_commit(&f);
        else mt_atomic_abort(&f);
    }
    if (s == MT_OK) stats->reasons = json_dumps(reasons, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(reasons);
    mt_sql_close(db);
    free(buf);
    return s;
}

void mt_filter_stats_free(mt_filter_stats *st) {
    free(st->reasons);
    st->reasons = NULL;
}
