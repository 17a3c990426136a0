/* The runner: one thread that starts jobs in trainer processes, watches them and records
 * how they end.
 *
 * Each job runs as `TRAINER job-run RUN_DIR` (fork + exec: the server's threads, locks and
 * OpenMP pool stay behind; nothing but async-signal-safe calls happen between the two). The
 * child asks for SIGKILL when the runner's thread dies (PR_SET_PDEATHSIG), so a killed
 * server leaves no orphan training on; it takes an exclusive lock on RUN_DIR/lock before
 * exec, so a restarted server's trainer waits until a dying one is gone. The trainer always
 * resumes from the newest valid checkpoint in RUN_DIR (none: from step 0), so a job that
 * restarts after a crash of either process ends exactly as an uninterrupted one.
 *
 * Every 200 ms (or when woken) the thread reaps trainers that ended, copies their new event
 * lines (RUN_DIR/events.jsonl, written by mt_jobs_run_child) into the events table, and
 * starts queued jobs while fewer than max_running train. A job whose status says running
 * when the store opens (the server was killed) starts first, as a resume. */
#include "jobs/jobs.h"
#include "core/error.h"
#include "core/file.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int slot_busy(const mt_job_slot *s) { return s->id[0] != 0; }

static sqlite3_stmt *stmt(mt_jobs *j, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(j->db, sql, -1, &st, NULL) != SQLITE_OK) {
        mt_jobs_log(j, "jobs.db: %s: %s", sql, sqlite3_errmsg(j->db));
        return NULL;
    }
    return st;
}

static int step_done(mt_jobs *j, sqlite3_stmt *st) {
    if (!st) return -1;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) mt_jobs_log(j, "jobs.db: %s", sqlite3_errmsg(j->db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static const char *job_status(mt_jobs *j, const char *id, char *buf, size_t size) {
    sqlite3_stmt *st = stmt(j, "SELECT status FROM jobs WHERE id = ?");
    buf[0] = 0;
    if (st) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
            snprintf(buf, size, "%s", (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return buf;
}

/* ---- events from the trainer ------------------------------------------------------------ */

/* A metrics event (step, check, eval) already recorded: a resumed trainer repeats the steps
 * after its checkpoint, with the same numbers. */
static int event_seen(mt_jobs *j, const char *id, const char *type, long long step) {
    sqlite3_stmt *st = stmt(j, "SELECT 1 FROM events WHERE job_id = ? AND type = ? AND step = ? LIMIT 1");
    if (!st) return 0;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, step);
    int seen = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return seen;
}

/* The message of an event line from the trainer */
static void event_message(const char *type, json_t *o, char *buf, size_t size) {
    const char *msg = json_string_value(json_object_get(o, "message"));
    long long step = json_integer_value(json_object_get(o, "step"));
    if (!strcmp(type, "step"))
        snprintf(buf, size, "Step %lld/%lld: training loss=%.4f", step, (long long)json_integer_value(json_object_get(o, "total_steps")),
                 json_number_value(json_object_get(o, "loss")));
    else if (!strcmp(type, "check"))
        snprintf(buf, size, "Step %lld: %lld/%lld facts memorised (%lld exact), general perplexity %.4g", step,
                 (long long)json_integer_value(json_object_get(o, "facts_memorised")),
                 (long long)json_integer_value(json_object_get(o, "facts")),
                 (long long)json_integer_value(json_object_get(o, "facts_exact")),
                 json_number_value(json_object_get(o, "general_perplexity")));
    else if (!strcmp(type, "eval"))
        snprintf(buf, size, "Step %lld: validation loss=%.4f", step, json_number_value(json_object_get(o, "eval_loss")));
    else snprintf(buf, size, "%s", msg ? msg : type);
}

/* Copies the complete lines of RUN_DIR/events.jsonl past the job's offset into the events
 * table, in one transaction with the new offset. */
static void import_events(mt_jobs *j, mt_job_slot *s) {
    char *path = mt_path_join(s->run_dir, "events.jsonl");
    FILE *fp = path ? fopen(path, "rb") : NULL;
    free(path);
    if (!fp) return;
    sqlite3_stmt *st = stmt(j, "SELECT events_offset FROM jobs WHERE id = ?");
    long long offset = 0;
    if (st) {
        sqlite3_bind_text(st, 1, s->id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) offset = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (fseeko(fp, (off_t)offset, SEEK_SET)) {
        fclose(fp);
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long long pos = offset;
    int began = 0;
    while ((n = getline(&line, &cap, fp)) > 0) {
        if (line[n - 1] != '\n') break; /* being written: next time */
        if (!began) {
            if (mt_jobs_exec(j, "BEGIN IMMEDIATE")) break;
            began = 1;
        }
        pos += n;
        json_t *o = json_loadb(line, (size_t)n, 0, NULL);
        const char *type = json_string_value(json_object_get(o, "type"));
        if (type) {
            json_t *step = json_object_get(o, "step");
            int metric = !strcmp(type, "step") || !strcmp(type, "check") || !strcmp(type, "eval");
            if (!metric || !json_is_integer(step) || !event_seen(j, s->id, type, json_integer_value(step))) {
                char msg[512];
                event_message(type, o, msg, sizeof msg);
                json_t *t = json_object_get(o, "t");
                long long created = json_is_integer(t) ? json_integer_value(t) : mt_jobs_now();
                json_t *data = json_deep_copy(o);
                json_object_del(data, "type");
                json_object_del(data, "t");
                json_object_del(data, "message");
                const char *level = !strcmp(type, "warning") ? "warn" : "info";
                mt_jobs_event_add(j, s->id, created, level, type, msg, json_object_size(data) ? data : (json_decref(data), NULL));
            }
        }
        json_decref(o);
    }
    free(line);
    fclose(fp);
    if (began) {
        sqlite3_stmt *up = stmt(j, "UPDATE jobs SET events_offset = ? WHERE id = ?");
        if (up) {
            sqlite3_bind_int64(up, 1, pos);
            sqlite3_bind_text(up, 2, s->id, -1, SQLITE_STATIC);
        }
        if (step_done(j, up) || mt_jobs_exec(j, "COMMIT")) mt_jobs_exec(j, "ROLLBACK");
    }
}

/* ---- starting a trainer ----------------------------------------------------------------- */

static mt_status start_trainer(mt_jobs *j, mt_job_slot *s) {
    char *lock = mt_path_join(s->run_dir, "lock"), *log = mt_path_join(s->run_dir, "train.log");
    if (!lock || !log) {
        free(lock);
        free(log);
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    char *argv[] = {j->trainer, "job-run", s->run_dir, NULL};
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* the child: async-signal-safe calls only, then exec */
        setpgid(0, 0); /* the terminal's Ctrl-C is the server's to handle */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent) _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL); /* the server blocks SIGTERM in its threads */
        signal(SIGPIPE, SIG_DFL);
        syscall(SYS_close_range, 3u, ~0u, 0u); /* the server's sockets and database stay behind */
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0 && null != 0) dup2(null, 0), close(null);
        int lk = open(lock, O_RDWR | O_CREAT, 0644); /* inherited by the trainer: held until it exits */
        if (lk < 0 || flock(lk, LOCK_EX)) _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    free(lock);
    free(log);
    if (pid < 0) return mt_error(MT_ERR_IO, "fork: %s", strerror(errno));
    s->pid = pid;
    return MT_OK;
}

/* The oldest job to run that no slot runs: interrupted ones (status running) first. */
static int next_job(mt_jobs *j, char *id, size_t size) {
    sqlite3_stmt *st = stmt(j, "SELECT id FROM jobs WHERE status IN ('running', 'queued') ORDER BY status = 'running' DESC, seq ASC");
    int found = 0;
    while (st && !found && sqlite3_step(st) == SQLITE_ROW) {
        const char *cand = (const char *)sqlite3_column_text(st, 0);
        int taken = 0;
        for (int i = 0; i < j->o.max_running; i++)
            if (slot_busy(&j->slots[i]) && !strcmp(j->slots[i].id, cand)) taken = 1;
        if (!taken) {
            snprintf(id, size, "%s", cand);
            found = 1;
        }
    }
    sqlite3_finalize(st);
    return found;
}

static void set_status(mt_jobs *j, const char *id, const char *status, int finished) {
    sqlite3_stmt *st = stmt(j, finished ? "UPDATE jobs SET status = ?, finished_at = ? WHERE id = ?"
                                        : "UPDATE jobs SET status = ?, attempts = attempts + 1 WHERE id = ?");
    if (!st) return;
    sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
    if (finished) sqlite3_bind_int64(st, 2, mt_jobs_now());
    sqlite3_bind_text(st, finished ? 3 : 2, id, -1, SQLITE_STATIC);
    step_done(j, st);
}

static void fail_job(mt_jobs *j, const char *id, const char *code, const char *message) {
    mt_jobs_exec(j, "BEGIN IMMEDIATE");
    sqlite3_stmt *st = stmt(j, "UPDATE jobs SET status = 'failed', finished_at = ?, error_code = ?, error_message = ? WHERE id = ?");
    if (st) {
        sqlite3_bind_int64(st, 1, mt_jobs_now());
        sqlite3_bind_text(st, 2, code, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, message, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, id, -1, SQLITE_STATIC);
    }
    step_done(j, st);
    char msg[700];
    snprintf(msg, sizeof msg, "Job failed: %s", message);
    mt_jobs_event_add(j, id, mt_jobs_now(), "error", "message", msg, NULL);
    if (mt_jobs_exec(j, "COMMIT")) mt_jobs_exec(j, "ROLLBACK");
    mt_jobs_log(j, "job %s failed: %s", id, message);
}

static void start_next(mt_jobs *j, mt_job_slot *s) {
    char id[48];
    if (!next_job(j, id, sizeof id)) return;
    char status[32];
    job_status(j, id, status, sizeof status);
    int resumed = !strcmp(status, "running");
    free(s->run_dir);
    s->run_dir = mt_jobs_run_dir(j, id);
    snprintf(s->id, sizeof s->id, "%s", id);
    s->pid = 0;
    mt_status st = s->run_dir ? start_trainer(j, s) : mt_error(MT_ERR_NOMEM, "out of memory");
    if (st) {
        fail_job(j, id, "server_error", mt_last_error());
        s->id[0] = 0;
        return;
    }
    mt_jobs_exec(j, "BEGIN IMMEDIATE");
    set_status(j, id, "running", 0);
    mt_jobs_event_add(j, id, mt_jobs_now(), "info", "message",
                      resumed ? "Job resumed from its newest checkpoint" : "Fine-tuning job started", NULL);
    if (mt_jobs_exec(j, "COMMIT")) mt_jobs_exec(j, "ROLLBACK");
    mt_jobs_log(j, "job %s %s (trainer pid %d)", id, resumed ? "resumed" : "started", (int)s->pid);
}

/* ---- how a trainer ended ---------------------------------------------------------------- */

/* The last line the trainer wrote to RUN_DIR/error.txt (its error), or else to train.log */
static void trainer_error(const mt_job_slot *s, char *buf, size_t size) {
    snprintf(buf, size, "the trainer failed");
    const char *names[] = {"error.txt", "train.log"};
    for (int k = 0; k < 2; k++) {
        char *path = mt_path_join(s->run_dir, names[k]), *text = NULL;
        size_t len = 0;
        if (path && !mt_file_read_all(path, (size_t)64 << 20, &text, &len) && len) {
            while (len && (text[len - 1] == '\n' || text[len - 1] == '\r')) text[--len] = 0;
            char *last = strrchr(text, '\n');
            snprintf(buf, size, "%s", last ? last + 1 : text);
            free(path);
            free(text);
            return;
        }
        free(path);
        free(text);
    }
}

static void succeed(mt_jobs *j, mt_job_slot *s) {
    /* the result: a full fine-tune's model directory, else the adapter */
    char *adapter = mt_path_join(s->run_dir, "adapter"), *model = mt_path_join(s->run_dir, "model");
    int full = !(adapter && mt_dir_exists(adapter)) && model && mt_dir_exists(model);
    const char *dir = full ? model : adapter;
    if (!dir || !mt_dir_exists(dir)) {
        fail_job(j, s->id, "server_error", "the trainer ended without writing a result");
        free(adapter);
        free(model);
        return;
    }
    long long tokens = -1;
    char *rpath = mt_path_join(s->run_dir, "result.json");
    json_t *result = rpath ? json_load_file(rpath, 0, NULL) : NULL;
    free(rpath);
    if (json_is_integer(json_object_get(result, "tokens"))) tokens = json_integer_value(json_object_get(result, "tokens"));
    /* ft:<base>[:<suffix>]:<job id>, as OpenAI names tuned models */
    sqlite3_stmt *st = stmt(j, "SELECT model, suffix FROM jobs WHERE id = ?");
    char name[160] = "";
    if (st) {
        sqlite3_bind_text(st, 1, s->id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            const char *base = (const char *)sqlite3_column_text(st, 0), *suffix = (const char *)sqlite3_column_text(st, 1);
            snprintf(name, sizeof name, "ft:%s%s%s:%s", base ? base : "", suffix ? ":" : "", suffix ? suffix : "", s->id);
            if (strlen(name) > 128) snprintf(name, sizeof name, "ft:%s:%s", suffix ? suffix : "memtune", s->id);
        }
    }
    sqlite3_finalize(st);
    mt_jobs_exec(j, "BEGIN IMMEDIATE");
    st = stmt(j, "UPDATE jobs SET status = 'succeeded', finished_at = ?, fine_tuned_model = ?, result_dir = ?, full = ?,"
                 " trained_tokens = ? WHERE id = ?");
    if (st) {
        sqlite3_bind_int64(st, 1, mt_jobs_now());
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, dir, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 4, full);
        if (tokens >= 0) sqlite3_bind_int64(st, 5, tokens);
        else sqlite3_bind_null(st, 5);
        sqlite3_bind_text(st, 6, s->id, -1, SQLITE_STATIC);
    }
    int rc = step_done(j, st);
    char msg[300];
    snprintf(msg, sizeof msg, "The job has successfully completed: %s", name);
    json_t *data = json_pack("{s:s, s:O}", "fine_tuned_model", name, "result", result ? result : json_null());
    if (!rc) rc = mt_jobs_event_add(j, s->id, mt_jobs_now(), "info", "message", msg, data);
    if (rc || mt_jobs_exec(j, "COMMIT")) mt_jobs_exec(j, "ROLLBACK");
    else {
        mt_jobs_log(j, "job %s succeeded: %s = %s", s->id, name, dir);
        if (j->on_model) j->on_model(name, dir, full, j->on_model_user);
    }
    json_decref(result);
    free(adapter);
    free(model);
}

static void reaped(mt_jobs *j, mt_job_slot *s, int wstatus) {
    import_events(j, s);
    char status[32];
    job_status(j, s->id, status, sizeof status);
    int stopping = j->stopping;
    if (strcmp(status, "running")) {
        /* cancelled (or gone) meanwhile: nothing to record */
    } else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
        succeed(j, s);
    } else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 130 && stopping) {
        mt_jobs_log(j, "job %s stopped at a checkpoint; it resumes when the server starts again", s->id);
    } else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 126 && WEXITSTATUS(wstatus) != 127 && WEXITSTATUS(wstatus) != 130) {
        char why[600];
        trainer_error(s, why, sizeof why);
        fail_job(j, s->id, "training_failed", why);
    } else if (!stopping) {
        /* died: a signal (a crash, the OOM killer, someone's kill), or exec failed */
        char why[200];
        if (WIFSIGNALED(wstatus)) snprintf(why, sizeof why, "the trainer died by signal %d (%s)", WTERMSIG(wstatus), strsignal(WTERMSIG(wstatus)));
        else if (WEXITSTATUS(wstatus) == 130) snprintf(why, sizeof why, "the trainer was stopped (SIGINT/SIGTERM)");
        else snprintf(why, sizeof why, "the trainer could not be started (%s, exit %d)", j->trainer, WEXITSTATUS(wstatus));
        sqlite3_stmt *st = stmt(j, "UPDATE jobs SET deaths = deaths + 1 WHERE id = ? RETURNING deaths");
        long long deaths = 0;
        if (st) {
            sqlite3_bind_text(st, 1, s->id, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW) deaths = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
        if (deaths > j->o.max_retries) {
            char msg[400];
            snprintf(msg, sizeof msg, "%s; %lld deaths, more than the %d retries allowed", why, deaths, j->o.max_retries);
            fail_job(j, s->id, "trainer_died", msg);
        } else {
            char msg[400];
            snprintf(msg, sizeof msg, "%s; retrying from the newest checkpoint (retry %lld of %d)", why, deaths, j->o.max_retries);
            mt_jobs_event_add(j, s->id, mt_jobs_now(), "warn", "message", msg, NULL);
            mt_jobs_log(j, "job %s: %s", s->id, msg);
        }
    }
    s->id[0] = 0;
    s->pid = 0;
}

/* ---- the thread ------------------------------------------------------------------------- */

static void *runner(void *arg) {
    mt_jobs *j = arg;
    pthread_mutex_lock(&j->lock);
    while (!j->stopping) {
        for (int i = 0; i < j->o.max_running; i++) {
            mt_job_slot *s = &j->slots[i];
            if (!slot_busy(s) || !s->pid) continue;
            int ws;
            pid_t r = waitpid(s->pid, &ws, WNOHANG);
            if (r == s->pid) reaped(j, s, ws);
            else import_events(j, s);
        }
        for (int i = 0; i < j->o.max_running; i++)
            if (!slot_busy(&j->slots[i])) start_next(j, &j->slots[i]);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 200 * 1000000L;
        if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->wake, &j->lock, &until);
    }
    /* stopping: trainers save a checkpoint on SIGTERM; those still there after the grace get SIGKILL */
    for (int i = 0; i < j->o.max_running; i++)
        if (slot_busy(&j->slots[i]) && j->slots[i].pid) kill(j->slots[i].pid, SIGTERM);
    for (int waited = 0;; waited += 20) {
        int left = 0;
        for (int i = 0; i < j->o.max_running; i++) {
            mt_job_slot *s = &j->slots[i];
            if (!slot_busy(s) || !s->pid) continue;
            int ws;
            if (waitpid(s->pid, &ws, WNOHANG) == s->pid) reaped(j, s, ws);
            else if (waited >= j->grace_ms) {
                kill(s->pid, SIGKILL);
                if (waitpid(s->pid, &ws, 0) == s->pid) {
                    import_events(j, s);
                    mt_jobs_log(j, "job %s: trainer killed at shutdown; it resumes when the server starts again", s->id);
                }
                s->id[0] = 0;
            } else left++;
        }
        if (!left) break;
        pthread_mutex_unlock(&j->lock);
        nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
        pthread_mutex_lock(&j->lock);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

mt_status mt_jobs_runner_start(mt_jobs *j) {
    if (pthread_create(&j->thread, NULL, runner, j)) return mt_error(MT_ERR_IO, "cannot start the jobs thread");
    j->thread_started = 1;
    return MT_OK;
}

void mt_jobs_runner_stop(mt_jobs *j, int grace_ms) {
    if (!j->thread_started) return;
    pthread_mutex_lock(&j->lock);
    j->stopping = 1;
    j->grace_ms = grace_ms < 0 ? 0 : grace_ms;
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->lock);
    pthread_join(j->thread, NULL);
    j->thread_started = 0;
}

void mt_jobs_runner_cancel(mt_jobs *j, const char *id) {
    for (int i = 0; i < j->o.max_running; i++)
        if (slot_busy(&j->slots[i]) && !strcmp(j->slots[i].id, id) && j->slots[i].pid) kill(j->slots[i].pid, SIGKILL);
    pthread_cond_broadcast(&j->wake);
}
