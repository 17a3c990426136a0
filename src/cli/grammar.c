/* --grammar FILE / --json-schema FILE, shared by generate and eval. */
#include "cli/cli.h"
#include <stdio.h>

int cli_load_grammar(const char *grammar_path, const char *schema_path, mt_grammar **g) {
    *g = NULL;
    if (grammar_path && schema_path) {
        fprintf(stderr, "memtune: give --grammar or --json-schema, not both\n");
        return 2;
    }
    if (grammar_path && mt_grammar_load(grammar_path, g)) return cli_fail("--grammar");
    if (schema_path && mt_grammar_load_json_schema(schema_path, g)) return cli_fail("--json-schema");
    return 0;
}
