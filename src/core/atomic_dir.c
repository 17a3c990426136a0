/* Atomic output directories (see atomic_dir.h). */
#include "core/atomic_dir.h"
#include "core/error.h"
#include "core/file.h"
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

mt_status mt_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? MT_OK : mt_error(MT_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return unlink(path) == 0 ? MT_OK : mt_error(MT_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return mt_error(MT_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    return MT_OK;
}

/* name is "<base>.tmp.<pid>" or "<base>.old.<pid>" of a process that is gone. */
static int is_stale_leftover(const char *name, const char *base) {
    size_t n = strlen(base);
    if (strncmp(name, base, n) || (strncmp(name + n, ".tmp.", 5) && strncmp(name + n, ".old.", 5))) return 0;
    const char *p = name + n + 5;
    if (!isdigit((unsigned char)*p)) return 0;
    char *end;
    errno = 0;
    long pid = strtol(p, &end, 10);
    if (errno || *end || pid <= 0 || pid > INT32_MAX) return 0;
    if (pid == (long)getpid()) return 1;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

int mt_atomic_dir_remove_stale(const char *path) {
    char *parent = mt_path_dir(path), *copy = strdup(path);
    int removed = 0;
    if (parent && copy) {
        size_t n = strlen(copy);
        while (n > 1 && copy[n - 1] == '/') copy[--n] = 0;
        const char *slash = strrchr(copy, '/'), *base = slash ? slash + 1 : copy;
        DIR *d = *base ? opendir(parent) : NULL;
        for (struct dirent *e; d && (e = readdir(d));) {
            if (!is_stale_leftover(e->d_name, base)) continue;
            char *p = mt_path_join(parent, e->d_name);
            if (p && mt_remove_tree(p) == MT_OK) removed++;
            free(p);
        }
        if (d) closedir(d);
    }
    free(parent), free(copy);
    return removed;
}

static void atomic_dir_free(mt_atomic_dir *d) {
    free(d->path), free(d->tmp_path);
    d->path = d->tmp_path = NULL;
}

mt_status mt_atomic_dir_open(mt_atomic_dir *d, const char *path) {
    d->path = strdup(path);
    d->tmp_path = mt_strdup_printf("%s.tmp.%ld", path, (long)getpid());
    if (!d->path || !d->tmp_path) {
        atomic_dir_free(d);
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    mt_atomic_dir_remove_stale(path); /* ours too: an earlier failed attempt of this process */
    if (mkdir(d->tmp_path, 0755) != 0) {
        mt_status s = mt_error(MT_ERR_IO, "%s: cannot create: %s", d->tmp_path, strerror(errno));
        atomic_dir_free(d);
        return s;
    }
    return MT_OK;
}

void mt_atomic_dir_abort(mt_atomic_dir *d) {
    if (d->tmp_path) mt_remove_tree(d->tmp_path);
    atomic_dir_free(d);
}

static int sync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int r = fsync(fd);
    close(fd);
    return r;
}

mt_status mt_atomic_dir_commit(mt_atomic_dir *d) {
    mt_status s = MT_OK;
    /* the files' own writes were synced (mt_atomic_file); their names in the directory now */
    if (sync_dir(d->tmp_path) != 0) s = mt_error(MT_ERR_IO, "%s: sync failed: %s", d->tmp_path, strerror(errno));
    struct stat st;
    int exists = s == MT_OK && lstat(d->path, &st) == 0;
    if (s == MT_OK && !exists && rename(d->tmp_path, d->path) != 0)
        s = mt_error(MT_ERR_IO, "%s: rename failed: %s", d->path, strerror(errno));
    if (s == MT_OK && exists) {
        /* one step where the filesystem can: the new directory and the old one swap names */
        if (renameat2(AT_FDCWD, d->tmp_path, AT_FDCWD, d->path, RENAME_EXCHANGE) == 0) {
            mt_remove_tree(d->tmp_path); /* now the old one */
        } else {
            /* else the old one steps aside first (a crash between leaves no directory at path) */
            char *old = mt_strdup_printf("%s.old.%ld", d->path, (long)getpid());
            if (!old) s = mt_error(MT_ERR_NOMEM, "out of memory");
            else if (rename(d->path, old) != 0) s = mt_error(MT_ERR_IO, "%s: cannot move aside: %s", d->path, strerror(errno));
            else if (rename(d->tmp_path, d->path) != 0) {
                s = mt_error(MT_ERR_IO, "%s: rename failed: %s", d->path, strerror(errno));
                rename(old, d->path);
            } else {
                mt_remove_tree(old);
            }
            free(old);
        }
    }
    if (s == MT_OK) {
        char *parent = mt_path_dir(d->path);
        if (parent) sync_dir(parent);
        free(parent);
        atomic_dir_free(d);
        return s;
    }
    mt_atomic_dir_abort(d);
    return s;
}
