/* Routes of the files and fine-tuning API (see jobs_routes.h). Paths, methods and query
 * arguments are matched here; the work is the job store's (src/jobs/store.c). */
#include "serve/jobs_routes.h"
#include "jobs/jobs.h"
#include <stdlib.h>
#include <string.h>

struct mt_upload {
    struct MHD_PostProcessor *pp;
    char *data;                /* the "file" part */
    size_t len, cap, limit;
    int too_large, files;      /* files: "file" parts seen */
    char filename[256];
    char purpose[64];
    int purpose_long;
};

static enum MHD_Result upload_part(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                                   const char *content_type, const char *transfer_encoding, const char *data, uint64_t off,
                                   size_t size) {
    (void)kind, (void)content_type, (void)transfer_encoding;
    mt_upload *u = cls;
    if (!strcmp(key, "purpose")) {
        size_t have = strlen(u->purpose);
        if (off == 0) have = 0, u->purpose[0] = 0;
        if (have + size >= sizeof u->purpose) u->purpose_long = 1;
        else {
            memcpy(u->purpose + have, data, size);
            u->purpose[have + size] = 0;
        }
    } else if (!strcmp(key, "file")) {
        if (off == 0) {
            u->files++;
            snprintf(u->filename, sizeof u->filename, "%s", filename ? filename : "upload.jsonl");
        }
        if (u->files > 1) return MHD_YES; /* told apart at the end */
        if (u->too_large || u->len + size > u->limit) {
            u->too_large = 1;
            return MHD_YES;
        }
        if (u->len + size + 1 > u->cap) {
            size_t cap = u->cap ? u->cap : 65536;
            while (cap < u->len + size + 1) cap *= 2;
            char *b = realloc(u->data, cap);
            if (!b) return MHD_NO;
            u->data = b, u->cap = cap;
        }
        memcpy(u->data + u->len, data, size);
        u->len += size;
    }
    return MHD_YES; /* other fields are ignored, as OpenAI's clients may send some */
}

mt_upload *mt_upload_begin(struct MHD_Connection *c, size_t limit) {
    mt_upload *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->limit = limit;
    u->pp = MHD_create_post_processor(c, 65536, upload_part, u);
    if (!u->pp) {
        free(u);
        return NULL;
    }
    return u;
}

int mt_upload_feed(mt_upload *u, const char *data, size_t n) {
    if (MHD_post_process(u->pp, data, n) != MHD_YES) u->too_large = u->too_large ? 1 : 2; /* 2: malformed */
    return u->too_large ? -1 : 0;
}

void mt_upload_free(mt_upload *u) {
    if (!u) return;
    if (u->pp) MHD_destroy_post_processor(u->pp);
    free(u->data);
    free(u);
}

int mt_jobs_route_match(const char *url) {
    return !strcmp(url, "/v1/files") || !strncmp(url, "/v1/files/", 10) || !strcmp(url, "/v1/fine_tuning/jobs") ||
           !strncmp(url, "/v1/fine_tuning/jobs/", 21);
}

size_t mt_jobs_route_file_limit(const mt_jobs *j) { return j->o.max_file_bytes; }

int mt_jobs_route_is_upload(const char *url, const char *method) { return !strcmp(url, "/v1/files") && !strcmp(method, "POST"); }

static int bad_method(mt_serve_error *e, const char *method, const char *url) {
    return mt_serve_fail(e, 405, "invalid_request_error", NULL, "method_not_allowed", "method %.16s is not allowed on %.200s", method, url);
}

/* Splits "/v1/fine_tuning/jobs/ID[/tail]" into id and tail; 0 when the id is not a plain one */
static int split_id(const char *rest, char *id, size_t size, const char **tail) {
    const char *slash = strchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
    if (n == 0 || n >= size) return 0;
    memcpy(id, rest, n);
    id[n] = 0;
    *tail = slash ? slash + 1 : "";
    return 1;
}

void mt_jobs_route(mt_jobs *j, struct MHD_Connection *c, const char *method, const char *url, const char *body,
                   size_t len, mt_upload *u, int *status, char **json) {
    mt_serve_error e = {0};
    json_t *o = NULL;
    int rc = -1, get = !strcmp(method, "GET"), post = !strcmp(method, "POST"), del = !strcmp(method, "DELETE");
    const char *after = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
    const char *limit = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    char id[64];
    const char *tail = "";
    if (!strcmp(url, "/v1/files")) {
        if (post) {
            if (!u) rc = mt_serve_fail(&e, 400, "invalid_request_error", "file", "invalid_value",
                                       "upload the file as multipart/form-data with fields 'file' and 'purpose'");
            else if (u->too_large == 1)
                rc = mt_serve_fail(&e, 413, "invalid_request_error", "file", "file_too_large", "the file is larger than the limit of %zu bytes",
                                   u->limit);
            else if (u->too_large == 2)
                rc = mt_serve_fail(&e, 400, "invalid_request_error", "file", "invalid_value", "the multipart body is malformed");
            else if (u->files != 1)
                rc = mt_serve_fail(&e, 400, "invalid_request_error", "file", "invalid_value", "send exactly one 'file' part (got %d)", u->files);
            else if (u->purpose_long || !u->purpose[0])
                rc = mt_serve_fail(&e, 400, "invalid_request_error", "purpose", "invalid_value", "'purpose' (\"fine-tune\") is required");
            else rc = mt_jobs_op_file_add(j, u->filename, u->purpose, u->data ? u->data : "", u->len, &o, &e);
        } else if (get) rc = mt_jobs_op_file_list(j, &o, &e);
        else rc = bad_method(&e, method, url);
    } else if (!strncmp(url, "/v1/files/", 10)) {
        if (!split_id(url + 10, id, sizeof id, &tail) || *tail)
            rc = mt_serve_fail(&e, 404, "invalid_request_error", NULL, "not_found", "no route %.16s %.200s", method, url);
        else if (get) rc = mt_jobs_op_file_get(j, id, &o, &e);
        else if (del) rc = mt_jobs_op_file_delete(j, id, &o, &e);
        else rc = bad_method(&e, method, url);
    } else if (!strcmp(url, "/v1/fine_tuning/jobs")) {
        if (post) rc = mt_jobs_op_create(j, body ? body : "", body ? len : 0, &o, &e);
        else if (get) rc = mt_jobs_op_list(j, after, limit, &o, &e);
        else rc = bad_method(&e, method, url);
    } else if (!split_id(url + 21, id, sizeof id, &tail)) {
        rc = mt_serve_fail(&e, 404, "invalid_request_error", NULL, "not_found", "no route %.16s %.200s", method, url);
    } else if (!*tail) {
        rc = get ? mt_jobs_op_get(j, id, &o, &e) : bad_method(&e, method, url);
    } else if (!strcmp(tail, "events")) {
        rc = get ? mt_jobs_op_events(j, id, after, limit, &o, &e) : bad_method(&e, method, url);
    } else if (!strcmp(tail, "checkpoints")) {
        rc = get ? mt_jobs_op_checkpoints(j, id, after, limit, &o, &e) : bad_method(&e, method, url);
    } else if (!strcmp(tail, "cancel")) {
        rc = post ? mt_jobs_op_cancel(j, id, &o, &e) : bad_method(&e, method, url);
    } else {
        rc = mt_serve_fail(&e, 404, "invalid_request_error", NULL, "not_found", "no route %.16s %.200s", method, url);
    }
    if (rc) {
        *status = e.http;
        *json = mt_serve_error_json(&e);
    } else {
        *status = 200;
        *json = json_dumps(o, JSON_COMPACT);
        json_decref(o);
    }
}
