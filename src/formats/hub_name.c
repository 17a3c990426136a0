/* Hub name parsing and GGUF quantization matching (see hub.h). */
#include "formats/hub.h"
#include "memtune.h"
#include <ctype.h>
#include <strings.h>
#include <string.h>

static int repo_char(int c) { return isalnum(c) || c == '.' || c == '_' || c == '-'; }

/* An organisation or repository name in s[0..n). */
static int part_ok(const char *s, size_t n) {
    if (n == 0 || n > MT_HUB_PART_MAX || s[0] == '.' || s[0] == '-' || s[n - 1] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        if (!repo_char((unsigned char)s[i])) return 0;
        if (i > 0 && ((s[i] == '-' && s[i - 1] == '-') || (s[i] == '.' && s[i - 1] == '.'))) return 0;
    }
    return 1;
}

static int rev_ok(const char *s, size_t n) {
    if (n == 0 || n > MT_HUB_REV_MAX || s[0] == '/' || s[0] == '.' || s[n - 1] == '/') return 0;
    for (size_t i = 0; i < n; i++) {
        if (!repo_char((unsigned char)s[i]) && s[i] != '/') return 0;
        if (i > 0 && ((s[i] == '.' && s[i - 1] == '.') || (s[i] == '/' && s[i - 1] == '/'))) return 0;
    }
    return 1;
}

static int quant_ok(const char *s, size_t n) {
    if (n == 0 || n > MT_HUB_QUANT_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_') return 0;
    return 1;
}

int mt_hub_name_parse(const char *s, mt_hub_name *out) {
    if (!s) return 0;
    size_t len = strlen(s);
    const char *slash = strchr(s, '/');
    if (!slash) return 0;
    const char *end = s + len;
    const char *colon = strrchr(slash, ':');
    const char *qend = end;
    if (colon) end = colon;
    const char *at = memchr(slash, '@', (size_t)(end - slash));
    const char *name_end = at ? at : end;
    if (!part_ok(s, (size_t)(slash - s)) || !part_ok(slash + 1, (size_t)(name_end - slash - 1))) return 0;
    if (at && !rev_ok(at + 1, (size_t)(end - at - 1))) return 0;
    if (colon && !quant_ok(colon + 1, (size_t)(qend - colon - 1))) return 0;
    if (!out) return 1;
    memset(out, 0, sizeof *out);
    memcpy(out->org, s, (size_t)(slash - s));
    memcpy(out->name, slash + 1, (size_t)(name_end - slash - 1));
    if (at) memcpy(out->rev, at + 1, (size_t)(end - at - 1));
    else strcpy(out->rev, "main");
    if (colon) memcpy(out->quant, colon + 1, (size_t)(qend - colon - 1));
    return 1;
}

int mt_hub_is_name(const char *s) { return mt_hub_name_parse(s, NULL); }

int mt_hub_is_gguf(const char *path) {
    size_t n = strlen(path);
    return n >= 5 && !strcasecmp(path + n - 5, ".gguf");
}

int mt_hub_gguf_match(const char *file, const char *quant) {
    if (!mt_hub_is_gguf(file) || !*quant) return 0;
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    size_t qn = strlen(quant), bn = strlen(base);
    int best = 0;
    for (size_t i = 0; i + qn <= bn; i++) {
        if (strncasecmp(base + i, quant, qn)) continue;
        char before = i ? base[i - 1] : '.', after = base[i + qn];
        int bounded = strchr(".-_", before) && (after == '.' || after == '-');
        if (bounded) return 2;
        best = 1;
    }
    return best;
}

int mt_hub_is_hex(const char *s, size_t n) {
    if (!s || strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f')) return 0;
    return 1;
}
