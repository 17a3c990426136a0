/* Request bodies of the OpenAI API (see request.h). Every field is checked for type and range
 * (NaN and infinities included) and a failure names the field; fields we do not know are
 * ignored, as OpenAI's clients send many optional ones. */
#include "serve/request.h"
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mt_serve_fail(mt_serve_error *err, int http, const char *type, const char *param, const char *code,
                  const char *fmt, ...) {
    err->http = http;
    err->type = type;
    err->param = param;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

char *mt_serve_error_json(const mt_serve_error *err) {
    json_t *o = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", err->message, "type",
                          err->type ? err->type : "invalid_request_error", "param",
                          err->param ? json_string(err->param) : json_null(), "code",
                          err->code ? json_string(err->code) : json_null());
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

#define BAD(param, ...) mt_serve_fail(err, 400, "invalid_request_error", param, "invalid_value", __VA_ARGS__)

static int get_number(json_t *o, const char *key, double lo, double hi, double *out, mt_serve_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return BAD(key, "'%s' must be a number", key);
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi) return BAD(key, "'%s' must be between %g and %g (got %g)", key, lo, hi, x);
    *out = x;
    return 0;
}

static int get_int(json_t *o, const char *key, long lo, long hi, long *out, mt_serve_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return BAD(key, "'%s' must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) return BAD(key, "'%s' must be between %ld and %ld (got %lld)", key, lo, hi, (long long)x);
    *out = (long)x;
    return 0;
}

static int get_bool(json_t *o, const char *key, int *out, mt_serve_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return BAD(key, "'%s' must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

static char *dup_string(json_t *v) {
    size_t n = json_string_length(v);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, json_string_value(v), n);
        s[n] = 0;
    }
    return s;
}

static int get_stop(json_t *o, mt_serve_request *r, mt_serve_error *err) {
    json_t *v = json_object_get(o, "stop");
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) {
        if (!json_string_length(v)) return BAD("stop", "'stop' strings must not be empty");
        r->stop[r->n_stop++] = dup_string(v);
        return r->stop[0] ? 0 : mt_serve_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    if (!json_is_array(v) || json_array_size(v) > MT_SERVE_MAX_STOP)
        return BAD("stop", "'stop' must be a string or an array of at most %d strings", MT_SERVE_MAX_STOP);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s) || !json_string_length(s)) return BAD("stop", "'stop' must hold non-empty strings");
        if (!(r->stop[r->n_stop++] = dup_string(s))) return mt_serve_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    return 0;
}

/* content: a string, or an array of {"type":"text","text":...} parts (joined) */
static char *message_content(json_t *c, mt_serve_error *err, int i) {
    if (json_is_string(c)) return dup_string(c);
    if (!json_is_array(c)) {
        BAD("messages", "messages[%d].content must be a string or an array of text parts", i);
        return NULL;
    }
    size_t total = 1;
    for (size_t k = 0; k < json_array_size(c); k++) {
        json_t *p = json_array_get(c, k), *t = json_object_get(p, "text");
        const char *type = json_string_value(json_object_get(p, "type"));
        if (!json_is_object(p) || !type || strcmp(type, "text") || !json_is_string(t)) {
            BAD("messages", "messages[%d].content[%zu] must be {\"type\":\"text\",\"text\":string}", i, k);
            return NULL;
        }
        total += json_string_length(t);
    }
    char *s = malloc(total), *w = s;
    if (!s) return NULL;
    for (size_t k = 0; k < json_array_size(c); k++) {
        json_t *t = json_object_get(json_array_get(c, k), "text");
        memcpy(w, json_string_value(t), json_string_length(t));
        w += json_string_length(t);
    }
    *w = 0;
    if (strlen(s) != total - 1) { /* a NUL inside: the template works on C strings */
        free(s);
        BAD("messages", "messages[%d].content must not contain NUL characters", i);
        return NULL;
    }
    return s;
}

static int get_messages(json_t *o, mt_serve_request *r, mt_serve_error *err) {
    json_t *v = json_object_get(o, "messages");
    if (!json_is_array(v) || json_array_size(v) == 0)
        return BAD("messages", "'messages' must be a non-empty array of {role, content}");
    if (json_array_size(v) > 4096) return BAD("messages", "at most 4096 messages");
    size_t n = json_array_size(v);
    r->messages = calloc(n + 1, sizeof *r->messages); /* + 1: room for the answer slot */
    if (!r->messages) return mt_serve_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(v, i), *role = json_object_get(m, "role");
        if (!json_is_object(m) || !json_is_string(role) || !json_string_length(role) ||
            strlen(json_string_value(role)) != json_string_length(role))
            return BAD("messages", "messages[%zu] must be an object with a string 'role'", i);
        json_t *c = json_object_get(m, "content");
        char *content = message_content(c, err, (int)i);
        if (!content) return err->http ? -1 : mt_serve_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        if (json_is_string(c) && strlen(content) != json_string_length(c)) {
            free(content);
            return BAD("messages", "messages[%zu].content must not contain NUL characters", i);
        }
        r->messages[r->n_messages].content = content;
        r->messages[r->n_messages++].role = dup_string(role);
        if (!r->messages[r->n_messages - 1].role) return mt_serve_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    return 0;
}

static int get_prompt(json_t *o, mt_serve_request *r, mt_serve_error *err) {
    json_t *v = json_object_get(o, "prompt");
    if (json_is_array(v)) {
        if (json_array_size(v) != 1)
            return BAD("prompt", "'prompt' must be a string or an array of exactly one string (this server "
                       "answers one prompt per request)");
        v = json_array_get(v, 0);
    }
    if (!json_is_string(v)) return BAD("prompt", "'prompt' must be a string");
    if (strlen(json_string_value(v)) != json_string_length(v)) return BAD("prompt", "'prompt' must not contain NUL characters");
    r->prompt = dup_string(v);
    return r->prompt ? 0 : mt_serve_fail(err, 500, "server_error", NULL, NULL, "out of memory");
}

/* response_format {"type": "text" | "json_object" | "json_schema", "json_schema": {"schema"}}
 * or llama.cpp's "grammar" (GBNF): compiled here, so a bad schema or grammar is this request's
 * 400 naming the problem (the compiler's message: line and column, or the JSON pointer). */
static int get_grammar(json_t *o, mt_serve_request *r, mt_serve_error *err) {
    json_t *rf = json_object_get(o, "response_format"), *gbnf = json_object_get(o, "grammar");
    char *schema = NULL;
    const char *param = "response_format";
    if (rf && !json_is_null(rf)) {
        const char *type = json_string_value(json_object_get(rf, "type"));
        if (!json_is_object(rf) || !type)
            return BAD("response_format", "'response_format' must be an object with a 'type'");
        if (!strcmp(type, "json_object")) {
            schema = strdup("{\"type\": \"object\"}");
        } else if (!strcmp(type, "json_schema")) {
            json_t *js = json_object_get(rf, "json_schema"), *sc = json_object_get(js, "schema");
            if (!json_is_object(js) || !json_is_object(sc))
                return BAD("response_format", "'response_format.json_schema.schema' must be a JSON Schema object");
            schema = json_dumps(sc, JSON_COMPACT | JSON_ENCODE_ANY);
        } else if (strcmp(type, "text")) {
            return BAD("response_format", "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\"");
        }
        if ((!strcmp(type, "json_object") || !strcmp(type, "json_schema")) && !schema)
            return mt_serve_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    if (gbnf && !json_is_null(gbnf)) {
        if (schema) {
            free(schema);
            return BAD("grammar", "give 'grammar' or a JSON 'response_format', not both");
        }
        if (!json_is_string(gbnf) || !json_string_length(gbnf)) return BAD("grammar", "'grammar' must be a non-empty GBNF string");
        param = "grammar";
    }
    if (!schema && !(gbnf && json_is_string(gbnf))) return 0;
    char *text = NULL;
    mt_status s = schema ? mt_json_schema_to_gbnf(schema, strlen(schema), &text) : MT_OK;
    free(schema);
    if (!s) s = text ? mt_grammar_compile(text, strlen(text), &r->grammar)
                     : mt_grammar_compile(json_string_value(gbnf), json_string_length(gbnf), &r->grammar);
    free(text);
    if (s == MT_ERR_NOMEM) return mt_serve_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    if (s) return mt_serve_fail(err, 400, "invalid_request_error", param, NULL, "%s", mt_last_error());
    return 0;
}

int mt_serve_parse_request(const char *body, size_t len, int chat, mt_serve_request *r, mt_serve_error *err) {
    memset(r, 0, sizeof *r);
    memset(err, 0, sizeof *err);
    r->chat = chat;
    r->max_tokens = -1;
    r->temperature = 1.0f;
    r->top_p = 1.0f;
    json_error_t je;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) return mt_serve_fail(err, 400, "invalid_request_error", NULL, "invalid_json",
                                 "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    int rc = -1;
    double x;
    long n;
    if (!json_is_object(o)) {
        BAD(NULL, "the body must be a JSON object");
        goto done;
    }
    json_t *model = json_object_get(o, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model) || strlen(json_string_value(model)) != json_string_length(model)) {
            BAD("model", "'model' must be a string");
            goto done;
        }
        if (!(r->model = dup_string(model))) goto oom;
    }
    if (chat ? get_messages(o, r, err) : get_prompt(o, r, err)) goto done;
    x = r->temperature;
    if (get_number(o, "temperature", 0, 2, &x, err)) goto done;
    r->temperature = (float)x;
    x = r->top_p;
    if (get_number(o, "top_p", 0, 1, &x, err)) goto done;
    if (!(x > 0)) {
        BAD("top_p", "'top_p' must be greater than 0");
        goto done;
    }
    r->top_p = (float)x;
    n = 0;
    if (get_int(o, "top_k", 0, 1L << 22, &n, err)) goto done;
    r->top_k = (int)n;
    n = -1;
    if (get_int(o, "max_tokens", 1, MT_SERVE_MAX_TOKENS, &n, err)) goto done;
    if (chat && n < 0 && get_int(o, "max_completion_tokens", 1, MT_SERVE_MAX_TOKENS, &n, err)) goto done;
    r->max_tokens = (int)n;
    n = 1;
    if (get_int(o, "n", 1, 1, &n, err)) goto done;
    json_t *seed = json_object_get(o, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) {
            BAD("seed", "'seed' must be an integer");
            goto done;
        }
        r->has_seed = 1;
        r->seed = (uint64_t)json_integer_value(seed);
    }
    if (get_stop(o, r, err) || get_bool(o, "stream", &r->stream, err) || get_bool(o, "echo", &r->echo, err) ||
        get_bool(o, "ignore_eos", &r->ignore_eos, err) || get_grammar(o, r, err)) goto done;
    if (chat && r->echo) {
        BAD("echo", "'echo' is a completions option");
        goto done;
    }
    rc = 0;
    goto done;
oom:
    mt_serve_fail(err, 500, "server_error", NULL, NULL, "out of memory");
done:
    json_decref(o);
    if (rc) mt_serve_request_free(r);
    return rc;
}

void mt_serve_request_free(mt_serve_request *r) {
    free(r->model);
    free(r->prompt);
    for (int i = 0; i < r->n_messages; i++) {
        free((char *)r->messages[i].role);
        free((char *)r->messages[i].content);
    }
    free(r->messages);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    mt_grammar_free(r->grammar);
    memset(r, 0, sizeof *r);
}
