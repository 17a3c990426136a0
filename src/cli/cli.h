/* Command-line plumbing shared by the commands: option tables, the default model path,
 * and error printing. Each command lives in its own file and only parses and prints. */
#ifndef MT_CLI_CLI_H
#define MT_CLI_CLI_H
#include "memtune.h"
#include <math.h>

typedef enum { OPT_FLAG, OPT_STRING, OPT_INT, OPT_FLOAT, OPT_U64 } cli_opt_type;

typedef struct {
    const char *name;   /* "--model" */
    const char *alias;  /* "-m" or NULL */
    cli_opt_type type;
    void *target;       /* int*, const char**, float*, uint64_t* */
    const char *help;
    /* Numeric options: the allowed range [min, max], checked as the value is parsed (NaN
     * and infinities are always refused), or CLI_LIBRARY_RANGE for an option copied
     * unchanged into a library options struct whose validator the command calls right after
     * parsing (mt_train_options_validate, mt_generate_options_validate), so that the range
     * lives in one place. A numeric option with neither is a bug cli_parse reports. */
    double min, max;
} cli_opt;

#define CLI_LIBRARY_RANGE NAN, NAN
/* String and flag options leave min and max out of their table rows (zero), as the
 * {NULL, ...} end markers leave everything: that is intended, not a missing initialiser. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define CLI_ANY_SEED 0, 18446744073709551615.0

/* Parses argv[1..] against opts (NULL-terminated by name). --help prints usage and returns
 * 1 with *exit_code 0; errors print a message naming the option, the value and the allowed
 * range, and return 1 with *exit_code 2. */
int cli_parse(int argc, char **argv, const cli_opt *opts, const char *usage, int *exit_code);
void cli_usage(const cli_opt *opts, const char *usage);
/* --model value, else $MEMTUNE_MODEL (either a path or, when no such path exists, a Hub name
 * ORG/NAME[@REV][:QUANT]: cli_hub_path), else the bundled stories260K (models/ of the source tree
 * beside the binary, or share/memtune/models/ of the prefix it is installed in). */
const char *cli_model_path(const char *given, const char *argv0);
/* A Hub model name resolved through mt_hub_resolve (src/cli/hub.c: the cache from HF_HUB_CACHE,
 * HF_HOME or ~/.cache/huggingface/hub; HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE; a progress line
 * on stderr when it is a terminal or MEMTUNE_PROGRESS is set, else a line per file). Prints the error and exits 1 on
 * failure. */
const char *cli_hub_path(const char *name);
int cli_hub_cache_dir(char *buf, size_t size);
int cli_fail(const char *what); /* prints "memtune: what: <last error>", returns 1 */
/* A library options check that failed before anything was loaded: prints "memtune: <last
 * error>" and returns 2 (a usage error, as a bad option value in cli_parse). */
int cli_bad_option(void);
int cli_load_model(const char *path, const char *tokenizer, mt_model **m);
/* MEMTUNE_CTX=N: the inference context capped at N instead of the library's 4096 (an explicit
 * --context, set after, still wins); cli_load_model applies it. */
void cli_context_from_env(mt_model *m);
/* Adapters named on the command line: "--adapter DIR" (repeatable) and "--adapter-scale S"
 * (repeatable; the i-th scale belongs to the i-th adapter, default 1). */
#define CLI_MAX_ADAPTERS 16
typedef struct {
    const char *path[CLI_MAX_ADAPTERS];
    float scale[CLI_MAX_ADAPTERS];
    mt_adapter_set *set[CLI_MAX_ADAPTERS];
    int n, n_scales;
} cli_adapters;
/* Takes every --adapter / --adapter-scale pair out of argv (compacting it, *argc updated).
 * Prints the problem and returns 1 (exit code 2) on a bad or surplus value. */
int cli_take_adapters(int *argc, char **argv, cli_adapters *a);
/* Loads each adapter (a run's adapter directory: LoRA and token rows; or a llama.cpp LoRA
 * .gguf) and attaches it to m with its scale. On failure prints the error, frees m and the
 * adapters, returns 1. Free the adapters after the model. */
int cli_load_adapters(mt_model *m, cli_adapters *a);
void cli_adapters_free(cli_adapters *a);

/* Compiles --grammar FILE or --json-schema FILE (at most one; *g stays NULL for neither).
 * Prints the problem and returns the exit code (1, or 2 for both given); 0 on success. */
int cli_load_grammar(const char *grammar_path, const char *schema_path, mt_grammar **g);

int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_job_run(int argc, char **argv);

#endif
