/* memtune job-run RUN_DIR: the trainer process of one fine-tuning job, started by memtune
 * serve's job runner (src/jobs/runner.c) and not meant to be typed. It trains the job in
 * RUN_DIR (mt_jobs_run_child), turning SIGTERM/SIGINT into the run's stop flag: it then
 * saves a checkpoint and exits 130. Exit 0: done; 1: the run failed (RUN_DIR/error.txt). */
#include "cli/cli.h"
#include "memtune_jobs.h"
#include <signal.h>
#include <stdio.h>
#include <string.h>

static volatile int stop_requested = 0;
static void on_stop_signal(int sig) { (void)sig; stop_requested = 1; }

int cmd_job_run(int argc, char **argv) {
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: memtune job-run RUN_DIR (started by memtune serve for each fine-tuning job)\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int interrupted = 0;
    if (mt_jobs_run_child(argv[1], &stop_requested, &interrupted)) return cli_fail(argv[1]);
    return interrupted ? 130 : 0;
}
