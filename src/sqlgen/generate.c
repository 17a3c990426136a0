/* Training data grounded in a database: schema facts, row facts and question -> SQL pairs
 * from templates over the profiled columns (see profile.h). Each SQL statement is run in
 * the sandbox and its result becomes the pair's answer; a statement that fails is counted
 * and dropped (the templates are written so none should), one that returns nothing useful
 * is dropped, and a question asked twice is written once. Sampling (which values to filter
 * on, which rows to look up, which lines survive a cap) follows the seed. */
#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "sqlgen/profile.h"
#include "eval/sql.h"
#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define LIST_MAX_ROWS 30 /* a "which ..." answer lists at most this many rows */

void mt_datagen_defaults(mt_datagen_options *o) {
    memset(o, 0, sizeof *o);
    o->schema_facts = o->row_facts = o->sql_pairs = 1;
    o->max_row_facts = 5000;
    o->values_per_column = 4;
}

typedef struct {
    mt_sql_db *db;
    const mt_datagen_options *opt;
    mt_rng rng;
    json_t *seen;                 /* questions already written */
    json_t *schema, *rows, *sql;  /* lines, by kind */
    mt_datagen_stats *st;
    mt_status status;             /* first hard error (out of memory) */
} gen;

/* "nba_roster" -> "nba roster"; "SALARY" -> "salary". */
typedef struct { char s[128]; } words_buf;
static words_buf words(const char *name) {
    words_buf b;
    size_t i = 0;
    for (; name[i] && i + 1 < sizeof b.s; i++) b.s[i] = name[i] == '_' ? ' ' : (char)tolower((unsigned char)name[i]);
    b.s[i] = 0;
    return b;
}

static int first_time(gen *g, const char *question) {
    if (json_object_get(g->seen, question)) {
        g->st->duplicates++;
        return 0;
    }
    json_object_set_new(g->seen, question, json_true());
    return 1;
}

static void add_fact(gen *g, json_t *lines, const char *kind, const char *question, const char *answer) {
    if (!question || !answer) {
        if (!g->status) g->status = mt_error(MT_ERR_NOMEM, "out of memory");
        return;
    }
    if (!*answer || !first_time(g, question)) return;
    json_array_append_new(lines, json_pack("{s:s, s:s, s:s}", "input", question, "output", answer, "kind", kind));
}

static int useful(const mt_sql_result *r) {
    for (long i = 0; i < r->rows * r->cols; i++)
        if (r->cells[i].type != MT_CELL_NULL) return 1;
    return 0;
}

/* One question -> SQL pair (printf-style SQL), answered by running it. */
static void add_sql(gen *g, const char *question, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_sql(gen *g, const char *question, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *sql = NULL;
    if (vasprintf(&sql, fmt, ap) < 0) sql = NULL;
    va_end(ap);
    if (!sql || !question) {
        free(sql);
        if (!g->status) g->status = mt_error(MT_ERR_NOMEM, "out of memory");
        return;
    }
    mt_sql_result *r = NULL;
    if (json_object_get(g->seen, question)) g->st->duplicates++;
    else if (mt_sql_query(g->db, sql, &r) != MT_OK) g->st->failed++;
    else if (!useful(r) || (r->rows > LIST_MAX_ROWS && r->cols == 1)) g->st->empty++;
    else {
        char *answer = mt_sql_result_text(r);
        if (answer && first_time(g, question))
            json_array_append_new(g->sql, json_pack("{s:s, s:s, s:s, s:s}", "question", question, "sql", sql, "answer",
                                                    answer, "kind", "sql"));
        free(answer);
    }
    mt_sql_result_free(r);
    free(sql);
}

static const char *pick(gen *g, const mt_column_profile *c) {
    return c->values[mt_rng_next(&g->rng) % (uint64_t)c->n_values];
}

/* ---- schema facts ---- */

static void schema_facts(gen *g, const mt_db_profile *p) {
    char list[4096] = "";
    size_t len = 0;
    for (int i = 0; i < p->n_tables; i++)
        len += (size_t)snprintf(list + len, len < sizeof list ? sizeof list - len : 0, "%s%s", i ? ", " : "", p->tables[i].name);
    add_fact(g, g->schema, "schema", "What tables does the database have?", list);
    for (int i = 0; i < p->n_tables; i++) {
        const mt_table_profile *t = &p->tables[i];
        len = 0;
        for (int j = 0; j < t->n_cols; j++)
            len += (size_t)snprintf(list + len, len < sizeof list ? sizeof list - len : 0, "%s%s (%s)", j ? ", " : "",
                                    t->cols[j].name, *t->cols[j].decltype ? t->cols[j].decltype : "untyped");
        char *q = mt_strdup_printf("What columns does the %s table have?", t->name);
        add_fact(g, g->schema, "schema", q, list);
        free(q);
        for (int j = 0; j < t->n_cols; j++) {
            const mt_column_profile *c = &t->cols[j];
            char *fq = mt_strdup_printf("How are the values of %s.%s written?", t->name, c->name), *fa = mt_column_format_text(t, c);
            add_fact(g, g->schema, "schema", fq, fa);
            free(fq), free(fa);
            if (!c->categorical || c->n_values > 15) continue;
            len = 0;
            for (int v = 0; v < c->n_values; v++)
                len += (size_t)snprintf(list + len, len < sizeof list ? sizeof list - len : 0, "%s%s", v ? ", " : "", c->values[v]);
            fq = mt_strdup_printf("What values does %s.%s take?", t->name, c->name);
            add_fact(g, g->schema, "schema", fq, list);
            free(fq);
        }
    }
}

/* ---- row facts ---- */

static void row_facts(gen *g, const mt_table_profile *t) {
    if (t->key < 0) return;
    char *tq = mt_sql_ident(t->name), *sql = tq ? mt_strdup_printf("SELECT * FROM %s", tq) : NULL;
    mt_sql_result *r = NULL;
    if (sql && mt_sql_query(g->db, sql, &r) == MT_OK) {
        for (long i = 0; i < r->rows; i++) {
            const mt_sql_cell *row = r->cells + (size_t)i * r->cols;
            if (row[t->key].type != MT_CELL_TEXT || r->cols != t->n_cols) continue;
            for (int c = 0; c < r->cols; c++) {
                if (c == t->key || row[c].type == MT_CELL_NULL) continue;
                char *value = mt_sql_result_cell_string(r, i, c);
                char *q = mt_strdup_printf("In %s, what is the %s of %s?", t->name, t->cols[c].name, row[t->key].bytes);
                add_fact(g, g->rows, "row", q, value);
                free(q), free(value);
            }
        }
    }
    mt_sql_result_free(r);
    free(sql);
    free(tq);
}

/* ---- question -> SQL templates ---- */

typedef struct {
    const mt_table_profile *t;
    char *tq, *noun;           /* quoted table; "nba roster" */
    char *key;                 /* quoted key column or NULL */
} table_ctx;

static void numeric_templates(gen *g, const table_ctx *x, const mt_column_profile *n) {
    static const struct { const char *fn, *word; } aggs[] = {{"AVG", "average"}, {"MIN", "lowest"}, {"MAX", "highest"}, {"SUM", "total"}};
    char *num = mt_column_number_sql(n), *valid = mt_column_valid_sql(n);
    words_buf nwb = words(n->name);
    const char *nw = nwb.s;
    for (size_t a = 0; num && valid && a < sizeof aggs / sizeof aggs[0]; a++) {
        char *q = mt_strdup_printf("What is the %s %s in %s?", aggs[a].word, nw, x->noun);
        add_sql(g, q, "SELECT %s(%s) FROM %s WHERE %s", aggs[a].fn, num, x->tq, valid);
        free(q);
    }
    if (num && valid) {
        char *q = mt_strdup_printf("How many rows of %s have a %s above the average?", x->noun, nw);
        add_sql(g, q, "SELECT COUNT(*) FROM %s WHERE %s AND %s > (SELECT AVG(%s) FROM %s WHERE %s)", x->tq, valid, num, num, x->tq, valid);
        free(q);
    }
    if (num && valid && x->key) {
        words_buf kwb = words(x->t->cols[x->t->key].name);
        const char *kw = kwb.s;
        char *q = mt_strdup_printf("Which %s has the highest %s in %s?", kw, nw, x->noun);
        add_sql(g, q, "SELECT %s FROM %s WHERE %s ORDER BY %s DESC LIMIT 1", x->key, x->tq, valid, num);
        free(q);
        q = mt_strdup_printf("Which %s has the lowest %s in %s?", kw, nw, x->noun);
        add_sql(g, q, "SELECT %s FROM %s WHERE %s ORDER BY %s ASC LIMIT 1", x->key, x->tq, valid, num);
        free(q);
        q = mt_strdup_printf("What are the 5 %s values with the highest %s in %s, highest first?", kw, nw, x->noun);
        add_sql(g, q, "SELECT %s, %s FROM %s WHERE %s ORDER BY %s DESC LIMIT 5", x->key, num, x->tq, valid, num);
        free(q);
    }
    free(num), free(valid);
}

static void category_templates(gen *g, const table_ctx *x, const mt_column_profile *c) {
    char *cq = mt_sql_ident(c->name);
    words_buf cwb = words(c->name);
    const char *cw = cwb.s;
    if (!cq) return;
    char *q = mt_strdup_printf("How many different %s values are there in %s?", cw, x->noun);
    add_sql(g, q, "SELECT COUNT(DISTINCT %s) FROM %s", cq, x->tq);
    free(q);
    q = mt_strdup_printf("How many rows of %s are there for each %s?", x->noun, cw);
    add_sql(g, q, "SELECT %s, COUNT(*) FROM %s GROUP BY %s", cq, x->tq, cq);
    free(q);
    q = mt_strdup_printf("Which %s has the most rows in %s?", cw, x->noun);
    add_sql(g, q, "SELECT %s, COUNT(*) AS n FROM %s GROUP BY %s ORDER BY n DESC, %s LIMIT 1", cq, x->tq, cq, cq);
    free(q);
    for (int j = 0; j < x->t->n_cols; j++) {
        const mt_column_profile *n = &x->t->cols[j];
        if (!n->numeric) continue;
        char *num = mt_column_number_sql(n), *valid = mt_column_valid_sql(n);
        q = mt_strdup_printf("What is the average %s for each %s in %s?", words(n->name).s, cw, x->noun);
        if (num && valid) add_sql(g, q, "SELECT %s, AVG(%s) FROM %s WHERE %s GROUP BY %s", cq, num, x->tq, valid, cq);
        free(q);
        q = mt_strdup_printf("Which %s has the highest average %s in %s?", cw, words(n->name).s, x->noun);
        if (num && valid)
            add_sql(g, q, "SELECT %s, AVG(%s) AS a FROM %s WHERE %s GROUP BY %s ORDER BY a DESC LIMIT 1", cq, num, x->tq, valid, cq);
        free(q), free(num), free(valid);
    }
    free(cq);
}

/* Templates that filter on one value of a category. */
static void value_templates(gen *g, const table_ctx *x, const mt_column_profile *c, const char *v) {
    char *cq = mt_sql_ident(c->name), *lit = mt_sql_literal(v);
    words_buf cwb = words(c->name);
    const char *cw = cwb.s;
    if (cq && lit) {
        char *q = mt_strdup_printf("How many rows of %s have %s %s?", x->noun, cw, v);
        add_sql(g, q, "SELECT COUNT(*) FROM %s WHERE %s = %s", x->tq, cq, lit);
        free(q);
        if (x->key) {
            q = mt_strdup_printf("Which %s values in %s have %s %s?", words(x->t->cols[x->t->key].name).s, x->noun, cw, v);
            add_sql(g, q, "SELECT %s FROM %s WHERE %s = %s", x->key, x->tq, cq, lit);
            free(q);
        }
        for (int j = 0; j < x->t->n_cols; j++) {
            const mt_column_profile *n = &x->t->cols[j];
            if (!n->numeric) continue;
            char *num = mt_column_number_sql(n), *valid = mt_column_valid_sql(n);
            words_buf nwb = words(n->name);
    const char *nw = nwb.s;
            q = mt_strdup_printf("What is the average %s in %s for %s %s?", nw, x->noun, cw, v);
            if (num && valid) add_sql(g, q, "SELECT AVG(%s) FROM %s WHERE %s = %s AND %s", num, x->tq, cq, lit, valid);
            free(q);
            if (x->key) {
                q = mt_strdup_printf("Which %s with %s %s has the highest %s in %s?", words(x->t->cols[x->t->key].name).s, cw, v, nw, x->noun);
                if (num && valid)
                    add_sql(g, q, "SELECT %s FROM %s WHERE %s = %s AND %s ORDER BY %s DESC LIMIT 1", x->key, x->tq, cq, lit, valid, num);
                free(q);
            }
            free(num), free(valid);
        }
    }
    free(cq), free(lit);
}

/* "What is the C of K?" for sampled keys. */
static void lookup_templates(gen *g, const table_ctx *x) {
    const mt_column_profile *k = &x->t->cols[x->t->key];
    if (!k->n_values || x->t->n_cols < 2) return;
    for (int i = 0; i < 2 * g->opt->values_per_column; i++) {
        const char *kv = pick(g, k);
        int c = (int)(mt_rng_next(&g->rng) % (uint64_t)(x->t->n_cols - 1));
        if (c >= x->t->key) c++;
        char *cq = mt_sql_ident(x->t->cols[c].name), *lit = mt_sql_literal(kv);
        char *q = mt_strdup_printf("What is the %s of %s in %s?", words(x->t->cols[c].name).s, kv, x->noun);
        if (cq && lit) add_sql(g, q, "SELECT %s FROM %s WHERE %s = %s", cq, x->tq, x->key, lit);
        free(q), free(cq), free(lit);
    }
}

static void sql_templates(gen *g, const mt_table_profile *t) {
    table_ctx x = {.t = t, .tq = mt_sql_ident(t->name), .noun = strdup(words(t->name).s)};
    if (t->key >= 0) x.key = mt_sql_ident(t->cols[t->key].name);
    if (x.tq && x.noun) {
        char *q = mt_strdup_printf("How many rows are in %s?", x.noun);
        add_sql(g, q, "SELECT COUNT(*) FROM %s", x.tq);
        free(q);
        for (int j = 0; j < t->n_cols; j++) {
            const mt_column_profile *c = &t->cols[j];
            if (c->numeric) numeric_templates(g, &x, c);
            if (!c->categorical) continue;
            category_templates(g, &x, c);
            for (int v = 0; v < g->opt->values_per_column; v++) value_templates(g, &x, c, pick(g, c));
        }
        if (x.key) lookup_templates(g, &x);
    }
    free(x.tq), free(x.noun), free(x.key);
}

/* ---- output ---- */

static void shuffle_cap(gen *g, json_t *arr, int cap) {
    size_t n = json_array_size(arr);
    if (cap <= 0 || n <= (size_t)cap) return;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(mt_rng_next(&g->rng) % (i + 1));
        json_t *a = json_incref(json_array_get(arr, i)), *b = json_incref(json_array_get(arr, j));
        json_array_set_new(arr, i, b);
        json_array_set_new(arr, j, a);
    }
    while (json_array_size(arr) > (size_t)cap) json_array_remove(arr, json_array_size(arr) - 1);
}

static mt_status write_lines(mt_atomic_file *f, json_t *arr) {
    mt_status s = MT_OK;
    for (size_t i = 0; s == MT_OK && i < json_array_size(arr); i++) {
        char *line = json_dumps(json_array_get(arr, i), JSON_COMPACT | JSON_PRESERVE_ORDER);
        s = line ? mt_atomic_printf(f, "%s\n", line) : mt_error(MT_ERR_NOMEM, "out of memory");
        free(line);
    }
    return s;
}

static mt_status write_output(gen *g, const char *out_path) {
    mt_atomic_file f;
    mt_status s = mt_atomic_open(&f, out_path);
    if (s) return s;
    s = write_lines(&f, g->schema);
    if (s == MT_OK) s = write_lines(&f, g->rows);
    if (s == MT_OK) s = write_lines(&f, g->sql);
    if (s == MT_OK) return mt_atomic_commit(&f);
    mt_atomic_abort(&f);
    return s;
}

mt_status mt_datagen_sqlite(const char *db_path, const mt_datagen_options *opt, const char *out_path, mt_datagen_stats *stats) {
    memset(stats, 0, sizeof *stats);
    mt_datagen_options defaults;
    mt_datagen_defaults(&defaults);
    if (!opt) opt = &defaults;
    if (!out_path) return mt_error(MT_ERR_ARG, "no output path");
    gen g = {.opt = opt, .st = stats, .seen = json_object(), .schema = json_array(), .rows = json_array(), .sql = json_array()};
    mt_rng_seed(&g.rng, opt->seed);
    mt_db_profile p = {0};
    mt_status s = mt_sql_open(db_path, &opt->limits, &g.db);
    if (s == MT_OK && (!g.seen || !g.schema || !g.rows || !g.sql)) s = mt_error(MT_ERR_NOMEM, "out of memory");
    if (s == MT_OK) s = mt_db_profile_build(g.db, &p);
    if (s == MT_OK && opt->schema_facts) schema_facts(&g, &p);
    for (int i = 0; s == MT_OK && i < p.n_tables; i++) {
        if (opt->row_facts) row_facts(&g, &p.tables[i]);
        if (opt->sql_pairs) sql_templates(&g, &p.tables[i]);
    }
    if (s == MT_OK) s = g.status;
    if (s == MT_OK) {
        shuffle_cap(&g, g.rows, opt->max_row_facts);
        shuffle_cap(&g, g.sql, opt->max_sql_pairs);
        stats->schema_facts = (long)json_array_size(g.schema);
        stats->row_facts = (long)json_array_size(g.rows);
        stats->sql_pairs = (long)json_array_size(g.sql);
        if (stats->schema_facts + stats->row_facts + stats->sql_pairs == 0)
            s = mt_error(MT_ERR_ARG, "%s: nothing to generate (no facts or queries selected)", db_path);
    }
    if (s == MT_OK) s = write_output(&g, out_path);
    mt_db_profile_free(&p);
    mt_sql_close(g.db);
    json_decref(g.seen), json_decref(g.schema), json_decref(g.rows), json_decref(g.sql);
    return s;
}
