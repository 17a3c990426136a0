/* Text generation: encode the prompt, run it through the model in one prefill, then
 * sample token by token from the KV cache, streaming complete UTF-8 text to a callback. */
#include "core/error.h"
#include "core/rng.h"
#include "grammar/matcher.h"
#include "model/forward.h"
#include "model/context.h"
#include "model/sampler.h"
#include "tokenizer/tokenizer.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

void mt_generate_options_default(mt_generate_options *o) {
    memset(o, 0, sizeof *o);
    o->max_new_tokens = 256;
    o->echo_prompt = 1;
    o->temperature = 1.0f;
    o->top_p = 0.9f;
    o->stop_at_eos = 1;
}

typedef struct {
    const mt_model *m;
    mt_detok_stream stream;
    mt_text_callback cb;
    void *user;
    int stopped;
} text_sink;

/* Decodes one token and hands any completed text to the callback. */
static void emit_token(text_sink *sink, int id) {
    char buf[512];
    size_t n = mt_detok_push(sink->m->tok, &sink->stream, id, buf, sizeof buf);
    if (n > 0 && sink->cb && !sink->stopped && sink->cb(buf, n, sink->user)) sink->stopped = 1;
}

mt_status mt_prompt_ids(const mt_model *m, const char *prompt, int **ids, int *n) {
    const char *text = prompt ? prompt : "";
    mt_status s = mt_tokenize(m->tok, text, 1, ids, n);
    if (s) return s;
    if (*n == 0) { /* tokenizers without BOS: start from EOS/BOS-less empty prompt */
        free(*ids);
        *ids = malloc(sizeof(int));
        if (!*ids) return mt_error(MT_ERR_NOMEM, "out of memory");
        (*ids)[0] = m->cfg.bos_id >= 0 ? m->cfg.bos_id : mt_tokenizer_eos(m->tok);
        *n = 1;
        if ((*ids)[0] < 0) return mt_error(MT_ERR_ARG, "empty prompt and the tokenizer has no BOS or EOS to start from");
    }
    return MT_OK;
}

int mt_is_stop_token(const mt_model *m, int id) {
    int bos = mt_tokenizer_bos(m->tok), eos = mt_tokenizer_eos(m->tok);
    return id == eos || (id == bos && bos >= 0) || (m->cfg.eos_id >= 0 && id == m->cfg.eos_id);
}

mt_status mt_generate(mt_model *m, const char *prompt, const mt_generate_options *opts,
                      mt_text_callback cb, void *user, mt_generate_stats *stats) {
    mt_context *c;
    mt_status s = mt_model_default_context(m, &c);
    return s ? s : mt_context_generate(c, prompt, opts, cb, user, stats);
}

mt_status mt_context_generate(mt_context *c, const char *prompt, const mt_generate_options *opts,
                              mt_text_callback cb, void *user, mt_generate_stats *stats) {
    const mt_model *m = c->m;
    mt_generate_options o;
    if (opts) o = *opts;
    else mt_generate_options_default(&o);
    if (stats) *stats = (mt_generate_stats){.stop_reason = "error"}; /* what a failure before the first token leaves */
    if (!m->tok) return mt_error(MT_ERR_ARG, "the model has no tokenizer (give one with --tokenizer)");
    int *ids = NULL, n_prompt = 0;
    mt_status s = mt_generate_options_validate(&o);
    if (s == MT_OK) s = mt_prompt_ids(m, prompt, &ids, &n_prompt);
    if (s) return s;
    int n_ctx = c->n_ctx;
    if (n_prompt >= n_ctx) {
        free(ids);
        return mt_error(MT_ERR_ARG, "prompt of %d tokens does not fit the context of %d", n_prompt, n_ctx);
    }
    int budget = o.max_new_tokens;
    if (o.limit_includes_prompt) budget -= n_prompt - 1;
    int requested = budget; /* before the context's cap: a run cut by the cap says "context" */
    if (budget > n_ctx - n_prompt) budget = n_ctx - n_prompt;

    uint64_t seed = o.seed ? o.seed : (uint64_t)time(NULL);
    mt_sampler sampler;
    float *logits = malloc((size_t)m->cfg.vocab_size * sizeof(float));
    if (!logits || !mt_sampler_init(&sampler, m->cfg.vocab_size, o.temperature, o.top_k, o.top_p, seed)) {
        free(ids);
        free(logits);
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    text_sink sink = {.m = m, .cb = cb, .user = user};
    mt_detok_init(&sink.stream);
    if (o.echo_prompt)
        for (int i = 0; i < n_prompt; i++) emit_token(&sink, ids[i]);
    else
        for (int i = 0; i < n_prompt; i++) sink.stream.n_emitted_tokens++;

    mt_grammar_matcher *gm = NULL; /* the text decoded from here on (no prompt) must match */
    if (o.grammar && (s = mt_grammar_matcher_new(o.grammar, m->tok, &gm)) == MT_OK)
        s = mt_grammar_matcher_reset(gm, sink.stream.n_emitted_tokens == 0);
    if (gm) sampler.constraint = (mt_sampler_constraint){mt_grammar_hook_mask, mt_grammar_hook_accept, gm, mt_grammar_hook_allows};
    double t0 = mt_now_seconds();
    c->pos = 0;
    if (s == MT_OK) s = mt_context_decode(c, ids, n_prompt, logits);
    double t1 = mt_now_seconds();
    int generated = 0;
    const char *why = sink.stopped ? "callback" : budget < requested ? "context" : "max_tokens";
    while (s == MT_OK && generated < budget && !sink.stopped) { /* the echoed prompt's callback may stop it */
        int next = mt_sampler_sample(&sampler, logits);
        if (next < 0) {
            s = next == -1 ? mt_error(MT_ERR_FORMAT, "the model's logits at position %d are NaN or infinite (are its weights?)", c->pos - 1)
                           : mt_error_prefix(MT_ERR_ARG, "generate");
            break;
        }
        if (o.stop_at_eos && mt_is_stop_token(m, next)) {
            why = "eos";
            break;
        }
        emit_token(&sink, next);
        generated++;
        if (sink.stopped) why = "callback";
        else if (gm && mt_grammar_matcher_finished(gm)) why = "grammar";
        else if (c->pos >= n_ctx || (generated >= budget && budget < requested)) why = "context";
        else if (generated >= budget) why = "max_tokens";
        else why = NULL;
        if (why) break; /* each reason is a reason to stop */
        s = mt_context_decode(c, &next, 1, logits);
    }
    double t2 = mt_now_seconds();
    if (stats) {
        stats->prompt_tokens = n_prompt;
        stats->generated_tokens = generated;
        stats->prompt_seconds = t1 - t0;
        stats->generate_seconds = t2 - t1;
        stats->stop_reason = why ? why : "error";
    }
    mt_grammar_matcher_free(gm);
    mt_sampler_free(&sampler);
    free(logits);
    free(ids);
    return s;
}
