/* Continuous batching: one thread decodes every active sequence a token per step, each in its
 * own context on the shared model. Requests that arrive while others decode wait in a
 * bounded queue and join at the next step; a finished or cancelled sequence leaves at the
 * next step and frees its context for the next in the queue. HTTP threads only submit, read
 * text and cancel; they never touch a context. */
#ifndef MT_SERVE_SCHEDULER_H
#define MT_SERVE_SCHEDULER_H
#include <stddef.h>
#include <stdint.h>
#include "memtune.h"
#include "serve/request.h"

typedef struct mt_scheduler mt_scheduler;
typedef struct mt_serve_seq mt_serve_seq;

typedef struct {
    int *ids;                  /* the prompt's tokens (taken over by the sequence) */
    int n_ids;
    int max_tokens;            /* capped at the context left after the prompt */
    float temperature, top_p;
    int top_k;
    uint64_t seed;
    const char *const *stop;   /* copied */
    int n_stop;
    int echo;                  /* the text starts with the prompt's */
    int ignore_eos;            /* go on past EOS (as mt_generate_options.stop_at_eos = 0) */
    const mt_adapter_set *adapter; /* NULL: the base */
    mt_grammar *grammar;       /* NULL: unconstrained; else taken over by the sequence in every case */
    void (*on_free)(void *arg);/* called when the sequence is freed (releases the adapter) */
    void *on_free_arg;
} mt_seq_params;

/* parallel contexts of n_ctx tokens (0: the model's), up to queue requests waiting. batched:
 * one batched forward per step over every sequence (else one forward each). */
mt_status mt_scheduler_create(const mt_model *m, int parallel, int queue, int n_ctx, int batched, mt_scheduler **out);
/* Stops admitting; lets running sequences finish for up to grace_ms, then cuts them and waits
 * for the decoding thread. Idempotent. */
void mt_scheduler_stop(mt_scheduler *s, int grace_ms);
void mt_scheduler_free(mt_scheduler *s);
int mt_scheduler_context(const mt_scheduler *s);
/* Sequences decoding and waiting now, and tokens generated since the start. */
void mt_scheduler_stats(mt_scheduler *s, int *active, int *queued, long *tokens);

/* Queues a sequence; 0 = queued (*out set; release it with mt_seq_release), 1 = the queue is
 * full (503), -1 = stopping or out of memory. p->ids is taken over in every case. */
int mt_seq_submit(mt_scheduler *s, mt_seq_params *p, mt_serve_seq **out);

typedef struct {
    size_t n;                  /* bytes copied */
    int finished;              /* no more text will come */
    const char *finish_reason; /* "stop" / "length" once finished */
    const char *error;         /* a decoding error, or NULL */
    int prompt_tokens, completion_tokens;
} mt_seq_progress;

/* Copies up to cap bytes of text from byte `from` on (only what can no longer be cut by a stop
 * string, whole UTF-8 characters), waiting up to timeout_ms for some when there is none yet.
 * Returns 0, or 1 on timeout with nothing new. */
int mt_seq_read(mt_scheduler *s, mt_serve_seq *q, size_t from, char *buf, size_t cap, int timeout_ms,
                mt_seq_progress *out);
/* Asks the scheduler to drop the sequence at its next step (the client went away). */
void mt_seq_cancel(mt_scheduler *s, mt_serve_seq *q);
/* The caller is done with q; it is freed once the scheduler is too. */
void mt_seq_release(mt_scheduler *s, mt_serve_seq *q);

#endif
