/* SQL execution accuracy and the sandbox for untrusted SQL, on a database the test creates:
 * result comparison (row order, duplicates, NULLs, floats, integer vs text, column counts),
 * invalid SQL, ORDER BY detection, and that writes, ATTACH, PRAGMA, several statements,
 * extensions and runaway queries are refused or interrupted while the file stays
 * byte-identical. */
#include "test.h"
#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

static char db_path[600];

static void make_db(const char *path) {
    sqlite3 *db;
    unlink(path);
    if (sqlite3_open(path, &db) != SQLITE_OK) { fprintf(stderr, "cannot create %s\n", path); exit(2); }
    const char *sql =
        "CREATE TABLE t(id INTEGER, name TEXT, score REAL, salary TEXT);"
        "INSERT INTO t VALUES (1,'ann',1.5,'$1,000'),(2,'bob',NULL,'--'),(3,'cy',2.25,'$30'),(4,'dee',1.5,'$7,000');"
        "CREATE TABLE dup(x INTEGER); INSERT INTO dup VALUES (1),(1),(2);"
        "CREATE TABLE dup2(x INTEGER); INSERT INTO dup2 VALUES (1),(2),(2);";
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) { fprintf(stderr, "%s\n", err); exit(2); }
    sqlite3_close(db);
}

/* FNV-1a of the file's bytes: the sandbox must leave them unchanged. */
static uint64_t file_hash(const char *path) {
    FILE *f = fopen(path, "rb");
    uint64_t h = 1469598103934665603ULL;
    int c;
    if (!f) return 0;
    while ((c = fgetc(f)) != EOF) h = (h ^ (uint64_t)c) * 1099511628211ULL;
    fclose(f);
    return h;
}

static mt_sql_verdict verdict_of(mt_sql_db *db, const char *gold, const char *produced, char **error) {
    mt_sql_verdict v = MT_SQL_GOLD_ERROR;
    *error = NULL;
    CHECK_OK(mt_sql_execution_match(db, gold, produced, &v, error));
    return v;
}

#define EXPECT(db, gold, produced, want) do { char *e_; mt_sql_verdict v_ = verdict_of(db, gold, produced, &e_); \
    CHECK_MSG(v_ == (want), "%s vs %s: %s (%s), wanted %s", gold, produced, mt_sql_verdict_name(v_), \
              e_ ? e_ : "", mt_sql_verdict_name(want)); free(e_); } while (0)

TEST(row_order_matters_only_when_the_gold_query_orders) {
    mt_sql_db *db;
    CHECK_OK(mt_sql_open(db_path, NULL, &db));
    EXPECT(db, "SELECT name FROM t", "SELECT name FROM t ORDER BY name DESC", MT_SQL_MATCH);
    EXPECT(db, "SELECT name FROM t ORDER BY id", "SELECT name FROM t ORDER BY id DESC", MT_SQL_MISMATCH);
    EXPECT(db, "SELECT name FROM t ORDER BY id", "SELECT name FROM t ORDER BY id", MT_SQL_MATCH);
    EXPECT(db, "select id, name from t order by id limit 2", "SELECT id, name FROM t WHERE id < 3 ORDER BY id", MT_SQL_MATCH);
    /* a different row, a missing row, a different column count */
    EXPECT(db, "SELECT name FROM t", "SELECT name FROM t WHERE id > 1", MT_SQL_MISMATCH);
    EXPECT(db, "SELECT name FROM t", "SELECT name, id FROM t", MT_SQL_MISMATCH);
    EXPECT(db, "SELECT name FROM t WHERE id = 1", "SELECT 'bob'", MT_SQL_MISMATCH);
    /* column names do not matter, column order does */
    EXPECT(db, "SELECT id AS a FROM t", "SELECT id AS b FROM t", MT_SQL_MATCH);
    EXPECT(db, "SELECT id, name FROM t", "SELECT name, id FROM t", MT_SQL_MISMATCH);
    mt_sql_close(db);
}

TEST(duplicates_count_as_in_a_multiset) {
    mt_sql_db *db;
    CHECK_OK(mt_sql_open(db_path, NULL, &db));
    EXPECT(db, "SELECT x FROM dup", "SELECT x FROM dup ORDER BY x DESC", MT_SQL_MATCH);
    EXPECT(db, "SELECT x FROM dup", "SELECT DISTINCT x FROM dup", MT_SQL_MISMATCH);
    EXPECT(db, "SELECT x FROM dup", "SELECT x FROM dup2", MT_SQL_MISMATCH); /* {1,1,2} vs {1,2,2} */
    EXPECT(db, "SELECT x FROM dup", "VALUES (2),(1),(1)", MT_SQL_MATCH);
    mt_sql_close(db);
}

TEST(nulls_equal_only_nulls) {
    mt_sql_db *db;
    CHECK_OK(mt_sql_open(db_path, NULL, &db));
    EXPECT(db, "SELECT score FROM t WHERE id = 2", "SELECT NULL", MT_SQL_MATCH);
    EXPECT(db, "SELECT NULL", "SELECT 0", MT_SQL_MISMATCH);
    EXPECT(db, "SELECT NULL", "SELECT ''", MT_SQL_MISMATCH);
    EXPECT(db, "SELECT NULL", "SELECT 'NULL'", MT_SQL_MISMATCH);
    EXPECT(db, "SELECT score FROM t", "SELECT score FROM t WHERE score IS NOT NULL UNION ALL SELECT NULL", MT_SQL_MATCH);
    EXPECT(db, "SELECT 1 WHERE 0", "SELECT NULL", MT_SQL_MISMATCH); /* empty result vs one NULL row */
    mt_sql_close(db);
}

TEST(floats_compare_with_a_relative_tolerance_of_1e6) {
    mt_sql_db *db;
    CHECK_OK(mt_sql_open(db_path, NULL, &db));
    EXPECT(db, "SELECT 0.3", "SELECT 0.1 + 0.2", MT_SQL_MATCH);
    EXPECT(db, "SELECT 1e10", "SELECT 1e10 + 1", MT_SQL_MATCH);          /* 1e-10 relative */
    EXPECT(db, "SELECT 1.0", "SELECT 1.00001", MT_SQL_MISMATCH);         /* 1e-5 relative */
    EXPECT(db, "SELECT 0.0", "SELECT 1e-12", MT_SQL_MATCH);              /* absolute floor */
    EXPECT(db, "SELECT avg(score) FROM t", "SELECT (1.5 + 2.25 + 1.5) / 3", MT_SQL_MATCH); /* NULL skipped */
    EXPECT(db, "SELECT avg(score) FROM t", "SELECT 1.75 * (1 + 1e-5)", MT_SQL_MISMATCH);
    EXPECT(db, "SELECT avg(score) FROM t", "SELECT 1.75 * (1 + 1e-7)", MT_SQL_MATCH);
    /* integers beyond double precision still compare exactly against integers */
    EXPECT(db, "SELECT 9007199254740993", "SELECT 9007199254740992", MT_SQL_MISMATCH);
    mt_sql_close(db);
}

TEST(integer_and_text_compare_as_numbers_only_when_the_text_is_a_number) {
    mt_sql_db *db;
    CHECK_OK(mt_sql_open(db_path, NULL, &db));
    EXPECT(db, "SELECT 42", "SELECT '42'", MT_SQL_MATCH);
    EXPECT(db, "SELECT 42", "SELECT 42.0", MT_SQL_MATCH);
    EXPECT(db, "SELECT '42'", "SELECT 42.0", MT_SQL_MATCH);
    EXPECT(db, "SELECT 4.5", "SELECT ' 4.50 '", MT_SQL_MATCH);
    EXPECT(db, "SELECT 42", "SELECT '42 lbs'", MT_SQL_MISMATCH);
    EXPECT(db, "SELECT 1000", "SELECT salary FROM t WHERE id = 1", MT_SQL_MISMATCH); /* '$1,000' */
    EXPECT(db, "SELECT 16", "SELECT '0x10'", MT_SQL_MISMATCH);
    /* text against text is byte for byte, numeric or not */
    EXPECT(db, "SELECT '4.5'", "SELECT '4.50'", MT_SQL_MISMATCH);
    EXPECT(db, "SELECT 'ann'", "SELECT 'Ann'", MT_SQL_MISMATCH);
    EXPECT(db, "SELECT id FROM t", "SELECT CAST(id AS TEXT) FROM t", MT_SQL_MATCH);
    mt_sql_close(db);
}

TEST(invalid_sql_is_wrong_and_keeps_the_error) {
    mt_sql_db *db;
    CHECK_OK(mt_sql_open(db_path, NULL, &db));
    char *err;
    CHECK(verdict_of(db, "SELECT 1", "SELEC 1", &err) == MT_SQL_INVALID);
    CHECK_MSG(err && strstr(err, "SELEC"), "%s", err ? err : "(null)");
    free(err);
    CHECK(verdict_of(db, "SELECT 1", "SELECT nope FROM t", &err) == MT_SQL_INVALID);
    CHECK_MSG(err && strstr(err, "no such column: nope"), "%s", err ? err : "(null)");
    free(err);
    CHECK(verdict_of(db, "SELECT 1", "", &err) == MT_SQL_INVALID);
    CHECK_MSG(err && strstr(err, "empty"), "%s", err ? err : "(null)");
    free(err);
    CHECK(verdict_of(db, "SELECT * FROM missing", "SELECT 1", &err) == MT_SQL_GOLD_ERROR);
    CHECK_MSG(err && strstr(err, "gold: error: no such table: missing"), "%s", err ? err : "(null)");
    free(err);
    mt_sql_close(db);
}

TEST(order_by_is_detected_only_at_the_top_level) {
    CHECK(mt_sql_has_order_by("SELECT a FROM t ORDER BY a"));
    CHECK(mt_sql_has_order_by("select a from t order\n  by a limit 1;"));
    CHECK(mt_sql_has_order_by("SELECT a FROM (SELECT a FROM t) ORDER /* c */ BY a"));
    CHECK(!mt_sql_has_order_by("SELECT a FROM (SELECT a FROM t ORDER BY a LIMIT 3)"));
    CHECK(!mt_sql_has_order_by("SELECT 'order by' FROM t"));
    CHECK(!mt_sql_has_order_by("SELECT a FROM t -- ORDER BY a"));
    CHECK(!mt_sql_has_order_by("SELECT \"order\" FROM t"));
    CHECK(!mt_sql_has_order_by("SELECT a AS ordered, b AS by_x FROM t"));
}

TEST(results_as_json_and_text) {
    mt_sql_db *db;
    CHECK_OK(mt_sql_open(db_path, NULL, &db));
    mt_sql_result *r;
    CHECK_OK(mt_sql_query(db, "SELECT id, name, score FROM t WHERE id <= 2 ORDER BY id", &r));
    if (r) {
        CHECK_INT_EQ(mt_sql_result_rows(r), 2);
        CHECK_INT_EQ(mt_sql_result_cols(r), 3);
        char *j = mt_sql_result_json(r), *t = mt_sql_result_text(r);
        CHECK_STR_EQ(j, "[[1,\"ann\",1.5],[2,\"bob\",null]]");
        CHECK_STR_EQ(t, "1, ann, 1.5; 2, bob, NULL");
        free(j), free(t);
        mt_sql_result_free(r);
    }
    CHECK_OK(mt_sql_query(db, "SELECT salary FROM t WHERE id = 1", &r));
    if (r) {
        char *j = mt_sql_result_json(r);
        CHECK_STR_EQ(j, "\"$1,000\"");
        free(j);
        mt_sql_result_free(r);
    }
    mt_sql_close(db);
}

static void expect_refused(mt_sql_db *db, const char *sql, const char *needle) {
    mt_sql_result *r = NULL;
    mt_status s = mt_sql_query(db, sql, &r);
    mt_test_checks++;
    if (s != MT_ERR_SQL || r || !strstr(mt_last_error(), needle)) {
        mt_test_failures++;
        fprintf(stderr, "  FAIL %s -> %s (\"%s\"), wanted refusal containing \"%s\"\n", sql, mt_status_name(s),
                mt_last_error(), needle);
    }
    mt_sql_result_free(r);
}

TEST(sandbox_refuses_writes_attach_pragma_and_several_statements) {
    uint64_t before = file_hash(db_path);
    mt_sql_db *db;
    CHECK_OK(mt_sql_open(db_path, NULL, &db));
    expect_refused(db, "INSERT INTO t VALUES (9,'x',0,'')", "only SELECT");
    expect_refused(db, "UPDATE t SET name = 'x'", "only SELECT");
    expect_refused(db, "DELETE FROM t", "only SELECT");
    expect_refused(db, "DROP TABLE t", "only SELECT");
    expect_refused(db, "CREATE TABLE u(x)", "only SELECT");
    expect_refused(db, "WITH x AS (SELECT 1) INSERT INTO dup SELECT * FROM x", "INSERT is not allowed");
    expect_refused(db, "WITH x AS (SELECT 1) DELETE FROM dup", "DELETE is not allowed");
    expect_refused(db, "ATTACH DATABASE 'other.db' AS o", "only SELECT");
    expect_refused(db, "PRAGMA writable_schema = 1", "only SELECT");
    expect_refused(db, "PRAGMA query_only = 0", "only SELECT");
    expect_refused(db, "BEGIN", "only SELECT");
    expect_refused(db, "VACUUM INTO 'copy.db'", "only SELECT");
    expect_refused(db, "EXPLAIN SELECT 1", "only SELECT");
    expect_refused(db, "SELECT 1; DROP TABLE t", "more than one statement");
    expect_refused(db, "SELECT 1; SELECT 2", "more than one statement");
    expect_refused(db, "SELECT 1 /* c */ ; -- x\n ; DELETE FROM t", "more than one statement");
    expect_refused(db, "SELECT load_extension('/tmp/evil.so')", "load_extension() is not allowed");
    expect_refused(db, "SELECT * FROM t WHERE name = load_extension('x')", "load_extension() is not allowed");
    expect_refused(db, "   -- only a comment", "empty statement");
    /* trailing semicolons and comments are fine, and reads still work afterwards */
    mt_sql_result *r = NULL;
    CHECK_OK(mt_sql_query(db, "SELECT count(*) FROM t; -- done\n;", &r));
    CHECK(r && mt_sql_result_rows(r) == 1 && r && mt_sql_result_cols(r) == 1);
    mt_sql_result_free(r);
    mt_sql_close(db);
    CHECK(file_hash(db_path) == before);
    char side[700];
    snprintf(side, sizeof side, "%s-journal", db_path);
    CHECK(access(side, F_OK) != 0);
    snprintf(side, sizeof side, "%s-wal", db_path);
    CHECK(access(side, F_OK) != 0);
}

TEST(sandbox_interrupts_runaway_queries_and_caps_results) {
    uint64_t before = file_hash(db_path);
    const char *forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    mt_sql_db *db;
    mt_sql_limits steps = {.max_steps = 2000000};
    CHECK_OK(mt_sql_open(db_path, &steps, &db));
    expect_refused(db, forever, "interrupted: more than 2000000 steps");
    mt_sql_close(db);
    /* with an unreachable step budget the wall-time limit stops it */
    mt_sql_limits time = {.max_steps = LONG_MAX / 2, .max_seconds = 0.2};
    CHECK_OK(mt_sql_open(db_path, &time, &db));
    expect_refused(db, forever, "interrupted: longer than 0.2 s");
    mt_sql_close(db);
    mt_sql_limits rows = {.max_rows = 10, .max_bytes = 100};
    CHECK_OK(mt_sql_open(db_path, &rows, &db));
    expect_refused(db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 11) SELECT x FROM c",
                   "limit: more than 10 rows");
    expect_refused(db, "SELECT printf('%200s', 'x')", "limit: more than 100 bytes");
    mt_sql_result *r = NULL;
    CHECK_OK(mt_sql_query(db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10) SELECT x FROM c", &r));
    CHECK(r && mt_sql_result_rows(r) == 10);
    mt_sql_result_free(r);
    mt_sql_close(db);
    CHECK(file_hash(db_path) == before);
}

TEST(open_rejects_missing_and_non_database_files_and_escapes_odd_names) {
    mt_sql_db *db = NULL;
    const char *dir = test_tmpdir("test_sql_open");
    char path[700];
    snprintf(path, sizeof path, "%s/missing.sqlite", dir);
    CHECK_ERR(mt_sql_open(path, NULL, &db), MT_ERR_IO, "no such database file");
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    FILE *f = fopen(path, "w");
    if (f) fputs("this is not a database, just some text that is long enough to have a header\n", f), fclose(f);
    CHECK_ERR(mt_sql_open(path, NULL, &db), MT_ERR_FORMAT, "not a readable SQLite database");
    CHECK(db == NULL);
    /* '?', '%' and '#' in a file name must not be read as URI syntax */
    snprintf(path, sizeof path, "%s/odd?mode=rwc%%20#x.db", dir);
    make_db(path);
    CHECK_OK(mt_sql_open(path, NULL, &db));
    mt_sql_result *r = NULL;
    CHECK_OK(mt_sql_query(db, "SELECT count(*) FROM dup", &r));
    char *j = r ? mt_sql_result_json(r) : NULL;
    CHECK_STR_EQ(j, "3");
    free(j);
    mt_sql_result_free(r);
    mt_sql_close(db);
}

TEST(exact_match_normalisation_options) {
    CHECK(mt_normalize_parse("none") == MT_NORMALIZE_NONE && mt_normalize_parse("trim") == MT_NORMALIZE_TRIM);
    CHECK(mt_normalize_parse("whitespace") == MT_NORMALIZE_WHITESPACE && mt_normalize_parse("lower") == MT_NORMALIZE_LOWER);
    CHECK(mt_normalize_parse("fuzzy") == -1 && mt_normalize_parse(NULL) == -1);
    const char *a = "  SELECT  name\nFROM t ", *b = "SELECT name FROM t";
    CHECK(!mt_text_equal_normalized(a, b, MT_NORMALIZE_NONE));
    CHECK(!mt_text_equal_normalized(a, b, MT_NORMALIZE_TRIM));
    CHECK(mt_text_equal_normalized(a, b, MT_NORMALIZE_WHITESPACE));
    CHECK(mt_text_equal_normalized(" x ", "x", MT_NORMALIZE_TRIM));
    CHECK(!mt_text_equal_normalized(" x ", "x", MT_NORMALIZE_NONE));
    CHECK(mt_text_equal_normalized("x", "x", MT_NORMALIZE_NONE));
    CHECK(!mt_text_equal_normalized("select name from t", b, MT_NORMALIZE_WHITESPACE));
    CHECK(mt_text_equal_normalized("select  NAME from t", b, MT_NORMALIZE_LOWER));
    CHECK(!mt_text_equal_normalized("SELECT na me FROM t", b, MT_NORMALIZE_LOWER)); /* a space inside a word counts */
    CHECK(!mt_text_equal_normalized("SELECT name FROM t;", b, MT_NORMALIZE_LOWER));
    CHECK(mt_text_equal_normalized("", "   ", MT_NORMALIZE_WHITESPACE));
}

int main(void) {
    snprintf(db_path, sizeof db_path, "%s/t.sqlite", test_tmpdir("test_sql"));
    make_db(db_path);
    RUN(row_order_matters_only_when_the_gold_query_orders);
    RUN(duplicates_count_as_in_a_multiset);
    RUN(nulls_equal_only_nulls);
    RUN(floats_compare_with_a_relative_tolerance_of_1e6);
    RUN(integer_and_text_compare_as_numbers_only_when_the_text_is_a_number);
    RUN(invalid_sql_is_wrong_and_keeps_the_error);
    RUN(order_by_is_detected_only_at_the_top_level);
    RUN(results_as_json_and_text);
    RUN(sandbox_refuses_writes_attach_pragma_and_several_statements);
    RUN(sandbox_interrupts_runaway_queries_and_caps_results);
    RUN(open_rejects_missing_and_non_database_files_and_escapes_odd_names);
    RUN(exact_match_normalisation_options);
    TEST_MAIN_END();
}
