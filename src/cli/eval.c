/* memtune eval: perplexity of a text file (--text), exact match / answer NLL / SQL execution
 * accuracy on JSONL examples (--data, --db), or two reports side by side (--compare).
 * One JSON object on stdout. */
#include "cli/cli.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int compare_reports(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "memtune: usage: memtune eval --compare A.jsonl B.jsonl\n");
        return 2;
    }
    char *json = NULL;
    if (mt_eval_compare_reports(argv[2], argv[3], &json)) return cli_fail("eval --compare");
    printf("%s\n", json);
    free(json);
    return 0;
}

static void print_data_score(const mt_eval_score *sc, const char *normalize, int with_sql) {
    const mt_data_score *b = &sc->base;
    printf("{\"examples\": %ld, \"exact_match\": %.6f, \"normalize\": \"%s\", \"nll\": %.6f, \"answer_tokens\": %ld", b->examples,
           b->exact_match, normalize, b->nll, b->answer_tokens);
    if (with_sql)
        printf(", \"execution_accuracy\": %.6f, \"sql_examples\": %ld, \"sql_match\": %ld, \"sql_invalid\": %ld, "
               "\"sql_gold_errors\": %ld",
               sc->execution_accuracy, sc->sql_examples, sc->sql_match, sc->sql_invalid, sc->sql_gold_errors);
    printf("}\n");
}

/* Progress of a long evaluation on stderr: on a terminal a line rewritten in place, else a
 * line every 10 s; nothing for evaluations that finish within 2 s. */
typedef struct {
    double start, last;
    int tty, printed;
    const char *unit;
} progress_state;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int print_progress(long done, long total, void *user) {
    progress_state *p = user;
    double t = now_s(), every = p->tty ? 0.2 : 10.0;
    if (t - p->start < 2.0 || (t - p->last < every && done < total)) return 0;
    p->last = t;
    p->printed = 1;
    double eta = done > 0 ? (t - p->start) / done * (total - done) : 0;
    fprintf(stderr, "%seval: %ld/%ld %s, %.0f s, about %.0f s left%s", p->tty ? "\r" : "", done, total, p->unit,
            t - p->start, eta, p->tty ? "   " : "\n");
    if (p->tty && done == total) fputc('\n', stderr);
    return 0;
}

int cmd_eval(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "--compare")) return compare_reports(argc, argv);
    const char *model = NULL, *tokenizer = NULL, *text = NULL, *data = NULL, *report = NULL;
    const char *db = NULL, *normalize = "trim", *grammar_path = NULL, *schema_path = NULL;
    int threads = 0, max_new = 0, quiet = 0;
    float timeout = 0;
    uint64_t max_steps = 0;
    const cli_opt opts[] = {
        {"--model", "-m", OPT_STRING, &model, "model path (default: bundled stories260K)"},
        {"--adapter", NULL, OPT_STRING, NULL, "LoRA adapter (PEFT directory or llama.cpp .gguf), applied unmerged; repeatable"},
        {"--adapter-scale", NULL, OPT_FLOAT, NULL, "weight of the i-th --adapter (default 1); repeatable"},
        {"--tokenizer", "-z", OPT_STRING, &tokenizer, "tokenizer file"},
        {"--text", NULL, OPT_STRING, &text, "UTF-8 text file to score in windows of the context length"},
        {"--data", NULL, OPT_STRING, &data, "JSONL prompt/answer examples: exact match and answer NLL"},
        {"--report", NULL, OPT_STRING, &report, "with --data: write a JSON line per example here"},
        {"--normalize", NULL, OPT_STRING, &normalize, "exact match: none | trim (default) | whitespace | lower"},
        {"--db", NULL, OPT_STRING, &db, "SQLite file: expected answers are SQL; adds execution accuracy"},
        {"--sql-timeout", NULL, OPT_FLOAT, &timeout, "seconds one query may run (default 10)", MT_SQL_MIN_SECONDS, MT_SQL_MAX_SECONDS},
        {"--sql-steps", NULL, OPT_U64, &max_steps, "SQLite VM steps one query may take (default 50000000)", 1000, MT_SQL_MAX_STEPS},
        {"--max-new-tokens", NULL, OPT_INT, &max_new, "cap on generated tokens (default 256 with --db, else 2 x answer + 16)", 1, INT_MAX},
        {"--threads", NULL, OPT_INT, &threads, "threads (default: all cores)", 0, MT_MAX_THREADS},
        {"--quiet", "-q", OPT_FLAG, &quiet, "no progress report on stderr"},
        {"--grammar", NULL, OPT_STRING, &grammar_path, "with --data: GBNF grammar every greedy answer is constrained to"},
        {"--json-schema", NULL, OPT_STRING, &schema_path, "with --data: JSON Schema every greedy answer is constrained to"},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    cli_adapters ad;
    if (cli_take_adapters(&argc, argv, &ad)) return 2;
    if (cli_parse(argc, argv, opts,
                  "usage: memtune eval [--model PATH] --text FILE | --data FILE.jsonl [--db DB.sqlite] [--report FILE]\n"
                  "       memtune eval --compare A.jsonl B.jsonl   (two --report files side by side)",
                  &code))
        return code;
    if (!text == !data) {
        fprintf(stderr, "memtune: eval needs --text FILE or --data FILE\n");
        return 2;
    }
    int how = mt_normalize_parse(normalize);
    if (how < 0) {
        fprintf(stderr, "memtune: --normalize must be none, trim, whitespace or lower\n");
        return 2;
    }
    if (db && !data) {
        fprintf(stderr, "memtune: --db goes with --data\n");
        return 2;
    }
    if ((grammar_path || schema_path) && !data) {
        fprintf(stderr, "memtune: --grammar and --json-schema go with --data\n");
        return 2;
    }
    mt_grammar *grammar = NULL;
    if ((code = cli_load_grammar(grammar_path, schema_path, &grammar))) {
        cli_adapters_free(&ad);
        return code;
    }
    mt_set_threads(threads);
    mt_model *m;
    if (cli_load_model(cli_model_path(model, argv[0]), tokenizer, &m) || cli_load_adapters(m, &ad)) {
        mt_grammar_free(grammar);
        return 1;
    }
    progress_state ps = {.start = now_s(), .tty = isatty(2), .unit = data ? "examples" : "windows"};
    if (data) {
        mt_eval_options o = {.report_path = report, .normalize = (mt_normalize)how, .db_path = db,
                             .limits = {.max_steps = (long)max_steps, .max_seconds = timeout}, .max_new_tokens = max_new,
                             .progress = quiet ? NULL : print_progress, .progress_user = &ps, .grammar = grammar};
        mt_eval_score sc;
        mt_status s = mt_eval_data_file_opts(m, data, &o, &sc);
        mt_model_free(m);
        cli_adapters_free(&ad);
        mt_grammar_free(grammar);
        if (s) return cli_fail("eval");
        print_data_score(&sc, normalize, db != NULL);
        return 0;
    }
    mt_text_score sc;
    mt_eval_options o = {.progress = quiet ? NULL : print_progress, .progress_user = &ps};
    mt_status s = mt_eval_text_file_opts(m, text, &o, &sc);
    mt_model_free(m);
    cli_adapters_free(&ad);
    if (s) return cli_fail("eval");
    printf("{\"tokens\": %ld, \"nll\": %.6f, \"perplexity\": %.6f}\n", sc.tokens, sc.nll, sc.perplexity);
    return 0;
}
