/* OpenAI request bodies: parsing and validation of /v1/completions and /v1/chat/completions
 * JSON into plain data, and the error object a bad request gets. Pure functions of the body
 * (no model, no server state), so a fuzzer can drive them. */
#ifndef MT_SERVE_REQUEST_H
#define MT_SERVE_REQUEST_H
#include <stddef.h>
#include <stdint.h>
#include "memtune.h"
#include "template/chat_template.h"

#define MT_SERVE_MAX_STOP 4
#define MT_SERVE_MAX_TOKENS (1 << 20)

typedef struct {
    int chat;                  /* 1: chat/completions */
    char *model;               /* NULL: the base model */
    char *prompt;              /* completions */
    mt_chat_message *messages; /* chat: role and content strings owned here */
    int n_messages;
    int max_tokens;            /* -1: not given */
    float temperature, top_p;
    int top_k;
    int has_seed;
    uint64_t seed;
    char *stop[MT_SERVE_MAX_STOP];
    int n_stop;
    int stream, echo;
    int ignore_eos;            /* llama.cpp's extension: do not stop at EOS */
    mt_grammar *grammar;       /* NULL: unconstrained; else from response_format (json_object,
                                  json_schema) or llama.cpp's "grammar" (GBNF text), compiled */
} mt_serve_request;

/* An OpenAI error: HTTP status and the fields of {"error":{"message","type","param","code"}}. */
typedef struct {
    int http;
    char message[512];
    const char *type;          /* "invalid_request_error", ... */
    const char *param;         /* NULL: null */
    const char *code;          /* NULL: null */
} mt_serve_error;

/* Parses body[0..len). Returns 0, or -1 with *err filled (a 400 naming the field). */
int mt_serve_parse_request(const char *body, size_t len, int chat, mt_serve_request *r, mt_serve_error *err);
void mt_serve_request_free(mt_serve_request *r);
/* Fills err; returns -1. */
int mt_serve_fail(mt_serve_error *err, int http, const char *type, const char *param, const char *code,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The error as JSON text (malloc'd). */
char *mt_serve_error_json(const mt_serve_error *err);

#endif
