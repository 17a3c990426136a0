/* The HTTP side of fine-tuning jobs in memtune serve: /v1/files (multipart uploads read by
 * libmicrohttpd's post processor) and /v1/fine_tuning/jobs..., answered from the job store
 * (src/jobs/). server.c routes to these; each answer is an HTTP status and a JSON body. */
#ifndef MT_SERVE_JOBS_ROUTES_H
#define MT_SERVE_JOBS_ROUTES_H
#include "memtune_jobs.h"
#include <microhttpd.h>
#include <stddef.h>

/* 1 when url belongs to the jobs API */
int mt_jobs_route_match(const char *url);
/* the upload limit of the store (bytes) */
size_t mt_jobs_route_file_limit(const mt_jobs *j);
/* 1 when the request is an upload (POST /v1/files), read with mt_upload_* instead of as a body */
int mt_jobs_route_is_upload(const char *url, const char *method);

typedef struct mt_upload mt_upload;
/* NULL when the body is not multipart/form-data (or urlencoded), or out of memory */
mt_upload *mt_upload_begin(struct MHD_Connection *c, size_t limit);
/* 0, or -1 once the file passed the limit (the rest is dropped) */
int mt_upload_feed(mt_upload *u, const char *data, size_t n);
void mt_upload_free(mt_upload *u);

/* Answers a jobs request: *status and *json (malloc'd; NULL when out of memory). body is
 * the request body (NULL for an upload, whose parts u holds). */
void mt_jobs_route(mt_jobs *j, struct MHD_Connection *c, const char *method, const char *url, const char *body,
                   size_t len, mt_upload *u, int *status, char **json);

#endif
