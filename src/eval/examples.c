/* Evaluation on prompt/answer examples: exact match of greedy answers (dataset/greedy.c)
 * and the NLL of the expected answers, with prompts rendered exactly as in training. */
#include "core/check.h"
#include "core/error.h"
#include "core/file.h"
#include "kernels/kernels.h"
#include "model/forward.h"
#include "model/sampler.h"
#include "tokenizer/tokenizer.h"
#include "dataset/greedy.h"
#include "grammar/matcher.h"
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    mt_model *m;
    mt_seq_builder b;
    mt_chat_template *tpl;
    float *logits; /* [context * vocab] */
    mt_grammar_matcher *grammar; /* constrains the answers (NULL = off) */
} evaluator;

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
    if (s == MT_OK) s = mt_greedy_answer_constrained(ev->m, &ev->b, ev->logits, ids, n, max_new, ev->grammar, &produced);
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
    mt_grammar_matcher_free(ev->grammar);
    if (ev->tpl) mt_chat_template_free(ev->tpl);
}

static void finish_score(mt_eval_score *out, double nll_sum) {
    mt_data_score *b = &out->base;
    if (b->examples) b->exact_match /= b->examples;
    b->nll = b->answer_tokens ? nll_sum / b->answer_tokens : 0.0;
    out->execution_accuracy = out->sql_examples ? (double)out->sql_match / out->sql_examples : 0.0;
}

/* Before any example is evaluated: the documented limits (MT_MAX_EVAL_EXAMPLES, every
 * example within the context), so that a file that cannot be scored fails at once rather
 * than after hours, or gets silently cut answers. */
static mt_status check_sizes(const evaluator *ev, const mt_dataset *ds, const char *path, long *total) {
    int ctx = mt_infer_context(ev->m);
    *total = 0;
    for (int i = 0; i < ds->n; i++) {
        if (!ds->items[i].messages) continue;
        if (++*total > MT_MAX_EVAL_EXAMPLES)
            return mt_error(MT_ERR_ARG, "%s: more than %ld examples (MT_MAX_EVAL_EXAMPLES): evaluate it in parts", path,
                            MT_MAX_EVAL_EXAMPLES);
        mt_token_seq seq;
        mt_status s = mt_example_to_seq(&ev->b, &ds->items[i], &seq);
        if (s) return mt_error_prefix(s, "%s: example %d", path, ds->items[i].source_line);
        int n = seq.n;
        mt_token_seq_free(&seq);
        if (n > ctx)
            return mt_error(MT_ERR_ARG, "%s: example %d is %d tokens (prompt and answer as in training), more than the "
                            "model's context of %d", path, ds->items[i].source_line, n, ctx);
    }
    return MT_OK;
}

mt_status mt_eval_data_file_opts(mt_model *m, const char *path, const mt_eval_options *opt, mt_eval_score *out) {
    memset(out, 0, sizeof *out);
    mt_eval_options defaults = {0};
    if (!opt) opt = &defaults;
    if (!m->tok) return mt_error(MT_ERR_ARG, "the model has no tokenizer");
    mt_status vs = mt_check_int("--max-new-tokens", opt->max_new_tokens, 0, INT_MAX);
    if (vs) return vs;
    eval_run run = {.opt = opt, .score = out};
    mt_dataset ds = {0};
    evaluator ev = {0};
    mt_status s = mt_dataset_load_jsonl(&ds, path, 0);
    if (s == MT_OK) s = evaluator_init(&ev, m);
    long total = 0;
    if (s == MT_OK) s = check_sizes(&ev, &ds, path, &total);
    if (s == MT_OK && opt->grammar) s = mt_grammar_matcher_new(opt->grammar, m->tok, &ev.grammar);
    if (s == MT_OK && opt->db_path) s = mt_sql_open(opt->db_path, &opt->limits, &run.db);
    if (s == MT_OK && opt->report_path && !(run.report = fopen(opt->report_path, "w")))
        s = mt_error(MT_ERR_IO, "%s: cannot open for writing: %s", opt->report_path, strerror(errno));
    for (int i = 0; s == MT_OK && i < ds.n; i++) {
        if (!ds.items[i].messages) continue; /* raw text has no prompt to answer */
        s = eval_one(&ev, &run, &ds.items[i], i + 1);
        if (s) s = mt_error_prefix(s, "%s: example %d", path, ds.items[i].source_line);
        out->base.examples++;
        if (s == MT_OK && opt->progress && opt->progress(out->base.examples, total, opt->progress_user))
            s = mt_error(MT_ERR_ARG, "stopped after %ld of %ld examples", out->base.examples, total);
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
    if (s == MT_OK) s = mt_greedy_answer(ev.m, &ev.b, ev.logits, ids, n, max_new_tokens > 0 ? max_new_tokens : 256, answer);
    free(ids);
    evaluator_free(&ev);
    return s;
}
