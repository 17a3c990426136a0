/* mt_hub_resolve: a Hub model name to a local path, through the cache layout huggingface_hub
 * writes (see memtune.h), downloading with libcurl what the cache lacks.
 *
 *   <cache>/models--ORG--NAME/refs/<rev>                 the commit hash a branch or tag is at
 *   <cache>/models--ORG--NAME/blobs/<etag>               file contents (etag: the sha256 of an
 *                                                        LFS file, the git blob sha1 otherwise)
 *   <cache>/models--ORG--NAME/blobs/<etag>.incomplete    a download under way (resumed)
 *   <cache>/models--ORG--NAME/snapshots/<commit>/<file>  -> ../../blobs/<etag>
 *   <cache>/.locks/models--ORG--NAME/<etag>.lock         held while a blob downloads
 *
 * A blob is renamed into place only when whole (and its sha256 checked), and a snapshot link
 * only made (by rename) once its blob exists, so nothing under snapshots/ is ever partial. */
#include "formats/hub.h"
#include "core/error.h"
#include "core/file.h"
#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define API_MAX_BYTES (64u << 20)
#define INDEX_MAX_BYTES (64u << 20)

typedef struct {
    const mt_hub_options *o;
    mt_hub_name n;
    char repo_id[2 * MT_HUB_PART_MAX + 2]; /* ORG/NAME */
    char *repo_dir;                        /* <cache>/models--ORG--NAME */
    char *lock_dir;                        /* <cache>/.locks/models--ORG--NAME */
    const char *endpoint;
} hub;

/* ---- small helpers -------------------------------------------------------------------- */

typedef struct {
    char **v;
    size_t n, cap;
} strlist;

static int sl_push(strlist *l, const char *s) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return 0;
        l->v = v, l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(s))) return 0;
    l->n++;
    return 1;
}

static int sl_has(const strlist *l, const char *s) {
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s)) return 1;
    return 0;
}

static void sl_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* "a, b, c" (at most 20 names, then "and N more") into buf. */
static const char *sl_join(const strlist *l, char *buf, size_t size) {
    size_t k = 0;
    buf[0] = 0;
    for (size_t i = 0; i < l->n && k + 1 < size; i++) {
        if (i == 20) {
            snprintf(buf + k, size - k, ", and %zu more", l->n - 20);
            break;
        }
        k += (size_t)snprintf(buf + k, size - k, "%s%s", i ? ", " : "", l->v[i]);
        if (k >= size) k = size - 1;
    }
    return l->n ? buf : "none";
}

static int top_level(const char *f) { return !strchr(f, '/'); }

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* Percent-encodes s (RFC 3986 unreserved characters kept; '/' kept when keep_slash). */
static char *url_encode(const char *s, int keep_slash) {
    char *out = malloc(3 * strlen(s) + 1), *p = out;
    if (!out) return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) *p++ = (char)c;
        else p += sprintf(p, "%%%02X", c);
    }
    *p = 0;
    return out;
}

/* A repository file name from the Hub, safe to put under snapshots/: relative, no "." or
 * ".." parts, no empty parts. */
static int safe_rel_path(const char *f) {
    if (!*f || *f == '/' || strlen(f) > 1000) return 0;
    const char *p = f;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return 0;
        p += n;
        if (*p == '/') p++;
    }
    return p[-1] != '/';
}

/* The commit hash in refs/<rev> (40 hex digits), or NULL. */
static char *read_ref(const hub *h) {
    char *path = mt_strdup_printf("%s/refs/%s", h->repo_dir, h->n.rev), *text = NULL;
    size_t len;
    if (!path) return NULL;
    mt_status s = mt_file_read_all(path, 4096, &text, &len);
    free(path);
    if (s != MT_OK) return NULL;
    while (len && isspace((unsigned char)text[len - 1])) text[--len] = 0;
    if (!mt_hub_is_hex(text, 40)) {
        free(text);
        return NULL;
    }
    return text;
}

/* ---- what the cache holds ------------------------------------------------------------- */

/* Every *.gguf below dir (relative names, prefix + name) into l. */
static void list_gguf(const char *dir, const char *prefix, strlist *l, int depth) {
    DIR *d = opendir(dir);
    if (!d || depth > 8) {
        if (d) closedir(d);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *full = mt_path_join(dir, e->d_name), *rel = mt_strdup_printf("%s%s", prefix, e->d_name);
        if (full && rel) {
            struct stat st;
            if (stat(full, &st) == 0 && S_ISDIR(st.st_mode)) {
                char *sub = mt_strdup_printf("%s/", rel);
                if (sub) list_gguf(full, sub, l, depth + 1);
                free(sub);
            } else if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && mt_hub_is_gguf(rel)) {
                sl_push(l, rel);
            }
        }
        free(full), free(rel);
    }
    closedir(d);
}

/* The GGUF files of names matching quant best (all with the best level), in *match.
 * Returns the level (0 none). */
static int pick_gguf(const strlist *names, const char *quant, strlist *match) {
    int best = 0;
    for (size_t i = 0; i < names->n; i++) {
        int m = mt_hub_gguf_match(names->v[i], quant);
        if (m > best) sl_free(match), best = m;
        if (m && m == best) sl_push(match, names->v[i]);
    }
    return best;
}

/* The shard names of a safetensors index (its weight_map's values), unique, into l. */
static mt_status index_shards(const char *path, strlist *l) {
    char *text = NULL;
    size_t len;
    mt_status s = mt_file_read_all(path, INDEX_MAX_BYTES, &text, &len);
    if (s != MT_OK) return s;
    json_error_t err;
    json_t *root = json_loadb(text, len, 0, &err);
    free(text);
    json_t *map = root ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(map)) {
        json_decref(root);
        return mt_error(MT_ERR_FORMAT, "%s: no weight_map object", path);
    }
    const char *key;
    json_t *v;
    json_object_foreach(map, key, v) {
        const char *f = json_string_value(v);
        if (!f || !safe_rel_path(f)) {
            json_decref(root);
            return mt_error(MT_ERR_FORMAT, "%s: weight_map[\"%s\"] is not a file name", path, key);
        }
        if (!sl_has(l, f) && !sl_push(l, f)) {
            json_decref(root);
            return mt_error(MT_ERR_NOMEM, "out of memory");
        }
    }
    json_decref(root);
    return MT_OK;
}

static int snap_has(const char *snap, const char *file) {
    char *p = mt_path_join(snap, file);
    int ok = p && mt_file_exists(p); /* stat follows the link: a dangling one is missing */
    free(p);
    return ok;
}

/* A complete copy of what the name needs in snapshots/<commit>: 1 and *out set, 0 when the
 * snapshot lacks something, -1 on an error worth reporting as such (set in mt_last_error). */
static int cache_lookup(const hub *h, const char *commit, char **out) {
    char *snap = mt_strdup_printf("%s/snapshots/%s", h->repo_dir, commit);
    int found = 0;
    if (!snap || !mt_dir_exists(snap)) goto done;
    strlist ggufs = {0}, match = {0};
    list_gguf(snap, "", &ggufs, 0);
    if (h->n.quant[0]) {
        pick_gguf(&ggufs, h->n.quant, &match);
        if (match.n == 1) found = (*out = mt_path_join(snap, match.v[0])) ? 1 : 0;
    } else if (snap_has(snap, "config.json")) {
        char *index = mt_path_join(snap, "model.safetensors.index.json");
        strlist shards = {0};
        if (index && mt_file_exists(index)) {
            if (index_shards(index, &shards) == MT_OK && shards.n) {
                found = 1;
                for (size_t i = 0; i < shards.n; i++) found &= snap_has(snap, shards.v[i]);
            }
        } else {
            DIR *d = opendir(snap);
            struct dirent *e;
            while (d && (e = readdir(d)))
                if (ends_with(e->d_name, ".safetensors") && snap_has(snap, e->d_name)) found = 1;
            if (d) closedir(d);
        }
        sl_free(&shards);
        free(index);
        if (found) found = (*out = strdup(snap)) ? 1 : 0;
    } else if (ggufs.n == 1) {
        found = (*out = mt_path_join(snap, ggufs.v[0])) ? 1 : 0;
    }
    sl_free(&ggufs), sl_free(&match);
done:
    free(snap);
    return found;
}

/* ---- HTTP ----------------------------------------------------------------------------- */

typedef struct {
    const hub *h;
    long status;                 /* of the response being received */
    char etag[160], linked_etag[160], commit[64], location[2048], error_code[64];
    long long linked_size, content_length;
    /* body into memory */
    char *buf;
    size_t len, cap, max;
    /* body into a file */
    FILE *fp;
    EVP_MD_CTX *sha;
    const char *file;
    uint64_t offset, done, total;
    int restarted, stopped, failed;
} xfer;

static void header_value(char *dst, size_t size, const char *v, size_t n) {
    while (n && (*v == ' ' || *v == '\t')) v++, n--;
    while (n && isspace((unsigned char)v[n - 1])) n--;
    if (n >= size) n = size - 1;
    memcpy(dst, v, n);
    dst[n] = 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *user) {
    xfer *x = user;
    size_t n = size * nmemb;
    char val[160];
    if (n > 5 && !strncmp(data, "HTTP/", 5)) {
        const char *sp = memchr(data, ' ', n);
        x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        x->content_length = -1;
        return n;
    }
    const char *colon = memchr(data, ':', n);
    if (!colon) return n;
    size_t kn = (size_t)(colon - data);
    const char *v = colon + 1;
    size_t vn = n - kn - 1;
#define IS(name) (kn == strlen(name) && !strncasecmp(data, name, kn))
    if (IS("x-repo-commit")) {
        if (!x->commit[0]) header_value(x->commit, sizeof x->commit, v, vn);
    } else if (IS("x-linked-etag")) {
        if (!x->linked_etag[0]) header_value(x->linked_etag, sizeof x->linked_etag, v, vn);
    } else if (IS("etag")) {
        if (!x->etag[0]) header_value(x->etag, sizeof x->etag, v, vn);
    } else if (IS("x-linked-size")) {
        header_value(val, sizeof val, v, vn);
        if (x->linked_size < 0) x->linked_size = strtoll(val, NULL, 10);
    } else if (IS("x-error-code")) {
        header_value(x->error_code, sizeof x->error_code, v, vn);
    } else if (IS("location")) {
        header_value(x->location, sizeof x->location, v, vn);
    } else if (IS("content-length")) {
        header_value(val, sizeof val, v, vn);
        x->content_length = strtoll(val, NULL, 10);
    }
#undef IS
    return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *user) {
    xfer *x = user;
    size_t n = size * nmemb;
    if (x->status < 200 || x->status >= 300) return n; /* an error page: the status says it */
    if (!x->fp) {
        if (x->len + n > x->max) return 0;
        if (x->len + n + 1 > x->cap) {
            size_t cap = x->cap ? x->cap : 65536;
            while (cap < x->len + n + 1) cap *= 2;
            char *b = realloc(x->buf, cap);
            if (!b) return 0;
            x->buf = b, x->cap = cap;
        }
        memcpy(x->buf + x->len, data, n);
        x->len += n;
        x->buf[x->len] = 0;
        return n;
    }
    if (x->status == 200 && x->offset && !x->restarted) {
        /* the server ignored the Range: start over */
        x->restarted = 1;
        if (fflush(x->fp) || ftruncate(fileno(x->fp), 0) || fseeko(x->fp, 0, SEEK_SET)) return x->failed = 1, 0;
        EVP_DigestInit_ex(x->sha, EVP_sha256(), NULL);
        x->done = 0;
    }
    if (fwrite(data, 1, n, x->fp) != n) return x->failed = 1, 0;
    EVP_DigestUpdate(x->sha, data, n);
    x->done += n;
    const mt_hub_options *o = x->h->o;
    if (o->progress && o->progress(x->file, x->done, x->total, o->progress_user)) return x->stopped = 1, 0;
    return n;
}

static CURL *request(const hub *h, const char *url, xfer *x, struct curl_slist **headers, char *errbuf) {
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    x->h = h;
    x->linked_size = -1;
    x->content_length = -1;
    *headers = NULL;
    char line[600];
    snprintf(line, sizeof line, "User-Agent: memtune/%s", mt_version());
    *headers = curl_slist_append(*headers, line);
    if (h->o->token && *h->o->token) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", h->o->token);
        *headers = curl_slist_append(*headers, line);
    }
    errbuf[0] = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *headers);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L); /* no byte for a minute: give up */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    return c;
}

static mt_status no_network(const hub *h, CURLcode rc, const char *errbuf) {
    return mt_error(MT_ERR_IO, "%s: cannot reach %s: %s; the cache %s has no complete copy of it", h->repo_id,
                    h->endpoint, *errbuf ? errbuf : curl_easy_strerror(rc), h->o->cache_dir);
}

/* The error for an HTTP status other than 2xx, what being "revision X" or "file X". The Hub
 * says which thing is missing in X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound,
 * GatedRepo), and answers 401 for a repository that does not exist or is private when no token
 * is given. */
static mt_status http_error(const hub *h, const xfer *x, const char *what) {
    long status = x->status;
    const char *code = x->error_code, *tok = h->o->token && *h->o->token ? "the token given was refused" : "no token was given";
    if (!strcmp(code, "RepoNotFound"))
        return mt_error(MT_ERR_IO, "%s: HTTP %ld: no such repository on %s (or a private one: set HF_TOKEN to a token "
                        "that may read it; %s)", h->repo_id, status, h->endpoint, tok);
    if (!strcmp(code, "RevisionNotFound"))
        return mt_error(MT_ERR_IO, "%s: HTTP %ld: no %s", h->repo_id, status, what);
    if (!strcmp(code, "EntryNotFound"))
        return mt_error(MT_ERR_IO, "%s: HTTP %ld: no %s", h->repo_id, status, what);
    if (status == 401 || status == 403 || !strcmp(code, "GatedRepo"))
        return mt_error(MT_ERR_IO, "%s: HTTP %ld: access refused (a gated or private repository: accept its "
                        "terms on the Hub and set HF_TOKEN to a token that may read it; %s)", h->repo_id, status, tok);
    if (status == 404)
        return mt_error(MT_ERR_IO, "%s: HTTP 404: no such repository, %s on %s", h->repo_id, what, h->endpoint);
    return mt_error(MT_ERR_IO, "%s: %s: HTTP %ld from %s", h->repo_id, what, status, h->endpoint);
}

/* ---- the file list -------------------------------------------------------------------- */

static mt_status repo_info(const hub *h, char **commit, strlist *files) {
    char *rev = url_encode(h->n.rev, 0);
    char *url = rev ? mt_strdup_printf("%s/api/models/%s/revision/%s", h->endpoint, h->repo_id, rev) : NULL;
    free(rev);
    if (!url) return mt_error(MT_ERR_NOMEM, "out of memory");
    xfer x = {.max = API_MAX_BYTES};
    struct curl_slist *hd;
    char errbuf[CURL_ERROR_SIZE], what[MT_HUB_REV_MAX + 16];
    CURL *c = request(h, url, &x, &hd, errbuf);
    mt_status s = MT_OK;
    if (!c) s = mt_error(MT_ERR_NOMEM, "cannot start libcurl");
    CURLcode rc = c ? curl_easy_perform(c) : CURLE_OK;
    snprintf(what, sizeof what, "revision %s", h->n.rev);
    if (s == MT_OK && rc != CURLE_OK) s = no_network(h, rc, errbuf);
    else if (s == MT_OK && (x.status < 200 || x.status >= 300)) s = http_error(h, &x, what);
    if (c) curl_easy_cleanup(c);
    curl_slist_free_all(hd);
    json_t *root = NULL;
    if (s == MT_OK) {
        json_error_t err;
        root = json_loadb(x.buf ? x.buf : "", x.len, 0, &err);
        const char *sha = json_string_value(json_object_get(root, "sha"));
        json_t *sib = json_object_get(root, "siblings");
        if (!root || !mt_hub_is_hex(sha, 40) || !json_is_array(sib)) {
            s = mt_error(MT_ERR_FORMAT, "%s: the answer of %s is not the Hub's model info (a 40-digit \"sha\" "
                         "and a \"siblings\" array)", h->repo_id, url);
        } else if (!(*commit = strdup(sha))) {
            s = mt_error(MT_ERR_NOMEM, "out of memory");
        } else {
            size_t i;
            json_t *e;
            json_array_foreach(sib, i, e) {
                const char *f = json_string_value(json_object_get(e, "rfilename"));
                if (f && safe_rel_path(f) && !sl_push(files, f)) s = mt_error(MT_ERR_NOMEM, "out of memory");
            }
        }
    }
    json_decref(root);
    free(x.buf);
    free(url);
    return s;
}

/* ---- downloading one file ------------------------------------------------------------- */

static void strip_etag(char *e) {
    char *p = e;
    if (!strncmp(p, "W/", 2)) p += 2;
    if (*p == '"') p++;
    size_t n = strlen(p);
    if (n && p[n - 1] == '"') n--;
    memmove(e, p, n);
    e[n] = 0;
}

static int etag_ok(const char *e) {
    if (!*e || strlen(e) > 128) return 0;
    for (; *e; e++)
        if (!isalnum((unsigned char)*e) && *e != '-' && *e != '_') return 0;
    return 1;
}

/* Hashes the first n bytes of fp into sha (a resumed download's earlier part). */
static int hash_prefix(FILE *fp, uint64_t n, EVP_MD_CTX *sha) {
    unsigned char buf[1 << 16];
    if (fseeko(fp, 0, SEEK_SET)) return 0;
    while (n) {
        size_t k = n < sizeof buf ? (size_t)n : sizeof buf;
        if (fread(buf, 1, k, fp) != k) return 0;
        EVP_DigestUpdate(sha, buf, k);
        n -= k;
    }
    return fseeko(fp, 0, SEEK_END) == 0;
}

/* Downloads url into blob (through blob.incomplete, resumed when there), checks its size and,
 * for a sha256 etag, its checksum. */
static mt_status download_blob(const hub *h, const char *url, const char *file, const char *blob,
                               const char *etag, long long size) {
    char *inc = mt_strdup_printf("%s.incomplete", blob);
    if (!inc) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_status s = MT_OK;
    FILE *fp = fopen(inc, "a+b");
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    xfer x = {0};
    struct curl_slist *hd = NULL;
    CURL *c = NULL;
    char errbuf[CURL_ERROR_SIZE];
    if (!fp) {
        s = mt_error(MT_ERR_IO, "%s: cannot open: %s", inc, strerror(errno));
        goto out;
    }
    if (!sha || !EVP_DigestInit_ex(sha, EVP_sha256(), NULL)) {
        s = mt_error(MT_ERR_NOMEM, "cannot start sha256");
        goto out;
    }
    struct stat st;
    uint64_t have = fstat(fileno(fp), &st) == 0 ? (uint64_t)st.st_size : 0;
    if (size >= 0 && have > (uint64_t)size) { /* longer than the file: not a prefix of it */
        if (ftruncate(fileno(fp), 0)) {
            s = mt_error(MT_ERR_IO, "%s: %s", inc, strerror(errno));
            goto out;
        }
        have = 0;
    }
    if (have && !hash_prefix(fp, have, sha)) {
        s = mt_error(MT_ERR_IO, "%s: cannot read the partial download", inc);
        goto out;
    }
    x.fp = fp, x.sha = sha, x.file = file, x.offset = have, x.done = have, x.total = size > 0 ? (uint64_t)size : 0;
    if (size < 0 || have < (uint64_t)size) {
        if (!(c = request(h, url, &x, &hd, errbuf))) {
            s = mt_error(MT_ERR_NOMEM, "cannot start libcurl");
            goto out;
        }
        char range[64];
        if (have) {
            snprintf(range, sizeof range, "%llu-", (unsigned long long)have);
            curl_easy_setopt(c, CURLOPT_RANGE, range);
        }
        if (h->o->progress && h->o->progress(file, have, x.total, h->o->progress_user)) x.stopped = 1;
        CURLcode rc = x.stopped ? CURLE_ABORTED_BY_CALLBACK : curl_easy_perform(c);
        if (fflush(fp)) x.failed = 1;
        if (x.stopped) {
            s = mt_error(MT_ERR_IO, "%s: download of %s stopped (%llu bytes kept in %s for a later run)", h->repo_id,
                         file, (unsigned long long)x.done, inc);
            goto out;
        }
        if (x.failed) {
            s = mt_error(MT_ERR_IO, "%s: cannot write: %s", inc, strerror(errno));
            goto out;
        }
        if (rc != CURLE_OK) {
            s = mt_error(MT_ERR_IO, "%s: downloading %s from %s: %s (%llu bytes kept in %s: run again to resume)",
                         h->repo_id, file, h->endpoint, *errbuf ? errbuf : curl_easy_strerror(rc),
                         (unsigned long long)x.done, inc);
            goto out;
        }
        if (x.status == 416) { /* the range is past the end: the partial file is not the file */
            fclose(fp), fp = NULL;
            unlink(inc);
            s = mt_error(MT_ERR_IO, "%s: %s: the server refused to resume %s (HTTP 416); the partial file was "
                         "removed: run again", h->repo_id, file, inc);
            goto out;
        }
        if (x.status < 200 || x.status >= 300) {
            char what[1100];
            snprintf(what, sizeof what, "file %s", file);
            s = http_error(h, &x, what);
            goto out;
        }
    }
    if (size >= 0 && x.done != (uint64_t)size) {
        s = mt_error(MT_ERR_IO, "%s: %s: got %llu bytes, the Hub said %lld (%s kept: run again to resume)", h->repo_id,
                     file, (unsigned long long)x.done, size, inc);
        goto out;
    }
    if (mt_hub_is_hex(etag, 64)) {
        unsigned char md[32];
        unsigned int mdn = 0;
        char hex[65];
        EVP_DigestFinal_ex(sha, md, &mdn);
        for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", md[i]);
        if (strcmp(hex, etag)) {
            fclose(fp), fp = NULL;
            unlink(inc);
            s = mt_error(MT_ERR_MISMATCH, "%s: %s: checksum mismatch: the download's sha256 is %s, the Hub says %s; "
                         "refused (the partial blob was removed)", h->repo_id, file, hex, etag);
            goto out;
        }
    }
    if (fsync(fileno(fp)) || fclose(fp)) {
        fp = NULL;
        s = mt_error(MT_ERR_IO, "%s: cannot write: %s", inc, strerror(errno));
        goto out;
    }
    fp = NULL;
    if (rename(inc, blob)) s = mt_error(MT_ERR_IO, "%s: cannot rename to %s: %s", inc, blob, strerror(errno));
out:
    if (fp) fclose(fp);
    if (c) curl_easy_cleanup(c);
    curl_slist_free_all(hd);
    EVP_MD_CTX_free(sha);
    free(inc);
    return s;
}

/* snapshots/<commit>/<file> -> ../../blobs/<etag> (one more "../" per directory in file),
 * made beside it and renamed into place. */
static mt_status link_snapshot(const hub *h, const char *commit, const char *file, const char *etag) {
    char *path = mt_strdup_printf("%s/snapshots/%s/%s", h->repo_dir, commit, file);
    char *dir = path ? mt_path_dir(path) : NULL;
    size_t depth = 0;
    for (const char *p = file; *p; p++) depth += *p == '/';
    char *target = malloc(3 * depth + strlen(etag) + 16);
    char *tmp = path ? mt_strdup_printf("%s.tmp.%ld", path, (long)getpid()) : NULL;
    mt_status s = MT_OK;
    if (!path || !dir || !target || !tmp) {
        s = mt_error(MT_ERR_NOMEM, "out of memory");
        goto out;
    }
    target[0] = 0;
    strcat(target, "../../");
    for (size_t i = 0; i < depth; i++) strcat(target, "../");
    strcat(target, "blobs/");
    strcat(target, etag);
    if ((s = mt_mkdir_p(dir)) != MT_OK) goto out;
    unlink(tmp);
    if (symlink(target, tmp) || rename(tmp, path)) {
        s = mt_error(MT_ERR_IO, "%s: cannot link to %s: %s", path, target, strerror(errno));
        unlink(tmp);
    }
out:
    free(path), free(dir), free(target), free(tmp);
    return s;
}

/* Puts file of commit into the cache (a no-op when its snapshot link already resolves). */
static mt_status fetch_file(const hub *h, const char *commit, const char *file) {
    char *snap = mt_strdup_printf("%s/snapshots/%s", h->repo_dir, commit);
    if (!snap) return mt_error(MT_ERR_NOMEM, "out of memory");
    int have = snap_has(snap, file);
    free(snap);
    if (have) return MT_OK;
    char *enc = url_encode(file, 1);
    char *url = enc ? mt_strdup_printf("%s/%s/resolve/%s/%s", h->endpoint, h->repo_id, commit, enc) : NULL;
    free(enc);
    if (!url) return mt_error(MT_ERR_NOMEM, "out of memory");
    /* HEAD: the etag (the blob's name) and size, before any byte is fetched. As
     * huggingface_hub does, redirects are not followed to another host: the Hub's answer
     * carries X-Linked-Etag and X-Linked-Size for an LFS file, and the CDN address it points to
     * is signed for GET only. A relative redirect (a renamed repository) is followed. */
    xfer x = {0};
    struct curl_slist *hd;
    char errbuf[CURL_ERROR_SIZE], what[1100];
    mt_status s = MT_OK;
    char *head_url = strdup(url);
    snprintf(what, sizeof what, "file %s", file);
    for (int hop = 0; s == MT_OK; hop++) {
        memset(&x, 0, sizeof x);
        CURL *c = head_url ? request(h, head_url, &x, &hd, errbuf) : NULL;
        if (!c) {
            s = mt_error(MT_ERR_NOMEM, "cannot start libcurl");
            break;
        }
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
        CURLcode rc = curl_easy_perform(c);
        char *next = NULL; /* the Location made absolute by libcurl */
        if (rc == CURLE_OK && curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &next) == CURLE_OK && next)
            next = strdup(next);
        else
            next = NULL;
        curl_easy_cleanup(c);
        curl_slist_free_all(hd);
        int relative = x.status >= 300 && x.status < 400 && !x.linked_etag[0] && x.location[0] == '/';
        if (rc == CURLE_OK && relative && next && hop < 5) {
            free(head_url);
            head_url = next;
            continue;
        }
        free(next);
        if (rc != CURLE_OK) s = no_network(h, rc, errbuf);
        else if (x.status < 200 || x.status >= 400 || (x.status >= 300 && !x.linked_etag[0])) s = http_error(h, &x, what);
        break;
    }
    free(head_url);
    char *etag = x.linked_etag[0] ? x.linked_etag : x.etag;
    strip_etag(etag);
    long long size = x.linked_size >= 0 ? x.linked_size : x.content_length;
    if (s == MT_OK && !etag_ok(etag))
        s = mt_error(MT_ERR_FORMAT, "%s: %s: the server sent no usable ETag for it (got \"%s\")", h->repo_id, file, etag);
    char *blob = NULL, *lock = NULL;
    int lfd = -1;
    if (s == MT_OK) {
        blob = mt_strdup_printf("%s/blobs/%s", h->repo_dir, etag);
        lock = mt_strdup_printf("%s/%s.lock", h->lock_dir, etag);
        if (!blob || !lock) s = mt_error(MT_ERR_NOMEM, "out of memory");
    }
    if (s == MT_OK) {
        char *bdir = mt_path_dir(blob);
        s = bdir ? mt_mkdir_p(bdir) : mt_error(MT_ERR_NOMEM, "out of memory");
        free(bdir);
    }
    if (s == MT_OK) s = mt_mkdir_p(h->lock_dir);
    if (s == MT_OK) {
        /* one download of a blob at a time (huggingface_hub takes the same lock) */
        lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (lfd < 0 || flock(lfd, LOCK_EX))
            s = mt_error(MT_ERR_IO, "%s: cannot lock: %s", lock, strerror(errno));
    }
    if (s == MT_OK && !mt_file_exists(blob)) s = download_blob(h, url, file, blob, etag, size);
    if (s == MT_OK) s = link_snapshot(h, commit, file, etag);
    if (lfd >= 0) close(lfd);
    free(blob), free(lock), free(url);
    return s;
}

/* ---- resolving ------------------------------------------------------------------------ */

/* Which files of the repository the name needs (into need); *result_file gets the GGUF's
 * name when the model is one GGUF file, NULL for a safetensors directory. */
static mt_status choose_files(const hub *h, const char *commit, const strlist *files, strlist *need,
                              char **result_file) {
    strlist ggufs = {0}, match = {0};
    char list[2048];
    mt_status s = MT_OK;
    *result_file = NULL;
    for (size_t i = 0; i < files->n; i++)
        if (mt_hub_is_gguf(files->v[i])) sl_push(&ggufs, files->v[i]);
    if (h->n.quant[0]) {
        pick_gguf(&ggufs, h->n.quant, &match);
        if (match.n == 1) {
            sl_push(need, match.v[0]);
            *result_file = strdup(match.v[0]);
        } else if (match.n > 1) {
            s = mt_error(MT_ERR_ARG, "%s: %zu GGUF files match :%s (%s): name one more exactly", h->repo_id, match.n,
                         h->n.quant, sl_join(&match, list, sizeof list));
        } else {
            s = mt_error(MT_ERR_ARG, "%s@%s: no GGUF file matches :%s; the GGUF files there are: %s", h->repo_id,
                         h->n.rev, h->n.quant, sl_join(&ggufs, list, sizeof list));
        }
        goto out;
    }
    static const char *const meta[] = {"config.json", "tokenizer.json", "tokenizer_config.json",
                                       "generation_config.json"};
    strlist weights = {0};
    if (sl_has(files, "model.safetensors.index.json")) {
        if ((s = fetch_file(h, commit, "model.safetensors.index.json")) != MT_OK) goto out;
        char *index = mt_strdup_printf("%s/snapshots/%s/model.safetensors.index.json", h->repo_dir, commit);
        s = index ? index_shards(index, &weights) : mt_error(MT_ERR_NOMEM, "out of memory");
        free(index);
        if (s != MT_OK) goto out;
    } else if (sl_has(files, "model.safetensors")) {
        sl_push(&weights, "model.safetensors");
    } else {
        for (size_t i = 0; i < files->n; i++)
            if (top_level(files->v[i]) && ends_with(files->v[i], ".safetensors")) sl_push(&weights, files->v[i]);
    }
    if (!weights.n) {
        if (ggufs.n == 1) {
            sl_push(need, ggufs.v[0]);
            *result_file = strdup(ggufs.v[0]);
        } else if (ggufs.n > 1) {
            s = mt_error(MT_ERR_ARG, "%s: no safetensors weights but %zu GGUF files: pick one with a suffix such as "
                         "%s:Q4_K_M (files: %s)", h->repo_id, ggufs.n, h->repo_id, sl_join(&ggufs, list, sizeof list));
        } else {
            s = mt_error(MT_ERR_UNSUPPORTED, "%s@%s: no safetensors or GGUF weights (files: %s)", h->repo_id,
                         h->n.rev, sl_join(files, list, sizeof list));
        }
        sl_free(&weights);
        goto out;
    }
    for (size_t i = 0; i < sizeof meta / sizeof *meta; i++)
        if (sl_has(files, meta[i])) sl_push(need, meta[i]);
    if (sl_has(files, "model.safetensors.index.json")) sl_push(need, "model.safetensors.index.json");
    for (size_t i = 0; i < weights.n; i++) {
        if (!sl_has(files, weights.v[i]) && s == MT_OK)
            s = mt_error(MT_ERR_FORMAT, "%s: the index names %s, which the repository does not have", h->repo_id,
                         weights.v[i]);
        sl_push(need, weights.v[i]);
    }
    sl_free(&weights);
out:
    sl_free(&ggufs), sl_free(&match);
    return s;
}

static mt_status write_ref(const hub *h, const char *commit) {
    if (!strcmp(h->n.rev, commit)) return MT_OK;
    char *path = mt_strdup_printf("%s/refs/%s", h->repo_dir, h->n.rev);
    char *dir = path ? mt_path_dir(path) : NULL;
    mt_status s = dir ? mt_mkdir_p(dir) : mt_error(MT_ERR_NOMEM, "out of memory");
    if (s == MT_OK) s = mt_write_file_atomic(path, commit, strlen(commit));
    free(path), free(dir);
    return s;
}

mt_status mt_hub_resolve(const char *name, const mt_hub_options *o, char **local_path) {
    if (!local_path) return mt_error(MT_ERR_ARG, "mt_hub_resolve: local_path is NULL");
    *local_path = NULL;
    hub h = {.o = o};
    if (!o || !o->cache_dir || !*o->cache_dir) return mt_error(MT_ERR_ARG, "mt_hub_resolve: no cache directory given");
    if (!mt_hub_name_parse(name, &h.n))
        return mt_error(MT_ERR_ARG, "'%s' is not a Hub model name (ORG/NAME[@REVISION][:QUANT])", name ? name : "(null)");
    snprintf(h.repo_id, sizeof h.repo_id, "%s/%s", h.n.org, h.n.name);
    h.endpoint = o->endpoint && *o->endpoint ? o->endpoint : "https://huggingface.co";
    size_t el = strlen(h.endpoint);
    char *endpoint = strdup(h.endpoint);
    if (endpoint && el && endpoint[el - 1] == '/') endpoint[el - 1] = 0; /* "https://host/" */
    h.endpoint = endpoint;
    h.repo_dir = mt_strdup_printf("%s/models--%s--%s", o->cache_dir, h.n.org, h.n.name);
    h.lock_dir = mt_strdup_printf("%s/.locks/models--%s--%s", o->cache_dir, h.n.org, h.n.name);
    char *commit = NULL, *result_file = NULL;
    strlist files = {0}, need = {0};
    mt_status s = MT_OK;
    if (!endpoint || !h.repo_dir || !h.lock_dir) {
        s = mt_error(MT_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* the cache first: a complete copy is used as it is, offline */
    commit = mt_hub_is_hex(h.n.rev, 40) ? strdup(h.n.rev) : read_ref(&h);
    if (commit && cache_lookup(&h, commit, local_path) == 1) goto out;
    if (o->offline) {
        s = mt_error(MT_ERR_IO, "%s@%s: not in the cache %s (%s), and downloads are off (offline)", h.repo_id,
                     h.n.rev, o->cache_dir, commit ? "its snapshot there is incomplete" : "no snapshot of it");
        goto out;
    }
    free(commit), commit = NULL;
    if ((s = repo_info(&h, &commit, &files)) != MT_OK) goto out;
    if ((s = choose_files(&h, commit, &files, &need, &result_file)) != MT_OK) goto out;
    for (size_t i = 0; i < need.n && s == MT_OK; i++) s = fetch_file(&h, commit, need.v[i]);
    if (s == MT_OK) s = write_ref(&h, commit);
    if (s == MT_OK) {
        *local_path = result_file ? mt_strdup_printf("%s/snapshots/%s/%s", h.repo_dir, commit, result_file)
                                  : mt_strdup_printf("%s/snapshots/%s", h.repo_dir, commit);
        if (!*local_path) s = mt_error(MT_ERR_NOMEM, "out of memory");
    }
out:
    sl_free(&files), sl_free(&need);
    free(commit), free(result_file), free(endpoint), free(h.repo_dir), free(h.lock_dir);
    return s;
}
