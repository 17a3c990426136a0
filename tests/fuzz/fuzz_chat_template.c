/* libFuzzer target for the chat-template engine: compiles arbitrary bytes as a template and,
 * when that succeeds, renders it (with and without the generation prompt) and extracts the
 * assistant spans of a fixed conversation. Any crash, sanitizer report, leak or hang is a bug;
 * errors are expected. Build and run from the repository root:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iinclude -Isrc \
 *       tests/fuzz/fuzz_chat_template.c src/template/*.c src/core/error.c -lm \
 *       -o build/fuzz_chat_template
 *   build/fuzz_chat_template -max_len=4096 -timeout=10 tests/fixtures/templates
 *
 * The fixtures folder is a good seed corpus: each file is a real template. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "template/chat_template.h"

static const mt_chat_message CONVERSATION[] = {
    {"system", "You are a helpful assistant."},
    {"user", "Hello!"},
    {"assistant", "Hi there."},
    {"user", "What is 2+2? \xc3\xa9\xf0\x9f\x98\x80"},
    {"assistant", NULL},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *source = malloc(size + 1);
    if (!source) return 0;
    memcpy(source, data, size);
    source[size] = 0; /* an embedded NUL just ends the template early */
    mt_chat_template *t = NULL;
    if (mt_chat_template_compile(source, &t) == MT_OK) {
        int n = (int)(sizeof CONVERSATION / sizeof CONVERSATION[0]);
        for (int agp = 0; agp <= 1; agp++) {
            char *text = NULL;
            if (mt_chat_template_render(t, CONVERSATION, n - 1, agp, "<s>", agp ? NULL : "</s>", &text) == MT_OK) free(text);
        }
        char *text = NULL;
        mt_chat_span *spans = NULL;
        int n_spans = 0;
        if (mt_chat_render_spans(t, CONVERSATION, n, "<s>", "</s>", &text, &spans, &n_spans) == MT_OK) {
            free(text);
            free(spans);
        }
        mt_chat_template_free(t);
    }
    free(source);
    return 0;
}
