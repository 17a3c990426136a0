/* memtune: command dispatch. */
#include "cli/cli.h"
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} commands[] = {
    {"generate", cmd_generate, "generate text from a prompt"},
    {"tokenize", cmd_tokenize, "print the token ids of a text as a JSON array"},
    {"info", cmd_info, "print a model's config, parameter count and memory needs"},
    {"eval", cmd_eval, "score text (perplexity), examples (exact match, NLL) or SQL (execution accuracy)"},
    {"data", cmd_data, "generate training data from a SQLite database, or filter question/SQL files"},
    {"convert", cmd_convert, "convert a model between HF, GGUF and llama2.c formats"},
    {"train", cmd_train, "fine-tune a model on JSONL data"},
    {"merge", cmd_merge, "fuse a LoRA adapter into a model's weights"},
    {"init", cmd_init, "create a randomly initialised model of a given shape"},
    {"serve", cmd_serve, "serve the model and its adapters over an OpenAI-compatible HTTP API"},
    {"job-run", cmd_job_run, "train one fine-tuning job's run directory (started by memtune serve)"},
};

static void usage(void) {
    printf("memtune %s - fine-tune and run Llama-family models\n\nusage: memtune <command> [options]\n\ncommands:\n",
           mt_version());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        printf("  %-10s %s\n", commands[i].name, commands[i].help);
    printf("\n'memtune <command> --help' shows a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("memtune %s\n", mt_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "memtune: unknown command '%s' (see memtune --help)\n", argv[1]);
    return 2;
}
