/* memtune serve: an OpenAI-compatible HTTP server over one loaded model (src/serve/).
 * Loads the model, registers the --adapter NAME=DIR pairs, starts the server, then waits
 * for SIGINT/SIGTERM: it stops accepting, lets running requests finish for --grace seconds,
 * cuts the rest and exits 0. The log goes to stderr. */
#include "cli/cli.h"
#include "memtune_jobs.h"
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void log_line(const char *message, void *user) {
    (void)user;
    time_t now = time(NULL);
    struct tm tm;
    char when[32];
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "%s memtune serve: %s\n", when, message);
}

#define MAX_NAMED 64

int cmd_serve(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *host = "127.0.0.1", *api_key = NULL, *name = "base";
    int port = 8080, parallel = 4, queue = 64, context = 0, threads = 0, max_adapters = 8, no_batch = 0, quiet = 0;
    int max_body_mib = 8, no_upload = 0;
    const char *state_dir = "memtune-state";
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int no_jobs = 0, max_jobs = 1, job_retries = 3, max_file_mib = 64, train_threads = cores > 1 ? (int)(cores / 2) : 1;
    float grace = 5.0f;
    const char *named[MAX_NAMED];
    int n_named = 0;
    /* --adapter NAME=DIR is repeatable: take the pairs out before the option table */
    int k = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--adapter")) {
            if (i + 1 >= argc || !strchr(argv[i + 1], '=') || argv[i + 1][0] == '=') {
                fprintf(stderr, "memtune: --adapter needs NAME=DIR\n");
                return 2;
            }
            if (n_named == MAX_NAMED) {
                fprintf(stderr, "memtune: at most %d --adapter\n", MAX_NAMED);
                return 2;
            }
            named[n_named++] = argv[++i];
        } else argv[k++] = argv[i];
    }
    argc = k;
    const cli_opt opts[] = {
        {"--model", "-m", OPT_STRING, &model, "model: llama2.c .bin, .gguf or HF directory (default: $MEMTUNE_MODEL or bundled stories260K)"},
        {"--adapter", NULL, OPT_STRING, NULL, "NAME=DIR: an adapter directory callable as model NAME (loaded on first use); repeatable"},
        {"--tokenizer", "-z", OPT_STRING, &tokenizer, "tokenizer file (llama2.c .bin or tokenizer.json)"},
        {"--host", NULL, OPT_STRING, &host, "address to bind (default 127.0.0.1: this machine only)"},
        {"--port", NULL, OPT_INT, &port, "port (default 8080; 0 = any free port, printed at start)", 0, 65535},
        {"--api-key", NULL, OPT_STRING, &api_key, "require \"Authorization: Bearer KEY\" on /v1 (default $MEMTUNE_API_KEY)"},
        {"--name", NULL, OPT_STRING, &name, "the base model's id in /v1/models (default base)"},
        {"--parallel", "-np", OPT_INT, &parallel, "sequences decoded at once (default 4)", 1, 256},
        {"--queue", NULL, OPT_INT, &queue, "requests waiting beyond those before 503 (default 64)", 0, 1000000},
        {"--context", "-c", OPT_INT, &context, "tokens per sequence (default: the model's, capped at 4096)", 0, MT_MAX_CONTEXT},
        {"--threads", NULL, OPT_INT, &threads, "threads (default: all cores)", 0, MT_MAX_THREADS},
        {"--max-adapters", NULL, OPT_INT, &max_adapters, "adapters kept loaded; the least recently used leave (default 8)", 1, 1024},
        {"--max-body", NULL, OPT_INT, &max_body_mib, "request body limit in MiB (default 8)", 1, 1024},
        {"--no-adapter-upload", NULL, OPT_FLAG, &no_upload, "refuse POST /v1/adapters"},
        {"--no-batch", NULL, OPT_FLAG, &no_batch, "one forward per sequence per step instead of one batched forward"},
        {"--grace", NULL, OPT_FLOAT, &grace, "seconds running requests may finish after SIGINT/SIGTERM (default 5)", 0, 3600},
        {"--state-dir", NULL, OPT_STRING, &state_dir, "fine-tuning jobs: files, jobs and their runs (default ./memtune-state)"},
        {"--no-jobs", NULL, OPT_FLAG, &no_jobs, "no /v1/files or /v1/fine_tuning/jobs (and no state directory)"},
        {"--train-threads", NULL, OPT_INT, &train_threads, "threads of each fine-tuning job (default: half the cores)", 1, MT_MAX_THREADS},
        {"--max-jobs", NULL, OPT_INT, &max_jobs, "fine-tuning jobs training at once; the rest wait queued (default 1)", 1, MT_JOBS_MAX_RUNNING},
        {"--job-retries", NULL, OPT_INT, &job_retries, "restarts of a job whose trainer died, before it fails (default 3)", 0, MT_JOBS_MAX_RETRIES},
        {"--max-file", NULL, OPT_INT, &max_file_mib, "upload limit of /v1/files in MiB (default 64)", 1, 4096},
        {"--quiet", "-q", OPT_FLAG, &quiet, "no request log on stderr"},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    if (cli_parse(argc, argv, opts, "usage: memtune serve [--model PATH] [--adapter NAME=DIR ...] [--host H] [--port P] ...", &code))
        return code;
    if (!api_key) api_key = getenv("MEMTUNE_API_KEY");
    mt_set_threads(threads);
    mt_model *m;
    if (cli_load_model(cli_model_path(model, argv[0]), tokenizer, &m)) return 1;
    if (context > 0 && mt_model_set_context(m, context)) {
        mt_model_free(m);
        return cli_fail("serve");
    }
    /* SIGINT/SIGTERM are taken by sigwait below; every thread the server starts inherits the mask */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    mt_jobs *jobs = NULL;
    if (!no_jobs) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) {
            fprintf(stderr, "memtune: serve: cannot find its own executable for the jobs' trainer; use --no-jobs\n");
            mt_model_free(m);
            return 1;
        }
        self[n] = 0;
        mt_jobs_options jo;
        mt_jobs_options_default(&jo);
        jo.state_dir = state_dir;
        /* absolute: a job resumed by a server started elsewhere finds them */
        char model_abs[PATH_MAX], tok_abs[PATH_MAX];
        const char *mp = cli_model_path(model, argv[0]);
        jo.model_path = realpath(mp, model_abs) ? model_abs : mp;
        jo.tokenizer_path = tokenizer && realpath(tokenizer, tok_abs) ? tok_abs : tokenizer;
        jo.model_name = name;
        jo.trainer = self;
        jo.max_running = max_jobs;
        jo.train_threads = train_threads;
        jo.max_retries = job_retries;
        jo.max_file_bytes = (size_t)max_file_mib << 20;
        jo.log = quiet ? NULL : log_line;
        if (mt_jobs_open(&jo, &jobs)) {
            mt_model_free(m);
            return cli_fail("serve --state-dir");
        }
    }
    mt_server_options o;
    mt_server_options_default(&o);
    o.jobs = jobs;
    o.host = host;
    o.port = port;
    o.api_key = api_key;
    o.model_name = name;
    o.parallel = parallel;
    o.queue = queue;
    o.n_ctx = context;
    o.max_adapters = max_adapters;
    o.max_body = (size_t)max_body_mib << 20;
    o.batched = !no_batch;
    o.allow_adapter_upload = !no_upload;
    o.log = quiet ? NULL : log_line;
    mt_server *s;
    if (mt_server_start(m, &o, &s)) {
        mt_jobs_close(jobs, 0);
        mt_model_free(m);
        return cli_fail("serve");
    }
    for (int i = 0; i < n_named; i++) {
        char *pair = strdup(named[i]), *eq = pair ? strchr(pair, '=') : NULL;
        if (!eq) {
            free(pair);
            continue;
        }
        *eq = 0;
        mt_status st = mt_server_add_adapter(s, pair, eq + 1);
        free(pair);
        if (st) {
            mt_server_free(s);
            mt_jobs_close(jobs, 0);
            mt_model_free(m);
            return cli_fail("serve --adapter");
        }
    }
    /* the line scripts wait for (also with --quiet) */
    fprintf(stderr, "memtune serve: ready on http://%s:%d\n", host, mt_server_port(s));
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "memtune serve: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    mt_server_shutdown(s, (int)(grace * 1000));
    mt_server_free(s);
    mt_jobs_close(jobs, (int)(grace * 1000)); /* running jobs save a checkpoint and resume at the next start */
    mt_model_free(m);
    return 0;
}
