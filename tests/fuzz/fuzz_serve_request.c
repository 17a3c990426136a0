/* libFuzzer target for memtune serve's request parsing: arbitrary bytes as the body of
 * POST /v1/completions and /v1/chat/completions. Errors (with an OpenAI error object) are
 * expected; crashes, leaks, hangs and an error without a message are bugs. */
#include "fuzz_common.h"
#include "serve/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int chat = 0; chat < 2; chat++) {
        mt_serve_request r;
        mt_serve_error e;
        if (mt_serve_parse_request((const char *)data, size, chat, &r, &e) == 0) {
            if (chat && (r.n_messages < 1 || !r.messages[0].role || !r.messages[0].content)) abort();
            if (!chat && !r.prompt) abort();
            if (!(r.temperature >= 0 && r.temperature <= 2) || !(r.top_p > 0 && r.top_p <= 1)) abort();
            mt_serve_request_free(&r);
        } else {
            if (e.http < 400 || e.http > 599 || !e.message[0]) abort();
            free(mt_serve_error_json(&e));
        }
    }
    return 0;
}
