/* File access: read-only memory maps for untrusted inputs, whole-file reads for small
 * text files, and atomic writes (temp file, fsync, rename, fsync dir) for every output. */
#ifndef MT_CORE_FILE_H
#define MT_CORE_FILE_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "memtune.h"

typedef struct {
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
    char *path;          /* owned copy, for error messages */
} mt_mapped_file;

mt_status mt_file_map(const char *path, mt_mapped_file *out);
/* The same, writable: a write changes the process's private copy of that page, never the
 * file (memory that may be updated in place, such as a memory-expert bank). */
mt_status mt_file_map_cow(const char *path, mt_mapped_file *out);
void mt_file_unmap(mt_mapped_file *f);
/* Tells the kernel that the mapped bytes [p, p + n) of f were consumed: their pages leave
 * the process's resident set (a later read faults them in again from the file). Loaders call
 * it after converting a tensor, so loading a model does not hold the file and the weights in
 * memory at once. */
void mt_file_release(const mt_mapped_file *f, const void *p, size_t n);
/* The mapped bytes [p, p + n) of f will be read at random (a few rows of a huge table): no
 * readahead around each page fault. */
void mt_file_advise_random(const mt_mapped_file *f, const void *p, size_t n);
/* Gives the whole pages inside [p, p + n) of a heap block back to the kernel; they read as
 * zero afterwards. For a block about to be freed whose contents were already moved
 * elsewhere (it keeps peak memory at one copy while converting weights). */
void mt_memory_discard(void *p, size_t n);

/* Reads the whole file, NUL-terminates it (not counted in *len). Refuses files over max_bytes. */
mt_status mt_file_read_all(const char *path, size_t max_bytes, char **out, size_t *len);
int mt_file_exists(const char *path);
int mt_dir_exists(const char *path);
mt_status mt_mkdir_p(const char *path);
/* The directory part of path, malloc'd: "." for a bare file name, "/" for "/name" (as
 * dirname(3), without its static-buffer trap). NULL on OOM. */
char *mt_path_dir(const char *path);
/* snprintf into a malloc'd string; NULL on OOM. */
char *mt_path_join(const char *dir, const char *name);
char *mt_strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Atomic writer: bytes go to "<path>.tmp.<pid>", commit fsyncs, renames over path and
 * fsyncs the directory. abort (or a crash) leaves any previous file at path untouched. */
typedef struct {
    FILE *fp;
    char *path;
    char *tmp_path;
    int failed;
} mt_atomic_file;

mt_status mt_atomic_open(mt_atomic_file *f, const char *path);
mt_status mt_atomic_write(mt_atomic_file *f, const void *data, size_t n);
mt_status mt_atomic_printf(mt_atomic_file *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
mt_status mt_atomic_commit(mt_atomic_file *f);
void mt_atomic_abort(mt_atomic_file *f);
/* One-shot: write a whole buffer atomically. */
mt_status mt_write_file_atomic(const char *path, const void *data, size_t n);

#endif
