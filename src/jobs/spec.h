/* The body of POST /v1/fine_tuning/jobs, parsed and checked into a job spec: which files,
 * which method, and the trainer's options as `memtune train` flag names and values (the
 * pairs mt_train_options_set takes). OpenAI's hyperparameter names (n_epochs, batch_size,
 * learning_rate_multiplier) map onto memtune's; memtune's own names (rank, steps, tau, ...,
 * with _ or -) go beside them. Every value is range-checked here with the trainer's own
 * validator, so a job that is queued does not fail later on a bad option. Pure function of
 * the body (no store, no model): a fuzzer drives it. */
#ifndef MT_JOBS_SPEC_H
#define MT_JOBS_SPEC_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "serve/request.h"

#define MT_JOB_MAX_ARGS 48

typedef struct {
    char *model;               /* the base's id as the request names it */
    char *training_file, *validation_file; /* file ids (validation: NULL) */
    char *suffix;              /* NULL or [A-Za-z0-9._-]{1,40} */
    int has_seed;
    uint64_t seed;
    const char *type;          /* the API's method type: "supervised", "lora", "memory" or NULL (auto) */
    const char *method;        /* memtune's: "full", "lora", "memory" or NULL (auto) */
    int n_args;
    char *args[MT_JOB_MAX_ARGS][2]; /* train option name, value */
    json_t *hyperparameters;   /* as given (an object, possibly empty): echoed in the job */
    json_t *metadata;          /* OpenAI's metadata object, or NULL */
} mt_job_spec;

/* Parses body[0..len). 0, or -1 with *err filled (a 400 naming the field). */
int mt_job_spec_parse(const char *body, size_t len, mt_job_spec *sp, mt_serve_error *err);
void mt_job_spec_free(mt_job_spec *sp);
/* The spec's trainer options as a JSON array of [name, value] pairs (new reference). */
json_t *mt_job_spec_args_json(const mt_job_spec *sp);

#endif
