/* Exact-match normalisation: how strictly a produced answer must equal the expected one. */
#include "memtune.h"
#include <ctype.h>
#include <string.h>

int mt_normalize_parse(const char *name) {
    static const struct { const char *name; mt_normalize how; } names[] = {
        {"trim", MT_NORMALIZE_TRIM}, {"none", MT_NORMALIZE_NONE},
        {"whitespace", MT_NORMALIZE_WHITESPACE}, {"lower", MT_NORMALIZE_LOWER}};
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i].name)) return (int)names[i].how;
    return -1;
}

static int collapsed_equal(const char *a, const char *b, int lower) {
    size_t i = 0, j = 0;
    while (isspace((unsigned char)a[i])) i++;
    while (isspace((unsigned char)b[j])) j++;
    for (;;) {
        int sa = 0, sb = 0;
        while (isspace((unsigned char)a[i])) i++, sa = 1;
        while (isspace((unsigned char)b[j])) j++, sb = 1;
        if (!a[i] || !b[j]) return !a[i] && !b[j];
        if (sa != sb) return 0;
        int ca = (unsigned char)a[i], cb = (unsigned char)b[j];
        if (lower) ca = tolower(ca), cb = tolower(cb);
        if (ca != cb) return 0;
        i++, j++;
    }
}

static int trimmed_equal(const char *a, const char *b) {
    while (isspace((unsigned char)*a)) a++;
    while (isspace((unsigned char)*b)) b++;
    size_t la = strlen(a), lb = strlen(b);
    while (la && isspace((unsigned char)a[la - 1])) la--;
    while (lb && isspace((unsigned char)b[lb - 1])) lb--;
    return la == lb && !memcmp(a, b, la);
}

int mt_text_equal_normalized(const char *a, const char *b, mt_normalize how) {
    switch (how) {
    case MT_NORMALIZE_NONE: return !strcmp(a, b);
    case MT_NORMALIZE_WHITESPACE: return collapsed_equal(a, b, 0);
    case MT_NORMALIZE_LOWER: return collapsed_equal(a, b, 1);
    default: return trimmed_equal(a, b);
    }
}
