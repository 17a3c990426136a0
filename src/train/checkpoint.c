/* Checkpoint files: atomic write, validation, discovery of the newest valid one. */
#include "train/checkpoint.h"
#include "core/error.h"
#include "core/file.h"
#include <ctype.h>
#include "train/progress.h"
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAGIC "MTCKPT01"
#define HEADER_BYTES 32
#define MAX_JSON_BYTES ((uint32_t)16 << 20)

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
#define FNV_SEED 0xcbf29ce484222325ull

static void put_u32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put_u64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static uint32_t get_u32(const unsigned char *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get_u64(const unsigned char *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

/* The trainer's JSON with the blob table added. */
static char *json_with_blobs(const char *json_state, const mt_ckpt_blob *blobs, int n) {
    json_error_t e;
    json_t *root = json_loads(json_state, 0, &e);
    if (!json_is_object(root)) {
        json_decref(root);
        return NULL;
    }
    json_t *table = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(table, json_pack("{s:s, s:I}", "name", blobs[i].name, "bytes", (json_int_t)blobs[i].bytes));
    json_object_set_new(root, "blobs", table);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

mt_status mt_checkpoint_write(const char *path, const char *json_state, const mt_ckpt_blob *blobs, int n) {
    char *json = json_with_blobs(json_state, blobs, n);
    if (!json) return mt_error(MT_ERR_ARG, "%s: checkpoint state is not a JSON object", path);
    size_t json_len = strlen(json);
    uint64_t payload = 0, sum = fnv1a(FNV_SEED, json, json_len);
    for (int i = 0; i < n; i++) {
        payload += blobs[i].bytes;
        sum = fnv1a(sum, blobs[i].data, blobs[i].bytes);
    }
    unsigned char header[HEADER_BYTES];
    memcpy(header, MAGIC, 8);
    put_u32(header + 8, (uint32_t)json_len);
    put_u32(header + 12, (uint32_t)n);
    put_u64(header + 16, payload);
    put_u64(header + 24, sum);
    mt_atomic_file f;
    mt_status s = mt_atomic_open(&f, path);
    if (s == MT_OK) s = mt_atomic_write(&f, header, sizeof header);
    if (s == MT_OK) s = mt_atomic_write(&f, json, json_len);
    /* A test hook: a pause mid-write lets the crash-during-checkpoint test kill us here. */
    int delay = mt_progress_test_checkpoint_delay_ms();
    if (s == MT_OK && delay) {
        fflush(f.fp);
        usleep((useconds_t)delay * 1000);
    }
    for (int i = 0; s == MT_OK && i < n; i++) s = mt_atomic_write(&f, blobs[i].data, blobs[i].bytes);
    free(json);
    if (s) {
        mt_atomic_abort(&f);
        return s;
    }
    return mt_atomic_commit(&f);
}

/* Maps and validates; on success *file is mapped and *json_at points into it. */
static mt_status open_checked(const char *path, mt_mapped_file *file, uint32_t *json_len, uint32_t *n_blobs) {
    mt_status s = mt_file_map(path, file);
    if (s) return s;
    const unsigned char *p = file->data;
    if (file->size < HEADER_BYTES || memcmp(p, MAGIC, 8) != 0) s = mt_error(MT_ERR_FORMAT, "%s: not a memtune checkpoint", path);
    else {
        *json_len = get_u32(p + 8);
        *n_blobs = get_u32(p + 12);
        uint64_t payload = get_u64(p + 16);
        if (*json_len > MAX_JSON_BYTES || payload > file->size || HEADER_BYTES + (uint64_t)*json_len + payload != file->size)
            s = mt_error(MT_ERR_FORMAT, "%s: truncated or inconsistent checkpoint (%zu bytes)", path, file->size);
        else if (fnv1a(FNV_SEED, p + HEADER_BYTES, file->size - HEADER_BYTES) != get_u64(p + 24))
            s = mt_error(MT_ERR_FORMAT, "%s: checksum mismatch (corrupt checkpoint)", path);
    }
    if (s) mt_file_unmap(file);
    return s;
}

mt_status mt_checkpoint_verify(const char *path) {
    mt_mapped_file f;
    uint32_t jl = 0, nb = 0;
    mt_status s = open_checked(path, &f, &jl, &nb);
    if (s == MT_OK) mt_file_unmap(&f);
    return s;
}

mt_status mt_checkpoint_read_state(const char *path, char **json_state) {
    mt_mapped_file f;
    uint32_t json_len = 0, n_blobs = 0;
    mt_status s = open_checked(path, &f, &json_len, &n_blobs);
    if (s) return s;
    *json_state = strndup((const char *)f.data + HEADER_BYTES, json_len);
    mt_file_unmap(&f);
    return *json_state ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
}

mt_status mt_checkpoint_read(const char *path, char **json_state, const mt_ckpt_blob *blobs, int n) {
    *json_state = NULL;
    mt_mapped_file f;
    uint32_t json_len = 0, n_blobs = 0;
    mt_status s = open_checked(path, &f, &json_len, &n_blobs);
    if (s) return s;
    json_error_t e;
    json_t *root = json_loadb((const char *)f.data + HEADER_BYTES, json_len, 0, &e);
    json_t *table = json_object_get(root, "blobs");
    if (!root || json_array_size(table) != n_blobs || (int)n_blobs != n)
        s = mt_error(MT_ERR_MISMATCH, "%s: checkpoint holds %u blobs, expected %d", path, n_blobs, n);
    size_t offset = HEADER_BYTES + json_len;
    for (int i = 0; s == MT_OK && i < n; i++) {
        json_t *b = json_array_get(table, (size_t)i);
        const char *name = json_string_value(json_object_get(b, "name"));
        json_int_t bytes = json_integer_value(json_object_get(b, "bytes"));
        if (!name || strcmp(name, blobs[i].name) || bytes != (json_int_t)blobs[i].bytes)
            s = mt_error(MT_ERR_MISMATCH, "%s: blob %d is %s (%lld bytes), expected %s (%zu bytes): "
                         "was it written for another model or method?", path, i, name ? name : "?",
                         (long long)bytes, blobs[i].name, blobs[i].bytes);
        else {
            memcpy(blobs[i].data, f.data + offset, blobs[i].bytes);
            offset += blobs[i].bytes;
        }
    }
    if (s == MT_OK) {
        *json_state = strndup((const char *)f.data + HEADER_BYTES, json_len);
        if (!*json_state) s = mt_error(MT_ERR_NOMEM, "out of memory");
    }
    json_decref(root);
    mt_file_unmap(&f);
    return s;
}

char *mt_checkpoint_path(const char *dir, long step) {
    return mt_strdup_printf("%s/step-%08ld.ckpt", dir, step);
}

/* Steps of the "step-N.ckpt" files in dir, newest first. */
static int list_steps(const char *dir, long *steps, int max) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) && n < max) {
        long step;
        char tail[8];
        if (sscanf(ent->d_name, "step-%ld.%7s", &step, tail) == 2 && !strcmp(tail, "ckpt") &&
            strlen(ent->d_name) == strlen("step-00000000.ckpt"))
            steps[n++] = step;
    }
    closedir(d);
    for (int i = 1; i < n; i++) /* insertion sort, descending */
        for (int j = i; j > 0 && steps[j] > steps[j - 1]; j--) {
            long t = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = t;
        }
    return n;
}

mt_status mt_checkpoint_find_latest(const char *dir, char **path) {
    long steps[4096];
    int n = list_steps(dir, steps, 4096);
    for (int i = 0; i < n; i++) {
        char *p = mt_checkpoint_path(dir, steps[i]);
        if (!p) return mt_error(MT_ERR_NOMEM, "out of memory");
        if (mt_checkpoint_verify(p) == MT_OK) {
            *path = p;
            return MT_OK;
        }
        mt_progress_message(MT_PROGRESS_INFO, "skipping invalid checkpoint: %s", mt_last_error());
        free(p);
    }
    return mt_error(MT_ERR_IO, "%s: no valid checkpoint to resume from", dir);
}

void mt_checkpoint_prune(const char *dir, int keep) {
    long steps[4096];
    int n = list_steps(dir, steps, 4096);
    for (int i = keep; i < n; i++) {
        char *p = mt_checkpoint_path(dir, steps[i]);
        if (p) unlink(p);
        free(p);
    }
}

/* "step-<digits>.ckpt.tmp.<pid>": the temporary file of a checkpoint write (mt_atomic_open's
 * name). Sets *pid. Nothing else matches: the run's other files are never touched. */
static int is_checkpoint_temp(const char *name, long *pid) {
    const char *p = name;
    if (strncmp(p, "step-", 5)) return 0;
    p += 5;
    const char *digits = p;
    while (isdigit((unsigned char)*p)) p++;
    if (p == digits || strncmp(p, ".ckpt.tmp.", 10)) return 0;
    p += 10;
    if (!isdigit((unsigned char)*p)) return 0;
    char *end;
    errno = 0;
    *pid = strtol(p, &end, 10);
    return !errno && *end == 0 && *pid > 0;
}

int mt_checkpoint_remove_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    long self = (long)getpid();
    for (struct dirent *ent; (ent = readdir(d));) {
        long pid;
        if (!is_checkpoint_temp(ent->d_name, &pid)) continue;
        /* a live process other than us may be writing it (two runs in one directory) */
        if (pid != self && (pid > INT32_MAX || kill((pid_t)pid, 0) == 0 || errno == EPERM)) continue;
        char *path = mt_path_join(dir, ent->d_name);
        if (path && unlink(path) == 0) removed++;
        free(path);
    }
    closedir(d);
    return removed;
}

/* Removes every "step-N.ckpt" of dir (all found invalid by the caller). */
static int remove_checkpoints(const char *dir) {
    long steps[4096];
    int n = list_steps(dir, steps, 4096), removed = 0;
    for (int i = 0; i < n; i++) {
        char *p = mt_checkpoint_path(dir, steps[i]);
        if (p && unlink(p) == 0) removed++;
        free(p);
    }
    return removed;
}

int mt_checkpoint_start(const char *dir, int resume) {
    int temps = mt_checkpoint_remove_temps(dir);
    if (temps)
        mt_progress_message(MT_PROGRESS_INFO, "removed %d unfinished checkpoint file%s (step-*.ckpt.tmp.*) from %s", temps,
                temps > 1 ? "s" : "", dir);
    if (!resume) return 0;
    char *path = NULL;
    if (mt_checkpoint_find_latest(dir, &path) == MT_OK) {
        free(path);
        return 1;
    }
    /* killed before its first checkpoint (or every checkpoint is torn): the same --resume
     * command starts the run over, so a supervisor never needs another one. The invalid
     * files go: they cannot be resumed, and a higher step number would outrank the new
     * run's checkpoints when they are pruned. */
    int invalid = remove_checkpoints(dir);
    if (invalid)
        mt_progress_message(MT_PROGRESS_INFO, "--resume: no valid checkpoint in %s (removed %d invalid); starting from step 0", dir,
                invalid);
    else
        mt_progress_message(MT_PROGRESS_INFO, "--resume: no checkpoint in %s yet; starting from step 0", dir);
    return 0;
}
