/* JSON Schema -> GBNF. Every string the grammar produces is a JSON text that validates
 * against the schema (the converse need not hold: extra properties allowed by an open
 * additionalProperties are never produced, and whitespace is at most one space). Keywords
 * outside the supported subset are refused with their JSON pointer, so a schema never
 * silently means less than it says.
 *
 * Objects emit their properties in the schema's order; optional ones may be skipped. With
 * F(i) = "properties i.. with none written yet" and C(i) = "properties i.. after one was
 * written" (so each starts with a comma), required i gives F(i) ::= kv(i) C(i+1) and
 * C(i) ::= "," kv(i) C(i+1), optional i adds the alternatives F(i+1) / C(i+1). */
#include "core/error.h"
#include "core/file.h"
#include "grammar/text.h"
#include "tokenizer/tok_internal.h"
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SCHEMA_BYTES (16u << 20)
#define MAX_DEPTH 64
#define MAX_COUNT 10000 /* minItems, maxLength, ... */

typedef struct {
    char *ref;
    char name[48];
} ref_rule;

typedef struct {
    json_t *root;
    mt_gtext rules;            /* finished rule definitions */
    int counter;
    int need_string_char, need_value;
    ref_rule *refs;
    int n_refs, cap_refs;
    mt_status err;
} conv;

static int fail(conv *c, const char *ptr, mt_status code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(conv *c, const char *ptr, mt_status code, const char *fmt, ...) {
    if (c->err) return -1;
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->err = mt_error(code, "JSON Schema at %s: %s", ptr[0] ? ptr : "/ (the root)", msg);
    return -1;
}

/* A GBNF string literal for the bytes s[0..n). */
static void sb_literal(mt_gtext *b, const char *s, size_t n) {
    mt_gtext_printf(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') mt_gtext_printf(b, "\\%c", ch);
        else if (ch == '\n') mt_gtext_printf(b, "\\n");
        else if (ch < 0x20 || ch == 0x7F) mt_gtext_printf(b, "\\x%02X", ch);
        else mt_gtext_printf(b, "%c", ch);
    }
    mt_gtext_printf(b, "\"");
}

static void pointer_append(char *out, size_t cap, const char *base, const char *token) {
    size_t n = (size_t)snprintf(out, cap, "%s/", base);
    for (const char *t = token; *t && n + 3 < cap; t++) {
        if (*t == '~') n += (size_t)snprintf(out + n, cap - n, "~0");
        else if (*t == '/') n += (size_t)snprintf(out + n, cap - n, "~1");
        else out[n++] = *t, out[n] = 0;
    }
}

static void new_name(conv *c, char *name, const char *hint) {
    char h[24];
    size_t k = 0;
    for (const char *p = hint; *p && k < sizeof h - 1; p++)
        h[k++] = ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')) ? *p : '-';
    h[k] = 0;
    snprintf(name, 48, "%s-%d", k ? h : "s", ++c->counter);
}

static int gen(conv *c, json_t *schema, const char *ptr, int depth, char *name);

static int get_count(conv *c, json_t *schema, const char *key, const char *ptr, long *out) {
    json_t *v = json_object_get(schema, key);
    if (!v) return 0;
    char p[512];
    pointer_append(p, sizeof p, ptr, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > MAX_COUNT)
        return fail(c, p, MT_ERR_UNSUPPORTED, "%s must be an integer in [0, %d]", key, MAX_COUNT);
    *out = (long)json_integer_value(v);
    return 1;
}

static void add_rule(conv *c, const char *name, const mt_gtext *body) {
    if (body->oom) c->rules.oom = 1;
    mt_gtext_printf(&c->rules, "%s ::= %s\n", name, body->s ? body->s : "");
}

/* ---- regex patterns ------------------------------------------------------------------- */

typedef struct { uint32_t lo, hi; } range;
typedef struct {
    conv *c;
    const char *p, *end, *ptr;
    mt_gtext *out;
    int depth;
} pat;

static int pat_fail(pat *x, const char *msg) {
    char m[200];
    snprintf(m, sizeof m, "pattern: %s (at \"%.20s\")", msg, x->p);
    return fail(x->c, x->ptr, MT_ERR_UNSUPPORTED, "%s", m);
}

static int read_cp(pat *x, uint32_t *cp) {
    int n = mt_utf8_decode((const unsigned char *)x->p, (size_t)(x->end - x->p), cp);
    if (n == 0) return pat_fail(x, "invalid UTF-8");
    x->p += n;
    return 0;
}

static int by_lo(const void *a, const void *b) {
    uint32_t x = ((const range *)a)->lo, y = ((const range *)b)->lo;
    return (x > y) - (x < y);
}

/* Emits the JSON-string form of "one character from these ranges": raw where JSON allows
 * the character raw, escaped ("\\\"", "\\\\", "\\n", "\\u00XX") where it must be. */
static void emit_set(mt_gtext *b, range *r, int n, int negated) {
    qsort(r, (size_t)n, sizeof *r, by_lo);
    range pos[300];
    int m = 0;
    if (negated) {
        uint32_t next = 0;
        for (int i = 0; i < n && m < 298; i++) {
            if (r[i].lo > next) pos[m++] = (range){next, r[i].lo - 1};
            if (r[i].hi + 1 > next) next = r[i].hi + 1;
        }
        if (next <= 0x10FFFF) pos[m++] = (range){next, 0x10FFFF};
    } else {
        for (int i = 0; i < n && m < 300; i++) pos[m++] = r[i];
    }
    int has_quote = 0, has_backslash = 0, n_alts = 0;
    mt_gtext cls = {0}, esc = {0};
    for (int i = 0; i < m; i++) {
        uint32_t lo = pos[i].lo, hi = pos[i].hi;
        if (lo <= '"' && hi >= '"') has_quote = 1;
        if (lo <= '\\' && hi >= '\\') has_backslash = 1;
        for (uint32_t ch = lo; ch <= hi && ch < 0x20; ch++) {
            mt_gtext_printf(&esc, "%s\"\\\\u%04X\"", n_alts++ ? " | " : "", ch);
        }
        if (hi < 0x20) continue;
        if (lo < 0x20) lo = 0x20;
        /* split out the quote and the backslash */
        uint32_t cuts[2] = {'"', '\\'};
        uint32_t a = lo;
        for (int k = 0; k < 2; k++)
            if (cuts[k] >= a && cuts[k] <= hi) {
                if (cuts[k] > a) mt_gtext_printf(&cls, "\\U%08X-\\U%08X", a, cuts[k] - 1);
                a = cuts[k] + 1;
            }
        if (a <= hi) mt_gtext_printf(&cls, "\\U%08X-\\U%08X", a, hi);
    }
    if (has_quote) mt_gtext_printf(&esc, "%s\"\\\\\\\"\"", n_alts++ ? " | " : "");
    if (has_backslash) mt_gtext_printf(&esc, "%s\"\\\\\\\\\"", n_alts++ ? " | " : "");
    if (cls.len && !n_alts) mt_gtext_printf(b, "[%s]", cls.s);
    else if (!cls.len && n_alts) mt_gtext_printf(b, "(%s)", esc.s);
    else if (cls.len) mt_gtext_printf(b, "([%s] | %s)", cls.s, esc.s);
    else mt_gtext_printf(b, "[^\\x00-\\U0010FFFF]");
    if (cls.oom || esc.oom) b->oom = 1;
    free(cls.s);
    free(esc.s);
}

/* Ranges of a \d \w \s escape (negated for \D \W \S); 0 when c is not one. */
static int class_escape(char ch, range *r, int *n, int *negated) {
    *negated = ch >= 'A' && ch <= 'Z';
    switch (ch | 0x20) {
    case 'd': r[(*n)++] = (range){'0', '9'}; return 1;
    case 'w':
        r[(*n)++] = (range){'0', '9'};
        r[(*n)++] = (range){'A', 'Z'};
        r[(*n)++] = (range){'a', 'z'};
        r[(*n)++] = (range){'_', '_'};
        return 1;
    case 's':
        r[(*n)++] = (range){'\t', '\r'};
        r[(*n)++] = (range){' ', ' '};
        return 1;
    }
    return 0;
}

static int escaped_char(pat *x, uint32_t *cp) {
    char ch = *x->p++;
    switch (ch) {
    case 'n': *cp = '\n'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'r': *cp = '\r'; return 0;
    }
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return pat_fail(x, "unsupported escape");
    *cp = (uint32_t)(unsigned char)ch;
    return 0;
}

static int pat_alt(pat *x);

static int pat_atom(pat *x) {
    char ch = *x->p;
    range r[300];
    int n = 0, negated = 0;
    if (ch == '(') {
        if (++x->depth > 32) return pat_fail(x, "groups nested too deeply");
        x->p++;
        if (x->end - x->p >= 2 && x->p[0] == '?' && x->p[1] == ':') x->p += 2;
        else if (x->p < x->end && *x->p == '?') return pat_fail(x, "lookaround and named groups are not supported");
        mt_gtext_printf(x->out, "(");
        if (pat_alt(x)) return -1;
        if (x->p >= x->end || *x->p != ')') return pat_fail(x, "unclosed group");
        x->p++;
        x->depth--;
        mt_gtext_printf(x->out, ")");
        return 0;
    }
    if (ch == '[') {
        x->p++;
        if (x->p < x->end && *x->p == '^') negated = 1, x->p++;
        while (x->p < x->end && *x->p != ']') {
            uint32_t lo, hi;
            if (*x->p == '\\') {
                x->p++;
                if (x->p >= x->end) return pat_fail(x, "unfinished escape");
                int neg2;
                if (class_escape(*x->p, r + n, &(int){0}, &neg2)) {
                    if (neg2) return pat_fail(x, "\\D \\W \\S inside a class are not supported");
                    int k = 0;
                    class_escape(*x->p, r + n, &k, &neg2);
                    n += k;
                    x->p++;
                    if (n > 290) return pat_fail(x, "class too long");
                    continue;
                }
                if (escaped_char(x, &lo)) return -1;
            } else if (read_cp(x, &lo)) {
                return -1;
            }
            hi = lo;
            if (x->end - x->p >= 2 && x->p[0] == '-' && x->p[1] != ']') {
                x->p++;
                if (*x->p == '\\') {
                    x->p++;
                    if (x->p >= x->end || escaped_char(x, &hi)) return pat_fail(x, "bad range end");
                } else if (read_cp(x, &hi)) {
                    return -1;
                }
                if (hi < lo) return pat_fail(x, "backwards range");
            }
            r[n++] = (range){lo, hi};
            if (n > 290) return pat_fail(x, "class too long");
        }
        if (x->p >= x->end) return pat_fail(x, "unclosed class");
        x->p++;
        emit_set(x->out, r, n, negated);
        return 0;
    }
    if (ch == '.') {
        x->p++;
        r[n++] = (range){'\n', '\n'};
        emit_set(x->out, r, n, 1);
        return 0;
    }
    if (ch == '\\') {
        x->p++;
        if (x->p >= x->end) return pat_fail(x, "unfinished escape");
        if (class_escape(*x->p, r, &n, &negated)) {
            x->p++;
            emit_set(x->out, r, n, negated);
            return 0;
        }
        uint32_t cp;
        if (escaped_char(x, &cp)) return -1;
        r[n++] = (range){cp, cp};
        emit_set(x->out, r, n, 0);
        return 0;
    }
    if (strchr("*+?{", ch)) return pat_fail(x, "quantifier with nothing before it");
    if (ch == '^' || ch == '$') return pat_fail(x, "anchors are supported only at the ends");
    uint32_t cp;
    if (read_cp(x, &cp)) return -1;
    r[n++] = (range){cp, cp};
    emit_set(x->out, r, n, 0);
    return 0;
}

static int pat_seq(pat *x) {
    int any = 0;
    while (x->p < x->end && *x->p != '|' && *x->p != ')') {
        if (*x->p == '$' && x->p + 1 == x->end) break;
        mt_gtext_printf(x->out, any++ ? " " : "");
        if (pat_atom(x)) return -1;
        while (x->p < x->end && strchr("*+?{", *x->p)) {
            const char *q = x->p;
            if (*q == '{') {
                long m = -1, n = -1;
                char *e;
                m = strtol(q + 1, &e, 10);
                if (e == q + 1 || m < 0 || m > 1000) return pat_fail(x, "bad {m,n}");
                n = m;
                if (*e == ',') {
                    char *e2;
                    n = strtol(e + 1, &e2, 10);
                    if (e2 == e + 1) n = -1;
                    else if (n < m || n > 1000) return pat_fail(x, "bad {m,n}");
                    e = e2;
                }
                if (e >= x->end || *e != '}') return pat_fail(x, "bad {m,n}");
                if (n < 0) mt_gtext_printf(x->out, "{%ld,}", m);
                else mt_gtext_printf(x->out, "{%ld,%ld}", m, n);
                x->p = e + 1;
            } else {
                mt_gtext_printf(x->out, "%c", *q);
                x->p++;
            }
            if (x->p < x->end && (*x->p == '?' || *x->p == '+')) return pat_fail(x, "lazy and possessive quantifiers are not supported");
        }
    }
    if (!any) mt_gtext_printf(x->out, "\"\"");
    return 0;
}

static int pat_alt(pat *x) {
    if (pat_seq(x)) return -1;
    while (x->p < x->end && *x->p == '|') {
        x->p++;
        mt_gtext_printf(x->out, " | ");
        if (pat_seq(x)) return -1;
    }
    return 0;
}

static int gen_pattern(conv *c, const char *re, const char *ptr, mt_gtext *body) {
    pat x = {c, re, re + strlen(re), ptr, body, 0};
    int start = x.p < x.end && *x.p == '^';
    if (start) x.p++;
    size_t len = strlen(re);
    int end = len > 0 && re[len - 1] == '$' && !(len > 1 && re[len - 2] == '\\');
    c->need_string_char = 1;
    mt_gtext_printf(body, "\"\\\"\" %s(", start ? "" : "string-char* ");
    if (pat_alt(&x)) return -1;
    if (x.p < x.end && *x.p == ')') return pat_fail(&x, "unbalanced ')'");
    if (x.p < x.end && !(*x.p == '$' && x.p + 1 == x.end)) return pat_fail(&x, "unexpected character");
    mt_gtext_printf(body, ")%s \"\\\"\"", end ? "" : " string-char*");
    return 0;
}

/* ---- schemas ---------------------------------------------------------------------------- */

static const char *const ANNOTATIONS[] = {"title", "description", "$schema", "$id", "$comment", "default", "examples",
                                          "$defs", "definitions", NULL};

static int known_keyword(const char *k) {
    static const char *const KEYWORDS[] = {"type", "properties", "required", "additionalProperties", "enum", "const",
                                           "items", "minItems", "maxItems", "minLength", "maxLength", "pattern", "anyOf",
                                           "$ref", NULL};
    for (int i = 0; KEYWORDS[i]; i++)
        if (!strcmp(k, KEYWORDS[i])) return 1;
    for (int i = 0; ANNOTATIONS[i]; i++)
        if (!strcmp(k, ANNOTATIONS[i])) return 1;
    return 0;
}

static int gen_ref(conv *c, const char *ref, const char *ptr, int depth, char *name) {
    for (int i = 0; i < c->n_refs; i++)
        if (!strcmp(c->refs[i].ref, ref)) {
            strcpy(name, c->refs[i].name);
            return 0;
        }
    const char *def = NULL;
    json_t *defs = NULL;
    if (!strncmp(ref, "#/$defs/", 8)) def = ref + 8, defs = json_object_get(c->root, "$defs");
    else if (!strncmp(ref, "#/definitions/", 14)) def = ref + 14, defs = json_object_get(c->root, "definitions");
    else if (!strcmp(ref, "#")) def = "", defs = NULL;
    if (!def) return fail(c, ptr, MT_ERR_UNSUPPORTED, "$ref \"%s\": only local refs #, #/$defs/NAME and #/definitions/NAME are supported", ref);
    if (strchr(def, '/') || strchr(def, '~')) return fail(c, ptr, MT_ERR_UNSUPPORTED, "$ref \"%s\": nested pointers are not supported", ref);
    json_t *target = def[0] ? json_object_get(defs, def) : c->root;
    if (!target) return fail(c, ptr, MT_ERR_FORMAT, "$ref \"%s\" names no definition", ref);
    if (c->n_refs == c->cap_refs) {
        int cap = c->cap_refs ? c->cap_refs * 2 : 8;
        ref_rule *r = realloc(c->refs, (size_t)cap * sizeof *r);
        if (!r) return fail(c, ptr, MT_ERR_NOMEM, "out of memory");
        c->refs = r;
        c->cap_refs = cap;
    }
    ref_rule *r = &c->refs[c->n_refs];
    r->ref = strdup(ref);
    if (!r->ref) return fail(c, ptr, MT_ERR_NOMEM, "out of memory");
    new_name(c, r->name, def[0] ? def : "root");
    c->n_refs++;
    strcpy(name, r->name);
    /* the definition's rule body; recursion through the ref finds the name above */
    char inner[48], tptr[512];
    snprintf(tptr, sizeof tptr, "%s", ref + 1);
    if (gen(c, target, tptr, depth + 1, inner)) return -1;
    mt_gtext body = {0};
    mt_gtext_printf(&body, "%s", inner);
    add_rule(c, name, &body);
    free(body.s);
    return 0;
}

static int gen_object(conv *c, json_t *schema, const char *ptr, int depth, mt_gtext *body) {
    json_t *props = json_object_get(schema, "properties"), *req = json_object_get(schema, "required");
    json_t *addl = json_object_get(schema, "additionalProperties");
    char p[512];
    if (props && !json_is_object(props)) {
        pointer_append(p, sizeof p, ptr, "properties");
        return fail(c, p, MT_ERR_FORMAT, "properties must be an object");
    }
    if (req && !json_is_array(req)) {
        pointer_append(p, sizeof p, ptr, "required");
        return fail(c, p, MT_ERR_FORMAT, "required must be an array of names");
    }
    size_t ri;
    json_t *rv;
    json_array_foreach(req, ri, rv) {
        if (!json_is_string(rv) || !json_object_get(props, json_string_value(rv))) {
            snprintf(p, sizeof p, "%s/required/%zu", ptr, ri);
            return fail(c, p, MT_ERR_UNSUPPORTED, "a required name must be a string listed in properties");
        }
    }
    if (addl && !json_is_boolean(addl) && !json_is_object(addl)) {
        pointer_append(p, sizeof p, ptr, "additionalProperties");
        return fail(c, p, MT_ERR_FORMAT, "additionalProperties must be a boolean or a schema");
    }
    size_t n = props ? json_object_size(props) : 0;
    if (n == 0) { /* no named properties: any object whose values follow additionalProperties */
        if (addl && json_is_false(addl)) {
            mt_gtext_printf(body, "\"{\" ws \"}\"");
            return 0;
        }
        char val[48] = "value";
        if (addl && json_is_object(addl)) {
            pointer_append(p, sizeof p, ptr, "additionalProperties");
            if (gen(c, addl, p, depth + 1, val)) return -1;
        } else {
            c->need_value = 1;
        }
        c->need_string_char = 1;
        mt_gtext_printf(body, "\"{\" ws (string \":\" ws %s (\",\" ws string \":\" ws %s)*)? \"}\"", val, val);
        return 0;
    }
    char base[48];
    new_name(c, base, "obj");
    const char *key;
    json_t *sub;
    size_t i = 0;
    mt_gtext kv = {0};
    /* each property's "key": value */
    char (*kvn)[96] = calloc(n, sizeof *kvn);
    int *required = calloc(n, sizeof *required);
    if (!kvn || !required) {
        free(kvn);
        free(required);
        return fail(c, ptr, MT_ERR_NOMEM, "out of memory");
    }
    int rc = 0;
    json_object_foreach(props, key, sub) {
        char sp[512], vn[48];
        snprintf(sp, sizeof sp, "%s/properties", ptr);
        pointer_append(p, sizeof p, sp, key);
        if (gen(c, sub, p, depth + 1, vn)) {
            rc = -1;
            break;
        }
        json_array_foreach(req, ri, rv) if (!strcmp(json_string_value(rv), key)) required[i] = 1;
        snprintf(kvn[i], 96, "%s-kv%d", base, (int)i);
        kv.len = 0;
        json_t *ks = json_string(key);
        char *quoted = ks ? json_dumps(ks, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        json_decref(ks);
        if (!quoted) {
            rc = fail(c, p, MT_ERR_NOMEM, "out of memory");
            break;
        }
        sb_literal(&kv, quoted, strlen(quoted));
        free(quoted);
        mt_gtext_printf(&kv, " ws \":\" ws %s", vn);
        add_rule(c, kvn[i], &kv);
        i++;
    }
    free(kv.s);
    if (rc == 0) { /* F(i) and C(i), i = n-1 .. 0 */
        mt_gtext f = {0}, cm = {0};
        for (size_t k = n; k-- > 0;) {
            f.len = cm.len = 0;
            int last = k + 1 == n;
            mt_gtext_printf(&f, "%s", kvn[k]);
            if (!last) mt_gtext_printf(&f, " %s-c%zu", base, k + 1);
            mt_gtext_printf(&cm, "\",\" ws %s", kvn[k]);
            if (!last) mt_gtext_printf(&cm, " %s-c%zu", base, k + 1);
            if (!required[k]) {
                if (last) {
                    mt_gtext_printf(&f, " | \"\"");
                    mt_gtext_printf(&cm, " | \"\"");
                } else {
                    mt_gtext_printf(&f, " | %s-f%zu", base, k + 1);
                    mt_gtext_printf(&cm, " | %s-c%zu", base, k + 1);
                }
            }
            char fn[96], cn[96];
            snprintf(fn, sizeof fn, "%s-f%d", base, (int)k);
            snprintf(cn, sizeof cn, "%s-c%d", base, (int)k);
            add_rule(c, fn, &f);
            add_rule(c, cn, &cm);
        }
        free(f.s);
        free(cm.s);
        mt_gtext_printf(body, "\"{\" ws %s-f0 \"}\"", base);
    }
    free(kvn);
    free(required);
    return rc;
}

static int gen_array(conv *c, json_t *schema, const char *ptr, int depth, mt_gtext *body) {
    json_t *items = json_object_get(schema, "items");
    char item[48] = "value", p[512];
    if (items) {
        pointer_append(p, sizeof p, ptr, "items");
        if (!json_is_object(items) && !json_is_boolean(items)) return fail(c, p, MT_ERR_UNSUPPORTED, "items must be one schema (tuple forms are not supported)");
        if (gen(c, items, p, depth + 1, item)) return -1;
    } else {
        c->need_value = 1;
    }
    long min = 0, max = -1;
    if (get_count(c, schema, "minItems", ptr, &min) < 0 || get_count(c, schema, "maxItems", ptr, &max) < 0) return -1;
    if (max >= 0 && max < min) return fail(c, ptr, MT_ERR_FORMAT, "maxItems %ld is below minItems %ld: nothing matches", max, min);
    if (max == 0) {
        mt_gtext_printf(body, "\"[\" ws \"]\"");
        return 0;
    }
    long rmin = min > 0 ? min - 1 : 0;
    mt_gtext_printf(body, "\"[\" ws %s%s (\",\" ws %s)", min == 0 ? "(" : "", item, item);
    if (max < 0) mt_gtext_printf(body, "{%ld,}", rmin);
    else mt_gtext_printf(body, "{%ld,%ld}", rmin, max - 1);
    mt_gtext_printf(body, "%s \"]\"", min == 0 ? ")?" : "");
    return 0;
}

static int gen_string(conv *c, json_t *schema, const char *ptr, mt_gtext *body) {
    long min = 0, max = -1;
    if (get_count(c, schema, "minLength", ptr, &min) < 0 || get_count(c, schema, "maxLength", ptr, &max) < 0) return -1;
    json_t *pattern = json_object_get(schema, "pattern");
    if (pattern) {
        char p[512];
        pointer_append(p, sizeof p, ptr, "pattern");
        if (!json_is_string(pattern)) return fail(c, p, MT_ERR_FORMAT, "pattern must be a string");
        if (json_object_get(schema, "minLength") || json_object_get(schema, "maxLength"))
            return fail(c, p, MT_ERR_UNSUPPORTED, "pattern together with minLength/maxLength is not supported");
        return gen_pattern(c, json_string_value(pattern), p, body);
    }
    if (max >= 0 && max < min) return fail(c, ptr, MT_ERR_FORMAT, "maxLength %ld is below minLength %ld: nothing matches", max, min);
    c->need_string_char = 1;
    if (min == 0 && max < 0) mt_gtext_printf(body, "string");
    else if (max < 0) mt_gtext_printf(body, "\"\\\"\" string-char{%ld,} \"\\\"\"", min);
    else mt_gtext_printf(body, "\"\\\"\" string-char{%ld,%ld} \"\\\"\"", min, max);
    return 0;
}

static int gen_type(conv *c, json_t *schema, const char *type, const char *ptr, int depth, mt_gtext *body) {
    if (!strcmp(type, "object")) return gen_object(c, schema, ptr, depth, body);
    if (!strcmp(type, "array")) return gen_array(c, schema, ptr, depth, body);
    if (!strcmp(type, "string")) return gen_string(c, schema, ptr, body);
    if (!strcmp(type, "number")) mt_gtext_printf(body, "number");
    else if (!strcmp(type, "integer")) mt_gtext_printf(body, "integer");
    else if (!strcmp(type, "boolean")) mt_gtext_printf(body, "boolean");
    else if (!strcmp(type, "null")) mt_gtext_printf(body, "null");
    else {
        char p[512];
        pointer_append(p, sizeof p, ptr, "type");
        return fail(c, p, MT_ERR_FORMAT, "unknown type \"%s\"", type);
    }
    return 0;
}

/* Writes the rule for `schema` (at JSON pointer ptr) and puts its name in name[48]. */
static int gen(conv *c, json_t *schema, const char *ptr, int depth, char *name) {
    if (c->err) return -1;
    if (depth > MAX_DEPTH) return fail(c, ptr, MT_ERR_UNSUPPORTED, "schemas nested deeper than %d", MAX_DEPTH);
    if (json_is_true(schema)) {
        c->need_value = 1;
        strcpy(name, "value");
        return 0;
    }
    if (json_is_false(schema)) return fail(c, ptr, MT_ERR_UNSUPPORTED, "the schema false matches nothing");
    if (!json_is_object(schema)) return fail(c, ptr, MT_ERR_FORMAT, "a schema must be an object or a boolean");
    const char *key;
    json_t *v;
    char p[512];
    json_object_foreach(schema, key, v) {
        if (!known_keyword(key)) {
            pointer_append(p, sizeof p, ptr, key);
            return fail(c, p, MT_ERR_UNSUPPORTED, "keyword \"%s\" is not supported", key);
        }
    }
    json_t *ref = json_object_get(schema, "$ref");
    if (ref) {
        pointer_append(p, sizeof p, ptr, "$ref");
        if (!json_is_string(ref)) return fail(c, p, MT_ERR_FORMAT, "$ref must be a string");
        if (json_object_size(schema) > 1) {
            json_object_foreach(schema, key, v) {
                int annotation = 0;
                for (int i = 0; ANNOTATIONS[i]; i++) annotation |= !strcmp(key, ANNOTATIONS[i]);
                if (strcmp(key, "$ref") && !annotation) {
                    pointer_append(p, sizeof p, ptr, key);
                    return fail(c, p, MT_ERR_UNSUPPORTED, "keyword \"%s\" beside $ref is not supported", key);
                }
            }
        }
        return gen_ref(c, json_string_value(ref), p, depth, name);
    }
    mt_gtext body = {0};
    int rc = 0;
    json_t *en = json_object_get(schema, "enum"), *cn = json_object_get(schema, "const"), *any = json_object_get(schema, "anyOf");
    json_t *type = json_object_get(schema, "type");
    if (cn || en) {
        json_t *list = cn ? NULL : en;
        pointer_append(p, sizeof p, ptr, cn ? "const" : "enum");
        if (en && (!json_is_array(en) || json_array_size(en) == 0)) rc = fail(c, p, MT_ERR_FORMAT, "enum must be a non-empty array");
        size_t n = cn ? 1 : json_array_size(list);
        for (size_t i = 0; i < n && !rc; i++) {
            char *text = json_dumps(cn ? cn : json_array_get(list, i), JSON_ENCODE_ANY | JSON_COMPACT);
            if (!text) {
                rc = fail(c, p, MT_ERR_NOMEM, "out of memory");
                break;
            }
            mt_gtext_printf(&body, "%s", i ? " | " : "");
            sb_literal(&body, text, strlen(text));
            free(text);
        }
    } else if (any) {
        pointer_append(p, sizeof p, ptr, "anyOf");
        if (!json_is_array(any) || json_array_size(any) == 0) rc = fail(c, p, MT_ERR_FORMAT, "anyOf must be a non-empty array");
        if (!rc && (type || json_object_get(schema, "properties")))
            rc = fail(c, p, MT_ERR_UNSUPPORTED, "anyOf beside type/properties is not supported (put them in each alternative)");
        for (size_t i = 0; !rc && i < json_array_size(any); i++) {
            char sp[560], sub[48];
            snprintf(sp, sizeof sp, "%s/%d", p, (int)i);
            rc = gen(c, json_array_get(any, i), sp, depth + 1, sub);
            if (!rc) mt_gtext_printf(&body, "%s%s", i ? " | " : "", sub);
        }
    } else if (json_is_string(type)) {
        rc = gen_type(c, schema, json_string_value(type), ptr, depth, &body);
    } else if (json_is_array(type) && json_array_size(type) > 0) {
        for (size_t i = 0; !rc && i < json_array_size(type); i++) {
            json_t *t = json_array_get(type, i);
            snprintf(p, sizeof p, "%s/type/%zu", ptr, i);
            if (!json_is_string(t)) rc = fail(c, p, MT_ERR_FORMAT, "type must name a type");
            mt_gtext_printf(&body, "%s(", i ? " | " : "");
            if (!rc) rc = gen_type(c, schema, json_string_value(t), ptr, depth, &body);
            mt_gtext_printf(&body, ")");
        }
    } else if (type) {
        pointer_append(p, sizeof p, ptr, "type");
        rc = fail(c, p, MT_ERR_FORMAT, "type must be a string or an array of strings");
    } else if (json_object_get(schema, "properties")) {
        rc = gen_object(c, schema, ptr, depth, &body);
    } else {
        c->need_value = 1;
        mt_gtext_printf(&body, "value");
    }
    if (!rc) {
        new_name(c, name, ptr[0] ? strrchr(ptr, '/') + 1 : "root");
        add_rule(c, name, &body);
    }
    free(body.s);
    return rc;
}

static const char PRIMITIVES[] =
    "ws ::= \" \"?\n"
    "string ::= \"\\\"\" string-char* \"\\\"\"\n"
    "string-char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n"
    "integer ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15})\n"
    "number ::= integer (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?\n"
    "boolean ::= \"true\" | \"false\"\n"
    "null ::= \"null\"\n";

static const char VALUE[] =
    "value ::= value-object | value-array | string | number | boolean | null\n"
    "value-object ::= \"{\" ws (string \":\" ws value (\",\" ws string \":\" ws value)*)? \"}\"\n"
    "value-array ::= \"[\" ws (value (\",\" ws value)*)? \"]\"\n";

mt_status mt_json_schema_to_gbnf(const char *schema_json, size_t len, char **gbnf) {
    *gbnf = NULL;
    if (!schema_json) return mt_error(MT_ERR_ARG, "JSON Schema: no text");
    json_error_t je;
    json_t *root = json_loadb(schema_json, len, JSON_DECODE_ANY, &je);
    if (!root) return mt_error(MT_ERR_FORMAT, "JSON Schema: line %d, column %d: %s", je.line, je.column, je.text);
    conv c = {.root = root};
    char name[48];
    int rc = gen(&c, root, "", 0, name);
    mt_status s = c.err;
    if (!rc && !s) {
        mt_gtext out = {0};
        mt_gtext_printf(&out, "root ::= ws %s ws\n%s%s%s", name, c.rules.s ? c.rules.s : "", PRIMITIVES, c.need_value ? VALUE : "");
        if (out.oom || c.rules.oom) {
            free(out.s);
            s = mt_error(MT_ERR_NOMEM, "JSON Schema: out of memory");
        } else {
            *gbnf = out.s;
        }
    }
    for (int i = 0; i < c.n_refs; i++) free(c.refs[i].ref);
    free(c.refs);
    free(c.rules.s);
    json_decref(root);
    return s;
}

mt_status mt_grammar_load_json_schema(const char *path, mt_grammar **out) {
    char *text = NULL, *gbnf = NULL;
    size_t len = 0;
    *out = NULL;
    mt_status s = mt_file_read_all(path, MAX_SCHEMA_BYTES, &text, &len);
    if (s) return s;
    s = mt_json_schema_to_gbnf(text, len, &gbnf);
    free(text);
    if (!s) s = mt_grammar_compile(gbnf, strlen(gbnf), out);
    free(gbnf);
    if (s) return mt_error_prefix(s, "%s", path);
    return MT_OK;
}
