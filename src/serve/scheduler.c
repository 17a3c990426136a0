/* The decoding loop of the server (see scheduler.h). One thread owns every context: it
 * admits queued sequences into free contexts, runs each new prompt (prefill), then per step
 * samples one token for every active sequence and runs the next forward of all of them at
 * once. The sampling, stopping and text rules are mt_generate's, so greedy text equals
 * `memtune generate` byte for byte. Text goes into each sequence's buffer under the lock;
 * readers wait on a condition variable. */
#include "serve/scheduler.h"
#include "core/error.h"
#include "model/context.h"
#include "grammar/matcher.h"
#include "model/sampler.h"
#include "tokenizer/tokenizer.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct mt_serve_seq {
    mt_seq_params p;
    char *stop[MT_SERVE_MAX_STOP];
    /* owned by the decoding thread */
    int slot;                  /* context index, -1 while queued */
    mt_sampler sampler;
    int sampler_ok;
    mt_grammar_matcher *gm;    /* the generated text must match p.grammar */
    float *logits;
    mt_detok_stream detok;
    int prefilled, budget, generated, next, decode;
    size_t echo_len;           /* bytes of the echoed prompt at the start of pend */
    char *pend;                /* text made this step, moved into text under the lock */
    size_t pend_len, pend_cap;
    /* shared, under the scheduler's lock */
    char *text;
    size_t len, cap, gen_start;
    int finished, cancelled, refs, published, generated_pub;
    const char *finish_reason;
    char error[256];
    mt_serve_seq *next_queued;
};

struct mt_scheduler {
    const mt_model *m;
    int parallel, queue_max, n_ctx, batched;
    mt_context **ctxs;
    int *slot_used;
    pthread_mutex_t lock;
    pthread_cond_t work, progress;
    mt_serve_seq *queue_head, *queue_tail;
    int n_queued;
    mt_serve_seq **active;
    int n_active;
    int stopping, cut, thread_started;
    long tokens;               /* generated since the start */
    pthread_t thread;
    char *tokbuf;
    size_t tokbuf_cap;
    mt_context **batch_ctx;    /* decoding-thread scratch for the batched forward */
    int *batch_ids;
    float **batch_logits;
};

int mt_scheduler_context(const mt_scheduler *s) { return s->n_ctx; }

void mt_scheduler_stats(mt_scheduler *s, int *active, int *queued, long *tokens) {
    pthread_mutex_lock(&s->lock);
    *active = s->n_active;
    *queued = s->n_queued;
    *tokens = s->tokens;
    pthread_mutex_unlock(&s->lock);
}

static void seq_free(mt_serve_seq *q) {
    if (q->sampler_ok) mt_sampler_free(&q->sampler);
    mt_grammar_matcher_free(q->gm);
    mt_grammar_free(q->p.grammar);
    for (int i = 0; i < q->p.n_stop; i++) free(q->stop[i]);
    free(q->p.ids);
    free(q->logits);
    free(q->pend);
    free(q->text);
    if (q->p.on_free) q->p.on_free(q->p.on_free_arg);
    free(q);
}

/* lock held */
static void seq_unref(mt_serve_seq *q) {
    if (--q->refs == 0) seq_free(q);
}

static int grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 1;
    size_t n = *cap ? *cap : 256;
    while (n < need) n *= 2;
    char *b = realloc(*buf, n);
    if (!b) return 0;
    *buf = b, *cap = n;
    return 1;
}

/* decoding thread: the text of token id goes to q->pend */
static void emit(mt_scheduler *s, mt_serve_seq *q, int id) {
    size_t n = mt_detok_push(mt_model_tokenizer(s->m), &q->detok, id, s->tokbuf, s->tokbuf_cap);
    if (n && grow(&q->pend, &q->pend_cap, q->pend_len + n)) {
        memcpy(q->pend + q->pend_len, s->tokbuf, n);
        q->pend_len += n;
    }
}

static void fail_seq(mt_serve_seq *q, const char *msg) {
    snprintf(q->error, sizeof q->error, "%s", msg);
    q->decode = 0;
}

/* decoding thread: a new sequence's context, sampler and prompt */
static void prefill(mt_scheduler *s, mt_serve_seq *q) {
    mt_context *c = s->ctxs[q->slot];
    const mt_model *m = s->m;
    q->prefilled = 1;
    mt_context_clear_adapters(c);
    if (q->p.adapter && mt_context_use_adapter_set(c, q->p.adapter, 1.0f)) {
        fail_seq(q, mt_last_error());
        return;
    }
    q->logits = malloc((size_t)mt_model_config(m)->vocab_size * sizeof(float));
    q->sampler_ok = q->logits && mt_sampler_init(&q->sampler, mt_model_config(m)->vocab_size, q->p.temperature,
                                                 q->p.top_k, q->p.top_p, q->p.seed);
    if (!q->sampler_ok) {
        fail_seq(q, "out of memory");
        return;
    }
    mt_detok_init(&q->detok);
    for (int i = 0; i < q->p.n_ids; i++) {
        if (q->p.echo) emit(s, q, q->p.ids[i]);
        else q->detok.n_emitted_tokens++;
    }
    if (q->p.grammar) { /* as mt_generate: the text from here on must match */
        if (mt_grammar_matcher_new(q->p.grammar, mt_model_tokenizer(m), &q->gm) ||
            mt_grammar_matcher_reset(q->gm, q->detok.n_emitted_tokens == 0)) {
            fail_seq(q, mt_last_error());
            return;
        }
        q->sampler.constraint = (mt_sampler_constraint){mt_grammar_hook_mask, mt_grammar_hook_accept, q->gm,
                                                        mt_grammar_hook_allows};
    }
    q->echo_len = q->pend_len;
    q->budget = q->p.max_tokens;
    if (q->budget < 0 || q->budget > s->n_ctx - q->p.n_ids) q->budget = s->n_ctx - q->p.n_ids;
    mt_context_reset(c);
    if (mt_context_decode(c, q->p.ids, q->p.n_ids, q->logits)) fail_seq(q, mt_last_error());
}

/* decoding thread: the next token of a sequence from its logits; sets q->decode when it
 * must run another forward */
static void sample(mt_scheduler *s, mt_serve_seq *q) {
    q->decode = 0;
    if (q->error[0]) return;
    int next = mt_sampler_sample(&q->sampler, q->logits);
    if (next < 0) {
        fail_seq(q, next == -1 ? "the model's logits are not finite numbers" : mt_last_error());
        return;
    }
    if (!q->p.ignore_eos && mt_is_stop_token(s->m, next)) {
        q->finish_reason = "stop";
        return;
    }
    emit(s, q, next);
    q->generated++;
    if (q->gm && mt_grammar_matcher_finished(q->gm)) { /* nothing but the end can follow */
        q->finish_reason = "stop";
        return;
    }
    if (q->generated >= q->budget || mt_context_pos(s->ctxs[q->slot]) >= s->n_ctx) {
        q->finish_reason = "length";
        return;
    }
    q->next = next;
    q->decode = 1;
}

/* decoding thread: one forward for every sequence that goes on */
static void decode_all(mt_scheduler *s, mt_serve_seq **act, int n) {
    int b = 0;
    for (int i = 0; i < n; i++)
        if (act[i]->decode) {
            s->batch_ctx[b] = s->ctxs[act[i]->slot];
            s->batch_ids[b] = act[i]->next;
            s->batch_logits[b++] = act[i]->logits;
        }
    if (!b) return;
    if (s->batched && b > 1 && mt_contexts_decode_batch(s->batch_ctx, s->batch_ids, b, s->batch_logits) == MT_OK)
        return;
    /* one by one: without batching, or to find which sequence the batch failed on */
    for (int i = 0; i < n; i++)
        if (act[i]->decode && mt_context_decode(s->ctxs[act[i]->slot], &act[i]->next, 1, act[i]->logits))
            fail_seq(act[i], mt_last_error());
}

/* lock held: moves pend into text and applies the stop strings */
static void publish(mt_serve_seq *q) {
    if (!q->prefilled) return;
    if (!q->published) { /* the first text: the echoed prompt, then generated text */
        q->gen_start = q->len + q->echo_len;
        q->published = 1;
    }
    q->generated_pub = q->generated;
    size_t old = q->len;
    if (q->pend_len && grow(&q->text, &q->cap, q->len + q->pend_len + 1)) {
        memcpy(q->text + q->len, q->pend, q->pend_len);
        q->len += q->pend_len;
        q->text[q->len] = 0;
    }
    q->pend_len = 0;
    size_t cut = (size_t)-1;
    for (int i = 0; i < q->p.n_stop; i++) {
        size_t k = strlen(q->stop[i]);
        size_t from = old >= q->gen_start + k ? old - k + 1 : q->gen_start;
        if (q->len < k) continue;
        for (size_t at = from; at + k <= q->len; at++)
            if (!memcmp(q->text + at, q->stop[i], k)) {
                if (at < cut) cut = at;
                break;
            }
    }
    if (cut != (size_t)-1) {
        q->len = cut;
        q->text[cut] = 0;
        q->finish_reason = "stop";
    }
}

/* lock held: a sequence leaves the active set */
static void retire(mt_scheduler *s, int i) {
    mt_serve_seq *q = s->active[i];
    q->finished = 1;
    if (!q->finish_reason) q->finish_reason = "length";
    s->slot_used[q->slot] = 0;
    s->active[i] = s->active[--s->n_active];
    seq_unref(q);
}

static void *decode_thread(void *arg) {
    mt_scheduler *s = arg;
    mt_serve_seq **act = malloc((size_t)s->parallel * sizeof *act);
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->n_active && !s->n_queued && !s->stopping) pthread_cond_wait(&s->work, &s->lock);
        /* cancelled, cut or failed sequences leave before the step */
        for (int i = s->n_active - 1; i >= 0; i--)
            if (s->active[i]->cancelled || s->cut || !act) retire(s, i);
        while (s->n_queued && s->n_active < s->parallel) {
            mt_serve_seq *q = s->queue_head;
            s->queue_head = q->next_queued;
            if (!s->queue_head) s->queue_tail = NULL;
            s->n_queued--;
            if (q->cancelled) {
                q->finished = 1;
                seq_unref(q);
                continue;
            }
            for (q->slot = 0; s->slot_used[q->slot]; q->slot++) {}
            s->slot_used[q->slot] = 1;
            s->active[s->n_active++] = q;
        }
        if (s->stopping && !s->n_active && !s->n_queued) break;
        int n = s->n_active;
        if (!n) continue;
        memcpy(act, s->active, (size_t)n * sizeof *act);
        pthread_mutex_unlock(&s->lock);

        for (int i = 0; i < n; i++)
            if (!act[i]->prefilled) {
                prefill(s, act[i]);
                act[i]->decode = 0;
            }
        for (int i = 0; i < n; i++)
            if (!act[i]->error[0]) sample(s, act[i]);
        decode_all(s, act, n);

        pthread_mutex_lock(&s->lock);
        for (int i = s->n_active - 1; i >= 0; i--) {
            mt_serve_seq *q = s->active[i];
            s->tokens += q->generated - q->generated_pub;
            publish(q);
            if (q->error[0] || q->finish_reason) retire(s, i);
        }
        pthread_cond_broadcast(&s->progress);
    }
    pthread_cond_broadcast(&s->progress);
    pthread_mutex_unlock(&s->lock);
    free(act);
    return NULL;
}

mt_status mt_scheduler_create(const mt_model *m, int parallel, int queue, int n_ctx, int batched, mt_scheduler **out) {
    *out = NULL;
    if (parallel < 1 || parallel > 256) return mt_error(MT_ERR_ARG, "parallel sequences %d out of range [1, 256]", parallel);
    if (queue < 0 || queue > 1 << 20) return mt_error(MT_ERR_ARG, "queue length %d out of range", queue);
    if (!mt_model_tokenizer(m)) return mt_error(MT_ERR_ARG, "the model has no tokenizer");
    mt_scheduler *s = calloc(1, sizeof *s);
    if (!s) return mt_error(MT_ERR_NOMEM, "out of memory");
    s->m = m;
    s->parallel = parallel;
    s->queue_max = queue;
    s->batched = batched;
    s->ctxs = calloc((size_t)parallel, sizeof *s->ctxs);
    s->slot_used = calloc((size_t)parallel, sizeof *s->slot_used);
    s->active = calloc((size_t)parallel, sizeof *s->active);
    s->batch_ctx = calloc((size_t)parallel, sizeof *s->batch_ctx);
    s->batch_ids = calloc((size_t)parallel, sizeof *s->batch_ids);
    s->batch_logits = calloc((size_t)parallel, sizeof *s->batch_logits);
    s->tokbuf_cap = 4 * (size_t)mt_tokenizer_max_token_bytes(mt_model_tokenizer(m)) + 16;
    s->tokbuf = malloc(s->tokbuf_cap);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->progress, NULL);
    mt_status st = s->ctxs && s->slot_used && s->active && s->batch_ctx && s->batch_ids && s->batch_logits && s->tokbuf
                       ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    for (int i = 0; !st && i < parallel; i++) st = mt_context_create(m, n_ctx, &s->ctxs[i]);
    if (!st) {
        s->n_ctx = mt_context_size(s->ctxs[0]);
        if (pthread_create(&s->thread, NULL, decode_thread, s)) st = mt_error(MT_ERR_NOMEM, "cannot start the decoding thread");
        else s->thread_started = 1;
    }
    if (st) {
        mt_scheduler_free(s);
        return st;
    }
    *out = s;
    return MT_OK;
}

static void deadline_after(struct timespec *ts, int ms) {
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

void mt_scheduler_stop(mt_scheduler *s, int grace_ms) {
    if (!s || !s->thread_started) return;
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    while (s->queue_head) { /* waiting requests are not started */
        mt_serve_seq *q = s->queue_head;
        s->queue_head = q->next_queued;
        s->n_queued--;
        snprintf(q->error, sizeof q->error, "the server is shutting down");
        q->finished = 1;
        seq_unref(q);
    }
    s->queue_tail = NULL;
    pthread_cond_broadcast(&s->work);
    pthread_cond_broadcast(&s->progress);
    struct timespec ts;
    deadline_after(&ts, grace_ms);
    while (s->n_active && pthread_cond_timedwait(&s->progress, &s->lock, &ts) != ETIMEDOUT) {}
    s->cut = 1;
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    s->thread_started = 0;
}

void mt_scheduler_free(mt_scheduler *s) {
    if (!s) return;
    mt_scheduler_stop(s, 0);
    for (int i = 0; s->ctxs && i < s->parallel; i++) mt_context_free(s->ctxs[i]);
    free(s->ctxs);
    free(s->slot_used);
    free(s->active);
    free(s->batch_ctx);
    free(s->batch_ids);
    free(s->batch_logits);
    free(s->tokbuf);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->progress);
    free(s);
}

int mt_seq_submit(mt_scheduler *s, mt_seq_params *p, mt_serve_seq **out) {
    *out = NULL;
    mt_serve_seq *q = calloc(1, sizeof *q);
    if (!q) {
        free(p->ids);
        mt_grammar_free(p->grammar);
        return -1;
    }
    q->p = *p;
    q->slot = -1;
    q->refs = 2; /* the caller and the decoding thread */
    int oom = 0;
    for (int i = 0; i < p->n_stop && i < MT_SERVE_MAX_STOP; i++)
        if (!(q->stop[i] = strdup(p->stop[i]))) oom = 1;
    q->p.stop = NULL;
    if (q->p.n_stop > MT_SERVE_MAX_STOP) q->p.n_stop = MT_SERVE_MAX_STOP;
    pthread_mutex_lock(&s->lock);
    int rc = oom || s->stopping ? -1 : s->n_active + s->n_queued >= s->parallel + s->queue_max ? 1 : 0;
    if (rc == 0) {
        if (s->queue_tail) s->queue_tail->next_queued = q;
        else s->queue_head = q;
        s->queue_tail = q;
        s->n_queued++;
        pthread_cond_signal(&s->work);
        *out = q;
    } else {
        q->p.on_free = NULL; /* the caller still owns what on_free releases */
        q->refs = 1;
        seq_unref(q);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* lock held: bytes of text that a stop string can no longer take back, at a character boundary */
static size_t visible(const mt_serve_seq *q) {
    if (q->finished) return q->len;
    size_t hold = 0;
    for (int i = 0; i < q->p.n_stop; i++)
        if (strlen(q->stop[i]) - 1 > hold) hold = strlen(q->stop[i]) - 1;
    size_t v = q->len > q->gen_start + hold ? q->len - hold : (q->len < q->gen_start ? q->len : q->gen_start);
    while (v > 0 && v < q->len && ((unsigned char)q->text[v] & 0xC0) == 0x80) v--;
    return v;
}

int mt_seq_read(mt_scheduler *s, mt_serve_seq *q, size_t from, char *buf, size_t cap, int timeout_ms,
                mt_seq_progress *out) {
    memset(out, 0, sizeof *out);
    struct timespec ts;
    deadline_after(&ts, timeout_ms);
    pthread_mutex_lock(&s->lock);
    int rc = 0;
    for (;;) {
        size_t v = visible(q);
        if (v > from || q->finished) {
            size_t n = v > from ? v - from : 0;
            if (n > cap) n = cap;
            while (n > 0 && from + n < v && ((unsigned char)q->text[from + n] & 0xC0) == 0x80) n--;
            if (n) memcpy(buf, q->text + from, n);
            out->n = n;
            out->finished = q->finished && from + n >= q->len;
            break;
        }
        if (pthread_cond_timedwait(&s->progress, &s->lock, &ts) == ETIMEDOUT) {
            rc = 1;
            break;
        }
    }
    out->finish_reason = q->finish_reason;
    out->error = q->error[0] ? q->error : NULL;
    out->prompt_tokens = q->p.n_ids;
    out->completion_tokens = q->generated_pub;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void mt_seq_cancel(mt_scheduler *s, mt_serve_seq *q) {
    pthread_mutex_lock(&s->lock);
    q->cancelled = 1;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->lock);
}

void mt_seq_release(mt_scheduler *s, mt_serve_seq *q) {
    if (!q) return;
    pthread_mutex_lock(&s->lock);
    if (!q->finished) q->cancelled = 1;
    seq_unref(q);
    pthread_mutex_unlock(&s->lock);
}
