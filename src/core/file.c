#include "core/file.h"
#include "core/error.h"
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static mt_status map_file(const char *path, mt_mapped_file *out, int prot);

mt_status mt_file_map(const char *path, mt_mapped_file *out) { return map_file(path, out, PROT_READ); }

mt_status mt_file_map_cow(const char *path, mt_mapped_file *out) { return map_file(path, out, PROT_READ | PROT_WRITE); }

static mt_status map_file(const char *path, mt_mapped_file *out, int prot) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mt_error(MT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mt_error(MT_ERR_IO, "%s: not a regular file", path);
    }
    out->size = (size_t)st.st_size;
    if (out->size > 0) {
        void *p = mmap(NULL, out->size, prot, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return mt_error(MT_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        }
        out->data = p;
    }
    close(fd);
    out->path = strdup(path);
    if (!out->path) {
        mt_file_unmap(out);
        return mt_error(MT_ERR_NOMEM, "%s: out of memory", path);
    }
    return MT_OK;
}

/* MADV_DONTNEED on the whole pages inside [p, p + n): a neighbour's bytes on a shared page
 * are left alone */
static void discard_pages(const void *p, size_t n) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), begin = (uintptr_t)p, end = begin + n;
    uintptr_t lo = (begin + page - 1) / page * page, hi = end / page * page;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

void mt_file_release(const mt_mapped_file *f, const void *p, size_t n) {
    uintptr_t lo = (uintptr_t)f->data, begin = (uintptr_t)p;
    if (!f->data || !n || begin < lo || n > f->size || begin - lo > f->size - n) return;
    discard_pages(p, n);
}

void mt_file_advise_random(const mt_mapped_file *f, const void *p, size_t n) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo = (uintptr_t)f->data, begin = (uintptr_t)p;
    if (!f->data || !n || begin < lo || n > f->size || begin - lo > f->size - n) return;
    uintptr_t start = begin / page * page;
    madvise((void *)start, begin + n - start, MADV_RANDOM);
}

void mt_memory_discard(void *p, size_t n) {
    if (p && n) discard_pages(p, n);
}

void mt_file_unmap(mt_mapped_file *f) {
    if (f->data) munmap((void *)f->data, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

mt_status mt_file_read_all(const char *path, size_t max_bytes, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return mt_error(MT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return mt_error(MT_ERR_IO, "%s: not a regular file", path);
    }
    if ((size_t)st.st_size > max_bytes) {
        fclose(fp);
        return mt_error(MT_ERR_FORMAT, "%s: file too large (%lld bytes, limit %zu)", path,
                        (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(fp);
        return mt_error(MT_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, n, fp);
    fclose(fp);
    if (got != n) {
        free(buf);
        return mt_error(MT_ERR_IO, "%s: short read", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return MT_OK;
}

int mt_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int mt_dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

mt_status mt_mkdir_p(const char *path) {
    char *tmp = strdup(path);
    if (!tmp) return mt_error(MT_ERR_NOMEM, "out of memory");
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
            mt_status s = mt_error(MT_ERR_IO, "%s: cannot create directory: %s", tmp, strerror(errno));
            free(tmp);
            return s;
        }
        *p = '/';
    }
    mt_status s = MT_OK;
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
        s = mt_error(MT_ERR_IO, "%s: cannot create directory: %s", tmp, strerror(errno));
    else if (!mt_dir_exists(tmp))
        s = mt_error(MT_ERR_IO, "%s: exists and is not a directory", tmp);
    free(tmp);
    return s;
}

char *mt_strdup_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

char *mt_path_dir(const char *path) {
    /* dirname() may return a static "." (a path without a slash) instead of changing its
     * argument: copying its result, not the argument, is the only safe use */
    char *copy = strdup(path);
    char *dir = copy ? strdup(dirname(copy)) : NULL;
    free(copy);
    return dir;
}

char *mt_path_join(const char *dir, const char *name) {
    size_t dl = strlen(dir);
    if (dl > 0 && dir[dl - 1] == '/') return mt_strdup_printf("%s%s", dir, name);
    return mt_strdup_printf("%s/%s", dir, name);
}

mt_status mt_atomic_open(mt_atomic_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    f->tmp_path = mt_strdup_printf("%s.tmp.%ld", path, (long)getpid());
    if (!f->path || !f->tmp_path) {
        mt_atomic_abort(f);
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    f->fp = fopen(f->tmp_path, "wb");
    if (!f->fp) {
        mt_status s = mt_error(MT_ERR_IO, "%s: cannot create: %s", f->tmp_path, strerror(errno));
        mt_atomic_abort(f);
        return s;
    }
    return MT_OK;
}

mt_status mt_atomic_write(mt_atomic_file *f, const void *data, size_t n) {
    if (f->failed) return MT_ERR_IO;
    if (n && fwrite(data, 1, n, f->fp) != n) {
        f->failed = 1;
        return mt_error(MT_ERR_IO, "%s: write failed: %s", f->tmp_path, strerror(errno));
    }
    return MT_OK;
}

mt_status mt_atomic_printf(mt_atomic_file *f, const char *fmt, ...) {
    if (f->failed) return MT_ERR_IO;
    va_list ap;
    va_start(ap, fmt);
    int r = vfprintf(f->fp, fmt, ap);
    va_end(ap);
    if (r < 0) {
        f->failed = 1;
        return mt_error(MT_ERR_IO, "%s: write failed: %s", f->tmp_path, strerror(errno));
    }
    return MT_OK;
}

static void fsync_parent_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

mt_status mt_atomic_commit(mt_atomic_file *f) {
    mt_status s = MT_OK;
    if (f->failed) s = MT_ERR_IO;
    else if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0)
        s = mt_error(MT_ERR_IO, "%s: flush failed: %s", f->tmp_path, strerror(errno));
    if (fclose(f->fp) != 0 && s == MT_OK)
        s = mt_error(MT_ERR_IO, "%s: close failed: %s", f->tmp_path, strerror(errno));
    f->fp = NULL;
    if (s == MT_OK && rename(f->tmp_path, f->path) != 0)
        s = mt_error(MT_ERR_IO, "%s: rename failed: %s", f->path, strerror(errno));
    if (s == MT_OK) fsync_parent_dir(f->path);
    else unlink(f->tmp_path);
    free(f->path);
    free(f->tmp_path);
    memset(f, 0, sizeof *f);
    return s;
}

void mt_atomic_abort(mt_atomic_file *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp_path) unlink(f->tmp_path);
    free(f->path);
    free(f->tmp_path);
    memset(f, 0, sizeof *f);
}

mt_status mt_write_file_atomic(const char *path, const void *data, size_t n) {
    mt_atomic_file f;
    mt_status s = mt_atomic_open(&f, path);
    if (s) return s;
    if ((s = mt_atomic_write(&f, data, n))) {
        mt_atomic_abort(&f);
        return s;
    }
    return mt_atomic_commit(&f);
}
