#include "cli/cli.h"
#include <errno.h>
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cli_usage(const cli_opt *opts, const char *usage) {
    fprintf(stdout, "%s\n\noptions:\n", usage);
    for (const cli_opt *o = opts; o->name; o++) {
        char left[64];
        const char *arg = o->type == OPT_FLAG ? "" : o->type == OPT_STRING ? " S" : " N";
        snprintf(left, sizeof left, "%s%s%s%s", o->alias ? o->alias : "", o->alias ? ", " : "", o->name, arg);
        fprintf(stdout, "  %-28s %s\n", left, o->help);
    }
    fprintf(stdout, "  %-28s %s\n", "-h, --help", "show this help");
}

/* A range bound as the user would write it: 10, 0.99, 1e-06, 2147483647. */
static const char *bound(char *buf, size_t n, double v) {
    snprintf(buf, n, "%.16g", v);
    return buf;
}

static int has_range(const cli_opt *o) { return !isnan(o->min) && !isnan(o->max) && o->min < o->max; }

/* Parses and range-checks one value; on failure prints why and returns 0. */
static int parse_value(const cli_opt *o, const char *flag, const char *v) {
    char *end = NULL, lo[32], hi[32];
    errno = 0;
    if (!o->target) return 1; /* listed for --help only (taken out of argv before parsing) */
    int ranged = has_range(o);
    bound(lo, sizeof lo, o->min), bound(hi, sizeof hi, o->max);
    switch (o->type) {
    case OPT_STRING: *(const char **)o->target = v; return 1;
    case OPT_INT: {
        long long x = strtoll(v, &end, 10);
        if (errno || *end || end == v || x < INT_MIN || x > INT_MAX || (ranged && (x < o->min || x > o->max))) {
            if (ranged) fprintf(stderr, "memtune: %s %s: must be an integer in [%s, %s]\n", flag, v, lo, hi);
            else fprintf(stderr, "memtune: %s %s: must be an integer\n", flag, v);
            return 0;
        }
        *(int *)o->target = (int)x;
        return 1;
    }
    case OPT_FLOAT: {
        double x = strtod(v, &end);
        /* NaN and inf parse: a library range check refuses them with its range */
        if (*end || end == v || (ranged && !(isfinite((float)x) && x >= o->min && x <= o->max))) {
            if (ranged) fprintf(stderr, "memtune: %s %s: must be a finite number in [%s, %s]\n", flag, v, lo, hi);
            else fprintf(stderr, "memtune: %s %s: must be a number\n", flag, v);
            return 0;
        }
        *(float *)o->target = (float)x;
        return 1;
    }
    case OPT_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || *end || end == v || v[strspn(v, " \t")] == '-' || (double)x < o->min || (double)x > o->max) {
            fprintf(stderr, "memtune: %s %s: must be an integer in [%s, %s]\n", flag, v, lo,
                    o->max >= 18446744073709551615.0 ? "18446744073709551615" : hi);
            return 0;
        }
        *(uint64_t *)o->target = x;
        return 1;
    }
    default: return 0;
    }
}

/* Every numeric option states its range (or that the library checks it): a table without
 * one is a bug, reported on every run of the command so that no test misses it. */
static int table_complete(const cli_opt *opts) {
    for (const cli_opt *o = opts; o->name; o++)
        if (o->target && o->type != OPT_FLAG && o->type != OPT_STRING && !has_range(o) && !(isnan(o->min) && isnan(o->max))) {
            fprintf(stderr, "memtune: internal error: option %s has no range (give its row in the option table a "
                    "min and max, or CLI_LIBRARY_RANGE when a library validator checks it)\n", o->name);
            return 0;
        }
    return 1;
}

int cli_bad_option(void) {
    fprintf(stderr, "memtune: %s\n", mt_last_error());
    return 2;
}

int cli_parse(int argc, char **argv, const cli_opt *opts, const char *usage, int *exit_code) {
    *exit_code = 2;
    if (!table_complete(opts)) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            cli_usage(opts, usage);
            *exit_code = 0;
            return 1;
        }
        const cli_opt *o = opts;
        while (o->name && strcmp(a, o->name) && !(o->alias && !strcmp(a, o->alias))) o++;
        if (!o->name) {
            fprintf(stderr, "memtune: unknown option '%s' (see --help)\n", a);
            *exit_code = 2;
            return 1;
        }
        if (o->type == OPT_FLAG) {
            *(int *)o->target = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "memtune: option %s needs a value\n", a);
            *exit_code = 2;
            return 1;
        }
        if (!parse_value(o, a, argv[++i])) {
            *exit_code = 2;
            return 1;
        }
    }
    return 0;
}

/* The bundled default model's place below a root: the source tree keeps it in models/, an
 * installed prefix in share/memtune/models/ (make install). */
static const char *const default_model_places[] = {
    "models/stories260K/stories260K.bin",
    "share/memtune/models/stories260K/stories260K.bin",
};

/* A name that is not a path on disk but has the shape ORG/NAME[@REV][:QUANT] is a Hub model. */
static const char *path_or_hub(const char *p) {
    return access(p, F_OK) != 0 && mt_hub_is_name(p) ? cli_hub_path(p) : p;
}

const char *cli_model_path(const char *given, const char *argv0) {
    if (given) return path_or_hub(given);
    const char *env = getenv("MEMTUNE_MODEL");
    if (env && *env) return path_or_hub(env);
    static char path[PATH_MAX + 64];
    /* The binary sits in <root>/build (or build-asan) of a source tree, or in <prefix>/bin of
     * an install: the default is found from the binary's own location, wherever the tree or
     * prefix is, and failing that from the working directory (a source tree's root). */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        for (size_t i = 0; i < sizeof default_model_places / sizeof *default_model_places; i++) {
            snprintf(path, sizeof path, "%s/../%s", exe, default_model_places[i]);
            if (access(path, R_OK) == 0) return path;
        }
    }
    (void)argv0;
    /* relative to the working directory; if absent, the load error names this path */
    snprintf(path, sizeof path, "%s", default_model_places[0]);
    return path;
}

int cli_fail(const char *what) {
    fprintf(stderr, "memtune: %s: %s\n", what, mt_last_error());
    return 1;
}

void cli_context_from_env(mt_model *m) {
    const char *env = getenv("MEMTUNE_CTX");
    int cap = env ? atoi(env) : 0, n = mt_model_config(m)->max_seq_len;
    if (cap > 0) mt_model_set_context(m, n < cap ? n : cap); /* within [1, the context length]: cannot fail */
}

int cli_load_model(const char *path, const char *tokenizer, mt_model **m) {
    mt_load_options lo = {.tokenizer_path = tokenizer};
    if (mt_model_load(path, &lo, m) != MT_OK) return cli_fail("cannot load model");
    cli_context_from_env(*m);
    return 0;
}

#define CLI_MAX_ADAPTER_SCALE 1000.0

int cli_take_adapters(int *argc, char **argv, cli_adapters *a) {
    memset(a, 0, sizeof *a);
    int k = 0;
    for (int i = 0; i < *argc; i++) {
        int is_dir = !strcmp(argv[i], "--adapter"), is_scale = !strcmp(argv[i], "--adapter-scale");
        if (!is_dir && !is_scale) {
            argv[k++] = argv[i];
            continue;
        }
        if (i + 1 >= *argc) {
            fprintf(stderr, "memtune: option %s needs a value\n", argv[i]);
            return 1;
        }
        const char *v = argv[++i];
        if (is_dir) {
            if (a->n == CLI_MAX_ADAPTERS) {
                fprintf(stderr, "memtune: at most %d --adapter options\n", CLI_MAX_ADAPTERS);
                return 1;
            }
            a->scale[a->n] = 1.0f;
            a->path[a->n++] = v;
            continue;
        }
        char *end;
        float s = strtof(v, &end);
        if (*end || end == v || !isfinite(s) || fabsf(s) > CLI_MAX_ADAPTER_SCALE) {
            fprintf(stderr, "memtune: --adapter-scale %s: must be a finite number in [-%g, %g]\n", v,
                    CLI_MAX_ADAPTER_SCALE, CLI_MAX_ADAPTER_SCALE);
            return 1;
        }
        if (a->n_scales == CLI_MAX_ADAPTERS) {
            fprintf(stderr, "memtune: at most %d --adapter-scale options\n", CLI_MAX_ADAPTERS);
            return 1;
        }
        a->scale[a->n_scales++] = s;
    }
    *argc = k;
    if (a->n_scales > a->n) {
        fprintf(stderr, "memtune: %d --adapter-scale values for %d --adapter options (the i-th scale belongs to the i-th adapter)\n",
                a->n_scales, a->n);
        return 1;
    }
    return 0;
}

void cli_adapters_free(cli_adapters *a) {
    for (int i = 0; i < a->n; i++) {
        mt_adapter_set_free(a->set[i]);
        a->set[i] = NULL;
    }
}

int cli_load_adapters(mt_model *m, cli_adapters *a) {
    mt_status s = MT_OK;
    int i = 0;
    for (; i < a->n && s == MT_OK; i++) s = mt_adapter_set_load_scaled(m, a->path[i], a->scale[i], &a->set[i]);
    if (s == MT_OK) return 0;
    fprintf(stderr, "memtune: adapter %s: %s\n", a->path[i - 1], mt_last_error());
    mt_model_free(m);
    cli_adapters_free(a); /* after the model: the token rows need not be restored */
    return 1;
}
