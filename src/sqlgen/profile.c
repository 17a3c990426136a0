/* Profiling a database for data generation (see profile.h). Every query goes through the
 * same sandbox as untrusted SQL, so a profile can be built from any file. */
#include "sqlgen/profile.h"
#include "core/error.h"
#include "core/file.h"
#include "eval/sql.h"
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PROFILE_VALUES 5000  /* distinct values read per column */
#define MAX_MISSING_MARKERS 3

char *mt_sql_ident(const char *name) {
    size_t n = strlen(name), q = 0;
    for (size_t i = 0; i < n; i++) q += name[i] == '"';
    char *out = malloc(n + q + 3), *o = out;
    if (!out) return NULL;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '"') *o++ = '"';
        *o++ = name[i];
    }
    *o++ = '"';
    *o = 0;
    return out;
}

char *mt_sql_literal(const char *text) {
    size_t n = strlen(text), q = 0;
    for (size_t i = 0; i < n; i++) q += text[i] == '\'';
    char *out = malloc(n + q + 3), *o = out;
    if (!out) return NULL;
    *o++ = '\'';
    for (size_t i = 0; i < n; i++) {
        if (text[i] == '\'') *o++ = '\'';
        *o++ = text[i];
    }
    *o++ = '\'';
    *o = 0;
    return out;
}

const char *mt_value_format_name(mt_value_format f) {
    static const char *const names[] = {"text", "integer", "real", "integer as text", "decimal as text",
                                        "money as text", "quantity with unit as text", "feet and inches as text"};
    return (unsigned)f < sizeof names / sizeof names[0] ? names[f] : "?";
}

/* ---- recognising how a text value is written ---- */

static const char *digits(const char *p) {
    while (isdigit((unsigned char)*p)) p++;
    return p;
}

static int is_int_text(const char *s) {
    if (*s == '-') s++;
    const char *e = digits(s);
    return e > s && !*e;
}

static int is_real_text(const char *s) {
    if (*s == '-') s++;
    const char *e = digits(s);
    if (e == s || *e != '.') return 0;
    const char *f = digits(e + 1);
    return f > e + 1 && !*f;
}

static int is_money(const char *s) {
    if (*s++ != '$') return 0;
    const char *e = digits(s);
    if (e == s || e - s > 3 + (*e != ',') * 12) return 0;
    while (*e == ',') {
        const char *g = digits(e + 1);
        if (g - e != 4) return 0;
        e = g;
    }
    if (*e == '.') {
        const char *f = digits(e + 1);
        if (f == e + 1) return 0;
        e = f;
    }
    return !*e;
}

/* "215 lbs": number, one space, letters; the unit is copied out. */
static int is_unit(const char *s, char unit[24]) {
    const char *e = digits(s);
    if (e == s) return 0;
    if (*e == '.') e = digits(e + 1);
    if (*e != ' ') return 0;
    const char *u = e + 1, *ue = u;
    while (isalpha((unsigned char)*ue)) ue++;
    if (ue == u || *ue || ue - u >= 24) return 0;
    memcpy(unit, u, (size_t)(ue - u));
    unit[ue - u] = 0;
    return 1;
}

static int is_feet_inches(const char *s) {
    const char *e = digits(s);
    if (e == s || *e != '\'') return 0;
    if (*++e == ' ') e++;
    const char *f = digits(e);
    return f > e && f[0] == '"' && !f[1];
}

static mt_value_format text_format(const char *s, char unit[24]) {
    if (is_int_text(s)) return MT_FMT_INT_TEXT;
    if (is_real_text(s)) return MT_FMT_REAL_TEXT;
    if (is_money(s)) return MT_FMT_MONEY;
    if (is_feet_inches(s)) return MT_FMT_FEET_INCHES;
    if (is_unit(s, unit)) return MT_FMT_UNIT;
    return MT_FMT_TEXT;
}

/* ---- profiling one column ---- */

static mt_status query(mt_sql_db *db, mt_sql_result **r, const char *fmt, const char *a, const char *b) {
    char *sql = mt_strdup_printf(fmt, a, b);
    if (!sql) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_status s = mt_sql_query(db, sql, r);
    if (s) s = mt_error_prefix(s, "profiling with \"%s\"", sql);
    free(sql);
    return s;
}

static const char *cell_text(const mt_sql_result *r, long row, int col) {
    const mt_sql_cell *c = &r->cells[(size_t)row * r->cols + col];
    return c->type == MT_CELL_TEXT ? c->bytes : NULL;
}

static long cell_int(const mt_sql_result *r, long row, int col) {
    const mt_sql_cell *c = &r->cells[(size_t)row * r->cols + col];
    return c->type == MT_CELL_INT ? (long)c->i : 0;
}

/* "--", "NA", "N/A", "?", "": short and without digits, or a word for nothing. */
static int looks_like_marker(const char *s) {
    if (!s) return 0;
    static const char *const words[] = {"null", "none", "unknown", "missing"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (!strcasecmp(s, words[i])) return 1;
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if (isdigit((unsigned char)s[i])) return 0;
    return n <= 4;
}

/* Picks the format covering most rows; values outside it become missing markers when they
 * are few (at most 3 distinct) and either cover at most 20% of the rows or look like
 * markers and cover at most half. */
static void choose_format(mt_column_profile *c, const mt_sql_result *vals, mt_value_format *fmt_of) {
    long rows_of[8] = {0};
    char unit[24] = "", first_unit[24] = "";
    for (long i = 0; i < vals->rows; i++) {
        long n = cell_int(vals, i, 2);
        const char *type = cell_text(vals, i, 1), *text = cell_text(vals, i, 0);
        mt_value_format f = MT_FMT_TEXT;
        if (type && !strcmp(type, "integer")) f = MT_FMT_INTEGER;
        else if (type && !strcmp(type, "real")) f = MT_FMT_REAL;
        else if (text) {
            f = text_format(text, unit);
            if (f == MT_FMT_UNIT && !*first_unit) strcpy(first_unit, unit);
            if (f == MT_FMT_UNIT && strcmp(unit, first_unit)) f = MT_FMT_TEXT; /* mixed units */
        }
        fmt_of[i] = f;
        rows_of[f] += n;
    }
    /* integers among decimals are decimals */
    mt_value_format pairs[2][2] = {{MT_FMT_INT_TEXT, MT_FMT_REAL_TEXT}, {MT_FMT_INTEGER, MT_FMT_REAL}};
    for (int p = 0; p < 2; p++)
        if (rows_of[pairs[p][0]] && rows_of[pairs[p][1]]) {
            rows_of[pairs[p][1]] += rows_of[pairs[p][0]];
            rows_of[pairs[p][0]] = 0;
            for (long i = 0; i < vals->rows; i++)
                if (fmt_of[i] == pairs[p][0]) fmt_of[i] = pairs[p][1];
        }
    mt_value_format best = MT_FMT_TEXT;
    for (int f = 1; f < 8; f++)
        if (rows_of[f] > rows_of[best]) best = (mt_value_format)f;
    long covered = rows_of[best], other_distinct = 0, other_markers = 0;
    for (long i = 0; i < vals->rows; i++)
        if (fmt_of[i] != best) other_distinct++, other_markers += looks_like_marker(cell_text(vals, i, 0));
    /* most rows in the format and the rest few distinct values; or half the rows, and the
     * rest plainly markers ("--", "NA") */
    int few_others = other_distinct <= MAX_MISSING_MARKERS && vals->rows < MAX_PROFILE_VALUES;
    int ok = best != MT_FMT_TEXT && few_others &&
             (covered * 5 >= c->non_null * 4 || (covered * 2 >= c->non_null && other_markers == other_distinct));
    c->format = ok ? best : MT_FMT_TEXT;
    if (c->format == MT_FMT_UNIT) strcpy(c->unit, first_unit);
}

static mt_status keep_values(mt_column_profile *c, const mt_sql_result *vals, const mt_value_format *fmt_of) {
    c->values = calloc((size_t)vals->rows + 1, sizeof *c->values);
    c->counts = calloc((size_t)vals->rows + 1, sizeof *c->counts);
    c->missing = calloc(MAX_MISSING_MARKERS + 1, sizeof *c->missing);
    if (!c->values || !c->counts || !c->missing) return mt_error(MT_ERR_NOMEM, "out of memory");
    for (long i = 0; i < vals->rows; i++) {
        char *text = mt_sql_result_cell_string(vals, i, 0);
        if (!text) return mt_error(MT_ERR_NOMEM, "out of memory");
        if (c->format != MT_FMT_TEXT && fmt_of[i] != c->format) c->missing[c->n_missing++] = text;
        else {
            c->counts[c->n_values] = cell_int(vals, i, 2);
            c->values[c->n_values++] = text;
        }
    }
    return MT_OK;
}

static int is_id_name(const char *name) {
    size_t n = strlen(name);
    return !strcasecmp(name, "id") || (n > 3 && !strcasecmp(name + n - 3, "_id")) || (n > 2 && !strcmp(name + n - 2, "Id")) ||
           (n > 2 && !strcmp(name + n - 2, "ID"));
}

static mt_status profile_column(mt_sql_db *db, const char *table_q, mt_column_profile *c, long rows) {
    char *col_q = mt_sql_ident(c->name);
    if (!col_q) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_sql_result *counts = NULL, *vals = NULL;
    char *sql = mt_strdup_printf("SELECT COUNT(%s), COUNT(DISTINCT %s) FROM %%s%%s", col_q, col_q);
    mt_status s = sql ? query(db, &counts, sql, table_q, "") : mt_error(MT_ERR_NOMEM, "out of memory");
    free(sql);
    if (s == MT_OK) {
        c->non_null = cell_int(counts, 0, 0);
        c->distinct = cell_int(counts, 0, 1);
        sql = mt_strdup_printf("SELECT CAST(%s AS TEXT), typeof(%s), COUNT(*) AS n FROM %%s WHERE %s IS NOT NULL "
                               "GROUP BY 1, 2 ORDER BY n DESC, 1 LIMIT %d%%s",
                               col_q, col_q, col_q, MAX_PROFILE_VALUES);
        s = sql ? query(db, &vals, sql, table_q, "") : mt_error(MT_ERR_NOMEM, "out of memory");
        free(sql);
    }
    mt_value_format *fmt_of = vals ? calloc((size_t)vals->rows + 1, sizeof *fmt_of) : NULL;
    if (s == MT_OK && !fmt_of) s = mt_error(MT_ERR_NOMEM, "out of memory");
    if (s == MT_OK) {
        choose_format(c, vals, fmt_of);
        s = keep_values(c, vals, fmt_of);
    }
    if (s == MT_OK) {
        c->numeric = c->format != MT_FMT_TEXT && !is_id_name(c->name) && c->n_values > 1;
        c->categorical = c->format == MT_FMT_TEXT && c->n_values >= 2 && c->n_values <= 60 && c->n_values * 2 <= c->non_null;
        (void)rows;
    }
    free(fmt_of);
    free(col_q);
    mt_sql_result_free(counts);
    mt_sql_result_free(vals);
    return s;
}

/* The key: mostly-unique text present in most rows; a column named like "name" wins. */
static int choose_key(const mt_table_profile *t) {
    int best = -1;
    for (int i = 0; i < t->n_cols; i++) {
        const mt_column_profile *c = &t->cols[i];
        if (c->format != MT_FMT_TEXT || c->non_null * 10 < t->rows * 9 || c->distinct * 10 < c->non_null * 9 || t->rows < 2)
            continue;
        if (best < 0 || (strcasestr(c->name, "name") && !strcasestr(t->cols[best].name, "name"))) best = i;
    }
    return best;
}

static mt_status profile_table(mt_sql_db *db, mt_table_profile *t) {
    char *table_q = mt_sql_ident(t->name);
    if (!table_q) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_sql_result *shape = NULL, *count = NULL;
    mt_status s = query(db, &shape, "SELECT * FROM %s LIMIT 0%s", table_q, "");
    if (s == MT_OK) s = query(db, &count, "SELECT COUNT(*) FROM %s%s", table_q, "");
    if (s == MT_OK) {
        t->rows = cell_int(count, 0, 0);
        t->n_cols = shape->cols;
        t->cols = calloc((size_t)shape->cols + 1, sizeof *t->cols);
        if (!t->cols) s = mt_error(MT_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; s == MT_OK && i < t->n_cols; i++) {
        t->cols[i].name = strdup(shape->names[i]);
        t->cols[i].decltype = strdup(shape->decltypes[i]);
        if (!t->cols[i].name || !t->cols[i].decltype) s = mt_error(MT_ERR_NOMEM, "out of memory");
        else s = profile_column(db, table_q, &t->cols[i], t->rows);
    }
    t->key = s == MT_OK ? choose_key(t) : -1;
    mt_sql_result_free(shape);
    mt_sql_result_free(count);
    free(table_q);
    return s;
}

mt_status mt_db_profile_build(mt_sql_db *db, mt_db_profile *out) {
    memset(out, 0, sizeof *out);
    mt_sql_result *tables = NULL;
    mt_status s = mt_sql_query(db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                                   "ORDER BY name", &tables);
    if (s) return s;
    out->tables = calloc((size_t)tables->rows + 1, sizeof *out->tables);
    if (!out->tables) s = mt_error(MT_ERR_NOMEM, "out of memory");
    for (long i = 0; s == MT_OK && i < tables->rows; i++) {
        mt_table_profile *t = &out->tables[out->n_tables++];
        t->key = -1;
        if (!(t->name = mt_sql_result_cell_string(tables, i, 0))) s = mt_error(MT_ERR_NOMEM, "out of memory");
        else s = profile_table(db, t);
    }
    mt_sql_result_free(tables);
    if (s == MT_OK && out->n_tables == 0) s = mt_error(MT_ERR_FORMAT, "the database has no tables");
    if (s) mt_db_profile_free(out);
    return s;
}

static void column_free(mt_column_profile *c) {
    free(c->name);
    free(c->decltype);
    for (int i = 0; i < c->n_values; i++) free(c->values[i]);
    for (int i = 0; i < c->n_missing; i++) free(c->missing[i]);
    free(c->values);
    free(c->counts);
    free(c->missing);
}

void mt_db_profile_free(mt_db_profile *p) {
    for (int i = 0; i < p->n_tables; i++) {
        for (int j = 0; j < p->tables[i].n_cols; j++) column_free(&p->tables[i].cols[j]);
        free(p->tables[i].cols);
        free(p->tables[i].name);
    }
    free(p->tables);
    memset(p, 0, sizeof *p);
}

char *mt_column_number_sql(const mt_column_profile *c) {
    char *q = mt_sql_ident(c->name), *out = NULL;
    if (!q) return NULL;
    switch (c->format) {
    case MT_FMT_INTEGER: case MT_FMT_REAL: out = strdup(q); break;
    case MT_FMT_INT_TEXT: out = mt_strdup_printf("CAST(%s AS INTEGER)", q); break;
    case MT_FMT_REAL_TEXT: out = mt_strdup_printf("CAST(%s AS REAL)", q); break;
    case MT_FMT_MONEY: out = mt_strdup_printf("CAST(REPLACE(REPLACE(%s, '$', ''), ',', '') AS %s)", q,
                                              c->n_values && strchr(c->values[0], '.') ? "REAL" : "INTEGER"); break;
    case MT_FMT_UNIT: out = mt_strdup_printf("CAST(%s AS REAL)", q); break; /* the number before the unit */
    case MT_FMT_FEET_INCHES:
        out = mt_strdup_printf("(CAST(SUBSTR(%s, 1, INSTR(%s, '''') - 1) AS INTEGER) * 12 + "
                               "CAST(TRIM(SUBSTR(%s, INSTR(%s, '''') + 1), ' \"') AS INTEGER))", q, q, q, q);
        break;
    default: out = NULL;
    }
    free(q);
    return out;
}

char *mt_column_valid_sql(const mt_column_profile *c) {
    char *q = mt_sql_ident(c->name);
    if (!q) return NULL;
    char *out = mt_strdup_printf("%s IS NOT NULL", q);
    for (int i = 0; out && i < c->n_missing; i++) {
        char *lit = mt_sql_literal(c->missing[i]), *next = lit ? mt_strdup_printf("%s AND %s != %s", out, q, lit) : NULL;
        free(lit);
        free(out);
        out = next;
    }
    free(q);
    return out;
}

char *mt_column_format_text(const mt_table_profile *t, const mt_column_profile *c) {
    const char *example = c->n_values ? c->values[0] : "";
    char missing[256] = "";
    size_t len = 0;
    for (int i = 0; i < c->n_missing; i++)
        len += (size_t)snprintf(missing + len, len < sizeof missing ? sizeof missing - len : 0, "%s'%s'",
                                i ? (i + 1 == c->n_missing ? " or " : ", ") : "", c->missing[i]);
    if (len >= sizeof missing) strcpy(missing, "markers");
    char *number = mt_column_number_sql(c);
    char *out = mt_strdup_printf("%s.%s is %s%s%s, e.g. '%s'%s%s%s%s%s", t->name, c->name,
                                 mt_value_format_name(c->format), *c->decltype ? " declared " : "", c->decltype, example,
                                 c->n_missing ? "; " : "", missing, c->n_missing ? " means unknown" : "",
                                 number && c->format > MT_FMT_REAL ? "; as a number: " : "",
                                 number && c->format > MT_FMT_REAL ? number : "");
    free(number);
    return out;
}
