/* libFuzzer target for the GBNF grammar compiler and matcher: compiles arbitrary bytes as a
 * grammar and, when that succeeds, matches a few texts against it and computes token masks
 * over a small SentencePiece-style vocabulary (byte fallback, multi-byte pieces) along a
 * greedy walk. Any crash, sanitizer report, leak or hang is a bug; errors are expected.
 * Built and run by tests/fuzz/run.sh (target "grammar"). */
#include <math.h>
#include "fuzz_common.h"
#include "grammar/matcher.h"

static const char *TOKENS[] = {"<unk>", "<s>", "</s>", "<0x0A>", "<0xE4>", "<0xB8>", "<0xAD>", "{", "}", "\"",
                               "a", "ab", "\xe2\x96\x81" "a", "1", "12", ":", ",", "[", "]", " ", "\xe4\xb8\xad", "x-y"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static mt_tokenizer *tok;
    if (!tok) {
        mt_vocab_spec spec = {.kind = MT_TOK_SPM, .n_vocab = (int)(sizeof TOKENS / sizeof TOKENS[0]), .tokens = TOKENS,
                              .bos_id = 1, .eos_id = 2, .unk_id = 0, .pad_id = -1, .add_bos = 1, .add_space_prefix = 1};
        if (mt_tokenizer_from_spec(&spec, &tok)) abort();
    }
    mt_grammar *g = NULL;
    if (mt_grammar_compile((const char *)data, size, &g) != MT_OK) return 0;
    static const char *texts[] = {"", "a", "{\"a\":12}", "x-y\n", "\xe4\xb8\xad", "\xe4\xb8"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) mt_grammar_match(g, texts[i], strlen(texts[i]));
    mt_grammar_matcher *m = NULL;
    if (mt_grammar_matcher_new(g, tok, &m) == MT_OK) {
        float logits[32];
        int n = (int)(sizeof TOKENS / sizeof TOKENS[0]);
        for (int step = 0; step < 8; step++) {
            for (int i = 0; i < n; i++) logits[i] = (float)((i * 7 + step) % 5);
            if (mt_grammar_matcher_mask(m, logits, n) != MT_OK) break;
            int best = -1;
            for (int i = 0; i < n; i++)
                if (!isinf(logits[i]) && (best < 0 || logits[i] > logits[best])) best = i;
            if (best < 0 || mt_grammar_matcher_accept_token(m, best) != MT_OK) abort(); /* the mask allowed it */
            if (mt_grammar_matcher_finished(m)) break;
        }
        mt_grammar_matcher_free(m);
    }
    mt_grammar_free(g);
    return 0;
}
