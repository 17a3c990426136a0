/* Shared by the libFuzzer targets: the loaders take paths, so each input is written to a
 * file in a private per-process directory first. Built only by tests/fuzz/run.sh. */
#ifndef MT_FUZZ_COMMON_H
#define MT_FUZZ_COMMON_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memtune.h"
#include "tokenizer/tokenizer.h"

static inline const char *fuzz_dir(void) {
    static char dir[512];
    if (!dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/memtune-fuzz-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
        if (!mkdtemp(dir)) abort();
    }
    return dir;
}

/* Writes data to <private dir>/<name> and returns that path (static buffer). */
static inline const char *fuzz_write(const char *name, const uint8_t *data, size_t size) {
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *fp = fopen(path, "wb");
    if (!fp || (size && fwrite(data, 1, size, fp) != size) || fclose(fp) != 0) abort();
    return path;
}

/* Exercises a tokenizer that loaded: encode (with and without specials) and decode. */
static inline void fuzz_use_tokenizer(const mt_tokenizer *t) {
    static const char text[] = "Hello world! <s> 123  \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80\n\tend";
    int *ids = NULL, n = 0;
    if (mt_tokenizer_encode(t, text, sizeof text - 1, 1, 1, &ids, &n) == MT_OK) {
        char *back = NULL;
        if (mt_detokenize(t, ids, n, &back) == MT_OK) free(back);
    }
    free(ids);
}
#endif
