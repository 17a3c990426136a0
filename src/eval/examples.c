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

/* The per-example report line. verdict: with a database the SQL verdict, otherwise
 * "match"/"mismatch" from exact match; error: why the produced SQL failed, else null. */
static void report_line(FILE *f, int index, const mt_example *e, const char *produced, int exact, double nll,
                        const char *verdict, const char *error) {
    if (!f) return;
    json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:b, s:f, s:s, s:s?}", "index", index,
                          "prompt", e->messages[e->n_messages - 2 >= 0 ? e->n_messages - 2 : 0].content,
                          "expected", e->messages[e->n_messages - 1].content, "produced", produced,
                          "exact", exact, "nll", nll, "verdict", verdict, "error", error);
    if (o && !error) json_object_set_new(o, "error", json_null());
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (line) fprintf(f, "%s\n", line);
    free(line);
    json_decref(o);
}

typedef struct {
    const mt_eval_options *opt;
    mt_sql_db *db;
    FILE *report;
    mt_eval_score *score;
    double nll_sum;
} eval_run;

/* Execution accuracy of one produced answer; fills verdict and error (malloc'd or NULL). */
static mt_status score_sql(eval_run *run, const char *gold, const char *produced, const char **verdict, char **error) {
    mt_sql_verdict v;
    mt_status s = mt_sql_execution_match(run->db, gold, produced, &v, error);
    if (s) return s;
    *verdict = mt_sql_verdict_name(v);
    mt_eval_score *sc = run->score;
    if (v == MT_SQL_GOLD_ERROR) sc->sql_gold_errors++;
    else sc->sql_examples++;
    sc->sql_match += v == MT_SQL_MATCH;
    sc->sql_invalid += v == MT_SQL_INVALID;
    return MT_OK;
}

static mt_status eval_one(evaluator *ev, eval_run *run, const mt_example *e, int index) {
    int *ids = NULL, n = 0;
    char *produced = NULL, *error = NULL;
    double nll = 0;
    long count = 0;
    const char *expected = e->messages[e->n_messages - 1].content;
    mt_status s = mt_example_prompt_ids(&ev->b, e, &ids, &n);
    int *ans = NULL, n_ans = 0;
    if (s == MT_OK) s = mt_tokenizer_encode_piece(ev->m->tok, expected, strlen(expected), 0, &ans, &n_ans);
    /* SQL is judged by running it: its length must not be capped by the gold's */
    int max_new = run->opt->max_new_tokens > 0 ? run->opt->max_new_tokens : run->db ? 256 : 2 * n_ans + 16;
    if (s == MT_OK) s = greedy_answer(ev, ids, n, max_new, &produced);
    if (s == MT_OK) s = answer_nll(ev, e, &nll, &count);
    int exact = s == MT_OK && mt_text_equal_normalized(produced, expected, run->opt->normalize);
    const char *verdict = exact ? "match" : "mismatch";
    if (s == MT_OK && run->db) s = score_sql(run, expected, produced, &verdict, &error);
    if (s == MT_OK) {
        run->score->base.exact_match += exact;
        run->nll_sum += nll;
        run->score->base.answer_tokens += count;
        report_line(run->report, index, e, produced, exact, count ? nll / count : 0.0, verdict, error);
    }
    free(ids);
    free(ans);
    free(produced);
    free(error);
    return s;
}

static mt_status evaluator_init(evaluator *ev, mt_model *m) {
    *ev = (evaluator){.m = m};
    const char *src = m->chat_template ? m->chat_template : mt_chat_template_default();
    mt_status s = mt_chat_template_compile(src, &ev->tpl);
    ev->b = (mt_seq_builder){.tok = m->tok, .tpl = ev->tpl, .bos_id = mt_tokenizer_bos(m->tok),
                             .eos_id = mt_tokenizer_eos(m->tok) >= 0 ? mt_tokenizer_eos(m->tok) : m->cfg.eos_id};
    ev->logits = malloc((size_t)mt_infer_context(m) * m->cfg.vocab_size * sizeof(float));
    if (s == MT_OK && !ev->logits) s = mt_error(MT_ERR_NOMEM, "out of memory");
    return s;
}

static void evaluator_free(evaluator *ev) {
    free(ev->logits);
    if (ev->tpl) mt_chat_template_free(ev->tpl);
}

static void finish_score(mt_eval_score *out, double nll_sum) {
    mt_data_score *b = &out->base;
    if (b->examples) b->exact_match /= b->examples;
    b->nll = b->answer_tokens ? nll_sum / b->answer_tokens : 0.0;
    out->execution_accuracy = out->sql_examples ? (double)out->sql_match / out->sql_examples : 0.0;
}

mt_status mt_eval_data_file_opts(mt_model *m, const char *path, const mt_eval_options *opt, mt_eval_score *out) {
    memset(out, 0, sizeof *out);
    mt_eval_options defaults = {0};
    if (!opt) opt = &defaults;
    if (!m->tok) return mt_error(MT_ERR_ARG, "the model has no tokenizer");
    eval_run run = {.opt = opt, .score = out};
    mt_dataset ds = {0};
    evaluator ev = {0};
    mt_status s = mt_dataset_load_jsonl(&ds, path, 0);
    if (s == MT_OK) s = evaluator_init(&ev, m);
    if (s == MT_OK && opt->db_path) s = mt_sql_open(opt->db_path, &opt->limits, &run.db);
    if (s == MT_OK && opt->report_path && !(run.report = fopen(opt->report_path, "w")))
        s = mt_error(MT_ERR_IO, "%s: cannot open for writing", opt->report_path);
    for (int i = 0; s == MT_OK && i < ds.n; i++) {
        if (!ds.items[i].messages) continue; /* raw text has no prompt to answer */
        s = eval_one(&ev, &run, &ds.items[i], i + 1);
        if (s) s = mt_error_prefix(s, "%s: example %d", path, ds.items[i].source_line);
        out->base.examples++;
    }
    if (run.report && fclose(run.report) != 0 && s == MT_OK)
        s = mt_error(MT_ERR_IO, "%s: write failed", opt->report_path);
    finish_score(out, run.nll_sum);
    if (s == MT_OK && out->base.examples == 0) s = mt_error(MT_ERR_ARG, "%s: no prompt/answer examples to evaluate", path);
    mt_sql_close(run.db);
    evaluator_free(&ev);
    mt_dataset_free(&ds);
    return s;
}

mt_status mt_eval_data_file(mt_model *m, const char *path, const char *report_path, mt_data_score *out) {
    mt_eval_options opt = {.report_path = report_path};
    mt_eval_score sc;
    mt_status s = mt_eval_data_file_opts(m, path, &opt, &sc);
    *out = sc.base;
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
    if (s == MT_OK) *exact = mt_text_equal_normalized(*produced, expected, MT_NORMALIZE_TRIM);
    free(ids), free(ans), free(ev.logits);
    return s;
}

mt_status mt_answer(mt_model *m, const char *prompt, int max_new_tokens, char **answer) {
    *answer = NULL;
    if (!m->tok) return mt_error(MT_ERR_ARG, "the model has no tokenizer (give one with --tokenizer)");
    if (!prompt) return mt_error(MT_ERR_ARG, "no prompt to answer");
    if (max_new_tokens < 0) return mt_error(MT_ERR_ARG, "max_new_tokens %d must be >= 0", max_new_tokens);
    evaluator ev;
    mt_status s = evaluator_init(&ev, m);
    /* the prompt as a user turn; the assistant's (empty) turn marks where the answer starts */
    mt_chat_message turns[2] = {{.role = "user", .content = prompt}, {.role = "assistant", .content = ""}};
    mt_example e = {.messages = turns, .n_messages = 2};
    int *ids = NULL, n = 0;
    if (s == MT_OK) s = mt_example_prompt_ids(&ev.b, &e, &ids, &n);
    if (s == MT_OK) s = greedy_answer(&ev, ids, n, max_new_tokens > 0 ? max_new_tokens : 256, answer);
    free(ids);
    evaluator_free(&ev);
    return s;
}
