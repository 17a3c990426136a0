/* Atomic output directories: a directory of files (a trained model, an adapter) that
 * appears whole or not at all. The files are written into "<path>.tmp.<pid>" beside it;
 * commit renames that into place (exchanging it with a previous directory at path in one
 * step where the filesystem can) and removes what it replaced. A crash or a full disk at any
 * instant leaves either the previous directory or none at path, never a half-written one;
 * the staging directories dead processes left are removed by the next open of that path. */
#ifndef MT_CORE_ATOMIC_DIR_H
#define MT_CORE_ATOMIC_DIR_H
#include "memtune.h"

typedef struct {
    char *path;     /* where the directory appears on commit */
    char *tmp_path; /* where to write its files until then */
} mt_atomic_dir;

/* Creates the (empty) staging directory d->tmp_path, first removing stale ones of path. */
mt_status mt_atomic_dir_open(mt_atomic_dir *d, const char *path);
/* Syncs the staging directory and puts it at path (replacing what was there). On failure the
 * staging directory is removed and path keeps its previous state. Frees d either way. */
mt_status mt_atomic_dir_commit(mt_atomic_dir *d);
/* Removes the staging directory and its files; path is untouched. Frees d. */
void mt_atomic_dir_abort(mt_atomic_dir *d);
/* Removes "<path>.tmp.<pid>" and "<path>.old.<pid>" leftovers whose process is gone (only
 * those names, beside path). Returns how many. */
int mt_atomic_dir_remove_stale(const char *path);
/* Removes a directory tree (no symlinks followed). */
mt_status mt_remove_tree(const char *path);

#endif
