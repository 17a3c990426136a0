/* A sandbox for untrusted SQL (the queries a model writes). Layers of defence, each enough
 * on its own for the common attacks:
 *   - the file is opened read-only and immutable (URI mode=ro&immutable=1): SQLite takes no
 *     locks, writes no journal and cannot write the file;
 *   - PRAGMA query_only, no attached databases (SQLITE_LIMIT_ATTACHED 0), defensive mode,
 *     untrusted schema, extension loading off, triggers off;
 *   - an authorizer that allows only reading tables, SELECT, recursive CTEs and ordinary
 *     functions (load_extension, readfile, writefile, edit and fts3_tokenizer are denied);
 *   - one statement only (the tail after sqlite3_prepare_v2 must be empty), which must be
 *     a SELECT / WITH / VALUES that sqlite3_stmt_readonly agrees is read-only;
 *   - a progress handler that interrupts after a step budget or a wall-time limit, and caps
 *     on the rows and bytes a result may hold;
 *   - SQLite's own limits lowered so that no single function call, where the progress
 *     handler never runs, can outlast the time limit: values of at most MAX_VALUE_BYTES
 *     (an instr() or LIKE over the longest value takes well under a second), short LIKE
 *     patterns, and a printf()/format() that refuses widths and precisions no value could
 *     hold (SQLite 3.40 loops `precision` times for %c even past the length limit, so
 *     printf('%.*c', 2000000000, 'x') spent a minute inside one call). */
#include "eval/sql.h"
#include "core/check.h"
#include "core/error.h"
#include "core/file.h"
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROGRESS_EVERY 1000 /* VM instructions between progress-handler calls */
#define MAX_VALUE_BYTES (1 << 17)   /* SQLITE_LIMIT_LENGTH: the longest string, blob or row */
#define MAX_LIKE_PATTERN 1000       /* SQLITE_LIMIT_LIKE_PATTERN_LENGTH */

struct mt_sql_db {
    sqlite3 *db;
    mt_sql_limits limits;
    char denied[256];     /* what the authorizer refused last, for the error message */
    long steps;           /* VM instructions so far in this query (in PROGRESS_EVERY units) */
    double started;       /* monotonic seconds at the start of the query */
    int interrupt_reason; /* 0 none, 1 steps, 2 time */
    sqlite3 *format_db;   /* a private in-memory connection whose built-in printf() formats
                             what bounded_printf has checked (opened on first use) */
};

void mt_sql_limits_fill(mt_sql_limits *l) {
    if (l->max_steps <= 0) l->max_steps = 50000000;
    if (l->max_seconds <= 0) l->max_seconds = 10.0;
    if (l->max_rows <= 0) l->max_rows = 100000;
    if (l->max_bytes <= 0) l->max_bytes = 64L << 20;
}

/* Zero means the default; negative, NaN or infinite limits are refused. */
mt_status mt_sql_limits_validate(const mt_sql_limits *l) {
    mt_status s = MT_OK;
    if (!l) return MT_OK;
    if ((s = mt_check_int("--sql-steps", l->max_steps, 0, LONG_MAX)) ||
        (s = mt_check_real("--sql-timeout", l->max_seconds, 0, 1e10)) ||
        (s = mt_check_int("max_rows", l->max_rows, 0, LONG_MAX)) || (s = mt_check_int("max_bytes", l->max_bytes, 0, LONG_MAX)))
        return s;
    return MT_OK;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *action_name(int action) {
    switch (action) {
    case SQLITE_ATTACH: return "ATTACH";
    case SQLITE_DETACH: return "DETACH";
    case SQLITE_PRAGMA: return "PRAGMA";
    case SQLITE_INSERT: return "INSERT";
    case SQLITE_UPDATE: return "UPDATE";
    case SQLITE_DELETE: return "DELETE";
    case SQLITE_TRANSACTION: return "a transaction";
    case SQLITE_SAVEPOINT: return "SAVEPOINT";
    case SQLITE_ALTER_TABLE: return "ALTER TABLE";
    case SQLITE_ANALYZE: return "ANALYZE";
    case SQLITE_REINDEX: return "REINDEX";
    case SQLITE_CREATE_VTABLE: case SQLITE_DROP_VTABLE: return "a virtual table";
    default: return "a schema change";
    }
}

static int is_denied_function(const char *name) {
    static const char *const denied[] = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"};
    for (size_t i = 0; name && i < sizeof denied / sizeof denied[0]; i++)
        if (!strcasecmp(name, denied[i])) return 1;
    return 0;
}

static int authorize(void *ctx, int action, const char *a1, const char *a2, const char *db_name, const char *trigger) {
    (void)db_name, (void)trigger;
    mt_sql_db *s = ctx;
    switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_RECURSIVE: return SQLITE_OK;
    case SQLITE_FUNCTION:
        if (!is_denied_function(a2)) return SQLITE_OK;
        snprintf(s->denied, sizeof s->denied, "function %s() is not allowed", a2);
        return SQLITE_DENY;
    case SQLITE_UPDATE:
        /* SQLite asks this when a table-valued PRAGMA function (pragma_table_info('t'))
         * registers its virtual table, not only for UPDATE statements */
        if (a1 && (!strcmp(a1, "sqlite_master") || !strcmp(a1, "sqlite_schema"))) {
            snprintf(s->denied, sizeof s->denied, "changing the schema is not allowed (a PRAGMA function such as "
                     "pragma_table_info() needs it); read the schema with SELECT sql FROM sqlite_master");
            return SQLITE_DENY;
        }
        /* fall through */
    default:
        snprintf(s->denied, sizeof s->denied, "%s is not allowed (read-only SELECT only)", action_name(action));
        return SQLITE_DENY;
    }
}

/* The integer a printf() '*' takes from the next argument (0 when there is none). */
static long long star_arg(int argc, sqlite3_value **argv, int *next) {
    return *next < argc ? sqlite3_value_int64(argv[(*next)++]) : 0;
}

/* Whether every width and precision in fmt (literal or '*') is within MAX_VALUE_BYTES; if
 * not, *bad gets the first one that is not. Arguments are consumed as SQLite's printf()
 * consumes them: one per conversion except %% and %n, plus one per '*'. */
static int printf_sizes_ok(const char *fmt, int argc, sqlite3_value **argv, long long *bad) {
    int next = 1;
    for (const char *p = fmt; p && *p; p++) {
        if (*p != '%') continue;
        if (*++p == '%') continue;
        while (*p && strchr("-+ #0,!", *p)) p++;
        for (int part = 0; part < 2; part++) { /* width, then precision after a '.' */
            if (part == 1) {
                if (*p != '.') break;
                p++;
            }
            long long v = 0;
            if (*p == '*') v = star_arg(argc, argv, &next), p++;
            else
                for (; isdigit((unsigned char)*p) && v <= MAX_VALUE_BYTES; p++) v = v * 10 + (*p - '0');
            if (v > MAX_VALUE_BYTES || v < -MAX_VALUE_BYTES) {
                *bad = v;
                return 0;
            }
            while (isdigit((unsigned char)*p)) p++;
        }
        while (*p == 'l') p++;
        if (!*p) break;
        if (*p != 'n') next++;
    }
    return 1;
}

/* printf() and format(): checked here, formatted by SQLite's own printf on format_db. */
static void bounded_printf(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    mt_sql_db *s = sqlite3_user_data(ctx);
    long long bad = 0;
    if (argc >= 1 && !printf_sizes_ok((const char *)sqlite3_value_text(argv[0]), argc, argv, &bad)) {
        char msg[160];
        snprintf(msg, sizeof msg, "printf(): width or precision %lld is beyond the sandbox's %d-byte limit on a value",
                 bad, MAX_VALUE_BYTES);
        sqlite3_result_error(ctx, msg, -1);
        return;
    }
    if (!s->format_db) {
        if (sqlite3_open_v2(":memory:", &s->format_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
            sqlite3_close(s->format_db);
            s->format_db = NULL;
            sqlite3_result_error_nomem(ctx);
            return;
        }
        sqlite3_limit(s->format_db, SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES);
    }
    char sql[32 + 6 * 128];
    int n = snprintf(sql, sizeof sql, "SELECT printf(");
    for (int i = 0; i < argc && i < 127; i++) n += snprintf(sql + n, sizeof sql - n, i ? ",?%d" : "?%d", i + 1);
    snprintf(sql + n, sizeof sql - n, ")");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->format_db, sql, -1, &st, NULL);
    for (int i = 0; rc == SQLITE_OK && i < argc; i++) rc = sqlite3_bind_value(st, i + 1, argv[i]);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) sqlite3_result_value(ctx, sqlite3_column_value(st, 0));
    else if (rc == SQLITE_TOOBIG) sqlite3_result_error_toobig(ctx);
    else sqlite3_result_error(ctx, sqlite3_errmsg(s->format_db), -1);
    sqlite3_finalize(st);
}

static int progress(void *ctx) {
    mt_sql_db *s = ctx;
    s->steps++;
    if (s->steps * PROGRESS_EVERY > s->limits.max_steps) s->interrupt_reason = 1;
    else if (now_seconds() - s->started > s->limits.max_seconds) s->interrupt_reason = 2;
    return s->interrupt_reason != 0;
}

/* "file:" URI for path, with the characters URIs give meaning to percent-encoded. */
static char *file_uri(const char *path) {
    size_t n = strlen(path);
    char *uri = malloc(3 * n + 40), *o = uri;
    if (!uri) return NULL;
    o += sprintf(o, "file:");
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if (*p == '%' || *p == '?' || *p == '#' || *p < 0x21 || *p >= 0x7f) o += sprintf(o, "%%%02X", *p);
        else *o++ = (char)*p;
    }
    strcpy(o, "?mode=ro&immutable=1");
    return uri;
}

static mt_status configure(mt_sql_db *s, const char *path) {
    sqlite3 *db = s->db;
    int off = 0, on = 1;
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, off, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, on, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, off, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, off, NULL);
    sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
    sqlite3_limit(db, SQLITE_LIMIT_SQL_LENGTH, 1 << 20);
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES);
    sqlite3_limit(db, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, MAX_LIKE_PATTERN);
    int fflags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
    if (sqlite3_create_function(db, "printf", -1, fflags, s, bounded_printf, NULL, NULL) != SQLITE_OK ||
        sqlite3_create_function(db, "format", -1, fflags, s, bounded_printf, NULL, NULL) != SQLITE_OK)
        return mt_error(MT_ERR_NOMEM, "%s: cannot register printf(): %s", path, sqlite3_errmsg(db));
    char *err = NULL;
    /* Reading the schema now turns "not a database" into an open error, not a query error. */
    if (sqlite3_exec(db, "PRAGMA query_only=1; SELECT count(*) FROM sqlite_master;", NULL, NULL, &err) != SQLITE_OK) {
        mt_status st = mt_error(MT_ERR_FORMAT, "%s: not a readable SQLite database (%s)", path, err ? err : "?");
        sqlite3_free(err);
        return st;
    }
    sqlite3_set_authorizer(db, authorize, s);
    sqlite3_progress_handler(db, PROGRESS_EVERY, progress, s);
    return MT_OK;
}

mt_status mt_sql_open(const char *path, const mt_sql_limits *limits, mt_sql_db **out) {
    *out = NULL;
    if (!path) return mt_error(MT_ERR_ARG, "no database path");
    mt_status ls = mt_sql_limits_validate(limits);
    if (ls) return ls;
    if (!mt_file_exists(path)) return mt_error(MT_ERR_IO, "%s: no such database file", path);
    mt_sql_db *s = calloc(1, sizeof *s);
    char *uri = file_uri(path);
    if (!s || !uri) {
        free(s), free(uri);
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    if (limits) s->limits = *limits;
    mt_sql_limits_fill(&s->limits);
    int rc = sqlite3_open_v2(uri, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL);
    free(uri);
    mt_status st = MT_OK;
    if (rc != SQLITE_OK) st = mt_error(MT_ERR_IO, "%s: cannot open database: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
    else st = configure(s, path);
    if (st) mt_sql_close(s);
    else *out = s;
    return st;
}

void mt_sql_close(mt_sql_db *db) {
    if (!db) return;
    sqlite3_close(db->format_db);
    sqlite3_close(db->db);
    free(db);
}

/* Skips spaces and SQL comments. */
static const char *skip_space_comments(const char *p) {
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n') p++;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            p = end ? end + 2 : p + strlen(p);
        } else return p;
    }
}

static int starts_with_word(const char *p, const char *word) {
    size_t n = strlen(word);
    return !strncasecmp(p, word, n) && !isalnum((unsigned char)p[n]) && p[n] != '_';
}

/* Only whitespace, comments and semicolons may follow the first statement. */
static int tail_is_empty(const char *p) {
    for (;;) {
        p = skip_space_comments(p);
        if (*p != ';') return *p == 0;
        p++;
    }
}

static mt_status refuse(const char *why) { return mt_error(MT_ERR_SQL, "refused: %s", why); }

static mt_status prepare_one(mt_sql_db *s, const char *sql, sqlite3_stmt **stmt) {
    *stmt = NULL;
    const char *p = skip_space_comments(sql);
    if (!*p) return refuse("empty statement");
    if (!starts_with_word(p, "SELECT") && !starts_with_word(p, "WITH") && !starts_with_word(p, "VALUES")) {
        char word[24] = {0};
        for (int i = 0; i < 20 && (isalnum((unsigned char)p[i]) || p[i] == '_'); i++) word[i] = p[i];
        return mt_error(MT_ERR_SQL, "refused: only SELECT statements are allowed, not '%s'", *word ? word : "?");
    }
    const char *tail = NULL;
    s->denied[0] = 0;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, stmt, &tail);
    if (rc != SQLITE_OK) {
        mt_status st = s->denied[0] ? refuse(s->denied) : mt_error(MT_ERR_SQL, "error: %s", sqlite3_errmsg(s->db));
        sqlite3_finalize(*stmt);
        *stmt = NULL;
        return st;
    }
    const char *why = !*stmt                       ? "empty statement"
                      : !tail_is_empty(tail)       ? "more than one statement"
                      : sqlite3_stmt_isexplain(*stmt) ? "EXPLAIN is not allowed"
                      : !sqlite3_stmt_readonly(*stmt) ? "the statement writes"
                                                      : NULL;
    if (!why) return MT_OK;
    sqlite3_finalize(*stmt);
    *stmt = NULL;
    return refuse(why);
}

static mt_sql_result *result_new(sqlite3_stmt *stmt) {
    mt_sql_result *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->cols = sqlite3_column_count(stmt);
    r->names = calloc(r->cols ? r->cols : 1, sizeof *r->names);
    r->decltypes = calloc(r->cols ? r->cols : 1, sizeof *r->decltypes);
    if (!r->names || !r->decltypes) return free(r->names), free(r->decltypes), free(r), NULL;
    for (int c = 0; c < r->cols; c++) {
        const char *n = sqlite3_column_name(stmt, c), *t = sqlite3_column_decltype(stmt, c);
        r->names[c] = strdup(n ? n : "");
        r->decltypes[c] = strdup(t ? t : "");
        if (!r->names[c] || !r->decltypes[c]) return mt_sql_result_free(r), NULL;
    }
    return r;
}

/* Copies the current row into r; adds its text/blob bytes to *bytes. */
static mt_status append_row(mt_sql_result *r, sqlite3_stmt *stmt, long *bytes) {
    if (r->rows == r->cap_rows) {
        long cap = r->cap_rows ? r->cap_rows * 2 : 16;
        mt_sql_cell *c = realloc(r->cells, (size_t)cap * (r->cols ? r->cols : 1) * sizeof *c);
        if (!c) return mt_error(MT_ERR_NOMEM, "out of memory");
        r->cells = c;
        r->cap_rows = cap;
    }
    mt_sql_cell *row = r->cells + (size_t)r->rows * r->cols;
    memset(row, 0, (size_t)r->cols * sizeof *row);
    r->rows++; /* counted now so a failure below frees what was copied */
    for (int c = 0; c < r->cols; c++) {
        mt_sql_cell *cell = &row[c];
        switch (sqlite3_column_type(stmt, c)) {
        case SQLITE_INTEGER: cell->type = MT_CELL_INT; cell->i = sqlite3_column_int64(stmt, c); break;
        case SQLITE_FLOAT: cell->type = MT_CELL_REAL; cell->f = sqlite3_column_double(stmt, c); break;
        case SQLITE_NULL: cell->type = MT_CELL_NULL; break;
        default: {
            int is_text = sqlite3_column_type(stmt, c) == SQLITE_TEXT;
            const void *src = is_text ? (const void *)sqlite3_column_text(stmt, c) : sqlite3_column_blob(stmt, c);
            int n = sqlite3_column_bytes(stmt, c);
            cell->type = is_text ? MT_CELL_TEXT : MT_CELL_BLOB;
            cell->bytes = malloc((size_t)n + 1);
            if (!cell->bytes) return mt_error(MT_ERR_NOMEM, "out of memory");
            if (n) memcpy(cell->bytes, src, (size_t)n);
            cell->bytes[n] = 0;
            cell->len = n;
            *bytes += n;
        }
        }
    }
    return MT_OK;
}

static mt_status step_all(mt_sql_db *s, sqlite3_stmt *stmt, mt_sql_result *r) {
    long bytes = 0;
    for (;;) {
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_DONE) return MT_OK;
        if (rc == SQLITE_INTERRUPT && s->interrupt_reason == 1)
            return mt_error(MT_ERR_SQL, "interrupted: more than %ld steps", s->limits.max_steps);
        if (rc == SQLITE_INTERRUPT && s->interrupt_reason == 2)
            return mt_error(MT_ERR_SQL, "interrupted: longer than %g s", s->limits.max_seconds);
        if (rc != SQLITE_ROW) return mt_error(MT_ERR_SQL, "error: %s", sqlite3_errmsg(s->db));
        if (r->rows >= s->limits.max_rows)
            return mt_error(MT_ERR_SQL, "limit: more than %ld rows", s->limits.max_rows);
        mt_status st = append_row(r, stmt, &bytes);
        if (st) return st;
        if (bytes > s->limits.max_bytes) return mt_error(MT_ERR_SQL, "limit: more than %ld bytes of text", s->limits.max_bytes);
    }
}

mt_status mt_sql_query(mt_sql_db *s, const char *sql, mt_sql_result **out) {
    *out = NULL;
    if (!s || !sql) return mt_error(MT_ERR_ARG, "mt_sql_query: no database or no SQL");
    sqlite3_stmt *stmt;
    mt_status st = prepare_one(s, sql, &stmt);
    if (st) return st;
    mt_sql_result *r = result_new(stmt);
    if (!r) st = mt_error(MT_ERR_NOMEM, "out of memory");
    s->steps = 0;
    s->interrupt_reason = 0;
    s->started = now_seconds();
    if (st == MT_OK) st = step_all(s, stmt, r);
    sqlite3_finalize(stmt);
    if (st) mt_sql_result_free(r);
    else *out = r;
    return st;
}

void mt_sql_result_free(mt_sql_result *r) {
    if (!r) return;
    for (long i = 0; i < r->rows * r->cols; i++) free(r->cells[i].bytes);
    for (int c = 0; c < r->cols; c++) free(r->names[c]), free(r->decltypes[c]);
    free(r->names);
    free(r->decltypes);
    free(r->cells);
    free(r);
}

long mt_sql_result_rows(const mt_sql_result *r) { return r ? r->rows : 0; }
int mt_sql_result_cols(const mt_sql_result *r) { return r ? r->cols : 0; }
