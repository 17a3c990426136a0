/* memtune tokenize: prints the ids of a text as a JSON array. */
#include "cli/cli.h"
#include <stdio.h>
#include <stdlib.h>

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *text = NULL;
    int no_bos = 0;
    const cli_opt opts[] = {
        {"--model", "-m", OPT_STRING, &model, "model whose tokenizer to use (default: bundled stories260K)"},
        {"--tokenizer", "-z", OPT_STRING, &tokenizer, "tokenizer file (llama2.c .bin or tokenizer.json)"},
        {"--text", NULL, OPT_STRING, &text, "text to encode (required)"},
        {"--no-special", NULL, OPT_FLAG, &no_bos, "do not add BOS"},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    if (cli_parse(argc, argv, opts, "usage: memtune tokenize [--model PATH] --text TEXT", &code)) return code;
    if (!text) {
        fprintf(stderr, "memtune: tokenize needs --text\n");
        return 2;
    }
    mt_model *m;
    if (cli_load_model(cli_model_path(model, argv[0]), tokenizer, &m)) return 1;
    int *ids = NULL, n = 0;
    int rc = 0;
    if (!mt_model_tokenizer(m)) {
        fprintf(stderr, "memtune: the model has no tokenizer (give one with --tokenizer)\n");
        rc = 1;
    } else if (mt_tokenize(mt_model_tokenizer(m), text, !no_bos, &ids, &n) != MT_OK) {
        rc = cli_fail("tokenize");
    } else {
        printf("[");
        for (int i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
        printf("]\n");
    }
    free(ids);
    mt_model_free(m);
    return rc;
}
