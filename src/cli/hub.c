/* --model ORG/NAME[@REVISION][:QUANT]: the CLI side of mt_hub_resolve. It reads the
 * huggingface_hub environment (HF_HUB_CACHE, HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE)
 * and draws a progress line on stderr while files download (on a terminal, or with
 * MEMTUNE_PROGRESS set; otherwise one line per file downloaded). */
#include "cli/cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    double last;
    const char *file;
    int drawn, live; /* live: redraw the line as bytes arrive (a terminal, or MEMTUNE_PROGRESS) */
} progress_state;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int draw_progress(const char *file, uint64_t done, uint64_t total, void *user) {
    progress_state *p = user;
    double t = now_s();
    int finished = total && done >= total;
    if (!p->live) { /* a log: one line per finished file */
        if (finished) fprintf(stderr, "memtune: downloaded %s (%.1f MB)\n", file, done / 1e6);
        return 0;
    }
    if (p->file == file && !finished && t - p->last < 0.2) return 0;
    if (p->file && p->file != file && p->drawn) fputc('\n', stderr);
    p->file = file, p->last = t, p->drawn = 1;
    if (total)
        fprintf(stderr, "\rmemtune: downloading %s: %.1f of %.1f MB (%3.0f%%)", file, done / 1e6, total / 1e6,
                100.0 * (double)done / (double)total);
    else
        fprintf(stderr, "\rmemtune: downloading %s: %.1f MB", file, done / 1e6);
    fflush(stderr);
    return 0;
}

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int cli_hub_cache_dir(char *buf, size_t size) {
    const char *v;
    if ((v = env("HF_HUB_CACHE"))) snprintf(buf, size, "%s", v);
    else if ((v = env("HF_HOME"))) snprintf(buf, size, "%s/hub", v);
    else if ((v = env("XDG_CACHE_HOME"))) snprintf(buf, size, "%s/huggingface/hub", v);
    else if ((v = env("HOME"))) snprintf(buf, size, "%s/.cache/huggingface/hub", v);
    else return 0;
    return 1;
}

/* Resolved paths live as long as the process, reachable from here (a command resolves one). */
static char *resolved[8];
static int n_resolved;

const char *cli_hub_path(const char *name) {
    char cache[4096];
    if (!cli_hub_cache_dir(cache, sizeof cache)) {
        fprintf(stderr, "memtune: %s: no such file, and as a Hub name: no cache directory (set HF_HUB_CACHE or HOME)\n", name);
        exit(1);
    }
    const char *off = env("HF_HUB_OFFLINE");
    progress_state ps = {.live = isatty(2) || env("MEMTUNE_PROGRESS")};
    mt_hub_options o = {
        .cache_dir = cache,
        .endpoint = env("HF_ENDPOINT"),
        .token = env("HF_TOKEN"),
        .offline = off && strcmp(off, "0") && strcasecmp(off, "false"),
        .progress = draw_progress,
        .progress_user = &ps,
    };
    char *path = NULL;
    mt_status s = mt_hub_resolve(name, &o, &path);
    if (ps.drawn) fputc('\n', stderr);
    if (s != MT_OK) {
        fprintf(stderr, "memtune: %s: no such file, and as a Hub model: %s\n", name, mt_last_error());
        exit(1);
    }
    if (n_resolved < 8) resolved[n_resolved++] = path;
    return path;
}
