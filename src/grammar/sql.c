/* SQL grammar from a database: GBNF for the SQLite SELECT subset that text-to-SQL uses
 * (SELECT [DISTINCT] ... FROM tables and subqueries with joins, WHERE, GROUP BY, HAVING,
 * ORDER BY, LIMIT/OFFSET, UNION/INTERSECT/EXCEPT, aggregates, CAST, CASE, LIKE, IN,
 * BETWEEN, IS NULL, scalar functions) whose table and column names are those of the
 * database: a constrained query never names a table or column that does not exist.
 *
 * Keywords and unquoted names match in any letter case, as SQLite reads them; every name is
 * also accepted double-quoted (names that are not plain identifiers only so). Context is not
 * tracked: an unqualified column may belong to any table of the database, ORDER BY may name
 * a result alias (an identifier after AS), and tables are aliased T0..T9 (Spider's
 * convention), so a query can still fail on a column of a table it did not select from, an
 * alias it did not define, or a keyword used as an alias. */
#include "core/error.h"
#include "grammar/text.h"
#include <ctype.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int plain_identifier(const char *name) {
    static const char *const RESERVED[] = {"select", "from", "where", "group", "by", "having", "order", "limit", "offset",
                                           "and", "or", "not", "as", "on", "join", "in", "is", "null", "like", "between",
                                           "case", "when", "then", "else", "end", "distinct", "union", "all", "cast",
                                           "asc", "desc", "left", "inner", "cross", "natural", "outer", "except",
                                           "intersect", "exists", "glob", "table", "index", NULL};
    if (!name[0] || !(isalpha((unsigned char)name[0]) || name[0] == '_')) return 0;
    for (const char *p = name; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_')) return 0;
    for (int i = 0; RESERVED[i]; i++)
        if (!strcasecmp(name, RESERVED[i])) return 0;
    return 1;
}

/* A case-insensitive GBNF sequence for an ASCII word: [sS][eE]... */
static void put_ci(mt_gtext *b, const char *word) {
    for (const char *p = word; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (isalpha(c)) mt_gtext_printf(b, "[%c%c]", tolower(c), toupper(c));
        else mt_gtext_printf(b, "\"%c\"", c);
        if (p[1]) mt_gtext_printf(b, " ");
    }
}

/* One alternative naming `name`: unquoted (any case) when it is a plain identifier, and
 * double-quoted exactly (quotes inside doubled, GBNF-escaped). */
static void put_name(mt_gtext *b, const char *name) {
    if (plain_identifier(name)) {
        mt_gtext_printf(b, "(");
        put_ci(b, name);
        mt_gtext_printf(b, ") | ");
    }
    mt_gtext_printf(b, "\"\\\"");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p == '"') mt_gtext_printf(b, "\\\"\\\"");
        else if (*p == '\\') mt_gtext_printf(b, "\\\\");
        else if (*p < 0x20) mt_gtext_printf(b, "\\x%02X", *p);
        else mt_gtext_printf(b, "%c", *p);
    }
    mt_gtext_printf(b, "\\\"\"");
}

static const char *const KEYWORDS[] = {"select", "distinct", "from", "where", "group", "by", "having", "order", "limit",
                                       "offset", "and", "or", "not", "as", "on", "join", "left", "inner", "cross",
                                       "outer", "natural", "in", "is", "null", "like", "between", "case", "when",
                                       "then", "else", "end", "cast", "asc", "desc", "union", "all", "intersect",
                                       "except", "exists", "glob", NULL};

static const char *const AGGREGATES[] = {"count", "sum", "avg", "min", "max", "total", "group_concat", NULL};
static const char *const FUNCTIONS[] = {"abs", "round", "length", "lower", "upper", "substr", "substring", "instr",
                                        "replace", "trim", "ltrim", "rtrim", "coalesce", "ifnull", "nullif", "iif",
                                        "strftime", "date", "time", "datetime", "julianday", "printf", "typeof", NULL};

static const char GRAMMAR_BODY[] =
    "root ::= ws? query ws? \";\"?\n"
    "query ::= select-core (ws compound ws select-core)* (ws order-by)? (ws limit)?\n"
    "compound ::= kw-union (ws kw-all)? | kw-intersect | kw-except\n"
    "select-core ::= kw-select (ws kw-distinct)? ws result-cols (ws kw-from ws from)? (ws kw-where ws expr)?"
    " (ws kw-group ws kw-by ws expr-list)? (ws kw-having ws expr)?\n"
    "result-cols ::= result-col (comma result-col)*\n"
    "result-col ::= \"*\" | (table | table-alias) \".\" \"*\" | expr (ws kw-as ws alias)?\n"
    "from ::= table-ref (join table-ref (ws kw-on ws expr)?)*\n"
    "table-ref ::= table (ws (kw-as ws)? table-alias)? | \"(\" ws? query ws? \")\" (ws (kw-as ws)? table-alias)?\n"
    "join ::= comma | ws ((kw-natural ws)? ((kw-left (ws kw-outer)? | kw-inner | kw-cross) ws)?) kw-join ws\n"
    "order-by ::= kw-order ws kw-by ws ordering (comma ordering)*\n"
    "ordering ::= (expr | alias) (ws (kw-asc | kw-desc))?\n"
    "limit ::= kw-limit ws expr ((ws kw-offset ws | comma) expr)?\n"
    "expr-list ::= expr (comma expr)*\n"
    "expr ::= unary (binop unary)*\n"
    "binop ::= ws? (\"=\" | \"==\" | \"!=\" | \"<>\" | \"<\" | \"<=\" | \">\" | \">=\" | \"+\" | \"-\" | \"*\" | \"/\" | \"%\" | \"||\") ws?"
    " | ws (kw-and | kw-or) ws\n"
    "unary ::= (\"-\" ws? | kw-not ws)? primary postfix?\n"
    "postfix ::= ws (kw-not ws)? (kw-like ws primary | kw-glob ws primary | kw-in ws? \"(\" ws? (query | expr-list) ws? \")\""
    " | kw-between ws primary ws kw-and ws primary) | ws kw-is (ws kw-not)? ws kw-null\n"
    "primary ::= literal | column-ref | call | \"(\" ws? (query | expr) ws? \")\" | kw-exists ws? \"(\" ws? query ws? \")\""
    " | kw-cast ws? \"(\" ws? expr ws kw-as ws type ws? \")\""
    " | kw-case (ws expr)? (ws kw-when ws expr ws kw-then ws expr)+ (ws kw-else ws expr)? ws kw-end\n"
    "call ::= aggregate ws? \"(\" ws? (\"*\" | (kw-distinct ws)? expr) ws? \")\" | function ws? \"(\" ws? expr-list? ws? \")\"\n"
    "column-ref ::= column | (table | table-alias) \".\" column\n"
    "type ::= [iI] [nN] [tT] [eE] [gG] [eE] [rR] | [iI] [nN] [tT] | [rR] [eE] [aA] [lL] | [fF] [lL] [oO] [aA] [tT]"
    " | [tT] [eE] [xX] [tT] | [nN] [uU] [mM] [eE] [rR] [iI] [cC]\n"
    "literal ::= [0-9]+ (\".\" [0-9]+)? | \"'\" ([^'\\x00-\\x1F] | \"''\"){0,60} \"'\" | kw-null\n"
    "alias ::= [a-zA-Z_] [a-zA-Z0-9_]{0,30}\n"
    "table-alias ::= [tT] [0-9]\n"
    "comma ::= ws? \",\" ws?\n"
    "ws ::= \" \"{1,3}\n";

static mt_status list_schema(sqlite3 *db, const char *path, mt_gtext *tables, mt_gtext *columns) {
    sqlite3_stmt *st = NULL;
    const char *q = "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name";
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK)
        return mt_error(MT_ERR_SQL, "%s: cannot read the schema: %s", path, sqlite3_errmsg(db));
    int n_tables = 0, n_columns = 0;
    char **names = NULL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        char **nn = realloc(names, (size_t)(n_tables + 1) * sizeof *nn);
        if (!nn || !name || !(nn[n_tables] = strdup(name))) {
            free(nn ? nn : names);
            names = NULL;
            n_tables = -1;
            break;
        }
        names = nn;
        n_tables++;
    }
    sqlite3_finalize(st);
    mt_status s = n_tables < 0 ? mt_error(MT_ERR_NOMEM, "out of memory") : MT_OK;
    if (!s && rc != SQLITE_DONE) s = mt_error(MT_ERR_SQL, "%s: cannot read the schema: %s", path, sqlite3_errmsg(db));
    for (int t = 0; !s && t < n_tables; t++) {
        mt_gtext_printf(tables, "%s", t ? " | " : "");
        put_name(tables, names[t]);
        if (sqlite3_prepare_v2(db, "SELECT name FROM pragma_table_info(?)", -1, &st, NULL) != SQLITE_OK) {
            s = mt_error(MT_ERR_SQL, "%s: cannot read the columns of %s: %s", path, names[t], sqlite3_errmsg(db));
            break;
        }
        sqlite3_bind_text(st, 1, names[t], -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *col = (const char *)sqlite3_column_text(st, 0);
            if (!col) continue;
            /* the same name in several tables is listed once */
            char probe[600];
            snprintf(probe, sizeof probe, "\"\\\"%s\\\"\"", col);
            if (columns->s && strstr(columns->s, probe)) continue;
            mt_gtext_printf(columns, "%s", n_columns++ ? " | " : "");
            put_name(columns, col);
        }
        sqlite3_finalize(st);
    }
    if (!s && n_tables == 0) s = mt_error(MT_ERR_ARG, "%s: the database has no tables", path);
    if (!s && n_columns == 0) s = mt_error(MT_ERR_ARG, "%s: the database's tables have no columns", path);
    for (int t = 0; t < n_tables; t++) free(names[t]);
    free(names);
    return s;
}

mt_status mt_sql_grammar_from_db(const char *db_path, char **gbnf) {
    *gbnf = NULL;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        mt_status s = mt_error(MT_ERR_IO, "%s: cannot open the database: %s", db_path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return s;
    }
    mt_gtext tables = {0}, columns = {0}, out = {0};
    mt_status s = list_schema(db, db_path, &tables, &columns);
    sqlite3_close(db);
    if (!s) {
        mt_gtext_printf(&out, "# SQLite SELECT grammar for %s (memtune data --grammar)\n%s", db_path, GRAMMAR_BODY);
        mt_gtext_printf(&out, "table ::= %s\ncolumn ::= %s\n", tables.s, columns.s);
        mt_gtext_printf(&out, "aggregate ::= ");
        for (int i = 0; AGGREGATES[i]; i++) {
            mt_gtext_printf(&out, "%s(", i ? " | " : "");
            put_ci(&out, AGGREGATES[i]);
            mt_gtext_printf(&out, ")");
        }
        mt_gtext_printf(&out, "\nfunction ::= ");
        for (int i = 0; FUNCTIONS[i]; i++) {
            mt_gtext_printf(&out, "%s(", i ? " | " : "");
            put_ci(&out, FUNCTIONS[i]);
            mt_gtext_printf(&out, ")");
        }
        mt_gtext_printf(&out, "\n");
        for (int i = 0; KEYWORDS[i]; i++) {
            mt_gtext_printf(&out, "kw-%s ::= ", KEYWORDS[i]);
            put_ci(&out, KEYWORDS[i]);
            mt_gtext_printf(&out, "\n");
        }
        if (out.oom || tables.oom || columns.oom) s = mt_error(MT_ERR_NOMEM, "out of memory");
    }
    free(tables.s);
    free(columns.s);
    if (s) {
        free(out.s);
        return s;
    }
    *gbnf = out.s;
    return MT_OK;
}
