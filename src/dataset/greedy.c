/* Greedy answers to prompt/answer examples (see greedy.h). */
#include "core/error.h"
#include "grammar/matcher.h"
#include "model/forward.h"
#include "model/sampler.h"
#include "tokenizer/tokenizer.h"
#include "dataset/greedy.h"
#include <stdlib.h>
#include <string.h>

static int is_stop(const mt_model *m, const mt_seq_builder *b, int id) {
    return id == b->eos_id || mt_tokenizer_type(m->tok, id) == MT_TOKTYPE_CONTROL;
}

mt_status mt_greedy_answer(mt_model *m, const mt_seq_builder *b, float *logits, const int *ids, int n,
                           int max_new, char **out) {
    return mt_greedy_answer_constrained(m, b, logits, ids, n, max_new, NULL, out);
}

mt_status mt_greedy_answer_constrained(mt_model *m, const mt_seq_builder *b, float *logits, const int *ids, int n,
                                       int max_new, mt_grammar_matcher *grammar, char **out) {
    int ctx = mt_infer_context(m), vocab = m->cfg.vocab_size;
    size_t cap = 256, len = 0;
    char *text = malloc(cap);
    if (!text) return mt_error(MT_ERR_NOMEM, "out of memory");
    text[0] = 0;
    if (n >= ctx) {
        *out = text;
        return MT_OK;
    }
    mt_detok_stream ds;
    mt_detok_init(&ds);
    ds.n_emitted_tokens = n; /* the answer continues the prompt: keep its leading space */
    mt_status s = mt_forward(m, ids, n, 0, logits, 0);
    if (s == MT_OK && grammar) s = mt_grammar_matcher_reset(grammar, 0);
    for (int pos = n, k = 0; s == MT_OK && k < max_new && pos < ctx; k++, pos++) {
        /* the mask only when the grammar refuses the best token (the same pick either way); on
         * the matcher's error (allows < 0) the mask returns that error */
        int next = mt_argmax(logits, vocab), ok = grammar ? mt_grammar_matcher_allows(grammar, next) : 1;
        if (ok <= 0 && (s = mt_grammar_matcher_mask(grammar, logits, vocab)) != MT_OK) break;
        if (ok <= 0) next = mt_argmax(logits, vocab);
        if (grammar && (s = mt_grammar_matcher_accept_token(grammar, next)) != MT_OK) break;
        if (is_stop(m, b, next)) break;
        char piece[512];
        size_t pl = mt_detok_push(m->tok, &ds, next, piece, sizeof piece);
        if (len + pl + 1 > cap) {
            cap = (len + pl + 1) * 2;
            char *t2 = realloc(text, cap);
            if (!t2) { s = mt_error(MT_ERR_NOMEM, "out of memory"); break; }
            text = t2;
        }
        memcpy(text + len, piece, pl);
        len += pl;
        text[len] = 0;
        if (pos + 1 < ctx) s = mt_forward(m, &next, 1, pos, logits, 0);
    }
    *out = text;
    return s;
}

mt_status mt_eval_greedy_example(mt_model *m, const mt_seq_builder *b, const mt_example *e, char **produced, int *exact) {
    *produced = NULL;
    *exact = 0;
    float *logits = malloc((size_t)m->cfg.vocab_size * sizeof(float));
    if (!logits) return mt_error(MT_ERR_NOMEM, "out of memory");
    int *ids = NULL, n = 0, *ans = NULL, n_ans = 0;
    const char *expected = e->messages[e->n_messages - 1].content;
    mt_status s = mt_example_prompt_ids(b, e, &ids, &n);
    if (s == MT_OK) s = mt_tokenizer_encode_piece(m->tok, expected, strlen(expected), 0, &ans, &n_ans);
    if (s == MT_OK) s = mt_greedy_answer(m, b, logits, ids, n, 2 * n_ans + 16, produced);
    if (s == MT_OK) *exact = mt_text_equal_normalized(*produced, expected, MT_NORMALIZE_TRIM);
    free(ids), free(ans), free(logits);
    return s;
}
