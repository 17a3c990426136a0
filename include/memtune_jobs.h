/* memtune fine-tuning jobs: OpenAI's files and fine-tuning jobs API as a C library.
 *
 * A job store lives in a state directory: jobs.db (SQLite: files, jobs, events), files/
 * (the uploaded JSONL, each checked by the same validator `memtune train` uses before it is
 * kept) and jobs/<id>/ (each job's run directory: its data, checkpoints, metrics and result).
 * A thread of the store runs queued jobs, up to max_running at once, each in a child process
 * (`TRAINER job-run RUN_DIR`, which calls mt_jobs_run_child), so a crash in a job cannot take
 * the embedding program down. A child that dies is restarted from its newest checkpoint up to
 * max_retries times, then the job fails with the reason. When the program itself dies
 * (SIGKILL), its children die with it (Linux's parent-death signal) and the next
 * mt_jobs_open resumes every running job from its newest checkpoint: the result is byte for
 * byte that of an uninterrupted job.
 *
 * Every operation returns OpenAI's JSON object (a file, a job, a list, ...) as malloc'd text
 * (free() it); on failure mt_last_error() says why (MT_ERR_ARG for a bad request or an
 * unknown id). memtune serve (mt_server_options.jobs) exposes the same operations over HTTP.
 * All functions may be called from any thread. */
#ifndef MEMTUNE_JOBS_H
#define MEMTUNE_JOBS_H
#include "memtune.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MT_JOBS_MAX_RUNNING 64
#define MT_JOBS_MAX_RETRIES 100
#define MT_JOBS_MAX_FILE_BYTES ((size_t)1 << 32)

typedef struct {
    const char *state_dir;     /* default "memtune-state" (created) */
    const char *model_path;    /* the base model jobs tune (required) */
    const char *tokenizer_path;/* optional */
    const char *model_name;    /* the base's id, which a job's "model" must name; default "base" */
    const char *trainer;       /* the executable run as `TRAINER job-run RUN_DIR` (required): the
                                  memtune binary, or a program of yours calling mt_jobs_run_child */
    int max_running;           /* jobs training at once; default 1, the rest wait queued */
    int train_threads;         /* threads of each job's trainer; default 1 */
    int max_retries;           /* restarts of a job whose trainer died; default 3 */
    size_t max_file_bytes;     /* upload limit; default 64 MiB */
    int start_runner;          /* 1 (default): run jobs; 0: only store them (tests, tools) */
    mt_log_callback log;       /* job starts, deaths and ends; NULL: silent */
    void *log_user;
} mt_jobs_options;

void mt_jobs_options_default(mt_jobs_options *o);
/* Opens (or creates) the store and starts running its queued and interrupted jobs. */
mt_status mt_jobs_open(const mt_jobs_options *o, mt_jobs **out);
/* Stops the runner: running trainers get SIGTERM (they save a checkpoint) and up to grace_ms
 * to exit, then SIGKILL; their jobs stay "running" and resume at the next open. */
void mt_jobs_close(mt_jobs *j, int grace_ms);

/* Called (on the runner's thread, or in mt_jobs_on_model for models that exist already) for
 * every job that succeeded: name is its fine_tuned_model, dir its adapter directory (or its
 * model directory for a full fine-tune, full = 1). One callback at a time; NULL removes it. */
typedef void (*mt_jobs_model_callback)(const char *name, const char *dir, int full, void *user);
void mt_jobs_on_model(mt_jobs *j, mt_jobs_model_callback cb, void *user);

/* Files: purpose "fine-tune". A file that the validator refuses is not stored; the message
 * names the line and the problem ("facts.jsonl:3: ..."). */
mt_status mt_jobs_file_add(mt_jobs *j, const char *filename, const char *purpose, const char *data, size_t len,
                           char **json);
mt_status mt_jobs_file_list(mt_jobs *j, char **json);
mt_status mt_jobs_file_get(mt_jobs *j, const char *id, char **json);
mt_status mt_jobs_file_delete(mt_jobs *j, const char *id, char **json);

/* Jobs: request is the body of POST /v1/fine_tuning/jobs ({"model", "training_file",
 * "method": {"type": "memory", "memory": {"hyperparameters": {...}}}, ...}; README: Tuning
 * over the API). after: a job id or NULL; limit 1..100 (0: 20). */
mt_status mt_jobs_create(mt_jobs *j, const char *request, size_t len, char **json);
mt_status mt_jobs_list(mt_jobs *j, const char *after, int limit, char **json);
mt_status mt_jobs_get(mt_jobs *j, const char *id, char **json);
mt_status mt_jobs_cancel(mt_jobs *j, const char *id, char **json);
mt_status mt_jobs_events(mt_jobs *j, const char *id, const char *after, int limit, char **json);
mt_status mt_jobs_checkpoints(mt_jobs *j, const char *id, const char *after, int limit, char **json);

/* The trainer's side: trains the job in run_dir (its spec.json, written by mt_jobs_create),
 * resuming from its newest checkpoint, and writes events.jsonl and result.json there. When
 * *stop becomes non-zero it saves a checkpoint and returns MT_OK with *interrupted = 1. */
mt_status mt_jobs_run_child(const char *run_dir, const volatile int *stop, int *interrupted);

#ifdef __cplusplus
}
#endif
#endif
