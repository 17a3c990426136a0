/* Evaluation on prompt/answer examples: exact match of greedy answers and the NLL of the
 * expected answers, with prompts rendered exactly as in training. */
#include "core/error.h"
#include "core/file.h"
#include "kernels/kernels.h"
#include "model/forward.h"
#include "model/sampler.h"
#include "tokenizer/tokenizer.h"
#include "train/batch.h"
#include "eval/examples.h"
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    mt_model *m;
    mt_seq_builder b;
    mt_chat_template *tpl;
    float *logits; /* [context * vocab] */
} evaluator;

static int is_stop(const evaluator *ev, int id) {
    return id == ev->b.eos_id || mt_tokenizer_type(ev->m->tok, id) == MT_TOKTYPE_CONTROL;
}

/* Greedy answer to the prompt ids, as text (malloc'd). */
static mt_status greedy_answer(evaluator *ev, const int *ids, int n, int max_new, char **out) {
    int ctx = mt_infer_context(ev->m), vocab = ev->m->cfg.vocab_size;
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
    mt_status s = mt_forward(ev->m, ids, n, 0, ev->logits, 0);
    for (int pos = n, k = 0; s == MT_OK && k < max_new && pos < ctx; k++, pos++) {
        int next = mt_argmax(ev->logits, vocab);
        if (is_stop(ev, next)) break;
        char piece[512];
        size_t pl = mt_detok_push(ev->m->tok, &ds, next, piece, sizeof piece);
        if (len + pl + 1 > cap) {
            cap = (len + pl + 1) * 2;
            char *t2 = realloc(text, cap);
            if (!t2) { s = mt_error(MT_ERR_NOMEM, "out of memory"); break; }
            text = t2;
        }
        memcpy(text + len, piece, pl);
        len += pl;
        text[len] = 0;
        if (pos + 1 < ctx) s = mt_forward(ev->m, &next, 1, pos, ev->logits, 0);
    }
    *out = text;
    return s;
}

/* NLL of the learned tokens of the example's training sequence. */
static mt_status answer_nll(evaluator *ev, const mt_example *e, double *nll, long *count) {
    mt_token_seq seq;
    mt_status s = mt_example_to_seq(&ev->b, e, &seq);
    if (s) return s;
    int ctx = mt_infer_context(ev->m), n = seq.n < ctx ? seq.n : ctx, V = ev->m->cfg.vocab_size;
    *nll = 0;
    *count = 0;
    if (n >= 2) s = mt_forward(ev->m, seq.ids, n, 0, ev->logits, 1);
    for (int t = 0; s == MT_OK && t + 1 < n; t++) {
        if (!seq.learn[t + 1]) continue;
        const float *row = ev->logits + (size_t)t * V;
        *nll += mt_logsumexp(row, V) - row[seq.ids[t + 1]];
        (*count)++;
    }
    mt_token_seq_free(&seq);
    return s;
}

static int trimmed_equal(const char *a, const char *b) {
    while (isspace((unsigned char)*a)) a++;
    while (isspace((unsigned char)*b)) b++;
    size_t la = strlen(a), lb = strlen(b);
    while (la && isspace((unsigned char)a[la - 1])) la--;
    while (lb && isspace((unsigned char)b[lb - 1])) lb--;
    return la == lb && !memcmp(a, b, la);
}

static void report_line(FILE *f, int index, const mt_example *e, const char *produced, int exact, double nll) {
    if (!f) return;
    json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:b, s:f}", "index", index,
                          "prompt", e->messages[e->n_messages - 2 >= 0 ? e->n_messages - 2 : 0].content,
                          "expected", e->messages[e->n_messages - 1].content, "produced", produced,
                          "exact", exact, "nll", nll);
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (line) fprintf(f, "%s\n", line);
    free(line);
    json_decref(o);
}

static mt_status eval_one(evaluator *ev, const mt_example *e, int index, FILE *report, mt_data_score *acc, double *nll_sum) {
    int *ids = NULL, n = 0;
    char *produced = NULL;
    double nll = 0;
    long count = 0;
    mt_status s = mt_example_prompt_ids(&ev->b, e, &ids, &n);
    int *ans = NULL, n_ans = 0;
    if (s == MT_OK) s = mt_tokenizer_encode_piece(ev->m->tok, e->messages[e->n_messages - 1].content,
                                                  strlen(e->messages[e->n_messages - 1].content), 0, &ans, &n_ans);
    if (s == MT_OK) s = greedy_answer(ev, ids, n, 2 * n_ans + 16, &produced);
    if (s == MT_OK) s = answer_nll(ev, e, &nll, &count);
    if (s == MT_OK) {
        int exact = trimmed_equal(produced, e->messages[e->n_messages - 1].content);
        acc->exact_match += exact;
        *nll_sum += nll;
        acc->answer_tokens += count;
        report_line(report, index, e, produced, exact, count ? nll / count : 0.0);
    }
    free(ids);
    free(ans);
    free(produced);
    return s;
}

mt_status mt_eval_data_file(mt_model *m, const char *path, const char *report_path, mt_data_score *out) {
    memset(out, 0, sizeof *out);
    if (!m->tok) return mt_error(MT_ERR_ARG, "the model has no tokenizer");
    mt_dataset ds = {0};
    mt_status s = mt_dataset_load_jsonl(&ds, path, 0);
    evaluator ev = {.m = m};
    const char *src = m->chat_template ? m->chat_template : mt_chat_template_default();
    if (s == MT_OK) s = mt_chat_template_compile(src, &ev.tpl);
    ev.b = (mt_seq_builder){.tok = m->tok, .tpl = ev.tpl, .bos_id = mt_tokenizer_bos(m->tok),
                            .eos_id = mt_tokenizer_eos(m->tok) >= 0 ? mt_tokenizer_eos(m->tok) : m->cfg.eos_id};
    ev.logits = malloc((size_t)mt_infer_context(m) * m->cfg.vocab_size * sizeof(float));
    if (s == MT_OK && !ev.logits) s = mt_error(MT_ERR_NOMEM, "out of memory");
    FILE *report = NULL;
    if (s == MT_OK && report_path && !(report = fopen(report_path, "w")))
        s = mt_error(MT_ERR_IO, "%s: cannot open for writing", report_path);
    double nll_sum = 0;
    for (int i = 0; s == MT_OK && i < ds.n; i++) {
        if (!ds.items[i].messages) continue; /* raw text has no prompt to answer */
        s = eval_one(&ev, &ds.items[i], i + 1, report, out, &nll_sum);
        if (s) s = mt_error_prefix(s, "%s: example %d", path, ds.items[i].source_line);
        out->examples++;
    }
    if (report) fclose(report);
    if (out->examples) out->exact_match /= out->examples;
    out->nll = out->answer_tokens ? nll_sum / out->answer_tokens : 0.0;
    if (s == MT_OK && out->examples == 0) s = mt_error(MT_ERR_ARG, "%s: no prompt/answer examples to evaluate", path);
    free(ev.logits);
    if (ev.tpl) mt_chat_template_free(ev.tpl);
    mt_dataset_free(&ds);
    return s;
}

mt_status mt_eval_greedy_example(mt_model *m, const mt_seq_builder *b, const mt_example *e, char **produced, int *exact) {
    *produced = NULL;
    *exact = 0;
    evaluator ev = {.m = m, .b = *b};
    ev.logits = malloc((size_t)m->cfg.vocab_size * sizeof(float));
    if (!ev.logits) return mt_error(MT_ERR_NOMEM, "out of memory");
    int *ids = NULL, n = 0, *ans = NULL, n_ans = 0;
    const char *expected = e->messages[e->n_messages - 1].content;
    mt_status s = mt_example_prompt_ids(b, e, &ids, &n);
    if (s == MT_OK) s = mt_tokenizer_encode_piece(m->tok, expected, strlen(expected), 0, &ans, &n_ans);
    if (s == MT_OK) s = greedy_answer(&ev, ids, n, 2 * n_ans + 16, produced);
    if (s == MT_OK) *exact = trimmed_equal(*produced, expected);
    free(ids), free(ans), free(ev.logits);
    return s;
}
