/* Two eval reports side by side: which examples changed verdict between run A and run B
 * (before and after tuning, two models, two prompts), and each run's totals. Examples are
 * matched by their "index" (the line number in the evaluated file). */
#include "core/error.h"
#include "core/file.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPORT_BYTES ((size_t)1 << 30)

typedef struct {
    json_t *by_index; /* object: "index" -> line object */
    json_t *totals;   /* object: verdict -> count */
    long examples, matches;
} report;

static void report_free(report *r) {
    json_decref(r->by_index);
    json_decref(r->totals);
    r->by_index = r->totals = NULL;
}

static mt_status report_load(const char *path, report *r) {
    memset(r, 0, sizeof *r);
    char *buf = NULL;
    size_t len = 0;
    mt_status s = mt_file_read_all(path, MAX_REPORT_BYTES, &buf, &len);
    if (s) return s;
    r->by_index = json_object();
    r->totals = json_object();
    if (!r->by_index || !r->totals) s = mt_error(MT_ERR_NOMEM, "out of memory");
    int line_no = 0;
    for (size_t start = 0; s == MT_OK && start < len;) {
        const char *nl = memchr(buf + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - buf) : len;
        line_no++;
        json_error_t jerr;
        json_t *o = end > start ? json_loadb(buf + start, end - start, 0, &jerr) : NULL;
        json_t *idx = json_object_get(o, "index"), *verdict = json_object_get(o, "verdict");
        if (end > start && (!json_is_integer(idx) || !json_is_string(verdict)))
            s = mt_error(MT_ERR_FORMAT, "%s:%d: not a report line (needs integer \"index\" and string \"verdict\")", path, line_no);
        if (s == MT_OK && o) {
            char key[32];
            snprintf(key, sizeof key, "%lld", (long long)json_integer_value(idx));
            const char *v = json_string_value(verdict);
            json_t *count = json_object_get(r->totals, v);
            json_object_set_new(r->totals, v, json_integer(count ? json_integer_value(count) + 1 : 1));
            r->examples++;
            r->matches += !strcmp(v, "match");
            json_object_set(r->by_index, key, o);
        }
        json_decref(o);
        start = end + 1;
    }
    free(buf);
    if (s) report_free(r); /* a report that failed to load owns nothing */
    return s;
}

static json_t *summary(const char *path, const report *r) {
    return json_pack("{s:s, s:I, s:I, s:f, s:O}", "file", path, "examples", (json_int_t)r->examples, "match",
                     (json_int_t)r->matches, "accuracy", r->examples ? (double)r->matches / r->examples : 0.0,
                     "verdicts", r->totals);
}

static json_t *change(const char *key, json_t *a, json_t *b) {
    json_t *prompt = json_object_get(a, "prompt");
    return json_pack("{s:I, s:O?, s:O?, s:O, s:O, s:O?, s:O?}", "index", (json_int_t)strtoll(key, NULL, 10),
                     "prompt", prompt, "expected", json_object_get(a, "expected"),
                     "a", json_object_get(a, "verdict"), "b", json_object_get(b, "verdict"),
                     "a_produced", json_object_get(a, "produced"), "b_produced", json_object_get(b, "produced"));
}

mt_status mt_eval_compare_reports(const char *path_a, const char *path_b, char **json) {
    *json = NULL;
    report a, b;
    mt_status s = report_load(path_a, &a);
    if (s == MT_OK && (s = report_load(path_b, &b))) report_free(&a);
    if (s) return s;
    json_t *changes = json_array();
    long common = 0, fixed = 0, broken = 0, only_a = 0;
    const char *key;
    json_t *la;
    json_object_foreach(a.by_index, key, la) {
        json_t *lb = json_object_get(b.by_index, key);
        if (!lb) {
            only_a++;
            continue;
        }
        common++;
        const char *va = json_string_value(json_object_get(la, "verdict"));
        const char *vb = json_string_value(json_object_get(lb, "verdict"));
        if (!strcmp(va, vb)) continue;
        fixed += !strcmp(vb, "match");
        broken += !strcmp(va, "match");
        json_array_append_new(changes, change(key, la, lb));
    }
    json_t *out = json_pack("{s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "a", summary(path_a, &a), "b",
                            summary(path_b, &b), "common", (json_int_t)common, "changed",
                            (json_int_t)json_array_size(changes), "fixed", (json_int_t)fixed, "broken",
                            (json_int_t)broken, "only_in_a", (json_int_t)only_a, "only_in_b",
                            (json_int_t)(b.examples - common), "changes", changes);
    *json = out ? json_dumps(out, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(out);
    report_free(&a);
    report_free(&b);
    return *json ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
}
