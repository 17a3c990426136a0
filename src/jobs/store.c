/* The job store (memtune_jobs.h): SQLite tables for files, jobs and events in
 * <state>/jobs.db, uploads in <state>/files/, run directories in <state>/jobs/, and the
 * operations of OpenAI's files and fine-tuning API on them, each returning OpenAI's object.
 *
 * Crash safety: a file is written atomically before its row is inserted, a run directory is
 * complete (renamed into place) before its job's row; every change of state is one SQLite
 * transaction (WAL, synchronous=FULL). A kill at any instant leaves at worst an unreferenced
 * file or directory, which the next open removes. */
#include "jobs/jobs.h"
#include "jobs/spec.h"
#include "core/check.h"
#include "core/error.h"
#include "core/file.h"
#include "core/atomic_dir.h"
#include "dataset/data.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *schema =
    "CREATE TABLE IF NOT EXISTS files(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, bytes INTEGER,"
    " created_at INTEGER, filename TEXT, purpose TEXT, examples INTEGER);"
    "CREATE TABLE IF NOT EXISTS jobs(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, created_at INTEGER,"
    " finished_at INTEGER, model TEXT, training_file TEXT, validation_file TEXT, suffix TEXT, seed INTEGER, type TEXT,"
    " method TEXT, hyperparameters TEXT, metadata TEXT, status TEXT NOT NULL, fine_tuned_model TEXT,"
    " result_dir TEXT, full INTEGER DEFAULT 0, trained_tokens INTEGER, error_code TEXT, error_message TEXT,"
    " error_param TEXT, attempts INTEGER DEFAULT 0, deaths INTEGER DEFAULT 0, events_offset INTEGER DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, created_at INTEGER,"
    " level TEXT, type TEXT, step INTEGER, message TEXT, data TEXT);"
    "CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);";

long long mt_jobs_now(void) { return (long long)time(NULL); }

void mt_jobs_log(mt_jobs *j, const char *fmt, ...) {
    if (!j->o.log) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    j->o.log(msg, j->o.log_user);
}

void mt_jobs_options_default(mt_jobs_options *o) {
    memset(o, 0, sizeof *o);
    o->state_dir = "memtune-state";
    o->model_name = "base";
    o->max_running = 1;
    o->train_threads = 1;
    o->max_retries = 3;
    o->max_file_bytes = (size_t)64 << 20;
    o->start_runner = 1;
}

int mt_jobs_exec(mt_jobs *j, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(j->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        mt_jobs_log(j, "jobs.db: %s: %s", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* A prepared statement with its parameters bound from a format: s = text (NULL: null),
 * i = long long. NULL on error. */
static sqlite3_stmt *prepare(mt_jobs *j, const char *sql, const char *types, ...) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(j->db, sql, -1, &st, NULL) != SQLITE_OK) {
        mt_jobs_log(j, "jobs.db: %s: %s", sql, sqlite3_errmsg(j->db));
        return NULL;
    }
    va_list ap;
    va_start(ap, types);
    for (int i = 0; types[i]; i++) {
        if (types[i] == 's') {
            const char *v = va_arg(ap, const char *);
            if (v) sqlite3_bind_text(st, i + 1, v, -1, SQLITE_TRANSIENT);
            else sqlite3_bind_null(st, i + 1);
        } else sqlite3_bind_int64(st, i + 1, va_arg(ap, long long));
    }
    va_end(ap);
    return st;
}

/* Runs a statement that returns no rows; 0 or -1. */
static int run(mt_jobs *j, sqlite3_stmt *st) {
    if (!st) return -1;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) mt_jobs_log(j, "jobs.db: %s", sqlite3_errmsg(j->db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static const char *col_text(sqlite3_stmt *st, int i) { return (const char *)sqlite3_column_text(st, i); }

static json_t *text_or_null(const char *s) { return s ? json_string(s) : json_null(); }

static void random_id(char *out, size_t size, const char *prefix) {
    unsigned char r[12] = {0};
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) { /* no entropy source: time and a counter */
        static unsigned long counter;
        unsigned long long t = (unsigned long long)time(NULL) ^ ((unsigned long long)getpid() << 32);
        unsigned long c = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
        memcpy(r, &t, 8);
        memcpy(r + 8, &c, 4);
    }
    int n = snprintf(out, size, "%s", prefix);
    for (size_t i = 0; i < sizeof r && n + 2 < (int)size; i++) n += snprintf(out + n, size - n, "%02x", r[i]);
}

static int oom(mt_serve_error *e) { return mt_serve_fail(e, 500, "server_error", NULL, NULL, "out of memory"); }
static int db_error(mt_serve_error *e) { return mt_serve_fail(e, 500, "server_error", NULL, NULL, "the job store failed (see the server log)"); }
static int not_found(mt_serve_error *e, const char *what, const char *id) {
    return mt_serve_fail(e, 404, "invalid_request_error", "id", "not_found", "no %s '%.64s'", what, id);
}

/* ids are ours (prefix + hex) or come from a URL: only these characters reach a path */
static int valid_id(const char *id, const char *prefix) {
    size_t n = strlen(prefix);
    if (strncmp(id, prefix, n) || strlen(id) > 40 || !id[n]) return 0;
    for (const char *p = id + n; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

char *mt_jobs_run_dir(mt_jobs *j, const char *job_id) { return mt_strdup_printf("%s/%s", j->jobs_dir, job_id); }

/* ---- opening -------------------------------------------------------------------------- */

/* Removes what a kill between writing and recording left: uploads and run directories with
 * no row, and staging names. */
static void remove_orphans(mt_jobs *j, const char *dir, const char *table) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char id[64];
        snprintf(id, sizeof id, "%.63s", de->d_name);
        char *dot = strchr(id, '.');
        int staging = dot && strcmp(dot, ".jsonl");
        if (dot) *dot = 0;
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT 1 FROM %s WHERE id = ?", table);
        sqlite3_stmt *st = prepare(j, sql, "s", id);
        int known = st && sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
        if (!st || (known && !staging)) continue;
        char *path = mt_path_join(dir, de->d_name);
        if (path) {
            struct stat sb;
            if (!lstat(path, &sb) && S_ISDIR(sb.st_mode)) mt_remove_tree(path);
            else unlink(path);
            mt_jobs_log(j, "removed %s (left by an interrupted write)", path);
        }
        free(path);
    }
    closedir(d);
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

mt_status mt_jobs_open(const mt_jobs_options *opts, mt_jobs **out) {
    *out = NULL;
    mt_jobs_options o;
    if (opts) o = *opts;
    else mt_jobs_options_default(&o);
    mt_status s;
    if (!o.model_path || !*o.model_path) return mt_error(MT_ERR_ARG, "jobs: a model path is required");
    if (!o.trainer || !*o.trainer) return mt_error(MT_ERR_ARG, "jobs: a trainer executable is required");
    if (!o.state_dir || !*o.state_dir) o.state_dir = "memtune-state";
    if (!o.model_name || !*o.model_name) o.model_name = "base";
    if ((s = mt_check_int("max_running", o.max_running, 1, MT_JOBS_MAX_RUNNING)) ||
        (s = mt_check_int("train_threads", o.train_threads, 1, MT_MAX_THREADS)) ||
        (s = mt_check_int("max_retries", o.max_retries, 0, MT_JOBS_MAX_RETRIES)) ||
        (s = mt_check_int("max_file_bytes", (long long)o.max_file_bytes, 1, (long long)MT_JOBS_MAX_FILE_BYTES)))
        return s;
    mt_jobs *j = calloc(1, sizeof *j);
    if (!j) return mt_error(MT_ERR_NOMEM, "out of memory");
    j->lock_fd = -1;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->wake, NULL);
    j->state_dir = strdup(o.state_dir);
    j->model_path = strdup(o.model_path);
    j->tokenizer_path = dup_or_null(o.tokenizer_path);
    j->model_name = strdup(o.model_name);
    j->trainer = strdup(o.trainer);
    j->files_dir = mt_path_join(o.state_dir, "files");
    j->jobs_dir = mt_path_join(o.state_dir, "jobs");
    o.state_dir = j->state_dir, o.model_path = j->model_path, o.tokenizer_path = j->tokenizer_path;
    o.model_name = j->model_name, o.trainer = j->trainer;
    j->o = o;
    s = j->state_dir && j->model_path && j->model_name && j->trainer && j->files_dir && j->jobs_dir &&
                (!o.tokenizer_path || j->tokenizer_path) ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s) s = mt_mkdir_p(j->files_dir);
    if (!s) s = mt_mkdir_p(j->jobs_dir);
    /* one server per state directory: two would run the same jobs */
    char *lock = s ? NULL : mt_path_join(o.state_dir, "server.lock");
    if (!s && !lock) s = mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s && ((j->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0 || flock(j->lock_fd, LOCK_EX | LOCK_NB)))
        s = mt_error(MT_ERR_IO, "%s: %s", o.state_dir,
                     j->lock_fd >= 0 ? "in use by another memtune server (one server per state directory)" : strerror(errno));
    free(lock);
    char *db = s ? NULL : mt_path_join(o.state_dir, "jobs.db");
    if (!s && !db) s = mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s && sqlite3_open_v2(db, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK)
        s = mt_error(MT_ERR_IO, "%s: cannot open: %s", db, j->db ? sqlite3_errmsg(j->db) : "out of memory");
    if (!s) {
        sqlite3_busy_timeout(j->db, 5000);
        char *msg = NULL;
        if (sqlite3_exec(j->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, &msg) != SQLITE_OK ||
            sqlite3_exec(j->db, schema, NULL, NULL, &msg) != SQLITE_OK)
            s = mt_error(MT_ERR_IO, "%s: %s", db, msg ? msg : "cannot create the tables");
        sqlite3_free(msg);
    }
    free(db);
    if (!s) {
        remove_orphans(j, j->files_dir, "files");
        remove_orphans(j, j->jobs_dir, "jobs");
        if (o.start_runner) s = mt_jobs_runner_start(j);
    }
    if (s) {
        mt_jobs_close(j, 0);
        return s;
    }
    *out = j;
    return MT_OK;
}

void mt_jobs_close(mt_jobs *j, int grace_ms) {
    if (!j) return;
    mt_jobs_runner_stop(j, grace_ms);
    if (j->db) sqlite3_close(j->db);
    if (j->lock_fd >= 0) close(j->lock_fd);
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->wake);
    for (int i = 0; i < MT_JOBS_MAX_RUNNING; i++) free(j->slots[i].run_dir);
    free(j->state_dir);
    free(j->model_path);
    free(j->tokenizer_path);
    free(j->model_name);
    free(j->trainer);
    free(j->files_dir);
    free(j->jobs_dir);
    free(j);
}

void mt_jobs_on_model(mt_jobs *j, mt_jobs_model_callback cb, void *user) {
    pthread_mutex_lock(&j->lock);
    j->on_model = cb;
    j->on_model_user = user;
    if (cb) { /* the models that exist already */
        sqlite3_stmt *st = prepare(j, "SELECT fine_tuned_model, result_dir, full FROM jobs WHERE status = 'succeeded' ORDER BY seq", "");
        while (st && sqlite3_step(st) == SQLITE_ROW)
            if (col_text(st, 0) && col_text(st, 1)) cb(col_text(st, 0), col_text(st, 1), sqlite3_column_int(st, 2), user);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&j->lock);
}

/* ---- events --------------------------------------------------------------------------- */

int mt_jobs_event_add(mt_jobs *j, const char *job_id, long long created, const char *level, const char *type,
                      const char *message, json_t *data) {
    json_t *step = data ? json_object_get(data, "step") : NULL;
    int has_step = json_is_integer(step);
    long long step_value = has_step ? json_integer_value(step) : 0;
    char *d = data ? json_dumps(data, JSON_COMPACT) : NULL;
    json_decref(data);
    sqlite3_stmt *st = prepare(j, "INSERT INTO events(job_id, created_at, level, type, step, message, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               "sisssss", job_id, created, level, type, NULL, message, d);
    if (st && has_step) sqlite3_bind_int64(st, 5, step_value);
    free(d);
    return run(j, st);
}

/* ---- files ---------------------------------------------------------------------------- */

static json_t *file_json(sqlite3_stmt *st) {
    /* id, bytes, created_at, filename, purpose */
    return json_pack("{s:s, s:s, s:I, s:I, s:o, s:s, s:s, s:n, s:n}", "id", col_text(st, 0), "object", "file", "bytes",
                     (json_int_t)sqlite3_column_int64(st, 1), "created_at", (json_int_t)sqlite3_column_int64(st, 2),
                     "filename", text_or_null(col_text(st, 3)), "purpose", col_text(st, 4) ? col_text(st, 4) : "",
                     "status", "processed", "status_details", "expires_at");
}

static char *file_path(mt_jobs *j, const char *id) { return mt_strdup_printf("%s/%s.jsonl", j->files_dir, id); }

int mt_jobs_op_file_add(mt_jobs *j, const char *filename, const char *purpose, const char *data, size_t len,
                        json_t **out, mt_serve_error *e) {
    if (!purpose || strcmp(purpose, "fine-tune"))
        return mt_serve_fail(e, 400, "invalid_request_error", "purpose", "invalid_value",
                             "'purpose' must be \"fine-tune\" (got '%.40s')", purpose ? purpose : "");
    if (len > j->o.max_file_bytes)
        return mt_serve_fail(e, 413, "invalid_request_error", "file", "file_too_large", "the file is larger than the limit of %zu bytes",
                             j->o.max_file_bytes);
    char name[256];
    snprintf(name, sizeof name, "%s", filename && *filename ? filename : "upload.jsonl");
    /* the validator `memtune train` uses: the first bad line, by number, refuses the file */
    mt_dataset ds = {0};
    mt_status s = mt_dataset_load_jsonl_text(&ds, name, data ? data : "", len, 0);
    int examples = ds.n;
    mt_dataset_free(&ds);
    if (s == MT_ERR_NOMEM) return oom(e);
    if (s) return mt_serve_fail(e, 400, "invalid_request_error", "file", "invalid_file", "%s", mt_last_error());
    if (examples == 0) return mt_serve_fail(e, 400, "invalid_request_error", "file", "invalid_file", "%s: no examples", name);
    char id[48];
    random_id(id, sizeof id, "file-");
    char *path = file_path(j, id);
    if (!path) return oom(e);
    if (mt_write_file_atomic(path, data ? data : "", len)) {
        mt_jobs_log(j, "upload %s: %s", id, mt_last_error());
        free(path);
        return mt_serve_fail(e, 500, "server_error", NULL, NULL, "cannot store the file (see the server log)");
    }
    pthread_mutex_lock(&j->lock);
    int rc = run(j, prepare(j, "INSERT INTO files(id, bytes, created_at, filename, purpose, examples) VALUES (?, ?, ?, ?, ?, ?)",
                            "siissi", id, (long long)len, mt_jobs_now(), name, purpose, (long long)examples));
    if (rc) unlink(path);
    pthread_mutex_unlock(&j->lock);
    free(path);
    if (rc) return db_error(e);
    mt_jobs_log(j, "stored %s (%s, %zu bytes, %d examples)", id, name, len, examples);
    return mt_jobs_op_file_get(j, id, out, e);
}

/* An OpenAI list answer {"object": "list", "data", "has_more"} around data (taken over); ok = 0:
 * the query failed, data is dropped and the answer is the database error. */
static int list_reply(int ok, json_t *data, int more, json_t **out, mt_serve_error *e) {
    if (!ok) {
        json_decref(data);
        return db_error(e);
    }
    *out = json_pack("{s:s, s:o, s:b}", "object", "list", "data", data, "has_more", more);
    return *out ? 0 : oom(e);
}

int mt_jobs_op_file_list(mt_jobs *j, json_t **out, mt_serve_error *e) {
    json_t *data = json_array();
    pthread_mutex_lock(&j->lock);
    sqlite3_stmt *st = prepare(j, "SELECT id, bytes, created_at, filename, purpose FROM files ORDER BY seq DESC", "");
    while (st && sqlite3_step(st) == SQLITE_ROW) json_array_append_new(data, file_json(st));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&j->lock);
    return list_reply(st != NULL, data, 0, out, e);
}

int mt_jobs_op_file_get(mt_jobs *j, const char *id, json_t **out, mt_serve_error *e) {
    pthread_mutex_lock(&j->lock);
    sqlite3_stmt *st = prepare(j, "SELECT id, bytes, created_at, filename, purpose FROM files WHERE id = ?", "s", id);
    *out = st && sqlite3_step(st) == SQLITE_ROW ? file_json(st) : NULL;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&j->lock);
    if (!st) return db_error(e);
    return *out ? 0 : not_found(e, "file", id);
}

int mt_jobs_op_file_delete(mt_jobs *j, const char *id, json_t **out, mt_serve_error *e) {
    if (!valid_id(id, "file-")) return not_found(e, "file", id);
    pthread_mutex_lock(&j->lock);
    sqlite3_stmt *st = prepare(j, "DELETE FROM files WHERE id = ?", "s", id);
    int rc = run(j, st), gone = sqlite3_changes(j->db);
    pthread_mutex_unlock(&j->lock);
    if (rc) return db_error(e);
    if (!gone) return not_found(e, "file", id);
    /* jobs hold their own link to the data (their run directory), so a job never loses it */
    char *path = file_path(j, id);
    if (path) unlink(path);
    free(path);
    *out = json_pack("{s:s, s:s, s:b}", "id", id, "object", "file", "deleted", 1);
    return *out ? 0 : oom(e);
}

/* ---- jobs ----------------------------------------------------------------------------- */

#define JOB_COLUMNS \
    "id, created_at, finished_at, model, training_file, validation_file, suffix, seed, type, method, " \
    "hyperparameters, metadata, status, fine_tuned_model, trained_tokens, error_code, error_message, error_param, " \
    "attempts, deaths, seq"

static json_t *loads_or_null(const char *text) {
    json_t *v = text ? json_loads(text, 0, NULL) : NULL;
    return v ? v : json_null();
}

static json_t *job_json_row(sqlite3_stmt *st) {
    const char *type = col_text(st, 8);
    json_t *hyper = loads_or_null(col_text(st, 10));
    json_t *method = json_pack("{s:s}", "type", type ? type : "auto");
    if (type && method) json_object_set_new(method, type, json_pack("{s:O}", "hyperparameters", hyper));
    json_t *error = json_null();
    if (col_text(st, 15))
        error = json_pack("{s:s, s:s, s:o}", "code", col_text(st, 15), "message", col_text(st, 16) ? col_text(st, 16) : "",
                          "param", text_or_null(col_text(st, 17)));
    json_t *o = json_pack("{s:s, s:s, s:I, s:o, s:s, s:o, s:s, s:s, s:o, s:o, s:s, s:o, s:o, s:I, s:o, s:o, s:o, s:o, s:[], s:o,"
                          " s:{s:s, s:I, s:I}}",
                          "id", col_text(st, 0), "object", "fine_tuning.job", "created_at", (json_int_t)sqlite3_column_int64(st, 1),
                          "finished_at", sqlite3_column_type(st, 2) == SQLITE_NULL ? json_null() : json_integer(sqlite3_column_int64(st, 2)),
                          "model", col_text(st, 3) ? col_text(st, 3) : "", "fine_tuned_model", text_or_null(col_text(st, 13)),
                          "organization_id", "memtune", "status", col_text(st, 12), "result_files", json_array(),
                          "validation_file", text_or_null(col_text(st, 5)), "training_file", col_text(st, 4) ? col_text(st, 4) : "",
                          "hyperparameters", hyper, "trained_tokens",
                          sqlite3_column_type(st, 14) == SQLITE_NULL ? json_null() : json_integer(sqlite3_column_int64(st, 14)),
                          "seed", (json_int_t)sqlite3_column_int64(st, 7), "error", error, "suffix", text_or_null(col_text(st, 6)),
                          "estimated_finish", json_null(), "metadata", loads_or_null(col_text(st, 11)), "integrations",
                          "method", method ? method : json_null(), "memtune", "method", col_text(st, 9) ? col_text(st, 9) : "auto",
                          "attempts", (json_int_t)sqlite3_column_int64(st, 18), "trainer_deaths",
                          (json_int_t)sqlite3_column_int64(st, 19));
    return o;
}

json_t *mt_jobs_job_json(mt_jobs *j, const char *id) {
    sqlite3_stmt *st = prepare(j, "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?", "s", id);
    json_t *o = st && sqlite3_step(st) == SQLITE_ROW ? job_json_row(st) : NULL;
    sqlite3_finalize(st);
    return o;
}

/* 1 when a file row exists */
static int file_known(mt_jobs *j, const char *id) {
    sqlite3_stmt *st = prepare(j, "SELECT 1 FROM files WHERE id = ?", "s", id);
    int known = st && sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return known;
}

/* the upload at `from` as `to` in the staging run directory: a hard link (same bytes, no copy) */
static mt_status link_data(mt_jobs *j, const char *file_id, const char *dir, const char *name) {
    char *from = file_path(j, file_id), *to = mt_path_join(dir, name);
    mt_status s = from && to ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s && link(from, to)) { /* another filesystem: copy */
        char *buf = NULL;
        size_t len = 0;
        s = mt_file_read_all(from, MT_JOBS_MAX_FILE_BYTES, &buf, &len);
        if (!s) s = mt_write_file_atomic(to, buf, len);
        free(buf);
    }
    free(from);
    free(to);
    return s;
}

/* The run directory of a new job, whole or not at all: its data and spec.json (what the
 * trainer process reads: the model, threads and the options). */
static mt_status make_run_dir(mt_jobs *j, const char *id, const mt_job_spec *sp) {
    char *dir = mt_jobs_run_dir(j, id);
    if (!dir) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_atomic_dir ad;
    mt_status s = mt_atomic_dir_open(&ad, dir);
    free(dir);
    if (s) return s;
    s = link_data(j, sp->training_file, ad.tmp_path, "train.jsonl");
    if (!s && sp->validation_file) s = link_data(j, sp->validation_file, ad.tmp_path, "valid.jsonl");
    json_t *spec = json_pack("{s:s, s:o, s:i, s:o}", "model", j->model_path, "tokenizer", text_or_null(j->tokenizer_path),
                             "threads", j->o.train_threads, "args", mt_job_spec_args_json(sp));
    char *text = spec ? json_dumps(spec, JSON_INDENT(1)) : NULL;
    json_decref(spec);
    char *path = mt_path_join(ad.tmp_path, "spec.json");
    if (!s && (!text || !path)) s = mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s) s = mt_write_file_atomic(path, text, strlen(text));
    free(text);
    free(path);
    if (s) {
        mt_atomic_dir_abort(&ad);
        return s;
    }
    return mt_atomic_dir_commit(&ad);
}

int mt_jobs_op_create(mt_jobs *j, const char *body, size_t len, json_t **out, mt_serve_error *e) {
    mt_job_spec sp;
    if (mt_job_spec_parse(body, len, &sp, e)) return -1;
    int rc = -1;
    char id[48];
    random_id(id, sizeof id, "ftjob-");
    pthread_mutex_lock(&j->lock);
    if (strcmp(sp.model, j->model_name))
        mt_serve_fail(e, 400, "invalid_request_error", "model", "model_not_available",
                      "jobs tune this server's base model '%s' (got '%.64s')", j->model_name, sp.model);
    else if (!valid_id(sp.training_file, "file-") || !file_known(j, sp.training_file))
        mt_serve_fail(e, 400, "invalid_request_error", "training_file", "invalid_value", "no file '%.64s'", sp.training_file);
    else if (sp.validation_file && (!valid_id(sp.validation_file, "file-") || !file_known(j, sp.validation_file)))
        mt_serve_fail(e, 400, "invalid_request_error", "validation_file", "invalid_value", "no file '%.64s'", sp.validation_file);
    else if (make_run_dir(j, id, &sp)) {
        mt_jobs_log(j, "job %s: %s", id, mt_last_error());
        mt_serve_fail(e, 500, "server_error", NULL, NULL, "cannot create the job's run directory (see the server log)");
    } else {
        char *hyper = json_dumps(sp.hyperparameters, JSON_COMPACT), *meta = sp.metadata ? json_dumps(sp.metadata, JSON_COMPACT) : NULL;
        rc = mt_jobs_exec(j, "BEGIN IMMEDIATE");
        if (!rc)
            rc = run(j, prepare(j, "INSERT INTO jobs(id, created_at, model, training_file, validation_file, suffix, seed, type, method,"
                                   " hyperparameters, metadata, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
                                "sisssssssss", id, mt_jobs_now(), sp.model, sp.training_file, sp.validation_file, sp.suffix, NULL,
                                sp.type, sp.method, hyper ? hyper : "{}", meta));
        if (!rc && sp.has_seed) {
            sqlite3_stmt *st = prepare(j, "UPDATE jobs SET seed = ? WHERE id = ?", "is", (long long)sp.seed, id);
            rc = run(j, st);
        }
        if (!rc) rc = mt_jobs_event_add(j, id, mt_jobs_now(), "info", "message", "Created fine-tuning job", NULL);
        if (!rc) rc = mt_jobs_exec(j, "COMMIT");
        else mt_jobs_exec(j, "ROLLBACK");
        free(hyper);
        free(meta);
        if (rc) {
            char *dir = mt_jobs_run_dir(j, id);
            if (dir) mt_remove_tree(dir);
            free(dir);
            db_error(e);
        } else {
            *out = mt_jobs_job_json(j, id);
            if (!*out) rc = oom(e);
            pthread_cond_broadcast(&j->wake);
            mt_jobs_log(j, "job %s queued (%s on %s)", id, sp.method ? sp.method : "auto", sp.training_file);
        }
    }
    pthread_mutex_unlock(&j->lock);
    mt_job_spec_free(&sp);
    return rc;
}

/* limit text: 1..100, default 20 */
static int parse_limit(const char *text, long *limit, mt_serve_error *e) {
    *limit = 20;
    if (!text) return 0;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end)
        return mt_serve_fail(e, 400, "invalid_request_error", "limit", "invalid_value",
                             "'limit' must be an integer in [1, 100] (got '%.32s')", text);
    if (mt_check_int("limit", v, 1, 100))
        return mt_serve_fail(e, 400, "invalid_request_error", "limit", "invalid_value", "%s", mt_last_error());
    *limit = (long)v;
    return 0;
}

/* The seq of a row by id in table, or -1 */
static long long seq_of(mt_jobs *j, const char *table, const char *id) {
    char sql[80];
    snprintf(sql, sizeof sql, "SELECT seq FROM %s WHERE id = ?", table);
    sqlite3_stmt *st = prepare(j, sql, "s", id);
    long long seq = st && sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return seq;
}

int mt_jobs_op_list(mt_jobs *j, const char *after, const char *limit_text, json_t **out, mt_serve_error *e) {
    long limit;
    if (parse_limit(limit_text, &limit, e)) return -1;
    pthread_mutex_lock(&j->lock);
    long long from = after && *after ? seq_of(j, "jobs", after) : (1LL << 62);
    if (from < 0) {
        pthread_mutex_unlock(&j->lock);
        return mt_serve_fail(e, 400, "invalid_request_error", "after", "invalid_value", "no job '%.64s' to list after", after);
    }
    json_t *data = json_array();
    sqlite3_stmt *st = prepare(j, "SELECT " JOB_COLUMNS " FROM jobs WHERE seq < ? ORDER BY seq DESC LIMIT ?", "ii", from, (long long)limit + 1);
    int n = 0, more = 0;
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        if (n++ == limit) more = 1;
        else json_array_append_new(data, job_json_row(st));
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&j->lock);
    return list_reply(st != NULL, data, more, out, e);
}

int mt_jobs_op_get(mt_jobs *j, const char *id, json_t **out, mt_serve_error *e) {
    pthread_mutex_lock(&j->lock);
    *out = mt_jobs_job_json(j, id);
    pthread_mutex_unlock(&j->lock);
    return *out ? 0 : not_found(e, "fine-tuning job", id);
}

int mt_jobs_op_cancel(mt_jobs *j, const char *id, json_t **out, mt_serve_error *e) {
    pthread_mutex_lock(&j->lock);
    sqlite3_stmt *st = prepare(j, "SELECT status FROM jobs WHERE id = ?", "s", id);
    char status[32] = "";
    if (st && sqlite3_step(st) == SQLITE_ROW) snprintf(status, sizeof status, "%s", col_text(st, 0) ? col_text(st, 0) : "");
    sqlite3_finalize(st);
    int rc = -1;
    if (!status[0]) not_found(e, "fine-tuning job", id);
    else if (strcmp(status, "queued") && strcmp(status, "running") && strcmp(status, "validating_files"))
        mt_serve_fail(e, 400, "invalid_request_error", "id", "invalid_state", "job %s has %s already; only a queued or running job can be cancelled",
                      id, status);
    else {
        rc = mt_jobs_exec(j, "BEGIN IMMEDIATE");
        if (!rc) rc = run(j, prepare(j, "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?", "is", mt_jobs_now(), id));
        if (!rc) rc = mt_jobs_event_add(j, id, mt_jobs_now(), "info", "message", "Job cancelled", NULL);
        if (!rc) rc = mt_jobs_exec(j, "COMMIT");
        else mt_jobs_exec(j, "ROLLBACK");
        if (rc) db_error(e);
        else {
            mt_jobs_runner_cancel(j, id);
            mt_jobs_log(j, "job %s cancelled (was %s)", id, status);
            if (!(*out = mt_jobs_job_json(j, id))) rc = oom(e);
        }
    }
    pthread_mutex_unlock(&j->lock);
    return rc;
}

int mt_jobs_op_events(mt_jobs *j, const char *id, const char *after, const char *limit_text, json_t **out, mt_serve_error *e) {
    long limit;
    if (parse_limit(limit_text, &limit, e)) return -1;
    long long from = 1LL << 62;
    if (after && *after) {
        char *end;
        if (strncmp(after, "ftevent-", 8) || (from = strtoll(after + 8, &end, 10)) <= 0 || *end)
            return mt_serve_fail(e, 400, "invalid_request_error", "after", "invalid_value", "'after' must be an event id (ftevent-N)");
    }
    pthread_mutex_lock(&j->lock);
    if (seq_of(j, "jobs", id) < 0) {
        pthread_mutex_unlock(&j->lock);
        return not_found(e, "fine-tuning job", id);
    }
    json_t *data = json_array();
    sqlite3_stmt *st = prepare(j, "SELECT seq, created_at, level, type, message, data FROM events WHERE job_id = ? AND seq < ?"
                                  " ORDER BY seq DESC LIMIT ?", "sii", id, from, (long long)limit + 1);
    int n = 0, more = 0;
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        if (n++ == limit) {
            more = 1;
            break;
        }
        char eid[40];
        snprintf(eid, sizeof eid, "ftevent-%lld", (long long)sqlite3_column_int64(st, 0));
        const char *type = col_text(st, 3);
        int metrics = type && (!strcmp(type, "step") || !strcmp(type, "check") || !strcmp(type, "eval"));
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:o, s:s}", "object", "fine_tuning.job.event",
                                              "id", eid, "created_at", (json_int_t)sqlite3_column_int64(st, 1), "level",
                                              col_text(st, 2) ? col_text(st, 2) : "info", "message",
                                              col_text(st, 4) ? col_text(st, 4) : "", "type", metrics ? "metrics" : "message",
                                              "data", loads_or_null(col_text(st, 5)), "memtune_kind", type ? type : "message"));
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&j->lock);
    return list_reply(st != NULL, data, more, out, e);
}

/* step-00000040.ckpt -> 40, else -1 */
static long checkpoint_step(const char *name) {
    unsigned long step;
    int used = 0;
    if (sscanf(name, "step-%8lu.ckpt%n", &step, &used) != 1 || name[used] || strlen(name) != 18) return -1;
    return (long)step;
}

static int cmp_long_desc(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x < y) - (x > y);
}

int mt_jobs_op_checkpoints(mt_jobs *j, const char *id, const char *after, const char *limit_text, json_t **out,
                           mt_serve_error *e) {
    long limit;
    if (parse_limit(limit_text, &limit, e)) return -1;
    pthread_mutex_lock(&j->lock);
    long long known = valid_id(id, "ftjob-") ? seq_of(j, "jobs", id) : -1;
    char *model = NULL;
    sqlite3_stmt *st = known >= 0 ? prepare(j, "SELECT fine_tuned_model FROM jobs WHERE id = ?", "s", id) : NULL;
    if (st && sqlite3_step(st) == SQLITE_ROW && col_text(st, 0)) model = strdup(col_text(st, 0));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&j->lock);
    if (known < 0) return not_found(e, "fine-tuning job", id);
    char *dir = mt_strdup_printf("%s/%s/checkpoints", j->jobs_dir, id);
    long steps[256];
    int n = 0;
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *de;
    while (d && (de = readdir(d)) && n < 256) {
        long s = checkpoint_step(de->d_name);
        if (s >= 0) steps[n++] = s;
    }
    if (d) closedir(d);
    qsort(steps, (size_t)n, sizeof *steps, cmp_long_desc);
    long before = -1;
    if (after && *after) {
        const char *p = strrchr(after, '-');
        char *end;
        before = p ? strtol(p + 1, &end, 10) : -1;
        if (!p || *end || before < 0)
            return free(dir), free(model), mt_serve_fail(e, 400, "invalid_request_error", "after", "invalid_value", "'after' must be a checkpoint id");
    }
    json_t *data = json_array();
    int taken = 0, more = 0;
    for (int i = 0; i < n; i++) {
        if (before >= 0 && steps[i] >= before) continue;
        if (taken == limit) {
            more = 1;
            break;
        }
        char cid[96], name[64], ckname[300];
        snprintf(cid, sizeof cid, "ftckpt-%s-%ld", id + 6, steps[i]);
        snprintf(name, sizeof name, "step-%08ld.ckpt", steps[i]);
        snprintf(ckname, sizeof ckname, "%s:ckpt-step-%ld", model ? model : id, steps[i]);
        char *path = mt_path_join(dir, name);
        struct stat sb;
        long long created = path && !stat(path, &sb) ? (long long)sb.st_mtime : 0;
        free(path);
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s, s:s, s:I, s:{s:I}}", "object", "fine_tuning.job.checkpoint", "id", cid,
                                              "created_at", (json_int_t)created, "fine_tuned_model_checkpoint", ckname,
                                              "fine_tuning_job_id", id, "step_number", (json_int_t)steps[i], "metrics", "step",
                                              (json_int_t)steps[i]));
        taken++;
    }
    free(dir);
    free(model);
    return list_reply(1, data, more, out, e);
}

int mt_jobs_result_of(mt_jobs *j, const char *job_id, char **name, char **dir, int *full) {
    sqlite3_stmt *st = prepare(j, "SELECT fine_tuned_model, result_dir, full FROM jobs WHERE id = ?", "s", job_id);
    int rc = -1;
    if (st && sqlite3_step(st) == SQLITE_ROW && col_text(st, 0) && col_text(st, 1)) {
        *name = strdup(col_text(st, 0));
        *dir = strdup(col_text(st, 1));
        *full = sqlite3_column_int(st, 2);
        rc = *name && *dir ? 0 : -1;
    }
    sqlite3_finalize(st);
    return rc;
}

/* ---- the public functions: the operations with JSON text out ---------------------------- */

static mt_status finish(int rc, json_t *o, mt_serve_error *e, char **json) {
    *json = NULL;
    if (rc) return mt_error(e->http == 500 && strstr(e->message, "memory") ? MT_ERR_NOMEM : e->http >= 500 ? MT_ERR_IO : MT_ERR_ARG,
                            "%s", e->message);
    *json = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return *json ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
}

#define PUBLIC(call) \
    json_t *o = NULL; \
    mt_serve_error e; \
    int rc = call; \
    return finish(rc, o, &e, json)

mt_status mt_jobs_file_add(mt_jobs *j, const char *filename, const char *purpose, const char *data, size_t len, char **json) {
    PUBLIC(mt_jobs_op_file_add(j, filename, purpose, data, len, &o, &e));
}
mt_status mt_jobs_file_list(mt_jobs *j, char **json) { PUBLIC(mt_jobs_op_file_list(j, &o, &e)); }
mt_status mt_jobs_file_get(mt_jobs *j, const char *id, char **json) { PUBLIC(mt_jobs_op_file_get(j, id ? id : "", &o, &e)); }
mt_status mt_jobs_file_delete(mt_jobs *j, const char *id, char **json) { PUBLIC(mt_jobs_op_file_delete(j, id ? id : "", &o, &e)); }
mt_status mt_jobs_create(mt_jobs *j, const char *request, size_t len, char **json) {
    PUBLIC(mt_jobs_op_create(j, request ? request : "", request ? len : 0, &o, &e));
}
mt_status mt_jobs_list(mt_jobs *j, const char *after, int limit, char **json) {
    char text[32];
    snprintf(text, sizeof text, "%d", limit);
    PUBLIC(mt_jobs_op_list(j, after, limit ? text : NULL, &o, &e));
}
mt_status mt_jobs_get(mt_jobs *j, const char *id, char **json) { PUBLIC(mt_jobs_op_get(j, id ? id : "", &o, &e)); }
mt_status mt_jobs_cancel(mt_jobs *j, const char *id, char **json) { PUBLIC(mt_jobs_op_cancel(j, id ? id : "", &o, &e)); }
mt_status mt_jobs_events(mt_jobs *j, const char *id, const char *after, int limit, char **json) {
    char text[32];
    snprintf(text, sizeof text, "%d", limit);
    PUBLIC(mt_jobs_op_events(j, id ? id : "", after, limit ? text : NULL, &o, &e));
}
mt_status mt_jobs_checkpoints(mt_jobs *j, const char *id, const char *after, int limit, char **json) {
    char text[32];
    snprintf(text, sizeof text, "%d", limit);
    PUBLIC(mt_jobs_op_checkpoints(j, id ? id : "", after, limit ? text : NULL, &o, &e));
}
