/* Command-line plumbing shared by the commands: option tables, the default model path,
 * and error printing. Each command lives in its own file and only parses and prints. */
#ifndef MT_CLI_CLI_H
#define MT_CLI_CLI_H
#include "memtune.h"

typedef enum { OPT_FLAG, OPT_STRING, OPT_INT, OPT_FLOAT, OPT_U64 } cli_opt_type;

typedef struct {
    const char *name;   /* "--model" */
    const char *alias;  /* "-m" or NULL */
    cli_opt_type type;
    void *target;       /* int*, const char**, float*, uint64_t* */
    const char *help;
} cli_opt;

/* Parses argv[1..] against opts (NULL-terminated by name). --help prints usage and returns
 * 1 with *exit_code 0; errors print a message and return 1 with *exit_code 2. */
int cli_parse(int argc, char **argv, const cli_opt *opts, const char *usage, int *exit_code);
void cli_usage(const cli_opt *opts, const char *usage);
/* --model value, else $MEMTUNE_MODEL, else the bundled stories260K. */
const char *cli_model_path(const char *given, const char *argv0);
int cli_fail(const char *what); /* prints "memtune: what: <last error>", returns 1 */
int cli_load_model(const char *path, const char *tokenizer, mt_model **m);
/* Loads the adapter directory dir (LoRA, token rows, ...) and attaches it to m (nothing when dir is NULL); on failure
 * prints the error, frees m and returns 1. */
int cli_attach_adapter(mt_model *m, const char *dir, mt_adapter_set **out);

int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_data(int argc, char **argv);

#endif
