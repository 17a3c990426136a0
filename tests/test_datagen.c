/* Data generation from a database the test creates: value formats and missing markers are
 * recognised (money, feet-inches, units, integers as text), the numeric SQL for each format
 * computes the right numbers, every generated SQL runs and its answer is its result, no
 * question repeats, the seed reproduces the file, and the filter keeps exactly the lines
 * whose SQL runs and returns something, with the reasons for the rest. */
#include "test.h"
#include "sqlgen/profile.h"
#include <jansson.h>
#include <sqlite3.h>
#include <unistd.h>

static char db_path[700], dir[600];

static void make_db(void) {
    sqlite3 *db;
    unlink(db_path);
    if (sqlite3_open(db_path, &db) != SQLITE_OK) exit(2);
    const char *sql =
        "CREATE TABLE roster(name TEXT, team TEXT, salary TEXT, ht TEXT, wt TEXT, jersey TEXT, age INT);"
        "INSERT INTO roster VALUES"
        " ('Ann Lee','Hawks','$1,234','6'' 7\"','215 lbs','7',24),"
        " ('Bo O''Neal','Hawks','--','6'' 10\"','250 lbs','NA',31),"
        " ('Cy Diaz','Nets','$20,000,000','5'' 11\"','180 lbs','12',22),"
        " ('Di Wu','Nets','$999','6'' 0\"','190 lbs','0',NULL),"
        " ('Ed Roe','Bulls','$5,000','6'' 2\"','200 lbs','33',28),"
        " ('Fa Kim','Bulls','--','6'' 4\"','210 lbs','NA',35);"
        "CREATE TABLE \"odd \"\"name\"\"\"(\"the key\" TEXT, \"x\"\"y\" REAL);"
        "INSERT INTO \"odd \"\"name\"\"\" VALUES ('a', 1.5), ('b', 2.5), ('c', 2.5);";
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) { fprintf(stderr, "%s\n", err); exit(2); }
    sqlite3_close(db);
}

static const mt_column_profile *column(const mt_db_profile *p, const char *table, const char *name) {
    for (int i = 0; i < p->n_tables; i++)
        for (int j = 0; !strcmp(p->tables[i].name, table) && j < p->tables[i].n_cols; j++)
            if (!strcmp(p->tables[i].cols[j].name, name)) return &p->tables[i].cols[j];
    return NULL;
}

/* The column's numeric SQL evaluated for one row. */
static char *number_of(mt_sql_db *db, const mt_column_profile *c, const char *who) {
    char *num = mt_column_number_sql(c), sql[1024];
    snprintf(sql, sizeof sql, "SELECT %s FROM roster WHERE name = '%s'", num, who);
    free(num);
    mt_sql_result *r = NULL;
    CHECK_OK(mt_sql_query(db, sql, &r));
    char *t = r ? mt_sql_result_text(r) : NULL;
    mt_sql_result_free(r);
    return t;
}

TEST(profile_recognises_value_formats_and_missing_markers) {
    mt_sql_db *db;
    mt_db_profile p;
    CHECK_OK(mt_sql_open(db_path, NULL, &db));
    CHECK_OK(mt_db_profile_build(db, &p));
    CHECK_INT_EQ(p.n_tables, 2);
    const mt_column_profile *sal = column(&p, "roster", "salary"), *ht = column(&p, "roster", "ht"),
                            *wt = column(&p, "roster", "wt"), *jersey = column(&p, "roster", "jersey"),
                            *team = column(&p, "roster", "team"), *name = column(&p, "roster", "name");
    CHECK(sal && sal->format == MT_FMT_MONEY && sal->n_missing == 1 && !strcmp(sal->missing[0], "--"));
    CHECK(ht && ht->format == MT_FMT_FEET_INCHES && ht->n_missing == 0);
    CHECK(wt && wt->format == MT_FMT_UNIT && !strcmp(wt->unit, "lbs"));
    CHECK(jersey && jersey->format == MT_FMT_INT_TEXT && jersey->n_missing == 1 && !strcmp(jersey->missing[0], "NA"));
    CHECK(team && team->format == MT_FMT_TEXT && team->categorical && !team->numeric);
    CHECK(name && !name->categorical && p.tables[1].key == 0); /* roster sorts after "odd ..." */
    if (sal && ht && wt) {
        char *v = number_of(db, sal, "Cy Diaz");
        CHECK_STR_EQ(v, "20000000");
        free(v);
        v = number_of(db, ht, "Ann Lee");
        CHECK_STR_EQ(v, "79"); /* inches */
        free(v);
        v = number_of(db, wt, "Ann Lee");
        CHECK_STR_EQ(v, "215");
        free(v);
        char *valid = mt_column_valid_sql(sal);
        CHECK_STR_EQ(valid, "\"salary\" IS NOT NULL AND \"salary\" != '--'");
        free(valid);
    }
    mt_db_profile_free(&p);
    mt_sql_close(db);
}

static json_t *read_lines(const char *path) {
    json_t *arr = json_array();
    FILE *f = fopen(path, "r");
    char line[65536];
    while (f && fgets(line, sizeof line, f)) {
        json_error_t e;
        json_t *o = json_loads(line, 0, &e);
        CHECK_MSG(o != NULL, "%s: %s", path, e.text);
        if (o) json_array_append_new(arr, o);
    }
    if (f) fclose(f);
    return arr;
}

TEST(generated_sql_runs_and_its_answer_is_its_result) {
    char out[800];
    snprintf(out, sizeof out, "%s/gen.jsonl", dir);
    mt_datagen_options o;
    mt_datagen_defaults(&o);
    o.seed = 7;
    mt_datagen_stats st;
    CHECK_OK(mt_datagen_sqlite(db_path, &o, out, &st));
    CHECK_INT_EQ(st.failed, 0);
    CHECK(st.schema_facts > 5 && st.row_facts > 20 && st.sql_pairs > 20);
    json_t *lines = read_lines(out), *seen = json_object();
    CHECK_INT_EQ((long)json_array_size(lines), st.schema_facts + st.row_facts + st.sql_pairs);
    mt_sql_db *db;
    CHECK_OK(mt_sql_open(db_path, NULL, &db));
    size_t i;
    json_t *o_line;
    long sql_lines = 0, money_fact = 0, quoted_name_fact = 0;
    json_array_foreach(lines, i, o_line) {
        const char *q = json_string_value(json_object_get(o_line, "question"));
        if (!q) q = json_string_value(json_object_get(o_line, "input"));
        CHECK_MSG(q && !json_object_get(seen, q), "missing or repeated question: %s", q ? q : "(none)");
        if (q) json_object_set_new(seen, q, json_true());
        const char *out_text = json_string_value(json_object_get(o_line, "output"));
        if (out_text && strstr(out_text, "roster.salary is money as text") && strstr(out_text, "'--' means unknown")) money_fact++;
        if (q && strstr(q, "Bo O'Neal")) quoted_name_fact++;
        const char *sql = json_string_value(json_object_get(o_line, "sql"));
        if (!sql) continue;
        sql_lines++;
        mt_sql_result *r = NULL;
        CHECK_OK(mt_sql_query(db, sql, &r));
        char *text = r ? mt_sql_result_text(r) : NULL;
        CHECK_STR_EQ(text, json_string_value(json_object_get(o_line, "answer")));
        free(text);
        mt_sql_result_free(r);
    }
    CHECK_INT_EQ(sql_lines, st.sql_pairs);
    CHECK(money_fact == 1);
    CHECK(quoted_name_fact > 0);
    mt_sql_close(db);
    json_decref(lines);
    json_decref(seen);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = calloc(1, 1 << 22);
    if (b) b[fread(b, 1, (1 << 22) - 1, f)] = 0;
    fclose(f);
    return b;
}

TEST(the_seed_reproduces_the_file_and_caps_sample) {
    char a[800], b[800], c[800];
    snprintf(a, sizeof a, "%s/a.jsonl", dir);
    snprintf(b, sizeof b, "%s/b.jsonl", dir);
    snprintf(c, sizeof c, "%s/c.jsonl", dir);
    mt_datagen_options o;
    mt_datagen_defaults(&o);
    o.seed = 3;
    o.max_row_facts = 5;
    o.max_sql_pairs = 10;
    mt_datagen_stats st;
    CHECK_OK(mt_datagen_sqlite(db_path, &o, a, &st));
    CHECK_INT_EQ(st.row_facts, 5);
    CHECK_INT_EQ(st.sql_pairs, 10);
    CHECK_OK(mt_datagen_sqlite(db_path, &o, b, &st));
    o.seed = 4;
    CHECK_OK(mt_datagen_sqlite(db_path, &o, c, &st));
    char *ta = slurp(a), *tb = slurp(b), *tc = slurp(c);
    CHECK(ta && tb && !strcmp(ta, tb));
    CHECK(ta && tc && strcmp(ta, tc) != 0);
    free(ta), free(tb), free(tc);
    o.schema_facts = o.row_facts = o.sql_pairs = 0;
    CHECK_ERR(mt_datagen_sqlite(db_path, &o, a, &st), MT_ERR_ARG, "nothing to generate");
}

TEST(filter_keeps_sql_that_runs_and_says_why_the_rest_went) {
    char in[800], out[800];
    snprintf(in, sizeof in, "%s/queries.jsonl", dir);
    snprintf(out, sizeof out, "%s/kept.jsonl", dir);
    FILE *f = fopen(in, "w");
    if (!f) return;
    fputs("{\"question\": \"How many?\", \"sql\": \"SELECT COUNT(*) FROM roster\"}\n"
          "not json\n"
          "{\"question\": \"Bad column\", \"sql\": \"SELECT nope FROM roster\"}\n"
          "{\"question\": \"Nobody\", \"sql\": \"SELECT name FROM roster WHERE age > 100\"}\n"
          "{\"question\": \"Null\", \"sql\": \"SELECT MAX(age) FROM roster WHERE team = 'none'\"}\n"
          "\n"
          "{\"question\": \"How many?\", \"sql\": \"SELECT COUNT(*) FROM roster\"}\n"
          "{\"question\": \"Wipe\", \"sql\": \"DELETE FROM roster\"}\n"
          "{\"question\": \"Oldest\", \"sql\": \"SELECT name FROM roster ORDER BY age DESC LIMIT 1;\", \"answer\": \"Fa\"}\n", f);
    fclose(f);
    mt_filter_stats st;
    CHECK_OK(mt_data_filter_sql(db_path, in, out, NULL, &st));
    CHECK_INT_EQ(st.read, 8);
    CHECK_INT_EQ(st.kept, 2);
    CHECK_INT_EQ(st.bad_json, 1);
    CHECK_INT_EQ(st.sql_error, 2);
    CHECK_INT_EQ(st.empty_result, 2);
    CHECK_INT_EQ(st.duplicates, 1);
    CHECK_MSG(st.reasons && strstr(st.reasons, "no such column: nope") && strstr(st.reasons, "only SELECT") &&
              strstr(st.reasons, "result is empty") && strstr(st.reasons, "only NULLs"), "%s", st.reasons);
    mt_filter_stats_free(&st);
    json_t *kept = read_lines(out);
    CHECK_INT_EQ((long)json_array_size(kept), 2);
    CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(kept, 0), "result")), "6");
    CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(kept, 1), "result")), "Fa Kim");
    CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(kept, 1), "answer")), "Fa");
    json_decref(kept);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s", test_tmpdir("test_datagen"));
    snprintf(db_path, sizeof db_path, "%s/roster.sqlite", dir);
    make_db();
    RUN(profile_recognises_value_formats_and_missing_markers);
    RUN(generated_sql_runs_and_its_answer_is_its_result);
    RUN(the_seed_reproduces_the_file_and_caps_sample);
    RUN(filter_keeps_sql_that_runs_and_says_why_the_rest_went);
    TEST_MAIN_END();
}
