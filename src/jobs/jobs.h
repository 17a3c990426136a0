/* Inside the job store (memtune_jobs.h): the store's state, shared by the operations
 * (store.c: SQLite, files, jobs, events as OpenAI objects) and the runner (runner.c: the
 * thread that starts, watches, restarts and ends the trainer processes). One mutex guards
 * the database and the running slots; nothing slow happens under it. */
#ifndef MT_JOBS_JOBS_H
#define MT_JOBS_JOBS_H
#include "memtune_jobs.h"
#include "serve/request.h"
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/types.h>

typedef struct {
    char id[48];               /* the job in this slot ("" = free) */
    pid_t pid;                 /* its trainer (0 = none yet) */
    char *run_dir;
} mt_job_slot;

struct mt_jobs {
    mt_jobs_options o;
    char *state_dir, *model_path, *tokenizer_path, *model_name, *trainer;
    char *files_dir, *jobs_dir;
    sqlite3 *db;
    int lock_fd;               /* <state>/server.lock, held while open */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    int thread_started, stopping, grace_ms;
    mt_job_slot slots[MT_JOBS_MAX_RUNNING];
    mt_jobs_model_callback on_model;
    void *on_model_user;
};

/* store.c (lock held by the caller where it says so) */
void mt_jobs_log(mt_jobs *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends an event to a job: level "info"/"warn"/"error", data may be NULL (stolen). */
int mt_jobs_event_add(mt_jobs *j, const char *job_id, long long created, const char *level, const char *type,
                      const char *message, json_t *data);
int mt_jobs_exec(mt_jobs *j, const char *sql);
/* The job's fine_tuned_model name and result directory (malloc'd); 0 or -1 */
int mt_jobs_result_of(mt_jobs *j, const char *job_id, char **name, char **dir, int *full);
char *mt_jobs_run_dir(mt_jobs *j, const char *job_id);
long long mt_jobs_now(void);

/* The operations behind the public functions and the HTTP routes: 0 with *out set (a new
 * reference), or -1 with *e filled (HTTP status, OpenAI error). */
int mt_jobs_op_file_add(mt_jobs *j, const char *filename, const char *purpose, const char *data, size_t len,
                        json_t **out, mt_serve_error *e);
int mt_jobs_op_file_list(mt_jobs *j, json_t **out, mt_serve_error *e);
int mt_jobs_op_file_get(mt_jobs *j, const char *id, json_t **out, mt_serve_error *e);
int mt_jobs_op_file_delete(mt_jobs *j, const char *id, json_t **out, mt_serve_error *e);
int mt_jobs_op_create(mt_jobs *j, const char *body, size_t len, json_t **out, mt_serve_error *e);
int mt_jobs_op_list(mt_jobs *j, const char *after, const char *limit, json_t **out, mt_serve_error *e);
int mt_jobs_op_get(mt_jobs *j, const char *id, json_t **out, mt_serve_error *e);
int mt_jobs_op_cancel(mt_jobs *j, const char *id, json_t **out, mt_serve_error *e);
int mt_jobs_op_events(mt_jobs *j, const char *id, const char *after, const char *limit, json_t **out, mt_serve_error *e);
int mt_jobs_op_checkpoints(mt_jobs *j, const char *id, const char *after, const char *limit, json_t **out,
                           mt_serve_error *e);
/* the job object (lock held) */
json_t *mt_jobs_job_json(mt_jobs *j, const char *id);

/* runner.c */
mt_status mt_jobs_runner_start(mt_jobs *j);
void mt_jobs_runner_stop(mt_jobs *j, int grace_ms);
/* lock held: kills the trainer of a job being cancelled (if any) */
void mt_jobs_runner_cancel(mt_jobs *j, const char *id);

#endif
