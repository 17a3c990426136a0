/* memtune data: training data from a SQLite database (--db DB --out FILE), or a question ->
 * SQL file filtered down to the queries that run (--filter FILE --db DB --out FILE).
 * Counts go to stdout as one JSON object. */
#include "cli/cli.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int run_filter(const char *db, const char *in, const char *out, const mt_sql_limits *limits) {
    mt_filter_stats st;
    if (mt_data_filter_sql(db, in, out, limits, &st)) return cli_fail("data --filter");
    printf("{\"read\": %ld, \"kept\": %ld, \"dropped\": {\"bad_json\": %ld, \"sql_error\": %ld, \"empty_result\": %ld, "
           "\"duplicates\": %ld}, \"reasons\": %s}\n",
           st.read, st.kept, st.bad_json, st.sql_error, st.empty_result, st.duplicates, st.reasons ? st.reasons : "{}");
    mt_filter_stats_free(&st);
    return 0;
}

/* --grammar: the SQL grammar of --db, or the grammar of --json-schema, to --out or stdout. */
static int write_grammar(const char *db, const char *schema, const char *out) {
    char *gbnf = NULL;
    if (!db == !schema) {
        fprintf(stderr, "memtune: data --grammar needs --db DB.sqlite or --json-schema FILE\n");
        return 2;
    }
    if (db && mt_sql_grammar_from_db(db, &gbnf)) return cli_fail("data --grammar");
    if (schema) {
        char *text = NULL;
        size_t len = 0;
        FILE *fp = fopen(schema, "rb");
        if (!fp) {
            fprintf(stderr, "memtune: data --grammar: cannot open %s\n", schema);
            return 1;
        }
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, fp)) > 0 && len < (16u << 20)) {
            char *t = realloc(text, len + n + 1);
            if (!t) break;
            text = t;
            memcpy(text + len, buf, n);
            len += n;
        }
        fclose(fp);
        mt_status s = mt_json_schema_to_gbnf(text ? text : "", len, &gbnf);
        free(text);
        if (s) return cli_fail(schema);
    }
    mt_grammar *g = NULL; /* what is written must compile */
    mt_status s = mt_grammar_compile(gbnf, strlen(gbnf), &g);
    mt_grammar_free(g);
    if (s) {
        free(gbnf);
        return cli_fail("data --grammar");
    }
    FILE *fp = out ? fopen(out, "w") : stdout;
    if (!fp || fputs(gbnf, fp) < 0 || (out && fclose(fp) != 0)) {
        fprintf(stderr, "memtune: data --grammar: cannot write %s\n", out ? out : "stdout");
        free(gbnf);
        return 1;
    }
    free(gbnf);
    return 0;
}

int cmd_data(int argc, char **argv) {
    const char *db = NULL, *out = NULL, *filter = NULL, *schema = NULL;
    int no_schema = 0, no_rows = 0, no_sql = 0, grammar = 0;
    mt_datagen_options o;
    mt_datagen_defaults(&o);
    float timeout = 0;
    const cli_opt opts[] = {
        {"--db", NULL, OPT_STRING, &db, "SQLite database to read (opened read-only)"},
        {"--out", "-o", OPT_STRING, &out, "JSONL file to write"},
        {"--filter", NULL, OPT_STRING, &filter, "JSONL of {\"question\",\"sql\"}: keep the lines whose SQL runs and returns rows"},
        {"--seed", NULL, OPT_U64, &o.seed, "seed for sampled values, rows and caps (default 0)", CLI_ANY_SEED},
        {"--no-schema", NULL, OPT_FLAG, &no_schema, "leave out schema facts"},
        {"--no-rows", NULL, OPT_FLAG, &no_rows, "leave out row facts"},
        {"--no-sql", NULL, OPT_FLAG, &no_sql, "leave out question -> SQL pairs"},
        {"--max-row-facts", NULL, OPT_INT, &o.max_row_facts, "cap on row facts, sampled (default 5000; 0: all)", 0, INT_MAX},
        {"--max-sql", NULL, OPT_INT, &o.max_sql_pairs, "cap on question -> SQL pairs, sampled (default: all)", 0, INT_MAX},
        {"--values-per-column", NULL, OPT_INT, &o.values_per_column, "category values (and 2x keys) sampled for filters (default 4)", 0, 100000},
        {"--sql-timeout", NULL, OPT_FLOAT, &timeout, "seconds one query may run (default 10)", MT_SQL_MIN_SECONDS, MT_SQL_MAX_SECONDS},
        {"--grammar", NULL, OPT_FLAG, &grammar, "write a GBNF grammar instead: SQLite SELECTs over --db's tables and columns, or --json-schema's"},
        {"--json-schema", NULL, OPT_STRING, &schema, "with --grammar: the JSON Schema file to convert"},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    if (cli_parse(argc, argv, opts,
                  "usage: memtune data --db DB.sqlite --out FILE.jsonl [--seed N]\n"
                  "       memtune data --filter QUERIES.jsonl --db DB.sqlite --out FILE.jsonl\n"
                  "       memtune data --grammar --db DB.sqlite | --json-schema FILE [--out FILE.gbnf]",
                  &code))
        return code;
    if (grammar) return write_grammar(db, schema, out);
    if (!db || !out) {
        fprintf(stderr, "memtune: data needs --db DB and --out FILE\n");
        return 2;
    }
    o.limits.max_seconds = timeout;
    if (filter) return run_filter(db, filter, out, &o.limits);
    o.schema_facts = !no_schema;
    o.row_facts = !no_rows;
    o.sql_pairs = !no_sql;
    mt_datagen_stats st;
    if (mt_datagen_sqlite(db, &o, out, &st)) return cli_fail("data");
    printf("{\"schema_facts\": %ld, \"row_facts\": %ld, \"sql_pairs\": %ld, \"duplicates\": %ld, \"failed\": %ld, "
           "\"empty\": %ld, \"out\": \"%s\"}\n",
           st.schema_facts, st.row_facts, st.sql_pairs, st.duplicates, st.failed, st.empty, out);
    return 0;
}
