/* The HTTP side of `memtune serve` on libmicrohttpd (one thread per connection): routing,
 * the API key, body limits, the adapter registry (loaded on first use, least recently used
 * unloaded past max_adapters), OpenAI's response and error objects, and server-sent events
 * for stream:true. Decoding happens in the scheduler (scheduler.c); a connection thread
 * only parses, tokenizes, queues its sequence and writes what the sequence produced. */
#include "memtune.h"
#include "core/error.h"
#include "model/context.h"
#include "serve/request.h"
#include "serve/scheduler.h"
#include "serve/jobs_routes.h"
#include "dataset/batch.h"
#include "template/chat_template.h"
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct adapter {
    char *name, *path;
    mt_adapter_set *set;       /* NULL while not loaded */
    int refs;                  /* requests using it */
    unsigned long last_used;
    struct adapter *next;
} adapter;

struct mt_server {
    const mt_model *m;
    mt_server_options o;
    char *host, *api_key, *model_name;
    struct MHD_Daemon *d;
    mt_scheduler *sched;
    mt_chat_template *tpl;
    mt_seq_builder builder;
    pthread_mutex_t reg_lock;  /* the adapter list; taken inside the scheduler's lock, never around it */
    adapter *adapters;
    unsigned long clock;
    unsigned long next_id;
    int port;
    volatile int stopping;
    int inflight;              /* requests not yet completed (atomic) */
};

/* per request */
typedef struct {
    char *body;
    size_t len, cap;
    size_t seen;               /* body bytes received, kept or not */
    int too_large;
    int is_upload;             /* POST /v1/files: the body goes to the multipart reader */
    mt_upload *upload;         /* NULL when the body is not multipart */
} request_state;

/* A body over the limit is read and dropped so the client sees the 413 (clients that are
 * still writing when the server closes see a broken pipe instead), up to this many times
 * the limit; past that the 413 goes out at once and the connection closes. */
#define DISCARD_FACTOR 4

static void logf_(mt_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(mt_server *s, const char *fmt, ...) {
    if (!s->o.log) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->o.log(msg, s->o.log_user);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap) {
    mt_server *s = cls;
    if (!s->o.log) return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    s->o.log(msg, s->o.log_user);
}

void mt_server_options_default(mt_server_options *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->model_name = "base";
    o->parallel = 4;
    o->queue = 64;
    o->max_adapters = 8;
    o->max_body = (size_t)8 << 20;
    o->batched = 1;
    o->allow_adapter_upload = 1;
}

/* ---- responses ----------------------------------------------------------------------- */

static enum MHD_Result send_text(struct MHD_Connection *c, int status, char *text, const char *type) {
    if (!text) {
        static char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        struct MHD_Response *r = MHD_create_response_from_buffer(strlen(oom), oom, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Content-Type", "application/json");
        enum MHD_Result ret = MHD_queue_response(c, 500, r);
        MHD_destroy_response(r);
        return ret;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    if (status == 503) MHD_add_response_header(r, "Retry-After", "1");
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *o) {
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return send_text(c, status, text, "application/json");
}

static enum MHD_Result send_error(mt_server *s, struct MHD_Connection *c, const mt_serve_error *e,
                                  const char *method, const char *url) {
    logf_(s, "%s %s %d: %s", method, url, e->http, e->message);
    return send_text(c, e->http, mt_serve_error_json(e), "application/json");
}

static enum MHD_Result fail(mt_server *s, struct MHD_Connection *c, const char *method, const char *url, int http,
                            const char *type, const char *param, const char *code, const char *msg) {
    mt_serve_error e;
    mt_serve_fail(&e, http, type, param, code, "%s", msg);
    return send_error(s, c, &e, method, url);
}

/* ---- the API key ---------------------------------------------------------------------- */

/* Time depends only on the expected key's length, not on where the given one differs. */
static int key_equal(const char *given, const char *expected) {
    size_t lg = strlen(given), le = strlen(expected);
    unsigned char d = lg != le;
    for (size_t i = 0; i < le; i++) d |= (unsigned char)(i < lg ? given[i] : 0) ^ (unsigned char)expected[i];
    return d == 0;
}

static int authorized(mt_server *s, struct MHD_Connection *c) {
    if (!s->api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7)) return 0;
    return key_equal(h + 7, s->api_key);
}

/* ---- adapters ------------------------------------------------------------------------- */

static adapter *find_adapter(mt_server *s, const char *name) {
    for (adapter *a = s->adapters; a; a = a->next)
        if (!strcmp(a->name, name)) return a;
    return NULL;
}

static int valid_name(const char *n) {
    size_t len = strlen(n);
    if (!len || len > 128) return 0;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("._:/-", *p)))
            return 0;
    return 1;
}

mt_status mt_server_add_adapter(mt_server *s, const char *name, const char *path) {
    if (!name || !valid_name(name))
        return mt_error(MT_ERR_ARG, "adapter name '%s' must be 1 to 128 letters, digits or ._:/-", name ? name : "");
    if (!strcmp(name, s->model_name)) return mt_error(MT_ERR_ARG, "adapter name '%s' is the base model's", name);
    pthread_mutex_lock(&s->reg_lock);
    mt_status st = MT_OK;
    if (find_adapter(s, name)) st = mt_error(MT_ERR_ARG, "an adapter named '%s' exists already", name);
    adapter *a = st ? NULL : calloc(1, sizeof *a);
    if (!st && (!a || !(a->name = strdup(name)) || !(a->path = strdup(path)))) st = mt_error(MT_ERR_NOMEM, "out of memory");
    if (st && a) {
        free(a->name);
        free(a->path);
        free(a);
    } else if (!st) {
        a->next = s->adapters;
        s->adapters = a;
    }
    pthread_mutex_unlock(&s->reg_lock);
    return st;
}

/* reg_lock held: unloads the least recently used idle adapters until fewer than max are loaded */
static int make_room(mt_server *s) {
    for (;;) {
        int loaded = 0;
        adapter *lru = NULL;
        for (adapter *a = s->adapters; a; a = a->next)
            if (a->set) {
                loaded++;
                if (!a->refs && (!lru || a->last_used < lru->last_used)) lru = a;
            }
        if (loaded < s->o.max_adapters) return 1;
        if (!lru) return 0;
        logf_(s, "unloading adapter %s (least recently used)", lru->name);
        mt_adapter_set_free(lru->set);
        lru->set = NULL;
    }
}

/* Takes a reference on adapter `name`, loading it if needed. 0, or an error filled. */
static int acquire_adapter(mt_server *s, const char *name, adapter **out, mt_serve_error *e) {
    pthread_mutex_lock(&s->reg_lock);
    adapter *a = find_adapter(s, name);
    int rc = 0;
    if (!a)
        rc = mt_serve_fail(e, 404, "invalid_request_error", "model", "model_not_found",
                           "The model '%s' does not exist", name);
    else if (!a->set) {
        if (!make_room(s))
            rc = mt_serve_fail(e, 503, "server_error", "model", NULL,
                               "all %d loaded adapters are in use; try again", s->o.max_adapters);
        else if (mt_adapter_set_open(s->m, a->path, &a->set))
            rc = mt_serve_fail(e, 500, "server_error", "model", NULL, "adapter '%s' failed to load: %s", name,
                               mt_last_error());
        else
            logf_(s, "loaded adapter %s from %s", name, a->path);
    }
    if (!rc) {
        a->refs++;
        a->last_used = ++s->clock;
        *out = a;
    }
    pthread_mutex_unlock(&s->reg_lock);
    return rc;
}

typedef struct {
    mt_server *s;
    adapter *a;
} adapter_ref;

static void release_adapter(void *arg) {
    adapter_ref *r = arg;
    pthread_mutex_lock(&r->s->reg_lock);
    r->a->refs--;
    pthread_mutex_unlock(&r->s->reg_lock);
    free(r);
}

/* A fine-tuning job succeeded (called on the job runner's thread, or at start for the jobs
 * that succeeded before): its adapter becomes callable by name at once. */
static void on_tuned_model(const char *name, const char *dir, int full, void *user) {
    mt_server *s = user;
    if (full) {
        logf_(s, "tuned model %s is a full model in %s: serve it with memtune serve --model %s", name, dir, dir);
        return;
    }
    pthread_mutex_lock(&s->reg_lock);
    int known = find_adapter(s, name) != NULL;
    pthread_mutex_unlock(&s->reg_lock);
    if (!known && mt_server_add_adapter(s, name, dir)) logf_(s, "tuned model %s: %s", name, mt_last_error());
    else if (!known) logf_(s, "serving tuned model %s (%s)", name, dir);
}

/* ---- routes --------------------------------------------------------------------------- */

static json_t *model_object(const char *id, const char *parent) {
    json_t *o = json_pack("{s:s, s:s, s:i, s:s}", "id", id, "object", "model", "created", 0, "owned_by", "memtune");
    if (o && parent) json_object_set_new(o, "parent", json_string(parent));
    return o;
}

static enum MHD_Result list_models(mt_server *s, struct MHD_Connection *c) {
    json_t *data = json_array();
    json_array_append_new(data, model_object(s->model_name, NULL));
    pthread_mutex_lock(&s->reg_lock);
    for (adapter *a = s->adapters; a; a = a->next) json_array_append_new(data, model_object(a->name, s->model_name));
    pthread_mutex_unlock(&s->reg_lock);
    return send_json(c, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static enum MHD_Result post_adapter(mt_server *s, struct MHD_Connection *c, const request_state *rs,
                                    const char *method, const char *url) {
    if (!s->o.allow_adapter_upload)
        return fail(s, c, method, url, 403, "invalid_request_error", NULL, NULL, "adding adapters is disabled");
    json_error_t je;
    json_t *o = json_loadb(rs->body ? rs->body : "", rs->len, JSON_REJECT_DUPLICATES, &je);
    const char *name = json_string_value(json_object_get(o, "name")), *path = json_string_value(json_object_get(o, "path"));
    enum MHD_Result ret;
    if (!o)
        ret = fail(s, c, method, url, 400, "invalid_request_error", NULL, "invalid_json", "the body is not valid JSON");
    else if (!name || !path || !*path)
        ret = fail(s, c, method, url, 400, "invalid_request_error", name ? "path" : "name", "invalid_value",
                   "the body must be {\"name\": string, \"path\": string}");
    else if (mt_server_add_adapter(s, name, path))
        ret = fail(s, c, method, url, strstr(mt_last_error(), "exists") ? 409 : 400, "invalid_request_error", "name",
                   "invalid_value", mt_last_error());
    else {
        adapter *a;
        mt_serve_error e;
        if (acquire_adapter(s, name, &a, &e)) { /* a path that does not load is not kept */
            pthread_mutex_lock(&s->reg_lock);
            for (adapter **p = &s->adapters; *p; p = &(*p)->next)
                if (!strcmp((*p)->name, name)) {
                    adapter *gone = *p;
                    *p = gone->next;
                    free(gone->name);
                    free(gone->path);
                    free(gone);
                    break;
                }
            pthread_mutex_unlock(&s->reg_lock);
            if (e.http == 500) e.http = 400, e.type = "invalid_request_error", e.param = "path";
            ret = send_error(s, c, &e, method, url);
        } else {
            pthread_mutex_lock(&s->reg_lock);
            a->refs--;
            pthread_mutex_unlock(&s->reg_lock);
            logf_(s, "%s %s 201: adapter %s = %s", method, url, name, path);
            ret = send_json(c, 201, model_object(name, s->model_name));
        }
    }
    json_decref(o);
    return ret;
}

/* The prompt's token ids: a completions prompt as `memtune generate` encodes it; chat
 * messages rendered by the model's chat template (or memtune's default) exactly as training
 * renders a prompt. */
static int prompt_ids(mt_server *s, mt_serve_request *r, int **ids, int *n, mt_serve_error *e) {
    mt_status st;
    if (!r->chat) st = mt_prompt_ids(s->m, r->prompt, ids, n);
    else {
        r->messages[r->n_messages] = (mt_chat_message){.role = "assistant", .content = ""};
        mt_example ex = {.messages = r->messages, .n_messages = r->n_messages + 1};
        st = mt_example_prompt_ids(&s->builder, &ex, ids, n);
        r->messages[r->n_messages] = (mt_chat_message){0};
    }
    if (st == MT_ERR_NOMEM) return mt_serve_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    if (st) return mt_serve_fail(e, 400, "invalid_request_error", r->chat ? "messages" : "prompt", "invalid_value",
                                 "%s", mt_last_error());
    return 0;
}

typedef struct {
    mt_server *s;
    mt_serve_seq *q;
    int chat;
    char id[48];
    long created;
    char *model;
    size_t from;               /* text bytes sent */
    char *out;                 /* formatted bytes not yet handed to MHD */
    size_t out_len, out_off, out_cap;
    int sent_role, done;
} stream_state;

static json_t *choice_chunk(const stream_state *st, const char *text, const char *finish) {
    json_t *fin = finish ? json_string(finish) : json_null();
    if (st->chat) {
        json_t *delta = json_object();
        if (!st->sent_role) json_object_set_new(delta, "role", json_string("assistant"));
        if (text) json_object_set_new(delta, "content", json_string(text));
        return json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "delta", delta, "logprobs", "finish_reason", fin);
    }
    return json_pack("{s:i, s:s, s:n, s:o}", "index", 0, "text", text ? text : "", "logprobs", "finish_reason", fin);
}

static json_t *usage(const mt_seq_progress *p) {
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", p->prompt_tokens, "completion_tokens", p->completion_tokens,
                     "total_tokens", p->prompt_tokens + p->completion_tokens);
}

static void stream_append(stream_state *st, const char *data) {
    size_t n = strlen(data);
    if (st->out_len + n + 1 > st->out_cap) {
        size_t cap = (st->out_len + n + 1) * 2;
        char *b = realloc(st->out, cap);
        if (!b) return;
        st->out = b, st->out_cap = cap;
    }
    memcpy(st->out + st->out_len, data, n);
    st->out_len += n;
}

static void stream_event(stream_state *st, json_t *o) {
    char *j = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!j) return;
    stream_append(st, "data: ");
    stream_append(st, j);
    stream_append(st, "\n\n");
    free(j);
}

static json_t *chunk_object(stream_state *st, json_t *choice) {
    return json_pack("{s:s, s:s, s:i, s:s, s:[o]}", "id", st->id, "object",
                     st->chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)st->created,
                     "model", st->model, "choices", choice);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream_state *st = cls;
    char text[4096];
    for (;;) {
        if (st->out_off < st->out_len) {
            size_t n = st->out_len - st->out_off < max ? st->out_len - st->out_off : max;
            memcpy(buf, st->out + st->out_off, n);
            st->out_off += n;
            if (st->out_off == st->out_len) st->out_off = st->out_len = 0;
            return (ssize_t)n;
        }
        if (st->done) return MHD_CONTENT_READER_END_OF_STREAM;
        mt_seq_progress p;
        if (mt_seq_read(st->s->sched, st->q, st->from, text, sizeof text - 1, 1000, &p)) continue;
        text[p.n] = 0;
        st->from += p.n;
        if (p.n) {
            stream_event(st, chunk_object(st, choice_chunk(st, text, NULL)));
            st->sent_role = 1;
        }
        if (p.finished) {
            if (p.error) {
                mt_serve_error e;
                mt_serve_fail(&e, 500, "server_error", NULL, NULL, "%s", p.error);
                char *j = mt_serve_error_json(&e);
                if (j) {
                    stream_append(st, "data: ");
                    stream_append(st, j);
                    stream_append(st, "\n\n");
                    free(j);
                }
            } else {
                json_t *last = chunk_object(st, choice_chunk(st, NULL, p.finish_reason ? p.finish_reason : "length"));
                if (last) json_object_set_new(last, "usage", usage(&p));
                stream_event(st, last);
            }
            stream_append(st, "data: [DONE]\n\n");
            logf_(st->s, "stream %s done: %d prompt + %d completion tokens, %s", st->id, p.prompt_tokens,
                  p.completion_tokens, p.error ? p.error : p.finish_reason);
            st->done = 1;
        }
    }
}

static void stream_free(void *cls) {
    stream_state *st = cls;
    mt_seq_release(st->s->sched, st->q); /* cancels it if the client left before the end */
    free(st->out);
    free(st->model);
    free(st);
}

/* 1 when the client has closed its side of the connection */
static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    char b;
    ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0;
}

static enum MHD_Result completion(mt_server *s, struct MHD_Connection *c, const request_state *rs, int chat,
                                  const char *method, const char *url) {
    mt_serve_request r;
    mt_serve_error e;
    if (mt_serve_parse_request(rs->body ? rs->body : "", rs->len, chat, &r, &e)) return send_error(s, c, &e, method, url);
    adapter *a = NULL;
    const char *model = r.model && strcmp(r.model, s->model_name) ? r.model : NULL;
    int *ids = NULL, n = 0;
    if (model && acquire_adapter(s, model, &a, &e)) goto bad;
    if (prompt_ids(s, &r, &ids, &n, &e)) goto bad;
    if (n >= mt_scheduler_context(s->sched)) {
        mt_serve_fail(&e, 400, "invalid_request_error", chat ? "messages" : "prompt", "context_length_exceeded",
                      "the prompt is %d tokens; this server's context is %d tokens", n, mt_scheduler_context(s->sched));
        goto bad;
    }
    adapter_ref *ref = a ? malloc(sizeof *ref) : NULL;
    if (a && !ref) {
        mt_serve_fail(&e, 500, "server_error", NULL, NULL, "out of memory");
        goto bad;
    }
    if (ref) *ref = (adapter_ref){s, a};
    mt_seq_params p = {.ids = ids, .n_ids = n, .max_tokens = r.max_tokens < 0 && !chat ? 16 : r.max_tokens,
                       .temperature = r.temperature, .top_p = r.top_p, .top_k = r.top_k,
                       .seed = r.has_seed && r.seed ? r.seed : (uint64_t)time(NULL), .stop = (const char *const *)r.stop,
                       .n_stop = r.n_stop, .echo = r.echo, .ignore_eos = r.ignore_eos, .adapter = a ? a->set : NULL,
                       .on_free = ref ? release_adapter : NULL, .on_free_arg = ref, .grammar = r.grammar};
    ids = NULL;
    r.grammar = NULL; /* the sequence's now */
    mt_serve_seq *q;
    int rc = mt_seq_submit(s->sched, &p, &q);
    if (rc) {
        free(ref);
        mt_serve_fail(&e, 503, "server_error", NULL, NULL,
                      rc == 1 ? "the server is busy (queue full); retry later" : "the server is shutting down");
        goto bad;
    }
    a = NULL; /* released with the sequence */
    char id[48];
    snprintf(id, sizeof id, "%s-%lu", chat ? "chatcmpl" : "cmpl", __atomic_add_fetch(&s->next_id, 1, __ATOMIC_RELAXED));
    const char *model_id = model ? model : s->model_name;
    long created = (long)time(NULL);
    if (r.stream) {
        stream_state *st = calloc(1, sizeof *st);
        if (st) {
            *st = (stream_state){.s = s, .q = q, .chat = chat, .created = created, .model = strdup(model_id)};
            snprintf(st->id, sizeof st->id, "%s", id);
        }
        struct MHD_Response *resp = st && st->model
            ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, st, stream_free) : NULL;
        if (!resp) {
            if (st) free(st->model);
            free(st);
            mt_seq_release(s->sched, q);
            mt_serve_request_free(&r);
            return send_text(c, 500, NULL, "");
        }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        logf_(s, "%s %s 200: stream %s, model %s, %d prompt tokens", method, url, id, model_id, n);
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        mt_serve_request_free(&r);
        return ret;
    }
    /* whole answer: wait for the sequence, dropping it if the client leaves */
    char *text = NULL;
    size_t len = 0, cap = 0;
    mt_seq_progress pr;
    for (;;) {
        if (cap - len < 4096) {
            char *t = realloc(text, cap = cap ? cap * 2 : 8192);
            if (!t) break;
            text = t;
        }
        int timeout = mt_seq_read(s->sched, q, len, text + len, cap - len - 1, 200, &pr);
        len += pr.n;
        if (pr.finished) break;
        if (timeout && client_gone(c)) {
            logf_(s, "%s %s: client left, request %s dropped", method, url, id);
            mt_seq_release(s->sched, q);
            free(text);
            mt_serve_request_free(&r);
            return MHD_NO;
        }
    }
    mt_seq_release(s->sched, q);
    if (!text || !pr.finished) {
        free(text);
        mt_serve_request_free(&r);
        return send_text(c, 500, NULL, "");
    }
    text[len] = 0;
    enum MHD_Result ret;
    if (pr.error) {
        mt_serve_fail(&e, 500, "server_error", NULL, NULL, "%s", pr.error);
        ret = send_error(s, c, &e, method, url);
    } else {
        json_t *choice = chat
            ? json_pack("{s:i, s:{s:s, s:s}, s:n, s:s}", "index", 0, "message", "role", "assistant", "content", text,
                        "logprobs", "finish_reason", pr.finish_reason)
            : json_pack("{s:i, s:s, s:n, s:s}", "index", 0, "text", text, "logprobs", "finish_reason", pr.finish_reason);
        json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:[o], s:o}", "id", id, "object",
                              chat ? "chat.completion" : "text_completion", "created", (json_int_t)created, "model",
                              model_id, "choices", choice, "usage", usage(&pr));
        logf_(s, "%s %s 200: %s, model %s, %d prompt + %d completion tokens, %s", method, url, id, model_id,
              pr.prompt_tokens, pr.completion_tokens, pr.finish_reason);
        ret = send_json(c, 200, o);
    }
    free(text);
    mt_serve_request_free(&r);
    return ret;
bad:
    if (a) {
        adapter_ref *tmp = malloc(sizeof *tmp);
        if (tmp) {
            *tmp = (adapter_ref){s, a};
            release_adapter(tmp);
        }
    }
    free(ids);
    mt_serve_request_free(&r);
    return send_error(s, c, &e, method, url);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    mt_server *s = cls;
    request_state *rs = *con_cls;
    int is_post = !strcmp(method, "POST");
    if (!rs) {
        rs = calloc(1, sizeof *rs);
        if (!rs) return MHD_NO;
        *con_cls = rs;
        __atomic_add_fetch(&s->inflight, 1, __ATOMIC_SEQ_CST);
        if (!strncmp(url, "/v1/", 4) && !authorized(s, c))
            return fail(s, c, method, url, 401, "invalid_request_error", NULL, "invalid_api_key",
                        "Incorrect or missing API key: send \"Authorization: Bearer KEY\"");
        rs->is_upload = s->o.jobs && mt_jobs_route_is_upload(url, method);
        if (rs->is_upload) rs->upload = mt_upload_begin(c, mt_jobs_route_file_limit(s->o.jobs));
        size_t limit = rs->is_upload ? mt_jobs_route_file_limit(s->o.jobs) : s->o.max_body;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) / DISCARD_FACTOR > limit) {
            char msg[128];
            snprintf(msg, sizeof msg, "the body is larger than the limit of %zu bytes", limit);
            return fail(s, c, method, url, 413, "invalid_request_error", NULL, "request_too_large", msg);
        }
        return MHD_YES;
    }
    if (*upload_size && rs->is_upload) { /* a piece of a file upload */
        rs->seen += *upload_size;
        if (rs->seen / DISCARD_FACTOR > mt_jobs_route_file_limit(s->o.jobs)) return MHD_NO;
        if (rs->upload) mt_upload_feed(rs->upload, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) { /* a piece of the body */
        rs->seen += *upload_size;
        if (rs->seen / DISCARD_FACTOR > s->o.max_body) return MHD_NO; /* close: far too large */
        if (!rs->too_large && rs->len + *upload_size > s->o.max_body) rs->too_large = 1;
        if (!rs->too_large) {
            if (rs->len + *upload_size + 1 > rs->cap) {
                size_t cap = rs->cap ? rs->cap : 4096;
                while (cap < rs->len + *upload_size + 1) cap *= 2;
                char *b = realloc(rs->body, cap);
                if (!b) return MHD_NO;
                rs->body = b, rs->cap = cap;
            }
            memcpy(rs->body + rs->len, upload, *upload_size);
            rs->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rs->too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "the body is larger than the limit of %zu bytes", s->o.max_body);
        return fail(s, c, method, url, 413, "invalid_request_error", NULL, "request_too_large", msg);
    }
    if (s->stopping)
        return fail(s, c, method, url, 503, "server_error", NULL, NULL, "the server is shutting down");
    if (!strcmp(url, "/health") && !strcmp(method, "GET")) {
        int active, queued;
        long tokens;
        mt_scheduler_stats(s->sched, &active, &queued, &tokens);
        return send_json(c, 200, json_pack("{s:s, s:i, s:i, s:I}", "status", "ok", "active", active, "queued", queued,
                                           "tokens", (json_int_t)tokens));
    }
    if (!strcmp(url, "/v1/models") && !strcmp(method, "GET")) return list_models(s, c);
    if (!strcmp(url, "/v1/completions") && is_post) return completion(s, c, rs, 0, method, url);
    if (!strcmp(url, "/v1/chat/completions") && is_post) return completion(s, c, rs, 1, method, url);
    if (!strcmp(url, "/v1/adapters") && is_post) return post_adapter(s, c, rs, method, url);
    if (mt_jobs_route_match(url)) {
        if (!s->o.jobs)
            return fail(s, c, method, url, 404, "invalid_request_error", NULL, "not_found",
                        "fine-tuning jobs are off on this server (memtune serve without --no-jobs has them)");
        int status = 500;
        char *json = NULL;
        mt_jobs_route(s->o.jobs, c, method, url, rs->body, rs->len, rs->upload, &status, &json);
        logf_(s, "%s %s %d", method, url, status);
        return send_text(c, status, json, "application/json");
    }
    int known = !strcmp(url, "/health") || !strcmp(url, "/v1/models") || !strcmp(url, "/v1/completions") ||
                !strcmp(url, "/v1/chat/completions") || !strcmp(url, "/v1/adapters");
    char msg[300];
    snprintf(msg, sizeof msg, known ? "method %.16s is not allowed on %.200s" : "no route %.16s %.200s", method, url);
    return fail(s, c, method, url, known ? 405 : 404, "invalid_request_error", NULL, known ? "method_not_allowed" : "not_found", msg);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)c, (void)toe;
    mt_server *s = cls;
    request_state *rs = *con_cls;
    if (rs) {
        mt_upload_free(rs->upload);
        free(rs->body);
        free(rs);
        __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_SEQ_CST);
    }
    *con_cls = NULL;
}

mt_status mt_server_start(const mt_model *m, const mt_server_options *opts, mt_server **out) {
    *out = NULL;
    mt_server_options o;
    if (opts) o = *opts;
    else mt_server_options_default(&o);
    if (o.port < 0 || o.port > 65535) return mt_error(MT_ERR_ARG, "port %d out of range [0, 65535]", o.port);
    if (o.max_adapters < 1) return mt_error(MT_ERR_ARG, "max adapters must be at least 1");
    if (o.max_body < 1024) return mt_error(MT_ERR_ARG, "body limit %zu bytes is below 1024", o.max_body);
    if (!o.host || !*o.host) o.host = "127.0.0.1";
    if (!o.model_name || !valid_name(o.model_name)) return mt_error(MT_ERR_ARG, "model name must be 1 to 128 letters, digits or ._:/-");
    mt_server *s = calloc(1, sizeof *s);
    if (!s) return mt_error(MT_ERR_NOMEM, "out of memory");
    s->m = m;
    s->o = o;
    pthread_mutex_init(&s->reg_lock, NULL);
    s->host = strdup(o.host);
    s->model_name = strdup(o.model_name);
    s->api_key = o.api_key && *o.api_key ? strdup(o.api_key) : NULL;
    s->o.host = s->host, s->o.model_name = s->model_name, s->o.api_key = s->api_key;
    mt_status st = s->host && s->model_name && (!o.api_key || !*o.api_key || s->api_key) ? MT_OK
                   : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!st) {
        const char *src = m->chat_template ? m->chat_template : mt_chat_template_default();
        st = mt_chat_template_compile(src, &s->tpl);
        const mt_tokenizer *t = mt_model_tokenizer(m);
        s->builder = (mt_seq_builder){.tok = t, .tpl = s->tpl, .bos_id = t ? mt_tokenizer_bos(t) : -1,
                                      .eos_id = t && mt_tokenizer_eos(t) >= 0 ? mt_tokenizer_eos(t) : m->cfg.eos_id};
    }
    if (!st) st = mt_scheduler_create(m, o.parallel, o.queue, o.n_ctx, o.batched, &s->sched);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", o.port);
    if (!st && getaddrinfo(o.host, port, &hints, &ai))
        st = mt_error(MT_ERR_ARG, "cannot resolve host '%s'", o.host);
    if (!st) {
        unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                         MHD_USE_ERROR_LOG | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
        s->d = MHD_start_daemon(flags, (uint16_t)o.port, NULL, NULL, handler, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, s,
                                MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, completed, s,
                                MHD_OPTION_CONNECTION_LIMIT, (unsigned)(o.parallel + o.queue + 64),
                                MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_END);
        if (!s->d) st = mt_error(MT_ERR_IO, "cannot listen on %s port %d (in use, or not an address of this machine)",
                                 o.host, o.port);
    }
    if (ai) freeaddrinfo(ai);
    if (st) {
        mt_server_free(s);
        return st;
    }
    if (s->o.jobs) mt_jobs_on_model(s->o.jobs, on_tuned_model, s);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o.port;
    logf_(s, "listening on http://%s:%d (model %s, %d parallel, context %d)", o.host, s->port, s->model_name,
          o.parallel, mt_scheduler_context(s->sched));
    *out = s;
    return MT_OK;
}

int mt_server_port(const mt_server *s) { return s->port; }

void mt_server_shutdown(mt_server *s, int grace_ms) {
    if (!s || s->stopping) return;
    s->stopping = 1;
    if (s->d) { /* no new connections */
        MHD_socket fd = MHD_quiesce_daemon(s->d);
        if (fd != MHD_INVALID_SOCKET) close(fd);
    }
    mt_scheduler_stop(s->sched, grace_ms);
    /* every sequence has ended: let the connections send what is left (the end of a cut
     * stream, a last answer) before the daemon closes them */
    for (int waited = 0; waited < 2000 && __atomic_load_n(&s->inflight, __ATOMIC_SEQ_CST) > 0; waited += 10)
        nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
    logf_(s, "stopped");
}

void mt_server_free(mt_server *s) {
    if (!s) return;
    mt_server_shutdown(s, 0);
    if (s->o.jobs) mt_jobs_on_model(s->o.jobs, NULL, NULL);
    if (s->d) MHD_stop_daemon(s->d); /* closes connections, joins their threads */
    mt_scheduler_free(s->sched);
    if (s->tpl) mt_chat_template_free(s->tpl);
    for (adapter *a = s->adapters, *next; a; a = next) {
        next = a->next;
        mt_adapter_set_free(a->set);
        free(a->name);
        free(a->path);
        free(a);
    }
    pthread_mutex_destroy(&s->reg_lock);
    free(s->host);
    free(s->model_name);
    free(s->api_key);
    free(s);
}
