/* Comparing SQL result sets, the heart of execution accuracy: two queries are judged to
 * give the same answer when their results hold the same rows (in the same order only when
 * the gold query orders them). The value rules are documented at mt_sql_results_equal in
 * memtune.h; they are deliberately lenient on representation (42 = 42.0 = '42') and strict
 * on content (text is compared byte for byte, NULL equals only NULL). */
#include "eval/sql.h"
#include "core/error.h"
#include "core/file.h"
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define REL_TOL 1e-6
#define ABS_TOL 1e-9
#define GREEDY_MATCH_MAX_ROWS 4000 /* beyond this, sorted comparison only */

int mt_sql_cell_number(const mt_sql_cell *c, double *out) {
    if (c->type == MT_CELL_INT) return *out = (double)c->i, 1;
    if (c->type == MT_CELL_REAL) return *out = c->f, 1;
    if (c->type != MT_CELL_TEXT) return 0;
    /* a complete decimal number: optional spaces, sign, digits, point, exponent */
    const char *p = c->bytes;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q) && !strchr(" \t+-.eE", *q)) return 0;
    char *end;
    errno = 0;
    double v = strtod(p, &end);
    if (end == p || errno || !isfinite(v)) return 0;
    while (isspace((unsigned char)*end)) end++;
    if (*end) return 0;
    *out = v;
    return 1;
}

static int numbers_equal(double a, double b) {
    double d = fabs(a - b);
    return d <= ABS_TOL || d <= REL_TOL * fmax(fabs(a), fabs(b));
}

static int cells_equal(const mt_sql_cell *a, const mt_sql_cell *b) {
    if (a->type == MT_CELL_NULL || b->type == MT_CELL_NULL) return a->type == b->type;
    if (a->type == MT_CELL_BLOB || b->type == MT_CELL_BLOB)
        return a->type == b->type && a->len == b->len && !memcmp(a->bytes, b->bytes, (size_t)a->len);
    if (a->type == MT_CELL_TEXT && b->type == MT_CELL_TEXT)
        return a->len == b->len && !memcmp(a->bytes, b->bytes, (size_t)a->len);
    if (a->type == MT_CELL_INT && b->type == MT_CELL_INT) return a->i == b->i;
    double x, y;
    return mt_sql_cell_number(a, &x) && mt_sql_cell_number(b, &y) && numbers_equal(x, y);
}

static int rows_equal(const mt_sql_cell *a, const mt_sql_cell *b, int cols) {
    for (int c = 0; c < cols; c++)
        if (!cells_equal(&a[c], &b[c])) return 0;
    return 1;
}

/* A total order that puts equal cells next to each other: NULL, then numbers (numeric text
 * included, by value), then other text, then blobs. */
static int cell_class(const mt_sql_cell *c, double *num) {
    if (c->type == MT_CELL_NULL) return 0;
    if (c->type == MT_CELL_BLOB) return 3;
    return mt_sql_cell_number(c, num) ? 1 : 2;
}

static int cell_order(const mt_sql_cell *a, const mt_sql_cell *b) {
    double x = 0, y = 0;
    int ka = cell_class(a, &x), kb = cell_class(b, &y);
    if (ka != kb) return ka < kb ? -1 : 1;
    if (ka == 1) return x < y ? -1 : x > y;
    if (ka == 0) return 0;
    int n = a->len < b->len ? a->len : b->len, d = memcmp(a->bytes, b->bytes, (size_t)n);
    return d ? d : (a->len > b->len) - (a->len < b->len);
}

static int row_order(const void *pa, const void *pb, void *ctx) {
    const mt_sql_cell *a = *(const mt_sql_cell *const *)pa, *b = *(const mt_sql_cell *const *)pb;
    int cols = *(const int *)ctx;
    for (int c = 0; c < cols; c++) {
        int d = cell_order(&a[c], &b[c]);
        if (d) return d;
    }
    return 0;
}

static const mt_sql_cell **row_pointers(const mt_sql_result *r) {
    const mt_sql_cell **p = malloc((size_t)(r->rows ? r->rows : 1) * sizeof *p);
    for (long i = 0; p && i < r->rows; i++) p[i] = r->cells + (size_t)i * r->cols;
    return p;
}

/* Each row of a finds a distinct equal row of b (first fit). */
static int greedy_match(const mt_sql_cell **a, const mt_sql_cell **b, long rows, int cols) {
    char *used = calloc((size_t)rows + 1, 1);
    int ok = used != NULL;
    for (long i = 0; ok && i < rows; i++) {
        long j = 0;
        while (j < rows && (used[j] || !rows_equal(a[i], b[j], cols))) j++;
        if (j == rows) ok = 0;
        else used[j] = 1;
    }
    free(used);
    return ok;
}

int mt_sql_results_equal(const mt_sql_result *a, const mt_sql_result *b, int ordered) {
    if (!a || !b || a->cols != b->cols || a->rows != b->rows) return 0;
    if (ordered) {
        for (long i = 0; i < a->rows; i++)
            if (!rows_equal(a->cells + (size_t)i * a->cols, b->cells + (size_t)i * b->cols, a->cols)) return 0;
        return 1;
    }
    const mt_sql_cell **ra = row_pointers(a), **rb = row_pointers(b);
    int equal = 0;
    if (ra && rb) {
        int cols = a->cols;
        qsort_r(ra, (size_t)a->rows, sizeof *ra, row_order, &cols);
        qsort_r(rb, (size_t)b->rows, sizeof *rb, row_order, &cols);
        equal = 1;
        for (long i = 0; equal && i < a->rows; i++) equal = rows_equal(ra[i], rb[i], a->cols);
        /* Tolerance can make sorted neighbours differ; fall back to matching. */
        if (!equal && a->rows <= GREEDY_MATCH_MAX_ROWS) equal = greedy_match(ra, rb, a->rows, a->cols);
    }
    free(ra);
    free(rb);
    return equal;
}

/* Steps over a quoted string/identifier or a comment starting at p; returns p if none. */
static const char *skip_quoted(const char *p) {
    char close = *p == '\'' ? '\'' : *p == '"' ? '"' : *p == '`' ? '`' : *p == '[' ? ']' : 0;
    if (close) {
        for (p++; *p; p++)
            if (*p == close) {
                if (close != ']' && p[1] == close) p++; /* doubled quote */
                else return p + 1;
            }
        return p;
    }
    if (p[0] == '-' && p[1] == '-') {
        while (*p && *p != '\n') p++;
        return p;
    }
    if (p[0] == '/' && p[1] == '*') {
        const char *end = strstr(p + 2, "*/");
        return end ? end + 2 : p + strlen(p);
    }
    return p;
}

int mt_sql_has_order_by(const char *sql) {
    int depth = 0, after_order = 0;
    for (const char *p = sql; p && *p;) {
        const char *q = skip_quoted(p);
        if (q != p) {
            if (*p != '-' && *p != '/') after_order = 0; /* a comment is only a space */
            p = q;
            continue;
        }
        if (*p == '(') depth++, after_order = 0;
        else if (*p == ')') depth--, after_order = 0;
        if (isalpha((unsigned char)*p) || *p == '_') {
            const char *w = p;
            while (isalnum((unsigned char)*p) || *p == '_') p++;
            size_t n = (size_t)(p - w);
            if (depth == 0 && after_order && n == 2 && !strncasecmp(w, "BY", 2)) return 1;
            after_order = depth == 0 && n == 5 && !strncasecmp(w, "ORDER", 5);
            continue;
        }
        if (!isspace((unsigned char)*p) && *p != '(' && *p != ')') after_order = 0;
        p++;
    }
    return 0;
}

static json_t *cell_json(const mt_sql_cell *c) {
    switch (c->type) {
    case MT_CELL_INT: return json_integer((json_int_t)c->i);
    case MT_CELL_REAL: return isfinite(c->f) ? json_real(c->f) : json_null();
    case MT_CELL_TEXT: return json_stringn_nocheck(c->bytes, (size_t)c->len);
    case MT_CELL_BLOB: return json_sprintf("<blob of %d bytes>", c->len);
    default: return json_null();
    }
}

char *mt_sql_result_json(const mt_sql_result *r) {
    json_t *v;
    if (r->rows == 1 && r->cols == 1) v = cell_json(&r->cells[0]);
    else {
        v = json_array();
        for (long i = 0; v && i < r->rows; i++) {
            json_t *row = json_array();
            for (int c = 0; row && c < r->cols; c++) json_array_append_new(row, cell_json(&r->cells[(size_t)i * r->cols + c]));
            json_array_append_new(v, row);
        }
    }
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(v);
    return s;
}

/* Appends one cell's text; returns 0 on OOM. */
static int append_cell_text(char **buf, size_t *len, size_t *cap, const mt_sql_cell *c) {
    char tmp[64];
    const char *s = tmp;
    size_t n;
    if (c->type == MT_CELL_INT) n = (size_t)snprintf(tmp, sizeof tmp, "%lld", (long long)c->i);
    else if (c->type == MT_CELL_REAL) n = (size_t)snprintf(tmp, sizeof tmp, "%.15g", c->f);
    else if (c->type == MT_CELL_NULL) n = (size_t)snprintf(tmp, sizeof tmp, "NULL");
    else if (c->type == MT_CELL_BLOB) n = (size_t)snprintf(tmp, sizeof tmp, "<blob of %d bytes>", c->len);
    else s = c->bytes, n = (size_t)c->len;
    if (*len + n + 3 > *cap) {
        size_t nc = (*len + n + 3) * 2;
        char *b = realloc(*buf, nc);
        if (!b) return 0;
        *buf = b, *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 1;
}

char *mt_sql_result_cell_string(const mt_sql_result *r, long row, int col) {
    size_t len = 0, cap = 32;
    char *buf = malloc(cap);
    if (buf) buf[0] = 0;
    if (buf && !append_cell_text(&buf, &len, &cap, &r->cells[(size_t)row * r->cols + col])) return free(buf), NULL;
    return buf;
}

char *mt_sql_result_text(const mt_sql_result *r) {
    size_t len = 0, cap = 64;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    buf[0] = 0;
    for (long i = 0; i < r->rows; i++)
        for (int c = 0; c < r->cols; c++) {
            const mt_sql_cell sep = {.type = MT_CELL_TEXT, .bytes = c ? ", " : "; ", .len = 2};
            if ((i || c) && !append_cell_text(&buf, &len, &cap, &sep)) return free(buf), NULL;
            if (!append_cell_text(&buf, &len, &cap, &r->cells[(size_t)i * r->cols + c])) return free(buf), NULL;
        }
    return buf;
}

const char *mt_sql_verdict_name(mt_sql_verdict v) {
    switch (v) {
    case MT_SQL_MATCH: return "match";
    case MT_SQL_MISMATCH: return "mismatch";
    case MT_SQL_INVALID: return "invalid";
    case MT_SQL_GOLD_ERROR: return "gold_error";
    }
    return "unknown";
}

mt_status mt_sql_execution_match(mt_sql_db *db, const char *gold, const char *produced, mt_sql_verdict *verdict,
                                 char **error) {
    *error = NULL;
    mt_sql_result *g = NULL, *p = NULL;
    mt_status s = mt_sql_query(db, gold, &g);
    if (s == MT_ERR_SQL) {
        *verdict = MT_SQL_GOLD_ERROR;
        *error = mt_strdup_printf("gold: %s", mt_last_error());
        return *error ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    }
    if (s) return s;
    s = mt_sql_query(db, produced, &p);
    if (s == MT_ERR_SQL) {
        *verdict = MT_SQL_INVALID;
        *error = strdup(mt_last_error());
        s = *error ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    } else if (s == MT_OK)
        *verdict = mt_sql_results_equal(g, p, mt_sql_has_order_by(gold)) ? MT_SQL_MATCH : MT_SQL_MISMATCH;
    mt_sql_result_free(g);
    mt_sql_result_free(p);
    return s;
}
