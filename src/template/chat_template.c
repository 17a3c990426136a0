/* Chat-template engine: the part of Jinja2 that Hugging Face chat templates use.
 *
 * A template goes through three stages. The lexer turns the source into tokens: text
 * between tags (with Jinja's whitespace rules already applied, as transformers configures
 * them: trim_blocks, lstrip_blocks, and the - / + markers) and the expression tokens inside
 * {{ }} and {% %}. A recursive-descent parser that follows Jinja's own grammar (same
 * precedence, same quirks: filters bind tighter than unary minus, tests bind like filters,
 * ** is left-associative) builds an AST in an arena owned by the template. The evaluator
 * walks the AST over a small value type (undefined, none, bool, int, float, string, list,
 * dict, namespace, builtin function) with Python's semantics for the operations templates
 * use: truthiness, equality, str() and repr() of values, floor division and modulo,
 * slicing by code points, json.dumps for tojson.
 *
 * Values are reference counted; strings and lists are immutable once built, so sharing
 * is safe. Namespaces are the only mutable values; to keep the value graph acyclic (and
 * so free of leaks) a namespace may be bound to a variable but never stored inside a list,
 * dict or another namespace. Constants of the template are "immortal" (never counted), so
 * several threads can render one compiled template at the same time.
 *
 * Untrusted templates cannot hurt the process: nesting depth is checked while parsing (so
 * evaluation recursion is bounded), containers built at render time have a bounded depth,
 * every string and the output have a size cap, the values alive during a render have a
 * memory cap, and a work counter stops templates that loop for too long. */
#include "template/chat_template.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/error.h"

#define MAX_SOURCE ((size_t)4 << 20)      /* template text */
#define MAX_STRING MT_CHAT_TEMPLATE_MAX_OUTPUT
#define MAX_LIVE_BYTES ((size_t)256 << 20) /* values alive at once during one render */
#define MAX_WORK 5000000L                 /* evaluation steps (plus bytes copied / 256) */
#define MAX_NEST 100                      /* nested blocks, brackets and parentheses */
#define MAX_HEIGHT 400                    /* height of one expression tree */
#define MAX_VALUE_DEPTH 64                /* nesting of lists and dicts built at render time */
#define MAX_LIST (1 << 20)
#define MAX_RANGE 100000                  /* range() length: Jinja's sandbox limit */
#define MAX_ARGS 32

/* ======================================================================================
 * Values
 * ==================================================================================== */

typedef enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_NS, V_FUNC } vkind;

#define IMMORTAL UINT32_MAX

typedef struct {
    uint32_t refs;  /* IMMORTAL for template constants */
    uint32_t depth; /* 1 + deepest nested container (lists and dicts) */
    size_t bytes;   /* counted against MAX_LIVE_BYTES */
} heap_hdr;

typedef struct value value;

typedef struct {
    heap_hdr h;
    size_t len;
    char s[]; /* NUL-terminated */
} str_obj;

typedef struct {
    heap_hdr h;
    int n, cap;
    int tuple; /* a Python tuple: prints as (a, b) and differs from the list [a, b] */
    value *items;
} list_obj;

typedef struct { /* dicts and namespaces: insertion-ordered, linear lookup (they are small) */
    heap_hdr h;
    int n, cap;
    value *keys, *vals;
} dict_obj;

enum { FN_RAISE_EXCEPTION, FN_NAMESPACE, FN_RANGE, FN_DICT };

struct value {
    vkind kind;
    union {
        int b;
        int64_t i;
        double f;
        str_obj *s;
        list_obj *l;
        dict_obj *d; /* V_DICT and V_NS */
        int fn;
        const char *hint; /* V_UNDEF: the name that was missing, for messages; may be NULL */
    } u;
};

/* Bytes held by the values alive in this thread's current render. */
static _Thread_local size_t live_bytes;

static value v_undef(const char *hint) { value v = {.kind = V_UNDEF}; v.u.hint = hint; return v; }
static value v_none(void) { value v = {.kind = V_NONE}; return v; }
static value v_bool(int b) { value v = {.kind = V_BOOL}; v.u.b = !!b; return v; }
static value v_int(int64_t i) { value v = {.kind = V_INT}; v.u.i = i; return v; }
static value v_float(double f) { value v = {.kind = V_FLOAT}; v.u.f = f; return v; }
static value v_func(int fn) { value v = {.kind = V_FUNC}; v.u.fn = fn; return v; }

static int is_heap(value v) { return v.kind == V_STR || v.kind == V_LIST || v.kind == V_DICT || v.kind == V_NS; }
static heap_hdr *hdr(value v) { return v.kind == V_STR ? &v.u.s->h : v.kind == V_LIST ? &v.u.l->h : &v.u.d->h; }

static value v_ref(value v) {
    if (is_heap(v) && hdr(v)->refs != IMMORTAL) hdr(v)->refs++;
    return v;
}

static void heap_release(heap_hdr *h, void *obj) {
    live_bytes -= h->bytes < live_bytes ? h->bytes : live_bytes;
    free(obj);
}

/* Recursion here is bounded by MAX_VALUE_DEPTH: containers deeper than that are never built. */
static void v_drop(value v) {
    if (!is_heap(v) || hdr(v)->refs == IMMORTAL || --hdr(v)->refs > 0) return;
    if (v.kind == V_LIST) {
        for (int i = 0; i < v.u.l->n; i++) v_drop(v.u.l->items[i]);
        free(v.u.l->items);
        heap_release(&v.u.l->h, v.u.l);
    } else if (v.kind == V_DICT || v.kind == V_NS) {
        for (int i = 0; i < v.u.d->n; i++) { v_drop(v.u.d->keys[i]); v_drop(v.u.d->vals[i]); }
        free(v.u.d->keys);
        free(v.u.d->vals);
        heap_release(&v.u.d->h, v.u.d);
    } else {
        heap_release(&v.u.s->h, v.u.s);
    }
}

static int value_depth(value v) { return (v.kind == V_LIST || v.kind == V_DICT) ? (int)hdr(v)->depth : 0; }

static int is_number(value v) { return v.kind == V_BOOL || v.kind == V_INT || v.kind == V_FLOAT; }
static int is_integral(value v) { return v.kind == V_BOOL || v.kind == V_INT; }
static int64_t as_int(value v) { return v.kind == V_BOOL ? v.u.b : v.u.i; }
static double as_float(value v) { return v.kind == V_FLOAT ? v.u.f : (double)as_int(v); }

static const char *type_name(value v) {
    switch (v.kind) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "str";
    case V_LIST: return "list";
    case V_DICT: return "dict";
    case V_NS: return "Namespace";
    case V_FUNC: return "builtin_function_or_method";
    }
    return "?";
}

/* Python truthiness; undefined is false. */
static int truthy(value v) {
    switch (v.kind) {
    case V_UNDEF: case V_NONE: return 0;
    case V_BOOL: return v.u.b;
    case V_INT: return v.u.i != 0;
    case V_FLOAT: return v.u.f != 0.0;
    case V_STR: return v.u.s->len > 0;
    case V_LIST: return v.u.l->n > 0;
    case V_DICT: return v.u.d->n > 0;
    case V_NS: case V_FUNC: return 1;
    }
    return 0;
}

/* Python ==. Containers compare by contents (their depth is bounded). */
static int v_equal(value a, value b) {
    if (is_number(a) && is_number(b)) {
        if (is_integral(a) && is_integral(b)) return as_int(a) == as_int(b);
        return as_float(a) == as_float(b);
    }
    if (a.kind != b.kind) return 0;
    switch (a.kind) {
    case V_UNDEF: case V_NONE: return 1;
    case V_STR: return a.u.s->len == b.u.s->len && memcmp(a.u.s->s, b.u.s->s, a.u.s->len) == 0;
    case V_LIST:
        if (a.u.l->n != b.u.l->n || a.u.l->tuple != b.u.l->tuple) return 0;
        for (int i = 0; i < a.u.l->n; i++) if (!v_equal(a.u.l->items[i], b.u.l->items[i])) return 0;
        return 1;
    case V_DICT:
        if (a.u.d->n != b.u.d->n) return 0;
        for (int i = 0; i < a.u.d->n; i++) {
            int found = 0;
            for (int j = 0; j < b.u.d->n && !found; j++)
                if (v_equal(a.u.d->keys[i], b.u.d->keys[j])) {
                    if (!v_equal(a.u.d->vals[i], b.u.d->vals[j])) return 0;
                    found = 1;
                }
            if (!found) return 0;
        }
        return 1;
    case V_NS: return a.u.d == b.u.d;
    case V_FUNC: return a.u.fn == b.u.fn;
    default: return 0;
    }
}

/* ======================================================================================
 * UTF-8: strings are indexed, sliced and counted by code point, as Python does.
 * An invalid byte counts as one code point.
 * ==================================================================================== */

static size_t u8_next(const char *s, size_t n, size_t i) {
    unsigned char c = (unsigned char)s[i];
    size_t want = c < 0x80 ? 0 : c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    size_t j = i + 1;
    while (want-- > 0 && j < n && ((unsigned char)s[j] & 0xC0) == 0x80) j++;
    return j;
}

static size_t u8_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i = u8_next(s, n, i)) k++;
    return k;
}

static uint32_t u8_decode(const char *s, size_t n, size_t i) {
    size_t j = u8_next(s, n, i);
    unsigned char c = (unsigned char)s[i];
    if (j - i == 1) return c;
    uint32_t cp = c & (j - i == 2 ? 0x1F : j - i == 3 ? 0x0F : 0x07);
    for (size_t k = i + 1; k < j; k++) cp = (cp << 6) | ((unsigned char)s[k] & 0x3F);
    return cp;
}

static int u8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Python's str.isspace() for the ASCII range (Unicode spaces are not recognised). */
static int py_space(char ch) {
    unsigned char c = (unsigned char)ch;
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* ======================================================================================
 * Arena: the template's tokens, AST and constants live here and are freed at once.
 * ==================================================================================== */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

typedef struct { arena_block *head; } arena;

static void *arena_alloc(arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        arena_block *b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

static void arena_free(arena *a) {
    for (arena_block *b = a->head, *next; b; b = next) { next = b->next; free(b); }
    a->head = NULL;
}

/* An immortal string constant in the arena. */
static str_obj *arena_str(arena *a, const char *s, size_t n) {
    str_obj *o = arena_alloc(a, sizeof *o + n + 1);
    if (!o) return NULL;
    o->h.refs = IMMORTAL;
    o->h.depth = 0;
    o->h.bytes = 0;
    o->len = n;
    memcpy(o->s, s, n);
    o->s[n] = 0;
    return o;
}

/* ======================================================================================
 * Errors carry the line and column of the template source they point at.
 * ==================================================================================== */

static void line_col(const char *src, size_t off, int *line, int *col) {
    int l = 1;
    size_t start = 0;
    for (size_t i = 0; i < off && src[i]; i++)
        if (src[i] == '\n') { l++; start = i + 1; }
    *line = l;
    *col = 1 + (int)u8_count(src + start, off - start);
}

static mt_status vfail_at(const char *src, size_t off, mt_status code, const char *fmt, va_list ap) {
    char msg[768];
    int line, col;
    vsnprintf(msg, sizeof msg, fmt, ap);
    line_col(src, off, &line, &col);
    return mt_error(code, "chat template line %d, column %d: %s", line, col, msg);
}

/* ======================================================================================
 * Tokens
 * ==================================================================================== */

typedef enum {
    T_EOF, T_TEXT, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END,
    T_NAME, T_STRING, T_INT, T_FLOAT, T_OP
} tkind;

/* Operators are their character, or one of these for two-character operators; OP_IN and
 * OP_NOTIN are the comparisons "in" and "not in" (spelled with names). */
enum { OP_EQ = 256, OP_NE, OP_LE, OP_GE, OP_FLOORDIV, OP_POW, OP_IN, OP_NOTIN };

typedef struct {
    tkind kind;
    int op;             /* T_OP */
    uint32_t off;       /* byte offset in the normalized source */
    const char *s;      /* T_NAME: the name; T_TEXT, T_STRING: decoded text (arena, NUL-terminated) */
    size_t len;
    str_obj *obj;       /* T_NAME, T_TEXT: the same text as an immortal string value */
    int64_t i;          /* T_INT */
    double f;           /* T_FLOAT */
} token;

typedef struct {
    const char *src; /* normalized source */
    size_t n;
    arena *ar;
    token *toks;
    int n_toks, cap_toks;
    mt_status status;
} lexer;

static int lex_fail(lexer *lx, size_t off, mt_status code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int lex_fail(lexer *lx, size_t off, mt_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (lx->status == MT_OK) lx->status = vfail_at(lx->src, off, code, fmt, ap);
    va_end(ap);
    return -1;
}

static token *lex_push(lexer *lx, tkind kind, size_t off) {
    if (lx->n_toks == lx->cap_toks) {
        int cap = lx->cap_toks ? lx->cap_toks * 2 : 256;
        token *t = realloc(lx->toks, (size_t)cap * sizeof *t);
        if (!t) { lex_fail(lx, off, MT_ERR_NOMEM, "out of memory"); return NULL; }
        lx->toks = t;
        lx->cap_toks = cap;
    }
    token *t = &lx->toks[lx->n_toks++];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->off = (uint32_t)off;
    return t;
}

static int lex_text(lexer *lx, size_t a, size_t b) {
    if (b <= a) return 0;
    token *t = lex_push(lx, T_TEXT, a);
    if (!t) return -1;
    str_obj *o = arena_str(lx->ar, lx->src + a, b - a);
    if (!o) return lex_fail(lx, a, MT_ERR_NOMEM, "out of memory");
    t->s = o->s;
    t->len = b - a;
    t->obj = o;
    return 0;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes one backslash escape at src[*i] (the character after the backslash) into out,
 * with Python's string-literal rules; unknown escapes keep their backslash. */
static int lex_escape(lexer *lx, size_t *i, char *out, size_t *o) {
    const char *s = lx->src;
    size_t at = *i - 1;
    char c = s[(*i)++];
    uint32_t cp;
    switch (c) {
    case '\n': return 0; /* line continuation */
    case '\\': case '\'': case '"': out[(*o)++] = c; return 0;
    case 'a': out[(*o)++] = '\a'; return 0;
    case 'b': out[(*o)++] = '\b'; return 0;
    case 'f': out[(*o)++] = '\f'; return 0;
    case 'n': out[(*o)++] = '\n'; return 0;
    case 'r': out[(*o)++] = '\r'; return 0;
    case 't': out[(*o)++] = '\t'; return 0;
    case 'v': out[(*o)++] = '\v'; return 0;
    case 'x': case 'u': case 'U': {
        int digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        cp = 0;
        for (int k = 0; k < digits; k++) {
            int h = hex_value(s[*i]);
            if (h < 0) return lex_fail(lx, at, MT_ERR_FORMAT, "truncated \\%c escape in string literal", c);
            cp = cp * 16 + (uint32_t)h;
            (*i)++;
        }
        break;
    }
    default:
        if (c >= '0' && c <= '7') {
            cp = (uint32_t)(c - '0');
            for (int k = 0; k < 2 && s[*i] >= '0' && s[*i] <= '7'; k++) cp = cp * 8 + (uint32_t)(s[(*i)++] - '0');
            break;
        }
        out[(*o)++] = '\\'; /* not an escape: Python keeps both characters */
        out[(*o)++] = c;
        return 0;
    }
    if (cp == 0) return lex_fail(lx, at, MT_ERR_UNSUPPORTED, "NUL characters in strings are not supported");
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return lex_fail(lx, at, MT_ERR_FORMAT, "invalid code point U+%X in string literal", (unsigned)cp);
    *o += (size_t)u8_encode(cp, out + *o);
    return 0;
}

static int lex_string(lexer *lx, size_t *pos) {
    const char *s = lx->src;
    size_t start = *pos, i = start + 1;
    char quote = s[start];
    while (i < lx->n && s[i] != quote) i += (s[i] == '\\' && i + 1 < lx->n) ? 2 : 1;
    if (i >= lx->n) return lex_fail(lx, start, MT_ERR_FORMAT, "unterminated string literal");
    size_t end = i;
    /* decoded text is never longer than the source (every escape shrinks or keeps length) */
    char *out = arena_alloc(lx->ar, end - start + 1);
    if (!out) return lex_fail(lx, start, MT_ERR_NOMEM, "out of memory");
    size_t o = 0;
    for (i = start + 1; i < end;) {
        if (s[i] == '\\') {
            i++;
            if (lex_escape(lx, &i, out, &o)) return -1;
        } else {
            out[o++] = s[i++];
        }
    }
    out[o] = 0;
    token *t = lex_push(lx, T_STRING, start);
    if (!t) return -1;
    t->s = out;
    t->len = o;
    *pos = end + 1;
    return 0;
}

/* Integers (with optional _ separators) and floats (1.5, 2e3, 1.5e-3). */
static int lex_number(lexer *lx, size_t *pos) {
    const char *s = lx->src;
    size_t start = *pos, i = start;
    char buf[128];
    size_t k = 0;
    int is_float = 0;
    while (i < lx->n && (isdigit((unsigned char)s[i]) || (s[i] == '_' && i + 1 < lx->n && isdigit((unsigned char)s[i + 1])))) {
        if (s[i] != '_' && k < sizeof buf - 1) buf[k++] = s[i];
        i++;
    }
    if (i + 1 < lx->n && s[i] == '.' && isdigit((unsigned char)s[i + 1])) {
        is_float = 1;
        if (k < sizeof buf - 1) buf[k++] = s[i];
        for (i++; i < lx->n && (isdigit((unsigned char)s[i]) || s[i] == '_'); i++)
            if (s[i] != '_' && k < sizeof buf - 1) buf[k++] = s[i];
    }
    if (i < lx->n && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < lx->n && (s[j] == '+' || s[j] == '-')) j++;
        if (j < lx->n && isdigit((unsigned char)s[j])) {
            is_float = 1;
            for (; i < j; i++) if (k < sizeof buf - 1) buf[k++] = s[i];
            for (; i < lx->n && isdigit((unsigned char)s[i]); i++) if (k < sizeof buf - 1) buf[k++] = s[i];
        }
    }
    buf[k] = 0;
    if (k >= sizeof buf - 1) return lex_fail(lx, start, MT_ERR_FORMAT, "number literal too long");
    token *t = lex_push(lx, is_float ? T_FLOAT : T_INT, start);
    if (!t) return -1;
    if (is_float) {
        t->f = strtod(buf, NULL);
    } else {
        int64_t v = 0;
        for (size_t j = 0; j < k; j++) {
            if (v > (INT64_MAX - (buf[j] - '0')) / 10) return lex_fail(lx, start, MT_ERR_UNSUPPORTED, "integer literal too large");
            v = v * 10 + (buf[j] - '0');
        }
        t->i = v;
    }
    *pos = i;
    return 0;
}

static int lex_name(lexer *lx, size_t *pos) {
    const char *s = lx->src;
    size_t start = *pos, i = start;
    while (i < lx->n && (isalnum((unsigned char)s[i]) || s[i] == '_')) i++;
    token *t = lex_push(lx, T_NAME, start);
    if (!t) return -1;
    str_obj *o = arena_str(lx->ar, s + start, i - start);
    if (!o) return lex_fail(lx, start, MT_ERR_NOMEM, "out of memory");
    t->s = o->s;
    t->len = i - start;
    t->obj = o;
    *pos = i;
    return 0;
}

static int lex_operator(lexer *lx, size_t *pos, char *stack, int *depth) {
    static const struct { const char *text; int op; } two[] = {
        {"==", OP_EQ}, {"!=", OP_NE}, {"<=", OP_LE}, {">=", OP_GE}, {"//", OP_FLOORDIV}, {"**", OP_POW},
    };
    const char *s = lx->src + *pos;
    for (size_t k = 0; k < sizeof two / sizeof two[0]; k++)
        if (*pos + 1 < lx->n && s[0] == two[k].text[0] && s[1] == two[k].text[1]) {
            token *t = lex_push(lx, T_OP, *pos);
            if (!t) return -1;
            t->op = two[k].op;
            *pos += 2;
            return 0;
        }
    char c = s[0];
    if (!strchr("+-*/%~()[]{},.:|=<>;", c) || c == 0) {
        if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f)
            return lex_fail(lx, *pos, MT_ERR_FORMAT, "unexpected character '%c'", c);
        return lex_fail(lx, *pos, MT_ERR_FORMAT, "unexpected byte 0x%02x", (unsigned char)c);
    }
    if (c == '(' || c == '[' || c == '{') {
        if (*depth >= MAX_NEST) return lex_fail(lx, *pos, MT_ERR_FORMAT, "brackets nest too deeply");
        stack[(*depth)++] = c;
    } else if (c == ')' || c == ']' || c == '}') {
        char open = c == ')' ? '(' : c == ']' ? '[' : '{';
        if (*depth == 0 || stack[*depth - 1] != open) return lex_fail(lx, *pos, MT_ERR_FORMAT, "unexpected '%c'", c);
        (*depth)--;
    }
    token *t = lex_push(lx, T_OP, *pos);
    if (!t) return -1;
    t->op = c;
    (*pos)++;
    return 0;
}

/* Skips whitespace after a tag: all of it after a '-' marker, one newline after a block
 * or comment tag (trim_blocks), nothing after '+' or after }}. */
static size_t after_tag(const lexer *lx, size_t pos, int strip, int trim) {
    if (strip) while (pos < lx->n && py_space(lx->src[pos])) pos++;
    else if (trim && pos < lx->n && lx->src[pos] == '\n') pos++;
    return pos;
}

/* Tokens of one {{ }} or {% %} tag, from just after its opening marker; *pos ends after
 * the closing marker and its whitespace handling. */
static int lex_tag(lexer *lx, size_t *pos, size_t tag_off, int is_block) {
    const char *s = lx->src;
    char stack[MAX_NEST];
    int depth = 0;
    size_t i = *pos;
    for (;;) {
        while (i < lx->n && py_space(s[i])) i++;
        if (i >= lx->n)
            return lex_fail(lx, tag_off, MT_ERR_FORMAT, "unclosed tag: expected '%s'", is_block ? "%}" : "}}");
        if (depth == 0) {
            const char *close = is_block ? "%}" : "}}";
            int sign = (s[i] == '-' || (is_block && s[i] == '+')) ? s[i] : 0;
            size_t m = i + (sign ? 1 : 0);
            if (m + 1 < lx->n && s[m] == close[0] && s[m + 1] == close[1]) {
                if (!lex_push(lx, is_block ? T_BLOCK_END : T_VAR_END, i)) return -1;
                *pos = after_tag(lx, m + 2, sign == '-', is_block && sign != '+');
                return 0;
            }
        }
        unsigned char c = (unsigned char)s[i];
        int rc;
        if (isalpha(c) || c == '_') rc = lex_name(lx, &i);
        else if (isdigit(c)) rc = lex_number(lx, &i);
        else if (c == '\'' || c == '"') rc = lex_string(lx, &i);
        else rc = lex_operator(lx, &i, stack, &depth);
        if (rc) return -1;
    }
}

static size_t find_tag(const lexer *lx, size_t pos) {
    const char *s = lx->src;
    while (pos + 1 < lx->n) {
        const char *p = memchr(s + pos, '{', lx->n - pos - 1);
        if (!p) break;
        pos = (size_t)(p - s);
        if (s[pos + 1] == '{' || s[pos + 1] == '%' || s[pos + 1] == '#') return pos;
        pos++;
    }
    return lx->n;
}

/* The text before a tag, with the tag's left whitespace control: '-' strips all trailing
 * whitespace; otherwise lstrip_blocks removes spaces and tabs between the start of the line
 * and a {% or {# tag. line_starting: the text begins a line (start of the template, or the
 * previous tag's match ended with a newline), as Jinja's lexer tracks it. */
static size_t text_end(const lexer *lx, size_t a, size_t b, char kind, char sign, int line_starting) {
    const char *s = lx->src;
    if (sign == '-') {
        while (b > a && py_space(s[b - 1])) b--;
    } else if (sign != '+' && kind != '{') {
        size_t l = b;
        while (l > a && s[l - 1] != '\n') l--;
        if (l > a || line_starting) {
            size_t k = l;
            while (k < b && py_space(s[k]) && s[k] != '\n') k++;
            if (k == b && b > l) b = l;
        }
    }
    return b;
}

static int lex_template(lexer *lx) {
    const char *s = lx->src;
    size_t pos = 0;
    int line_starting = 1;
    while (pos < lx->n) {
        size_t t = find_tag(lx, pos);
        char kind = t < lx->n ? s[t + 1] : 0;
        char sign = (t + 2 < lx->n && (s[t + 2] == '-' || s[t + 2] == '+')) ? s[t + 2] : 0;
        if (lex_text(lx, pos, t < lx->n ? text_end(lx, pos, t, kind, sign, line_starting) : t)) return -1;
        if (t >= lx->n) break;
        size_t body = t + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            size_t e = body;
            while (e + 1 < lx->n && !(s[e] == '#' && s[e + 1] == '}')) e++;
            if (e + 1 >= lx->n) return lex_fail(lx, t, MT_ERR_FORMAT, "unclosed comment: expected '#}'");
            char close_sign = (e > body && (s[e - 1] == '-' || s[e - 1] == '+')) ? s[e - 1] : 0;
            pos = after_tag(lx, e + 2, close_sign == '-', close_sign != '+');
        } else {
            if (!lex_push(lx, kind == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, t)) return -1;
            pos = body;
            if (lex_tag(lx, &pos, t, kind == '%')) return -1;
        }
        line_starting = pos > 0 && s[pos - 1] == '\n';
    }
    return lex_push(lx, T_EOF, lx->n) ? 0 : -1;
}

/* ======================================================================================
 * AST. Nodes live in the template's arena; fields are used as listed for each kind.
 * ==================================================================================== */

typedef enum {
    /* statements */
    N_TEXT,       /* k: the text */
    N_OUTPUT,     /* a: the expression printed */
    N_IF,         /* args[i]: condition of branch i, branches[i]: its body; orelse */
    N_FOR,        /* names[n_names]: targets; a: iterable; b: filter or NULL; body; orelse */
    N_SET,        /* name = a */
    N_SET_ATTR,   /* name.attr = a (name is a namespace); k: attr as a string */
    N_SET_BLOCK,  /* name = rendered body */
    N_BREAK,
    N_CONTINUE,
    N_GENERATION, /* transformers' {% generation %}: its body renders as is */
    /* expressions */
    N_CONST,      /* k */
    N_NAME,       /* name */
    N_ATTR,       /* a.name */
    N_ITEM,       /* a[b] */
    N_SLICE,      /* a[b:c:d]; b, c, d may be NULL */
    N_CALL,       /* a(args..., names[i] = kwargs[i]...) */
    N_FILTER,     /* a | filter fn (args, names = kwargs) */
    N_TEST,       /* a is [not] test fn (args); op: negated */
    N_NEG,        /* -a */
    N_POS,        /* +a */
    N_NOT,        /* not a */
    N_BINOP,      /* a op b, op one of + - * / % ~ OP_FLOORDIV OP_POW */
    N_AND,        /* a and b */
    N_OR,         /* a or b */
    N_COMPARE,    /* a ops[0] args[0] ops[1] args[1] ... (chained, as in Python) */
    N_COND,       /* a if b else c; c may be NULL */
    N_LIST,       /* [args...]; op: 1 for a tuple (a, b) */
    N_DICT,       /* {args[i]: kwargs[i]} */
} nkind;

typedef struct node node;
typedef struct { node **v; int n; } nlist;

struct node {
    nkind kind;
    uint32_t off; /* where it starts in the normalized source */
    int op, fn, height;
    const char *name, *attr;
    node *a, *b, *c, *d;
    nlist body, orelse, args, kwargs;
    nlist *branches;
    const char **names;
    int n_names;
    int *ops;
    value k;
};

/* ======================================================================================
 * Filters, tests and builtins are looked up by name while parsing (as Jinja does), so an
 * unknown one is a compile error. Their implementations come later in the file.
 * ==================================================================================== */

typedef struct rctx rctx;
typedef struct {
    const value *pos;
    int n_pos;
    const char *const *kw_names;
    const value *kw;
    int n_kw;
} callargs;

typedef int (*filter_fn)(rctx *c, const node *at, value in, const callargs *a, value *out);
typedef int (*test_fn)(rctx *c, const node *at, value in, const callargs *a, int *result);

typedef struct { const char *name; filter_fn fn; } filter_def;
typedef struct { const char *name; test_fn fn; } test_def;

static int find_filter(const char *name);
static int find_test(const char *name);
static int run_filter(rctx *c, const node *at, int fn, value in, const callargs *a, value *out);
static int run_test(rctx *c, const node *at, int fn, value in, const callargs *a, int *result);

/* ======================================================================================
 * Parser: recursive descent over the tokens, following Jinja's grammar function by function
 * (parse_condexpr, parse_or, ... parse_primary, parse_postfix, parse_filter_expr).
 * ==================================================================================== */

typedef struct {
    const token *tok;
    int pos, n;
    arena *ar;
    const char *src;
    int depth; /* nesting of blocks and sub-expressions */
    int loops; /* enclosing for-loops, for break / continue */
    mt_status status;
} parser;

static node *perr(parser *p, size_t off, mt_status code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static node *perr(parser *p, size_t off, mt_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (p->status == MT_OK) p->status = vfail_at(p->src, off, code, fmt, ap);
    va_end(ap);
    return NULL;
}

static const token *cur(const parser *p) { return &p->tok[p->pos]; }
static const token *peek(const parser *p, int k) { return &p->tok[p->pos + k < p->n ? p->pos + k : p->n - 1]; }
static int is_op(const token *t, int op) { return t->kind == T_OP && t->op == op; }
static int is_name(const token *t, const char *s) { return t->kind == T_NAME && strcmp(t->s, s) == 0; }

static const char *describe(const token *t, char *buf, size_t cap) {
    switch (t->kind) {
    case T_EOF: return "end of template";
    case T_TEXT: return "template text";
    case T_VAR_BEGIN: return "'{{'";
    case T_VAR_END: return "'}}'";
    case T_BLOCK_BEGIN: return "'{%'";
    case T_BLOCK_END: return "'%}'";
    case T_NAME: snprintf(buf, cap, "'%.40s'", t->s); return buf;
    case T_STRING: return "string";
    case T_INT: return "integer";
    case T_FLOAT: return "float";
    case T_OP: break;
    }
    static const char *two[] = {"==", "!=", "<=", ">=", "//", "**"};
    if (t->op >= OP_EQ && t->op <= OP_POW) snprintf(buf, cap, "'%s'", two[t->op - OP_EQ]);
    else snprintf(buf, cap, "'%c'", t->op);
    return buf;
}

static node *unexpected(parser *p, const char *wanted) {
    char buf[64];
    const token *t = cur(p);
    if (wanted) return perr(p, t->off, MT_ERR_FORMAT, "expected %s, got %s", wanted, describe(t, buf, sizeof buf));
    return perr(p, t->off, MT_ERR_FORMAT, "unexpected %s", describe(t, buf, sizeof buf));
}

static int expect_op(parser *p, int op, const char *wanted) {
    if (!is_op(cur(p), op)) { unexpected(p, wanted); return -1; }
    p->pos++;
    return 0;
}

static int expect_kind(parser *p, tkind kind, const char *wanted) {
    if (cur(p)->kind != kind) { unexpected(p, wanted); return -1; }
    p->pos++;
    return 0;
}

static int enter(parser *p) {
    if (++p->depth > MAX_NEST) { perr(p, cur(p)->off, MT_ERR_FORMAT, "template nests too deeply"); return -1; }
    return 0;
}
static void leave(parser *p) { p->depth--; }

static node *new_node(parser *p, nkind kind, size_t off) {
    node *n = arena_alloc(p->ar, sizeof *n);
    if (!n) return perr(p, off, MT_ERR_NOMEM, "out of memory");
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->off = (uint32_t)off;
    n->height = 1;
    return n;
}

/* Growable node list, moved into the arena when it grows. */
typedef struct { node **v; int n, cap; } nbuf;

static int nbuf_push(parser *p, nbuf *b, node *n) {
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 8;
        node **v = arena_alloc(p->ar, (size_t)cap * sizeof *v);
        if (!v) { perr(p, n->off, MT_ERR_NOMEM, "out of memory"); return -1; }
        if (b->n) memcpy(v, b->v, (size_t)b->n * sizeof *v);
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = n;
    return 0;
}

static nlist nbuf_list(const nbuf *b) { nlist l = {b->v, b->n}; return l; }

/* Records the height of a finished expression node; evaluation recurses that deep. */
static node *finish(parser *p, node *n) {
    int h = 0;
    node *kids[4] = {n->a, n->b, n->c, n->d};
    for (int i = 0; i < 4; i++) if (kids[i] && kids[i]->height > h) h = kids[i]->height;
    for (int i = 0; i < n->args.n; i++) if (n->args.v[i]->height > h) h = n->args.v[i]->height;
    for (int i = 0; i < n->kwargs.n; i++) if (n->kwargs.v[i]->height > h) h = n->kwargs.v[i]->height;
    n->height = h + 1;
    if (n->height > MAX_HEIGHT) return perr(p, n->off, MT_ERR_FORMAT, "expression nests too deeply");
    return n;
}

static node *parse_expression(parser *p, int with_condexpr);
static node *parse_tuple(parser *p, int with_condexpr, int explicit_parens);
static node *parse_unary(parser *p, int with_filter);
static node *parse_postfix(parser *p, node *e);

static node *binop(parser *p, nkind kind, int op, size_t off, node *left, node *right) {
    if (!left || !right) return NULL;
    node *n = new_node(p, kind, off);
    if (!n) return NULL;
    n->op = op;
    n->a = left;
    n->b = right;
    return finish(p, n);
}

static node *parse_const(parser *p, value k, size_t off) {
    node *n = new_node(p, N_CONST, off);
    if (n) n->k = k;
    return n;
}

static node *parse_list(parser *p) {
    size_t off = cur(p)->off;
    node *n = new_node(p, N_LIST, off);
    nbuf items = {0};
    if (!n || expect_op(p, '[', "'['")) return NULL;
    while (!is_op(cur(p), ']')) {
        if (items.n && expect_op(p, ',', "',' or ']'")) return NULL;
        if (is_op(cur(p), ']')) break;
        node *e = parse_expression(p, 1);
        if (!e || nbuf_push(p, &items, e)) return NULL;
    }
    p->pos++;
    n->args = nbuf_list(&items);
    return finish(p, n);
}

static node *parse_dict(parser *p) {
    size_t off = cur(p)->off;
    node *n = new_node(p, N_DICT, off);
    nbuf keys = {0}, vals = {0};
    if (!n || expect_op(p, '{', "'{'")) return NULL;
    while (!is_op(cur(p), '}')) {
        if (keys.n && expect_op(p, ',', "',' or '}'")) return NULL;
        if (is_op(cur(p), '}')) break;
        node *k = parse_expression(p, 1);
        if (!k || expect_op(p, ':', "':'")) return NULL;
        node *v = parse_expression(p, 1);
        if (!v || nbuf_push(p, &keys, k) || nbuf_push(p, &vals, v)) return NULL;
    }
    p->pos++;
    n->args = nbuf_list(&keys);
    n->kwargs = nbuf_list(&vals);
    return finish(p, n);
}

static node *parse_primary(parser *p) {
    const token *t = cur(p);
    if (t->kind == T_NAME) {
        p->pos++;
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) return parse_const(p, v_bool(1), t->off);
        if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) return parse_const(p, v_bool(0), t->off);
        if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) return parse_const(p, v_none(), t->off);
        node *n = new_node(p, N_NAME, t->off);
        if (n) n->name = t->s;
        return n;
    }
    if (t->kind == T_STRING) {
        /* adjacent string literals concatenate, as in Python */
        size_t len = 0;
        int k = p->pos;
        for (; p->tok[k].kind == T_STRING; k++) len += p->tok[k].len;
        str_obj *o = arena_alloc(p->ar, sizeof *o + len + 1);
        if (!o) return perr(p, t->off, MT_ERR_NOMEM, "out of memory");
        o->h.refs = IMMORTAL;
        o->h.depth = 0;
        o->h.bytes = 0;
        o->len = 0;
        for (; p->pos < k; p->pos++) {
            memcpy(o->s + o->len, p->tok[p->pos].s, p->tok[p->pos].len);
            o->len += p->tok[p->pos].len;
        }
        o->s[o->len] = 0;
        value v = {.kind = V_STR};
        v.u.s = o;
        return parse_const(p, v, t->off);
    }
    if (t->kind == T_INT) { p->pos++; return parse_const(p, v_int(t->i), t->off); }
    if (t->kind == T_FLOAT) { p->pos++; return parse_const(p, v_float(t->f), t->off); }
    if (is_op(t, '(')) {
        p->pos++;
        node *e = parse_tuple(p, 1, 1);
        if (!e || expect_op(p, ')', "')'")) return NULL;
        return e;
    }
    if (is_op(t, '[')) return parse_list(p);
    if (is_op(t, '{')) return parse_dict(p);
    return unexpected(p, "an expression");
}

/* (args..., name=value...) into n->args, n->names / n->kwargs. */
static int parse_call_args(parser *p, node *n) {
    nbuf args = {0}, kwargs = {0};
    const char *names[MAX_ARGS];
    if (expect_op(p, '(', "'('")) return -1;
    while (!is_op(cur(p), ')')) {
        if (args.n + kwargs.n > 0) {
            if (expect_op(p, ',', "',' or ')'")) return -1;
            if (is_op(cur(p), ')')) break;
        }
        if (is_op(cur(p), '*') || is_op(cur(p), OP_POW)) {
            perr(p, cur(p)->off, MT_ERR_UNSUPPORTED, "*args and **kwargs are not supported");
            return -1;
        }
        if (args.n + kwargs.n >= MAX_ARGS) { perr(p, cur(p)->off, MT_ERR_UNSUPPORTED, "too many arguments"); return -1; }
        if (cur(p)->kind == T_NAME && is_op(peek(p, 1), '=')) {
            names[kwargs.n] = cur(p)->s;
            p->pos += 2;
            node *e = parse_expression(p, 1);
            if (!e || nbuf_push(p, &kwargs, e)) return -1;
        } else {
            if (kwargs.n) { perr(p, cur(p)->off, MT_ERR_FORMAT, "positional argument after keyword argument"); return -1; }
            node *e = parse_expression(p, 1);
            if (!e || nbuf_push(p, &args, e)) return -1;
        }
    }
    p->pos++;
    n->args = nbuf_list(&args);
    n->kwargs = nbuf_list(&kwargs);
    n->n_names = kwargs.n;
    if (kwargs.n) {
        n->names = arena_alloc(p->ar, (size_t)kwargs.n * sizeof *n->names);
        if (!n->names) { perr(p, n->off, MT_ERR_NOMEM, "out of memory"); return -1; }
        memcpy(n->names, names, (size_t)kwargs.n * sizeof *names);
    }
    return 0;
}

static node *parse_call(parser *p, node *callee) {
    node *n = new_node(p, N_CALL, callee->off);
    if (!n) return NULL;
    n->a = callee;
    if (parse_call_args(p, n)) return NULL;
    return finish(p, n);
}

static node *parse_subscript(parser *p, node *obj) {
    const token *t = cur(p);
    p->pos++;
    if (is_op(t, '.')) {
        const token *a = cur(p);
        p->pos++;
        if (a->kind == T_NAME) {
            node *n = new_node(p, N_ATTR, t->off);
            if (!n) return NULL;
            n->a = obj;
            n->name = a->s;
            return finish(p, n);
        }
        if (a->kind != T_INT) { p->pos--; return unexpected(p, "a name or number after '.'"); }
        node *n = new_node(p, N_ITEM, t->off);
        if (!n || !(n->b = parse_const(p, v_int(a->i), a->off))) return NULL;
        n->a = obj;
        return finish(p, n);
    }
    node *start = NULL, *stop = NULL, *step = NULL;
    int is_slice = 0;
    if (is_op(cur(p), ']')) return unexpected(p, "a subscript");
    if (!is_op(cur(p), ':') && !(start = parse_expression(p, 1))) return NULL;
    if (is_op(cur(p), ':')) {
        is_slice = 1;
        p->pos++;
        if (!is_op(cur(p), ']') && !is_op(cur(p), ':') && !(stop = parse_expression(p, 1))) return NULL;
        if (is_op(cur(p), ':')) {
            p->pos++;
            if (!is_op(cur(p), ']') && !(step = parse_expression(p, 1))) return NULL;
        }
    }
    if (is_op(cur(p), ',')) return perr(p, cur(p)->off, MT_ERR_UNSUPPORTED, "tuple subscripts are not supported");
    if (expect_op(p, ']', "']'")) return NULL;
    node *n = new_node(p, is_slice ? N_SLICE : N_ITEM, t->off);
    if (!n) return NULL;
    n->a = obj;
    n->b = start;
    n->c = stop;
    n->d = step;
    return finish(p, n);
}

static node *parse_postfix(parser *p, node *e) {
    while (e) {
        const token *t = cur(p);
        if (is_op(t, '.') || is_op(t, '[')) e = parse_subscript(p, e);
        else if (is_op(t, '(')) e = parse_call(p, e);
        else break;
    }
    return e;
}

static node *parse_filter(parser *p, node *e) {
    const token *t = cur(p);
    if (t->kind != T_NAME) return unexpected(p, "a filter name");
    p->pos++;
    if (is_op(cur(p), '.')) return perr(p, t->off, MT_ERR_UNSUPPORTED, "dotted filter names are not supported");
    int fn = find_filter(t->s);
    if (fn < 0) return perr(p, t->off, MT_ERR_UNSUPPORTED, "filter '%s' is not supported", t->s);
    node *n = new_node(p, N_FILTER, t->off);
    if (!n) return NULL;
    n->a = e;
    n->fn = fn;
    n->name = t->s;
    if (is_op(cur(p), '(') && parse_call_args(p, n)) return NULL;
    return finish(p, n);
}

/* "is [not] name", with arguments in parentheses or one bare argument ("is sameas false"). */
static node *parse_test(parser *p, node *e) {
    size_t off = cur(p)->off;
    p->pos++;
    int negated = 0;
    if (is_name(cur(p), "not")) { negated = 1; p->pos++; }
    const token *t = cur(p);
    if (t->kind != T_NAME) return unexpected(p, "a test name");
    p->pos++;
    int fn = find_test(t->s);
    if (fn < 0) return perr(p, t->off, MT_ERR_UNSUPPORTED, "test '%s' is not supported", t->s);
    node *n = new_node(p, N_TEST, off);
    if (!n) return NULL;
    n->a = e;
    n->fn = fn;
    n->op = negated;
    n->name = t->s;
    const token *c = cur(p);
    if (is_op(c, '(')) {
        if (parse_call_args(p, n)) return NULL;
    } else if ((c->kind == T_NAME || c->kind == T_STRING || c->kind == T_INT || c->kind == T_FLOAT ||
                is_op(c, '[') || is_op(c, '{')) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is")) return perr(p, c->off, MT_ERR_FORMAT, "tests cannot be chained with 'is'");
        node *arg = parse_postfix(p, parse_primary(p));
        nbuf args = {0};
        if (!arg || nbuf_push(p, &args, arg)) return NULL;
        n->args = nbuf_list(&args);
    }
    return finish(p, n);
}

static node *parse_filter_expr(parser *p, node *e) {
    while (e) {
        const token *t = cur(p);
        if (is_op(t, '|')) { p->pos++; e = parse_filter(p, e); }
        else if (is_name(t, "is")) e = parse_test(p, e);
        else if (is_op(t, '(')) e = parse_call(p, e);
        else break;
    }
    return e;
}

static node *parse_unary(parser *p, int with_filter) {
    const token *t = cur(p);
    node *e;
    if (is_op(t, '-') || is_op(t, '+')) {
        if (enter(p)) return NULL;
        p->pos++;
        node *n = new_node(p, is_op(t, '-') ? N_NEG : N_POS, t->off);
        node *operand = n ? parse_unary(p, 0) : NULL;
        leave(p);
        if (!operand) return NULL;
        n->a = operand;
        e = finish(p, n);
    } else {
        e = parse_primary(p);
    }
    e = parse_postfix(p, e);
    return with_filter ? parse_filter_expr(p, e) : e;
}

static node *parse_pow(parser *p) {
    node *e = parse_unary(p, 1);
    while (e && is_op(cur(p), OP_POW)) {
        size_t off = cur(p)->off;
        p->pos++;
        e = binop(p, N_BINOP, OP_POW, off, e, parse_unary(p, 1));
    }
    return e;
}

static node *parse_math2(parser *p) {
    node *e = parse_pow(p);
    for (;;) {
        const token *t = cur(p);
        if (!e || !(is_op(t, '*') || is_op(t, '/') || is_op(t, OP_FLOORDIV) || is_op(t, '%'))) return e;
        p->pos++;
        e = binop(p, N_BINOP, t->op, t->off, e, parse_pow(p));
    }
}

static node *parse_concat(parser *p) {
    node *e = parse_math2(p);
    while (e && is_op(cur(p), '~')) {
        size_t off = cur(p)->off;
        p->pos++;
        e = binop(p, N_BINOP, '~', off, e, parse_math2(p));
    }
    return e;
}

static node *parse_math1(parser *p) {
    node *e = parse_concat(p);
    for (;;) {
        const token *t = cur(p);
        if (!e || !(is_op(t, '+') || is_op(t, '-'))) return e;
        p->pos++;
        e = binop(p, N_BINOP, t->op, t->off, e, parse_concat(p));
    }
}

static node *parse_compare(parser *p) {
    node *e = parse_math1(p);
    int ops[MAX_ARGS];
    nbuf operands = {0};
    size_t off = cur(p)->off;
    while (e) {
        const token *t = cur(p);
        int op;
        if (t->kind == T_OP && (t->op == OP_EQ || t->op == OP_NE || t->op == '<' || t->op == '>' ||
                                t->op == OP_LE || t->op == OP_GE)) { op = t->op; p->pos++; }
        else if (is_name(t, "in")) { op = OP_IN; p->pos++; }
        else if (is_name(t, "not") && is_name(peek(p, 1), "in")) { op = OP_NOTIN; p->pos += 2; }
        else break;
        if (operands.n == MAX_ARGS) return perr(p, t->off, MT_ERR_UNSUPPORTED, "too many chained comparisons");
        node *right = parse_math1(p);
        if (!right || nbuf_push(p, &operands, right)) return NULL;
        ops[operands.n - 1] = op;
    }
    if (!e || operands.n == 0) return e;
    node *n = new_node(p, N_COMPARE, off);
    if (!n || !(n->ops = arena_alloc(p->ar, (size_t)operands.n * sizeof *ops))) return perr(p, off, MT_ERR_NOMEM, "out of memory");
    memcpy(n->ops, ops, (size_t)operands.n * sizeof *ops);
    n->a = e;
    n->args = nbuf_list(&operands);
    return finish(p, n);
}

static node *parse_not(parser *p) {
    if (!is_name(cur(p), "not")) return parse_compare(p);
    size_t off = cur(p)->off;
    if (enter(p)) return NULL;
    p->pos++;
    node *n = new_node(p, N_NOT, off);
    node *operand = n ? parse_not(p) : NULL;
    leave(p);
    if (!operand) return NULL;
    n->a = operand;
    return finish(p, n);
}

static node *parse_and(parser *p) {
    node *e = parse_not(p);
    while (e && is_name(cur(p), "and")) {
        size_t off = cur(p)->off;
        p->pos++;
        e = binop(p, N_AND, 0, off, e, parse_not(p));
    }
    return e;
}

static node *parse_or(parser *p) {
    if (enter(p)) return NULL;
    node *e = parse_and(p);
    while (e && is_name(cur(p), "or")) {
        size_t off = cur(p)->off;
        p->pos++;
        e = binop(p, N_OR, 0, off, e, parse_and(p));
    }
    leave(p);
    return e;
}

static node *parse_condexpr(parser *p) {
    node *e = parse_or(p);
    while (e && is_name(cur(p), "if")) {
        node *n = new_node(p, N_COND, cur(p)->off);
        if (!n) return NULL;
        p->pos++;
        n->a = e;
        if (!(n->b = parse_or(p))) return NULL;
        if (is_name(cur(p), "else")) {
            p->pos++;
            if (enter(p)) return NULL;
            n->c = parse_condexpr(p);
            leave(p);
            if (!n->c) return NULL;
        }
        e = finish(p, n);
    }
    return e;
}

static node *parse_expression(parser *p, int with_condexpr) {
    return with_condexpr ? parse_condexpr(p) : parse_or(p);
}

static int tuple_end(const token *t) {
    return t->kind == T_VAR_END || t->kind == T_BLOCK_END || is_op(t, ')');
}

/* "a, b" is a tuple (a list here); "a" alone is itself. */
static node *parse_tuple(parser *p, int with_condexpr, int explicit_parens) {
    size_t off = cur(p)->off;
    nbuf items = {0};
    int is_tuple = 0;
    for (;;) {
        if (items.n && expect_op(p, ',', "','")) return NULL;
        if (tuple_end(cur(p))) break;
        node *e = parse_expression(p, with_condexpr);
        if (!e || nbuf_push(p, &items, e)) return NULL;
        if (!is_op(cur(p), ',')) break;
        is_tuple = 1;
    }
    if (!is_tuple) {
        if (items.n) return items.v[0];
        if (!explicit_parens) return unexpected(p, "an expression");
    }
    node *n = new_node(p, N_LIST, off);
    if (!n) return NULL;
    n->op = 1;
    n->args = nbuf_list(&items);
    return finish(p, n);
}

/* ---- statements ---------------------------------------------------------------------- */

static node *parse_statement(parser *p);

/* Statements until one of the tags in `ends` (NULL-terminated; NULL: until the end of the
 * template). On return *which is the index of the end tag found and the parser stands just
 * after its name. `open` is the tag that opened the body, for the unclosed-block message. */
static int parse_body(parser *p, nlist *out, const char *const *ends, int *which, const token *open) {
    nbuf b = {0};
    if (enter(p)) return -1;
    for (;;) {
        const token *t = cur(p);
        node *n = NULL;
        if (t->kind == T_EOF) {
            if (!ends) break;
            int last = 0;
            while (ends[last + 1]) last++;
            perr(p, open->off, MT_ERR_FORMAT, "'{%% %s %%}' is never closed: expected '{%% %s %%}'", open->s, ends[last]);
            return -1;
        }
        if (t->kind == T_TEXT) {
            if ((n = new_node(p, N_TEXT, t->off))) {
                n->k.kind = V_STR;
                n->k.u.s = t->obj;
            }
            p->pos++;
        } else if (t->kind == T_VAR_BEGIN) {
            p->pos++;
            if ((n = new_node(p, N_OUTPUT, t->off)) && (n->a = parse_tuple(p, 1, 0)) &&
                expect_kind(p, T_VAR_END, "'}}'"))
                n = NULL;
            if (n && !n->a) n = NULL;
        } else if (t->kind == T_BLOCK_BEGIN) {
            const token *name = peek(p, 1);
            if (name->kind != T_NAME) { p->pos++; unexpected(p, "a tag name"); return -1; }
            int k = 0;
            for (; ends && ends[k]; k++)
                if (strcmp(name->s, ends[k]) == 0) break;
            if (ends && ends[k]) {
                p->pos += 2;
                *which = k;
                break;
            }
            n = parse_statement(p);
        } else {
            unexpected(p, NULL);
            return -1;
        }
        if (!n || nbuf_push(p, &b, n)) return -1;
    }
    leave(p);
    *out = nbuf_list(&b);
    return 0;
}

static int end_tag(parser *p) { return expect_kind(p, T_BLOCK_END, "'%}'"); }

static node *parse_if(parser *p, const token *tag) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    static const char *const endif[] = {"endif", NULL};
    node *n = new_node(p, N_IF, tag->off);
    nbuf conds = {0};
    int n_branches = 0, cap = 0, which = 0;
    if (!n) return NULL;
    /* an elif chain stays flat (one node, many branches), so long chains cost no depth */
    do {
        node *cond = parse_tuple(p, 0, 0);
        if (!cond || end_tag(p) || nbuf_push(p, &conds, cond)) return NULL;
        if (n_branches == cap) {
            cap = cap ? cap * 2 : 4;
            nlist *v = arena_alloc(p->ar, (size_t)cap * sizeof *v);
            if (!v) return perr(p, tag->off, MT_ERR_NOMEM, "out of memory");
            if (n_branches) memcpy(v, n->branches, (size_t)n_branches * sizeof *v);
            n->branches = v;
        }
        if (parse_body(p, &n->branches[n_branches++], ends, &which, tag)) return NULL;
    } while (which == 0);
    if (which == 1 && (end_tag(p) || parse_body(p, &n->orelse, endif, &which, tag))) return NULL;
    if (end_tag(p)) return NULL;
    n->args = nbuf_list(&conds);
    return n;
}

static node *parse_for(parser *p, const token *tag) {
    static const char *const ends[] = {"else", "endfor", NULL};
    static const char *const endfor[] = {"endfor", NULL};
    node *n = new_node(p, N_FOR, tag->off);
    const char *names[8];
    int which = 0;
    if (!n) return NULL;
    do {
        if (n->n_names && expect_op(p, ',', "','")) return NULL;
        if (cur(p)->kind != T_NAME) return unexpected(p, "a loop variable");
        if (n->n_names == 8) return perr(p, cur(p)->off, MT_ERR_UNSUPPORTED, "too many loop variables");
        names[n->n_names++] = cur(p)->s;
        p->pos++;
    } while (is_op(cur(p), ','));
    if (!(n->names = arena_alloc(p->ar, (size_t)n->n_names * sizeof *names)))
        return perr(p, tag->off, MT_ERR_NOMEM, "out of memory");
    memcpy(n->names, names, (size_t)n->n_names * sizeof *names);
    if (!is_name(cur(p), "in")) return unexpected(p, "'in'");
    p->pos++;
    if (!(n->a = parse_tuple(p, 0, 0))) return NULL;
    if (is_name(cur(p), "if")) {
        p->pos++;
        if (!(n->b = parse_expression(p, 1))) return NULL;
    }
    if (is_name(cur(p), "recursive")) return perr(p, cur(p)->off, MT_ERR_UNSUPPORTED, "recursive loops are not supported");
    if (end_tag(p)) return NULL;
    p->loops++;
    int rc = parse_body(p, &n->body, ends, &which, tag);
    p->loops--;
    if (rc) return NULL;
    if (which == 0 && (end_tag(p) || parse_body(p, &n->orelse, endfor, &which, tag))) return NULL;
    return end_tag(p) ? NULL : n;
}

static node *parse_set(parser *p, const token *tag) {
    static const char *const endset[] = {"endset", NULL};
    const token *target = cur(p);
    int which = 0;
    if (target->kind != T_NAME) return unexpected(p, "a variable name");
    p->pos++;
    node *n = new_node(p, N_SET, tag->off);
    if (!n) return NULL;
    n->name = target->s;
    if (is_op(cur(p), '.')) {
        p->pos++;
        if (cur(p)->kind != T_NAME) return unexpected(p, "an attribute name");
        n->kind = N_SET_ATTR;
        n->attr = cur(p)->s;
        n->k.kind = V_STR;
        n->k.u.s = cur(p)->obj;
        p->pos++;
    }
    if (is_op(cur(p), ',')) return perr(p, cur(p)->off, MT_ERR_UNSUPPORTED, "assigning to several names is not supported");
    if (is_op(cur(p), '=')) {
        p->pos++;
        if (!(n->a = parse_tuple(p, 1, 0)) || end_tag(p)) return NULL;
        return n;
    }
    if (n->kind == N_SET_ATTR) return unexpected(p, "'='");
    if (is_op(cur(p), '|')) return perr(p, cur(p)->off, MT_ERR_UNSUPPORTED, "filtered set blocks are not supported");
    if (end_tag(p) || parse_body(p, &n->body, endset, &which, tag) || end_tag(p)) return NULL;
    n->kind = N_SET_BLOCK;
    return n;
}

static node *parse_statement(parser *p) {
    p->pos++; /* {% */
    const token *tag = cur(p);
    p->pos++;
    const char *s = tag->s;
    if (!strcmp(s, "if")) return parse_if(p, tag);
    if (!strcmp(s, "for")) return parse_for(p, tag);
    if (!strcmp(s, "set")) return parse_set(p, tag);
    if (!strcmp(s, "break") || !strcmp(s, "continue")) {
        if (p->loops == 0) return perr(p, tag->off, MT_ERR_FORMAT, "'%s' outside of a loop", s);
        node *n = new_node(p, s[0] == 'b' ? N_BREAK : N_CONTINUE, tag->off);
        return (!n || end_tag(p)) ? NULL : n;
    }
    if (!strcmp(s, "generation")) {
        static const char *const ends[] = {"endgeneration", NULL};
        int which = 0;
        node *n = new_node(p, N_GENERATION, tag->off);
        if (!n || end_tag(p) || parse_body(p, &n->body, ends, &which, tag) || end_tag(p)) return NULL;
        return n;
    }
    static const char *const unsupported[] = {"macro", "call", "filter", "include", "import", "from", "extends",
                                              "block", "raw", "with", "autoescape", "do", NULL};
    for (int i = 0; unsupported[i]; i++)
        if (!strcmp(s, unsupported[i])) return perr(p, tag->off, MT_ERR_UNSUPPORTED, "'{%% %s %%}' is not supported", s);
    return perr(p, tag->off, MT_ERR_FORMAT, "unknown tag '%s'", s);
}

/* ======================================================================================
 * Rendering context: variable scopes, the output, the work and memory budgets.
 * ==================================================================================== */

typedef struct { const char *name; value v; } binding;
typedef struct { binding *b; int n, cap; } frame;
typedef struct { char *p; size_t n, cap; } sbuf;

enum { CTL_NONE, CTL_BREAK, CTL_CONTINUE };

enum { LK_INDEX, LK_INDEX0, LK_REVINDEX, LK_REVINDEX0, LK_FIRST, LK_LAST, LK_LENGTH, LK_DEPTH,
       LK_DEPTH0, LK_PREVITEM, LK_NEXTITEM, N_LOOP_KEYS };
static const char *const LOOP_KEYS[N_LOOP_KEYS] = {"index", "index0", "revindex", "revindex0", "first", "last",
                                                   "length", "depth", "depth0", "previtem", "nextitem"};

struct mt_chat_template {
    char *source; /* as given */
    char *norm;   /* newlines normalized, one trailing newline dropped: what was parsed */
    arena ar;
    nlist body;
    value loop_keys[N_LOOP_KEYS], key_role, key_content;
};

/* A for-loop body gets a new frame per iteration, so {% set %} inside a loop does not leak
 * out of it (Jinja's scoping, the reason templates use namespace()); if-blocks do not. */
struct rctx {
    const mt_chat_template *t;
    frame *frames;
    int n_frames, cap_frames;
    sbuf *out;
    long work;
    int ctl; /* CTL_BREAK / CTL_CONTINUE while a loop control unwinds to its loop */
    mt_status status;
};

static int rfail(rctx *c, const node *at, mt_status code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int rfail(rctx *c, const node *at, mt_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (c->status == MT_OK && at) {
        c->status = vfail_at(c->t->norm, at->off, code, fmt, ap);
    } else if (c->status == MT_OK) {
        char msg[768];
        vsnprintf(msg, sizeof msg, fmt, ap);
        c->status = mt_error(code, "chat template: %s", msg);
    }
    va_end(ap);
    return -1;
}

static int undefined_error(rctx *c, const node *at, value u) {
    if (u.u.hint) return rfail(c, at, MT_ERR_FORMAT, "'%s' is undefined", u.u.hint);
    return rfail(c, at, MT_ERR_FORMAT, "undefined value (a missing item or attribute) used");
}

static int charge(rctx *c, const node *at, size_t units) {
    c->work += (long)(units < (size_t)MAX_WORK ? units : (size_t)MAX_WORK);
    if (c->work > MAX_WORK) return rfail(c, at, MT_ERR_FORMAT, "template takes too long to render (over %ld steps)", MAX_WORK);
    return 0;
}

static int account(rctx *c, const node *at, size_t bytes) {
    if (bytes > MAX_LIVE_BYTES - (live_bytes < MAX_LIVE_BYTES ? live_bytes : MAX_LIVE_BYTES))
        return rfail(c, at, MT_ERR_FORMAT, "template values use more than %zu MiB", MAX_LIVE_BYTES >> 20);
    live_bytes += bytes;
    return 0;
}

static void *heap_alloc(rctx *c, const node *at, size_t bytes) {
    if (account(c, at, bytes)) return NULL;
    heap_hdr *h = malloc(bytes);
    if (!h) {
        live_bytes -= bytes;
        rfail(c, at, MT_ERR_NOMEM, "out of memory");
        return NULL;
    }
    h->refs = 1;
    h->depth = 0;
    h->bytes = bytes;
    return h;
}

/* ---- output buffers ------------------------------------------------------------------ */

static int sb_put(rctx *c, const node *at, sbuf *b, const char *s, size_t n) {
    if (n > MAX_STRING - b->n) return rfail(c, at, MT_ERR_FORMAT, "text longer than %zu MiB", MAX_STRING >> 20);
    if (charge(c, at, 1 + n / 256)) return -1;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        if (account(c, at, cap - b->cap)) return -1;
        char *p = realloc(b->p, cap);
        if (!p) { live_bytes -= cap - b->cap; return rfail(c, at, MT_ERR_NOMEM, "out of memory"); }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int sb_str(rctx *c, const node *at, sbuf *b, const char *s) { return sb_put(c, at, b, s, strlen(s)); }

static void sb_free(sbuf *b) {
    live_bytes -= b->cap < live_bytes ? b->cap : live_bytes;
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* ---- strings, lists, dicts ----------------------------------------------------------- */

/* A new string of n bytes, copied from s when s is not NULL (else left for the caller to fill). */
static int str_new(rctx *c, const node *at, const char *s, size_t n, value *out) {
    if (n > MAX_STRING) return rfail(c, at, MT_ERR_FORMAT, "string longer than %zu MiB", MAX_STRING >> 20);
    if (charge(c, at, 1 + n / 256)) return -1;
    str_obj *o = heap_alloc(c, at, sizeof *o + n + 1);
    if (!o) return -1;
    o->len = n;
    if (n && s) memcpy(o->s, s, n);
    o->s[n] = 0;
    out->kind = V_STR;
    out->u.s = o;
    return 0;
}

/* The buffer's text as a string value; the buffer is freed either way. */
static int sb_to_value(rctx *c, const node *at, sbuf *b, value *out) {
    int rc = str_new(c, at, b->p ? b->p : "", b->n, out);
    sb_free(b);
    return rc;
}

static value list_value(list_obj *l) { value v = {.kind = V_LIST}; v.u.l = l; return v; }
static value dict_value(dict_obj *d, vkind kind) { value v = {.kind = kind}; v.u.d = d; return v; }

static list_obj *list_new(rctx *c, const node *at) {
    list_obj *l = heap_alloc(c, at, sizeof *l);
    if (!l) return NULL;
    l->h.depth = 1;
    l->n = l->cap = 0;
    l->tuple = 0;
    l->items = NULL;
    return l;
}

/* Checks that v may go inside a container of depth `depth`; drops v if not. */
static int storable(rctx *c, const node *at, value v, uint32_t *depth) {
    if (v.kind == V_NS) {
        v_drop(v);
        return rfail(c, at, MT_ERR_UNSUPPORTED, "a namespace cannot be stored in a list, dict or namespace");
    }
    if (value_depth(v) + 1 > MAX_VALUE_DEPTH) {
        v_drop(v);
        return rfail(c, at, MT_ERR_FORMAT, "lists and dicts nest more than %d deep", MAX_VALUE_DEPTH);
    }
    if ((uint32_t)value_depth(v) + 1 > *depth) *depth = (uint32_t)value_depth(v) + 1;
    return 0;
}

/* Appends v (owned; dropped on failure). */
static int list_push(rctx *c, const node *at, list_obj *l, value v) {
    if (charge(c, at, 1)) { v_drop(v); return -1; }
    if (storable(c, at, v, &l->h.depth)) return -1;
    if (l->n == l->cap) {
        if (l->n >= MAX_LIST) { v_drop(v); return rfail(c, at, MT_ERR_FORMAT, "list longer than %d items", MAX_LIST); }
        int cap = l->cap ? l->cap * 2 : 8;
        size_t grow = (size_t)(cap - l->cap) * sizeof(value);
        if (account(c, at, grow)) { v_drop(v); return -1; }
        value *items = realloc(l->items, (size_t)cap * sizeof(value));
        if (!items) { live_bytes -= grow; v_drop(v); return rfail(c, at, MT_ERR_NOMEM, "out of memory"); }
        l->items = items;
        l->cap = cap;
        l->h.bytes += grow;
    }
    l->items[l->n++] = v;
    return 0;
}

static dict_obj *dict_new(rctx *c, const node *at) {
    dict_obj *d = heap_alloc(c, at, sizeof *d);
    if (!d) return NULL;
    d->h.depth = 1;
    d->n = d->cap = 0;
    d->keys = d->vals = NULL;
    return d;
}

static value *dict_find(const dict_obj *d, value key) {
    for (int i = 0; i < d->n; i++) if (v_equal(d->keys[i], key)) return &d->vals[i];
    return NULL;
}

static value *dict_find_str(const dict_obj *d, const char *s) {
    size_t n = strlen(s);
    for (int i = 0; i < d->n; i++)
        if (d->keys[i].kind == V_STR && d->keys[i].u.s->len == n && memcmp(d->keys[i].u.s->s, s, n) == 0)
            return &d->vals[i];
    return NULL;
}

/* dict_find, charged for the linear scan. */
static int dict_lookup(rctx *c, const node *at, const dict_obj *d, value key, value **out) {
    if (charge(c, at, 1 + (size_t)d->n / 8)) return -1;
    *out = dict_find(d, key);
    return 0;
}

/* Sets d[key] = val (both owned; dropped on failure). */
static int dict_set(rctx *c, const node *at, dict_obj *d, value key, value val) {
    if (key.kind == V_LIST || key.kind == V_DICT || key.kind == V_NS || key.kind == V_UNDEF) {
        int rc = rfail(c, at, MT_ERR_FORMAT, "unhashable dict key of type '%s'", type_name(key));
        v_drop(key);
        v_drop(val);
        return rc;
    }
    if (storable(c, at, val, &d->h.depth)) { v_drop(key); return -1; }
    value *slot;
    if (dict_lookup(c, at, d, key, &slot)) { v_drop(key); v_drop(val); return -1; }
    if (slot) {
        v_drop(*slot);
        *slot = val;
        v_drop(key);
        return 0;
    }
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 8;
        size_t grow = (size_t)(cap - d->cap) * 2 * sizeof(value);
        value *k = NULL, *v = NULL;
        if (d->n >= MAX_LIST || account(c, at, grow)) {
            if (d->n >= MAX_LIST) rfail(c, at, MT_ERR_FORMAT, "dict larger than %d items", MAX_LIST);
            v_drop(key);
            v_drop(val);
            return -1;
        }
        d->h.bytes += grow;
        if ((k = realloc(d->keys, (size_t)cap * sizeof *k))) d->keys = k;
        if ((v = realloc(d->vals, (size_t)cap * sizeof *v))) d->vals = v;
        if (!k || !v) { v_drop(key); v_drop(val); return rfail(c, at, MT_ERR_NOMEM, "out of memory"); }
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = val;
    return 0;
}

/* ---- scopes -------------------------------------------------------------------------- */

static int push_frame(rctx *c, const node *at) {
    if (c->n_frames == c->cap_frames) {
        int cap = c->cap_frames ? c->cap_frames * 2 : 8;
        frame *f = realloc(c->frames, (size_t)cap * sizeof *f);
        if (!f) return rfail(c, at, MT_ERR_NOMEM, "out of memory");
        c->frames = f;
        c->cap_frames = cap;
    }
    memset(&c->frames[c->n_frames++], 0, sizeof(frame));
    return 0;
}

static void pop_frame(rctx *c) {
    frame *f = &c->frames[--c->n_frames];
    for (int i = 0; i < f->n; i++) v_drop(f->b[i].v);
    free(f->b);
}

/* Binds name = v (owned) in the innermost frame. */
static int bind(rctx *c, const node *at, const char *name, value v) {
    frame *f = &c->frames[c->n_frames - 1];
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->b[i].name, name) == 0) {
            v_drop(f->b[i].v);
            f->b[i].v = v;
            return 0;
        }
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 8;
        binding *b = realloc(f->b, (size_t)cap * sizeof *b);
        if (!b) { v_drop(v); return rfail(c, at, MT_ERR_NOMEM, "out of memory"); }
        f->b = b;
        f->cap = cap;
    }
    f->b[f->n].name = name;
    f->b[f->n++].v = v;
    return 0;
}

static const char *const BUILTINS[] = {"raise_exception", "namespace", "range", "dict"};

/* Innermost binding first, then the builtin functions; otherwise undefined. */
static value lookup(const rctx *c, const char *name) {
    for (int f = c->n_frames - 1; f >= 0; f--)
        for (int i = c->frames[f].n - 1; i >= 0; i--)
            if (strcmp(c->frames[f].b[i].name, name) == 0) return v_ref(c->frames[f].b[i].v);
    for (int i = 0; i < (int)(sizeof BUILTINS / sizeof BUILTINS[0]); i++)
        if (strcmp(BUILTINS[i], name) == 0) return v_func(i);
    return v_undef(name);
}

/* ---- str() and repr() ---------------------------------------------------------------- */

/* Python's repr(float): the shortest digits that read back to the same double, in fixed
 * notation for exponents -4..15 and scientific notation otherwise. */
static void format_float(double f, char *out, size_t cap) {
    if (isnan(f)) { snprintf(out, cap, "nan"); return; }
    if (isinf(f)) { snprintf(out, cap, f < 0 ? "-inf" : "inf"); return; }
    char sci[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(sci, sizeof sci, "%.*e", prec - 1, f);
        if (strtod(sci, NULL) == f) break;
    }
    char digits[24];
    int nd = 0, neg = sci[0] == '-';
    const char *s = sci + neg;
    for (; *s && *s != 'e'; s++) if (isdigit((unsigned char)*s)) digits[nd++] = *s;
    int exp = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    size_t k = 0;
    if (neg) out[k++] = '-';
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            k += (size_t)snprintf(out + k, cap - k, "0.");
            for (int i = 0; i < -exp - 1; i++) out[k++] = '0';
            snprintf(out + k, cap - k, "%s", digits);
        } else {
            for (int i = 0; i <= exp; i++) out[k++] = i < nd ? digits[i] : '0';
            out[k++] = '.';
            if (nd > exp + 1) snprintf(out + k, cap - k, "%s", digits + exp + 1);
            else snprintf(out + k, cap - k, "0");
        }
    } else {
        out[k++] = digits[0];
        if (nd > 1) { out[k++] = '.'; k += (size_t)snprintf(out + k, cap - k, "%s", digits + 1); }
        snprintf(out + k, cap - k, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
}

static int write_repr(rctx *c, const node *at, sbuf *b, value v);

/* Python's str(v) (undefined prints nothing), appended to b. */
static int write_value(rctx *c, const node *at, sbuf *b, value v) {
    char num[48];
    switch (v.kind) {
    case V_UNDEF: return 0;
    case V_NONE: return sb_str(c, at, b, "None");
    case V_BOOL: return sb_str(c, at, b, v.u.b ? "True" : "False");
    case V_INT: snprintf(num, sizeof num, "%lld", (long long)v.u.i); return sb_str(c, at, b, num);
    case V_FLOAT: format_float(v.u.f, num, sizeof num); return sb_str(c, at, b, num);
    case V_STR: return sb_put(c, at, b, v.u.s->s, v.u.s->len);
    default: return write_repr(c, at, b, v);
    }
}

static int write_str_repr(rctx *c, const node *at, sbuf *b, const str_obj *s) {
    char quote = (memchr(s->s, '\'', s->len) && !memchr(s->s, '"', s->len)) ? '"' : '\'';
    if (sb_put(c, at, b, &quote, 1)) return -1;
    for (size_t i = 0; i < s->len; i++) {
        unsigned char ch = (unsigned char)s->s[i];
        char esc[8];
        const char *e = NULL;
        if (ch == '\\' || ch == (unsigned char)quote) { esc[0] = '\\'; esc[1] = (char)ch; esc[2] = 0; e = esc; }
        else if (ch == '\n') e = "\\n";
        else if (ch == '\r') e = "\\r";
        else if (ch == '\t') e = "\\t";
        else if (ch < 0x20 || ch == 0x7f) { snprintf(esc, sizeof esc, "\\x%02x", ch); e = esc; }
        if (e ? sb_str(c, at, b, e) : sb_put(c, at, b, s->s + i, 1)) return -1;
    }
    return sb_put(c, at, b, &quote, 1);
}

static int write_dict_repr(rctx *c, const node *at, sbuf *b, const dict_obj *d) {
    if (sb_str(c, at, b, "{")) return -1;
    for (int i = 0; i < d->n; i++) {
        if ((i && sb_str(c, at, b, ", ")) || write_repr(c, at, b, d->keys[i]) || sb_str(c, at, b, ": ") ||
            write_repr(c, at, b, d->vals[i]))
            return -1;
    }
    return sb_str(c, at, b, "}");
}

/* Python's repr(v); containers recurse at most MAX_VALUE_DEPTH deep. */
static int write_repr(rctx *c, const node *at, sbuf *b, value v) {
    switch (v.kind) {
    case V_UNDEF: return sb_str(c, at, b, "Undefined");
    case V_STR: return write_str_repr(c, at, b, v.u.s);
    case V_LIST:
        if (sb_str(c, at, b, v.u.l->tuple ? "(" : "[")) return -1;
        for (int i = 0; i < v.u.l->n; i++)
            if ((i && sb_str(c, at, b, ", ")) || write_repr(c, at, b, v.u.l->items[i])) return -1;
        if (v.u.l->tuple && v.u.l->n == 1 && sb_str(c, at, b, ",")) return -1;
        return sb_str(c, at, b, v.u.l->tuple ? ")" : "]");
    case V_DICT: return write_dict_repr(c, at, b, v.u.d);
    case V_NS:
        return sb_str(c, at, b, "<Namespace ") || write_dict_repr(c, at, b, v.u.d) || sb_str(c, at, b, ">") ? -1 : 0;
    case V_FUNC:
        return sb_str(c, at, b, "<built-in function ") || sb_str(c, at, b, BUILTINS[v.u.fn]) || sb_str(c, at, b, ">") ? -1 : 0;
    default: return write_value(c, at, b, v);
    }
}

/* str(v) as a string value (a new reference). */
static int to_str(rctx *c, const node *at, value v, value *out) {
    if (v.kind == V_STR) { *out = v_ref(v); return 0; }
    sbuf b = {0};
    if (write_value(c, at, &b, v)) { sb_free(&b); return -1; }
    return sb_to_value(c, at, &b, out);
}

/* ======================================================================================
 * Expressions
 * ==================================================================================== */

static int eval(rctx *c, const node *n, value *out);

/* The items a for-loop or a filter iterates: a list's items, a dict's keys, a string's
 * characters; undefined iterates as empty. Returns a new list reference. */
static int iter_items(rctx *c, const node *at, value v, list_obj **out) {
    if (v.kind == V_LIST) { v_ref(v); *out = v.u.l; return 0; }
    if (v.kind != V_DICT && v.kind != V_STR && v.kind != V_UNDEF)
        return rfail(c, at, MT_ERR_FORMAT, "'%s' object is not iterable", type_name(v));
    list_obj *l = list_new(c, at);
    if (!l) return -1;
    if (v.kind == V_DICT) {
        for (int i = 0; i < v.u.d->n; i++)
            if (list_push(c, at, l, v_ref(v.u.d->keys[i]))) goto fail;
    } else if (v.kind == V_STR) {
        const str_obj *s = v.u.s;
        for (size_t i = 0, j; i < s->len; i = j) {
            value ch;
            j = u8_next(s->s, s->len, i);
            if (str_new(c, at, s->s + i, j - i, &ch) || list_push(c, at, l, ch)) goto fail;
        }
    }
    *out = l;
    return 0;
fail:
    v_drop(list_value(l));
    return -1;
}

/* obj.name: a dict's or namespace's entry; anything else has no such attribute (undefined).
 * Only an attribute of something undefined is an error, as in Jinja. */
static int get_attr(rctx *c, const node *at, value obj, const char *name, value *out) {
    if (obj.kind == V_UNDEF) return undefined_error(c, at, obj);
    const value *v = (obj.kind == V_DICT || obj.kind == V_NS) ? dict_find_str(obj.u.d, name) : NULL;
    *out = v ? v_ref(*v) : v_undef(name);
    return 0;
}

/* Byte offset of code point `index` (index <= count). */
static size_t cp_offset(const str_obj *s, int64_t index) {
    size_t i = 0;
    for (int64_t k = 0; k < index && i < s->len; k++) i = u8_next(s->s, s->len, i);
    return i;
}

/* obj[key]: list and string positions (negative from the end), dict keys. A missing item
 * is undefined (hint names it when the key is a literal). */
static int get_item(rctx *c, const node *at, value obj, value key, const char *hint, value *out) {
    if (obj.kind == V_UNDEF) return undefined_error(c, at, obj);
    *out = v_undef(hint);
    if ((obj.kind == V_LIST || obj.kind == V_STR) && is_integral(key)) {
        if (obj.kind == V_STR && charge(c, at, obj.u.s->len / 64)) return -1;
        int64_t len = obj.kind == V_LIST ? obj.u.l->n : (int64_t)u8_count(obj.u.s->s, obj.u.s->len);
        int64_t i = as_int(key);
        if (i < 0) i += len;
        if (i < 0 || i >= len) return 0;
        if (obj.kind == V_LIST) { *out = v_ref(obj.u.l->items[i]); return 0; }
        size_t a = cp_offset(obj.u.s, i);
        return str_new(c, at, obj.u.s->s + a, u8_next(obj.u.s->s, obj.u.s->len, a) - a, out);
    }
    if (obj.kind == V_DICT || obj.kind == V_NS) {
        value *v;
        if (dict_lookup(c, at, obj.u.d, key, &v)) return -1;
        if (v) *out = v_ref(*v);
    }
    return 0;
}

/* Python's slice.indices(): clamps start/stop for a sequence of length len. */
static int slice_bounds(rctx *c, const node *at, int64_t len, const value *ends[3], int64_t *start, int64_t *stop, int64_t *step) {
    for (int i = 0; i < 3; i++)
        if (ends[i] && ends[i]->kind != V_NONE && !is_integral(*ends[i]))
            return rfail(c, at, MT_ERR_FORMAT, "slice indices must be integers or none");
    *step = ends[2] && ends[2]->kind != V_NONE ? as_int(*ends[2]) : 1;
    if (*step == 0) return rfail(c, at, MT_ERR_FORMAT, "slice step cannot be zero");
    for (int i = 0; i < 2; i++) {
        int64_t *x = i == 0 ? start : stop;
        int given = ends[i] && ends[i]->kind != V_NONE;
        if (*step > 0) {
            *x = given ? as_int(*ends[i]) : (i == 0 ? 0 : len);
            if (*x < 0) *x = *x + len < 0 ? 0 : *x + len;
            if (*x > len) *x = len;
        } else {
            *x = given ? as_int(*ends[i]) : (i == 0 ? len - 1 : -1);
            if (given && *x < 0) *x = *x + len < 0 ? -1 : *x + len;
            if (*x >= len) *x = len - 1;
        }
    }
    return 0;
}

static int slice_value(rctx *c, const node *at, value obj, const value *ends[3], value *out) {
    if (obj.kind == V_UNDEF) return undefined_error(c, at, obj);
    if (obj.kind != V_LIST && obj.kind != V_STR) { *out = v_undef(NULL); return 0; }
    if (obj.kind == V_STR && charge(c, at, obj.u.s->len / 64)) return -1;
    int64_t len = obj.kind == V_LIST ? obj.u.l->n : (int64_t)u8_count(obj.u.s->s, obj.u.s->len);
    int64_t start = 0, stop = 0, step = 1;
    if (slice_bounds(c, at, len, ends, &start, &stop, &step)) return -1;
    if (obj.kind == V_LIST) {
        list_obj *l = list_new(c, at);
        if (!l) return -1;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
            if (list_push(c, at, l, v_ref(obj.u.l->items[i]))) { v_drop(list_value(l)); return -1; }
        *out = list_value(l);
        return 0;
    }
    const str_obj *s = obj.u.s;
    if (step == 1) {
        size_t a = cp_offset(s, start), b = stop > start ? cp_offset(s, stop) : a;
        return str_new(c, at, s->s + a, b - a, out);
    }
    sbuf b = {0};
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        size_t a = cp_offset(s, i);
        if (charge(c, at, (size_t)(a / 64)) || sb_put(c, at, &b, s->s + a, u8_next(s->s, s->len, a) - a)) {
            sb_free(&b);
            return -1;
        }
    }
    return sb_to_value(c, at, &b, out);
}

static int eval_slice(rctx *c, const node *n, value *out) {
    value obj = v_undef(NULL), parts[3] = {v_none(), v_none(), v_none()};
    const node *kids[3] = {n->b, n->c, n->d};
    const value *ends[3] = {NULL, NULL, NULL};
    int rc = eval(c, n->a, &obj);
    for (int i = 0; i < 3 && rc == 0; i++)
        if (kids[i]) { rc = eval(c, kids[i], &parts[i]); ends[i] = &parts[i]; }
    if (rc == 0) rc = slice_value(c, n, obj, ends, out);
    v_drop(obj);
    for (int i = 0; i < 3; i++) v_drop(parts[i]);
    return rc;
}

/* ---- arithmetic ---------------------------------------------------------------------- */

static int type_error(rctx *c, const node *at, const char *op, value a, value b) {
    if (a.kind == V_UNDEF) return undefined_error(c, at, a);
    if (b.kind == V_UNDEF) return undefined_error(c, at, b);
    return rfail(c, at, MT_ERR_FORMAT, "unsupported operand types for %s: '%s' and '%s'", op, type_name(a), type_name(b));
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int64_t floor_mod(int64_t a, int64_t b) {
    int64_t r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

static int int_pow(int64_t base, int64_t exp, int64_t *out) {
    int64_t r = 1;
    while (exp > 0) {
        if ((exp & 1) && __builtin_mul_overflow(r, base, &r)) return -1;
        exp >>= 1;
        if (exp && __builtin_mul_overflow(base, base, &base)) return -1;
    }
    *out = r;
    return 0;
}

static int int_arith(rctx *c, const node *at, int op, int64_t a, int64_t b, value *out) {
    int64_t r = 0;
    int overflow = 0;
    if ((op == OP_FLOORDIV || op == '%' || op == '/') && b == 0)
        return rfail(c, at, MT_ERR_FORMAT, "division by zero");
    switch (op) {
    case '+': overflow = __builtin_add_overflow(a, b, &r); break;
    case '-': overflow = __builtin_sub_overflow(a, b, &r); break;
    case '*': overflow = __builtin_mul_overflow(a, b, &r); break;
    case '/': *out = v_float((double)a / (double)b); return 0;
    case OP_FLOORDIV: overflow = a == INT64_MIN && b == -1; if (!overflow) r = floor_div(a, b); break;
    case '%': r = (a == INT64_MIN && b == -1) ? 0 : floor_mod(a, b); break;
    case OP_POW:
        if (b < 0) { *out = v_float(pow((double)a, (double)b)); return 0; }
        overflow = int_pow(a, b, &r) != 0;
        break;
    }
    if (overflow) return rfail(c, at, MT_ERR_UNSUPPORTED, "integer overflow");
    *out = v_int(r);
    return 0;
}

static int float_arith(rctx *c, const node *at, int op, double a, double b, value *out) {
    if ((op == OP_FLOORDIV || op == '%' || op == '/') && b == 0.0) return rfail(c, at, MT_ERR_FORMAT, "division by zero");
    double r = 0;
    switch (op) {
    case '+': r = a + b; break;
    case '-': r = a - b; break;
    case '*': r = a * b; break;
    case '/': r = a / b; break;
    case OP_FLOORDIV: r = floor(a / b); break;
    case '%': r = fmod(a, b); if (r != 0 && ((r < 0) != (b < 0))) r += b; break;
    case OP_POW: r = pow(a, b); break;
    }
    *out = v_float(r);
    return 0;
}

/* "ab" * 3 and [x] * 3 */
static int repeat(rctx *c, const node *at, value seq, int64_t times, value *out) {
    if (times < 0) times = 0;
    if (seq.kind == V_STR) {
        size_t len = seq.u.s->len;
        if (len && (uint64_t)times > MAX_STRING / len)
            return rfail(c, at, MT_ERR_FORMAT, "string longer than %zu MiB", MAX_STRING >> 20);
        if (str_new(c, at, NULL, len * (size_t)times, out)) return -1;
        for (int64_t i = 0; i < times; i++) memcpy(out->u.s->s + (size_t)i * len, seq.u.s->s, len);
        return 0;
    }
    if (seq.u.l->n && times > MAX_LIST / seq.u.l->n) return rfail(c, at, MT_ERR_FORMAT, "list longer than %d items", MAX_LIST);
    list_obj *l = list_new(c, at);
    if (!l) return -1;
    for (int64_t i = 0; i < times; i++)
        for (int k = 0; k < seq.u.l->n; k++)
            if (list_push(c, at, l, v_ref(seq.u.l->items[k]))) { v_drop(list_value(l)); return -1; }
    *out = list_value(l);
    return 0;
}

static int concat(rctx *c, const node *at, value a, value b, value *out) {
    if (a.kind == V_STR) {
        if (b.u.s->len > MAX_STRING - a.u.s->len) return rfail(c, at, MT_ERR_FORMAT, "string longer than %zu MiB", MAX_STRING >> 20);
        if (str_new(c, at, NULL, a.u.s->len + b.u.s->len, out)) return -1;
        memcpy(out->u.s->s, a.u.s->s, a.u.s->len);
        memcpy(out->u.s->s + a.u.s->len, b.u.s->s, b.u.s->len);
        return 0;
    }
    list_obj *l = list_new(c, at);
    if (!l) return -1;
    for (int k = 0; k < a.u.l->n + b.u.l->n; k++) {
        value item = k < a.u.l->n ? a.u.l->items[k] : b.u.l->items[k - a.u.l->n];
        if (list_push(c, at, l, v_ref(item))) { v_drop(list_value(l)); return -1; }
    }
    *out = list_value(l);
    return 0;
}

static int arith(rctx *c, const node *at, int op, value a, value b, value *out) {
    static const char *names[] = {"+", "-", "*", "/", "//", "%", "**"};
    const char *name = op == '+' ? names[0] : op == '-' ? names[1] : op == '*' ? names[2] : op == '/' ? names[3]
                     : op == OP_FLOORDIV ? names[4] : op == '%' ? names[5] : names[6];
    if (op == '~') {
        sbuf s = {0};
        if (write_value(c, at, &s, a) || write_value(c, at, &s, b)) { sb_free(&s); return -1; }
        return sb_to_value(c, at, &s, out);
    }
    if (is_integral(a) && is_integral(b)) return int_arith(c, at, op, as_int(a), as_int(b), out);
    if (is_number(a) && is_number(b)) return float_arith(c, at, op, as_float(a), as_float(b), out);
    if (op == '+' && a.kind == b.kind && (a.kind == V_STR || a.kind == V_LIST)) return concat(c, at, a, b, out);
    if (op == '*' && (a.kind == V_STR || a.kind == V_LIST) && is_integral(b)) return repeat(c, at, a, as_int(b), out);
    if (op == '*' && (b.kind == V_STR || b.kind == V_LIST) && is_integral(a)) return repeat(c, at, b, as_int(a), out);
    return type_error(c, at, name, a, b);
}

static int eval_binop(rctx *c, const node *n, value *out) {
    value a, b;
    if (eval(c, n->a, &a)) return -1;
    if (eval(c, n->b, &b)) { v_drop(a); return -1; }
    int rc = arith(c, n, n->op, a, b, out);
    v_drop(a);
    v_drop(b);
    return rc;
}

static int eval_unary(rctx *c, const node *n, value *out) {
    value a;
    if (eval(c, n->a, &a)) return -1;
    int rc = 0;
    if (a.kind == V_FLOAT) *out = v_float(n->kind == N_NEG ? -a.u.f : a.u.f);
    else if (is_integral(a) && !(n->kind == N_NEG && as_int(a) == INT64_MIN)) *out = v_int(n->kind == N_NEG ? -as_int(a) : as_int(a));
    else if (a.kind == V_UNDEF) rc = undefined_error(c, n, a);
    else rc = rfail(c, n, MT_ERR_FORMAT, "bad operand type for unary %c: '%s'", n->kind == N_NEG ? '-' : '+', type_name(a));
    v_drop(a);
    return rc;
}

/* ---- comparisons --------------------------------------------------------------------- */

/* Work units for comparing or scanning v. */
static size_t scan_cost(value v) {
    return v.kind == V_STR ? v.u.s->len / 256 : v.kind == V_LIST ? (size_t)v.u.l->n : v.kind == V_DICT ? (size_t)v.u.d->n : 0;
}

/* Python's ordering for numbers, strings and lists; *cmp is <0, 0 or >0. */
static int order(rctx *c, const node *at, value a, value b, int *cmp) {
    if (is_number(a) && is_number(b)) {
        if (is_integral(a) && is_integral(b)) *cmp = (as_int(a) > as_int(b)) - (as_int(a) < as_int(b));
        else *cmp = (as_float(a) > as_float(b)) - (as_float(a) < as_float(b));
        return 0;
    }
    if (a.kind == V_STR && b.kind == V_STR) {
        size_t n = a.u.s->len < b.u.s->len ? a.u.s->len : b.u.s->len;
        int r = memcmp(a.u.s->s, b.u.s->s, n);
        *cmp = r ? r : (a.u.s->len > b.u.s->len) - (a.u.s->len < b.u.s->len);
        return 0;
    }
    if (a.kind == V_LIST && b.kind == V_LIST) {
        if (charge(c, at, 1 + scan_cost(a))) return -1;
        for (int i = 0; i < a.u.l->n && i < b.u.l->n; i++)
            if (!v_equal(a.u.l->items[i], b.u.l->items[i])) return order(c, at, a.u.l->items[i], b.u.l->items[i], cmp);
        *cmp = (a.u.l->n > b.u.l->n) - (a.u.l->n < b.u.l->n);
        return 0;
    }
    if (a.kind == V_UNDEF) return undefined_error(c, at, a);
    if (b.kind == V_UNDEF) return undefined_error(c, at, b);
    return rfail(c, at, MT_ERR_FORMAT, "'<' not supported between '%s' and '%s'", type_name(a), type_name(b));
}

static int contains(rctx *c, const node *at, value item, value seq, int *result) {
    *result = 0;
    if (charge(c, at, 1 + scan_cost(seq) * (1 + scan_cost(item)))) return -1;
    if (seq.kind == V_STR) {
        if (item.kind != V_STR) return rfail(c, at, MT_ERR_FORMAT, "'in <string>' requires a string as left operand, not '%s'", type_name(item));
        *result = item.u.s->len == 0 || memmem(seq.u.s->s, seq.u.s->len, item.u.s->s, item.u.s->len) != NULL;
        return 0;
    }
    if (seq.kind == V_LIST) {
        for (int i = 0; i < seq.u.l->n && !*result; i++) *result = v_equal(item, seq.u.l->items[i]);
        return 0;
    }
    if (seq.kind == V_DICT) {
        value *v;
        if (dict_lookup(c, at, seq.u.d, item, &v)) return -1;
        *result = v != NULL;
        return 0;
    }
    if (seq.kind == V_UNDEF) return 0;
    return rfail(c, at, MT_ERR_FORMAT, "argument of type '%s' is not iterable", type_name(seq));
}

static int compare(rctx *c, const node *at, int op, value a, value b, int *result) {
    int cmp = 0;
    if (charge(c, at, 1 + scan_cost(a))) return -1;
    switch (op) {
    case OP_EQ: *result = v_equal(a, b); return 0;
    case OP_NE: *result = !v_equal(a, b); return 0;
    case OP_IN: return contains(c, at, a, b, result);
    case OP_NOTIN: if (contains(c, at, a, b, result)) return -1; *result = !*result; return 0;
    }
    if (order(c, at, a, b, &cmp)) return -1;
    *result = op == '<' ? cmp < 0 : op == '>' ? cmp > 0 : op == OP_LE ? cmp <= 0 : cmp >= 0;
    return 0;
}

/* a < b < c means a < b and b < c, stopping at the first false comparison. */
static int eval_compare(rctx *c, const node *n, value *out) {
    value left, right;
    int result = 1;
    if (eval(c, n->a, &left)) return -1;
    for (int i = 0; i < n->args.n && result; i++) {
        if (eval(c, n->args.v[i], &right)) { v_drop(left); return -1; }
        int rc = compare(c, n, n->ops[i], left, right, &result);
        v_drop(left);
        left = right;
        if (rc) { v_drop(left); return -1; }
    }
    v_drop(left);
    *out = v_bool(result);
    return 0;
}

/* and / or return one of their operands, as in Python. */
static int eval_logic(rctx *c, const node *n, value *out) {
    if (eval(c, n->a, out)) return -1;
    if (truthy(*out) == (n->kind == N_OR)) return 0;
    v_drop(*out);
    return eval(c, n->b, out);
}

static int eval_cond(rctx *c, const node *n, value *out) {
    value cond;
    if (eval(c, n->b, &cond)) return -1;
    int t = truthy(cond);
    v_drop(cond);
    if (t) return eval(c, n->a, out);
    if (n->c) return eval(c, n->c, out);
    *out = v_undef(NULL);
    return 0;
}

static int eval_list(rctx *c, const node *n, value *out) {
    list_obj *l = list_new(c, n);
    if (!l) return -1;
    l->tuple = n->op;
    for (int i = 0; i < n->args.n; i++) {
        value v;
        if (eval(c, n->args.v[i], &v) || list_push(c, n, l, v)) { v_drop(list_value(l)); return -1; }
    }
    *out = list_value(l);
    return 0;
}

static int eval_dict(rctx *c, const node *n, value *out) {
    dict_obj *d = dict_new(c, n);
    if (!d) return -1;
    for (int i = 0; i < n->args.n; i++) {
        value k, v;
        if (eval(c, n->args.v[i], &k)) goto fail;
        if (eval(c, n->kwargs.v[i], &v)) { v_drop(k); goto fail; }
        if (dict_set(c, n, d, k, v)) goto fail;
    }
    *out = dict_value(d, V_DICT);
    return 0;
fail:
    v_drop(dict_value(d, V_DICT));
    return -1;
}

/* ---- calls, filters, tests ----------------------------------------------------------- */

typedef struct {
    value pos[MAX_ARGS], kw[MAX_ARGS];
    callargs a;
} argvals;

static void drop_args(argvals *v) {
    for (int i = 0; i < v->a.n_pos; i++) v_drop(v->pos[i]);
    for (int i = 0; i < v->a.n_kw; i++) v_drop(v->kw[i]);
}

static int eval_args(rctx *c, const node *n, argvals *v) {
    v->a.pos = v->pos;
    v->a.kw = v->kw;
    v->a.kw_names = n->names;
    v->a.n_pos = v->a.n_kw = 0;
    for (int i = 0; i < n->args.n; i++) {
        if (eval(c, n->args.v[i], &v->pos[i])) { drop_args(v); return -1; }
        v->a.n_pos++;
    }
    for (int i = 0; i < n->kwargs.n; i++) {
        if (eval(c, n->kwargs.v[i], &v->kw[i])) { drop_args(v); return -1; }
        v->a.n_kw++;
    }
    return 0;
}

/* Parameter i by position, else by keyword name; NULL when not given. */
static const value *arg(const callargs *a, int i, const char *name) {
    if (i >= 0 && i < a->n_pos) return &a->pos[i];
    for (int k = 0; name && k < a->n_kw; k++) if (strcmp(a->kw_names[k], name) == 0) return &a->kw[k];
    return NULL;
}

static int call_builtin(rctx *c, const node *at, int fn, const callargs *a, value *out);
static int call_method(rctx *c, const node *at, value obj, const char *name, const callargs *a, value *out);

static int eval_call(rctx *c, const node *n, value *out) {
    argvals args;
    value callee;
    int rc;
    if (n->a->kind == N_ATTR) {
        /* obj.method(...): string and dict methods are resolved on the object */
        if (eval(c, n->a->a, &callee)) return -1;
        if (eval_args(c, n, &args)) { v_drop(callee); return -1; }
        rc = call_method(c, n->a, callee, n->a->name, &args.a, out);
    } else {
        if (eval(c, n->a, &callee)) return -1;
        if (eval_args(c, n, &args)) { v_drop(callee); return -1; }
        if (callee.kind == V_FUNC) rc = call_builtin(c, n, callee.u.fn, &args.a, out);
        else if (callee.kind == V_UNDEF) rc = undefined_error(c, n, callee);
        else rc = rfail(c, n, MT_ERR_FORMAT, "'%s' object is not callable", type_name(callee));
    }
    v_drop(callee);
    drop_args(&args);
    return rc;
}

static int eval_filter(rctx *c, const node *n, value *out) {
    argvals args;
    value in;
    if (eval(c, n->a, &in)) return -1;
    if (eval_args(c, n, &args)) { v_drop(in); return -1; }
    int rc = run_filter(c, n, n->fn, in, &args.a, out);
    v_drop(in);
    drop_args(&args);
    return rc;
}

static int eval_test(rctx *c, const node *n, value *out) {
    argvals args;
    value in;
    int result = 0;
    if (eval(c, n->a, &in)) return -1;
    if (eval_args(c, n, &args)) { v_drop(in); return -1; }
    int rc = run_test(c, n, n->fn, in, &args.a, &result);
    v_drop(in);
    drop_args(&args);
    *out = v_bool(n->op ? !result : result);
    return rc;
}

static int eval(rctx *c, const node *n, value *out) {
    value obj, key;
    int rc;
    if (charge(c, n, 1)) return -1;
    switch (n->kind) {
    case N_CONST: *out = v_ref(n->k); return 0;
    case N_NAME: *out = lookup(c, n->name); return 0;
    case N_ATTR:
        if (eval(c, n->a, &obj)) return -1;
        rc = get_attr(c, n, obj, n->name, out);
        v_drop(obj);
        return rc;
    case N_ITEM:
        if (eval(c, n->a, &obj)) return -1;
        if (eval(c, n->b, &key)) { v_drop(obj); return -1; }
        rc = get_item(c, n, obj, key, (n->b->kind == N_CONST && n->b->k.kind == V_STR) ? n->b->k.u.s->s : NULL, out);
        v_drop(obj);
        v_drop(key);
        return rc;
    case N_SLICE: return eval_slice(c, n, out);
    case N_CALL: return eval_call(c, n, out);
    case N_FILTER: return eval_filter(c, n, out);
    case N_TEST: return eval_test(c, n, out);
    case N_NEG: case N_POS: return eval_unary(c, n, out);
    case N_NOT:
        if (eval(c, n->a, &obj)) return -1;
        *out = v_bool(!truthy(obj));
        v_drop(obj);
        return 0;
    case N_BINOP: return eval_binop(c, n, out);
    case N_AND: case N_OR: return eval_logic(c, n, out);
    case N_COMPARE: return eval_compare(c, n, out);
    case N_COND: return eval_cond(c, n, out);
    case N_LIST: return eval_list(c, n, out);
    case N_DICT: return eval_dict(c, n, out);
    default: return rfail(c, n, MT_ERR_FORMAT, "internal error: statement used as an expression");
    }
}

/* ======================================================================================
 * Builtin functions: raise_exception (transformers), namespace, range, dict (Jinja).
 * ==================================================================================== */

static int need_str(rctx *c, const node *at, const value *v, const char *what) {
    if (v && v->kind == V_STR) return 0;
    if (v && v->kind == V_UNDEF) return undefined_error(c, at, *v);
    return rfail(c, at, MT_ERR_FORMAT, "%s must be a string, not '%s'", what, v ? type_name(*v) : "nothing");
}

static int need_int(rctx *c, const node *at, const value *v, const char *what) {
    if (v && is_integral(*v)) return 0;
    if (v && v->kind == V_UNDEF) return undefined_error(c, at, *v);
    return rfail(c, at, MT_ERR_FORMAT, "%s must be an integer, not '%s'", what, v ? type_name(*v) : "nothing");
}

static int make_range(rctx *c, const node *at, const callargs *a, value *out) {
    int64_t r[3] = {0, 0, 1};
    if (a->n_pos < 1 || a->n_pos > 3 || a->n_kw) return rfail(c, at, MT_ERR_FORMAT, "range() takes 1 to 3 integer arguments");
    for (int i = 0; i < a->n_pos; i++) if (need_int(c, at, &a->pos[i], "range() argument")) return -1;
    if (a->n_pos == 1) r[1] = as_int(a->pos[0]);
    for (int i = 0; a->n_pos > 1 && i < a->n_pos; i++) r[i] = as_int(a->pos[i]);
    if (r[2] == 0) return rfail(c, at, MT_ERR_FORMAT, "range() step must not be zero");
    __int128 span = (__int128)r[1] - r[0], step = r[2];
    __int128 count = (span > 0) == (step > 0) && span != 0 ? (span + step + (step > 0 ? -1 : 1)) / step : 0;
    if (count > MAX_RANGE) return rfail(c, at, MT_ERR_FORMAT, "range() of more than %d items", MAX_RANGE);
    list_obj *l = list_new(c, at);
    if (!l) return -1;
    for (__int128 i = 0; i < count; i++)
        if (list_push(c, at, l, v_int((int64_t)(r[0] + i * step)))) { v_drop(list_value(l)); return -1; }
    *out = list_value(l);
    return 0;
}

/* namespace(...) and dict(...): from an optional dict and keyword arguments. */
static int make_dict(rctx *c, const node *at, const callargs *a, vkind kind, value *out) {
    if (a->n_pos > 1 || (a->n_pos == 1 && a->pos[0].kind != V_DICT))
        return rfail(c, at, MT_ERR_FORMAT, "%s() takes an optional dict and keyword arguments", kind == V_NS ? "namespace" : "dict");
    dict_obj *d = dict_new(c, at);
    if (!d) return -1;
    for (int i = 0; a->n_pos == 1 && i < a->pos[0].u.d->n; i++)
        if (dict_set(c, at, d, v_ref(a->pos[0].u.d->keys[i]), v_ref(a->pos[0].u.d->vals[i]))) goto fail;
    for (int i = 0; i < a->n_kw; i++) {
        value key;
        if (str_new(c, at, a->kw_names[i], strlen(a->kw_names[i]), &key) || dict_set(c, at, d, key, v_ref(a->kw[i]))) goto fail;
    }
    *out = dict_value(d, kind);
    return 0;
fail:
    v_drop(dict_value(d, kind));
    return -1;
}

static int call_builtin(rctx *c, const node *at, int fn, const callargs *a, value *out) {
    if (fn == FN_RAISE_EXCEPTION) {
        const value *m = arg(a, 0, "message");
        value msg;
        if (to_str(c, at, m ? *m : v_undef(NULL), &msg)) return -1;
        rfail(c, at, MT_ERR_ARG, "%s", msg.u.s->s);
        v_drop(msg);
        return -1;
    }
    if (fn == FN_RANGE) return make_range(c, at, a, out);
    return make_dict(c, at, a, fn == FN_NAMESPACE ? V_NS : V_DICT, out);
}

/* ======================================================================================
 * String helpers shared by methods and filters (ASCII case rules; Python's semantics
 * otherwise).
 * ==================================================================================== */

static int in_chars(uint32_t cp, const str_obj *chars) {
    if (!chars) return cp < 0x80 && py_space((char)cp);
    for (size_t i = 0; i < chars->len; i = u8_next(chars->s, chars->len, i))
        if (u8_decode(chars->s, chars->len, i) == cp) return 1;
    return 0;
}

/* str.strip / lstrip / rstrip with chars = NULL for whitespace. */
static int strip(rctx *c, const node *at, const str_obj *s, const str_obj *chars, int left, int right, value *out) {
    size_t a = 0, b = s->len, step = 1 + (chars ? chars->len / 16 : 0);
    while (left && a < b && in_chars(u8_decode(s->s, s->len, a), chars)) {
        if (charge(c, at, step)) return -1;
        a = u8_next(s->s, s->len, a);
    }
    while (right && b > a) {
        if (charge(c, at, step)) return -1;
        size_t p = b - 1;
        while (p > a && b - p < 4 && ((unsigned char)s->s[p] & 0xC0) == 0x80) p--;
        if (u8_next(s->s, s->len, p) != b) p = b - 1; /* not a whole character: one byte */
        if (!in_chars(p == b - 1 ? (unsigned char)s->s[p] : u8_decode(s->s, s->len, p), chars)) break;
        b = p;
    }
    return str_new(c, at, s->s + a, b - a, out);
}

enum { CASE_LOWER, CASE_UPPER, CASE_CAPITALIZE, CASE_TITLE_PY, CASE_TITLE_JINJA };

static int change_case(rctx *c, const node *at, const str_obj *s, int mode, value *out) {
    if (str_new(c, at, s->s, s->len, out)) return -1;
    char *p = out->u.s->s;
    int boundary = 1;
    for (size_t i = 0; i < s->len; i++) {
        char ch = p[i];
        int up = mode == CASE_UPPER || (mode == CASE_CAPITALIZE && i == 0) ||
                 ((mode == CASE_TITLE_PY || mode == CASE_TITLE_JINJA) && boundary);
        if (isalpha((unsigned char)ch)) p[i] = (char)(up ? toupper((unsigned char)ch) : tolower((unsigned char)ch));
        if (mode == CASE_TITLE_PY) boundary = !isalpha((unsigned char)ch) && (unsigned char)ch < 0x80;
        else if (mode == CASE_TITLE_JINJA) boundary = py_space(ch) || strchr("-({[<", ch) != NULL;
    }
    return 0;
}

static int replace(rctx *c, const node *at, const str_obj *s, const str_obj *old, const str_obj *rep, int64_t count, value *out) {
    sbuf b = {0};
    size_t i = 0;
    int64_t done = 0;
    int rc = 0;
    if (old->len == 0) {
        /* Python inserts the replacement before every character and at the end */
        for (; rc == 0 && (count < 0 || done < count) && i <= s->len; done++) {
            size_t j = i < s->len ? u8_next(s->s, s->len, i) : s->len + 1;
            rc = sb_put(c, at, &b, rep->s, rep->len);
            if (rc == 0 && i < s->len) rc = sb_put(c, at, &b, s->s + i, j - i);
            i = j;
        }
        if (rc == 0 && i < s->len) rc = sb_put(c, at, &b, s->s + i, s->len - i);
    } else {
        while (rc == 0 && (count < 0 || done < count)) {
            const char *hit = memmem(s->s + i, s->len - i, old->s, old->len);
            if (!hit) break;
            size_t k = (size_t)(hit - s->s);
            rc = sb_put(c, at, &b, s->s + i, k - i);
            if (rc == 0) rc = sb_put(c, at, &b, rep->s, rep->len);
            i = k + old->len;
            done++;
        }
        if (rc == 0) rc = sb_put(c, at, &b, s->s + i, s->len - i);
    }
    if (rc) { sb_free(&b); return -1; }
    return sb_to_value(c, at, &b, out);
}

/* str.split(sep=None, maxsplit=-1) */
static int split(rctx *c, const node *at, const str_obj *s, const str_obj *sep, int64_t maxsplit, value *out) {
    list_obj *l = list_new(c, at);
    size_t i = 0;
    int64_t done = 0;
    value piece;
    if (!l) return -1;
    if (sep && sep->len == 0) { v_drop(list_value(l)); return rfail(c, at, MT_ERR_FORMAT, "empty separator"); }
    for (;;) {
        if (!sep) while (i < s->len && py_space(s->s[i])) i++;
        if (!sep && i >= s->len) break;
        size_t k = i;
        if (maxsplit >= 0 && done >= maxsplit) {
            k = s->len;
            if (!sep) while (k > i && py_space(s->s[k - 1])) k--;
        } else if (sep) {
            const char *hit = memmem(s->s + i, s->len - i, sep->s, sep->len);
            k = hit ? (size_t)(hit - s->s) : s->len;
        } else {
            while (k < s->len && !py_space(s->s[k])) k++;
        }
        if (str_new(c, at, s->s + i, k - i, &piece) || list_push(c, at, l, piece)) { v_drop(list_value(l)); return -1; }
        done++;
        if (k >= s->len) break;
        i = k + (sep ? sep->len : 0);
        if (sep && i == s->len) {
            if (str_new(c, at, "", 0, &piece) || list_push(c, at, l, piece)) { v_drop(list_value(l)); return -1; }
            break;
        }
    }
    *out = list_value(l);
    return 0;
}

static int affix_match(const str_obj *s, const str_obj *affix, int at_end) {
    if (affix->len > s->len) return 0;
    return memcmp(s->s + (at_end ? s->len - affix->len : 0), affix->s, affix->len) == 0;
}

/* str.startswith / str.endswith with a string or a tuple (list) of strings. */
static int affix(rctx *c, const node *at, const str_obj *s, const value *which, int at_end, value *out) {
    if (which && which->kind == V_LIST) {
        int hit = 0;
        for (int i = 0; i < which->u.l->n; i++) {
            if (need_str(c, at, &which->u.l->items[i], "prefix")) return -1;
            hit |= affix_match(s, which->u.l->items[i].u.s, at_end);
        }
        *out = v_bool(hit);
        return 0;
    }
    if (need_str(c, at, which, at_end ? "endswith() argument" : "startswith() argument")) return -1;
    *out = v_bool(affix_match(s, which->u.s, at_end));
    return 0;
}

static int join_strings(rctx *c, const node *at, const str_obj *sep, value items, value *out) {
    list_obj *l;
    sbuf b = {0};
    if (iter_items(c, at, items, &l)) return -1;
    int rc = 0;
    for (int i = 0; i < l->n && rc == 0; i++) {
        rc = need_str(c, at, &l->items[i], "join() item");
        if (rc == 0 && i) rc = sb_put(c, at, &b, sep->s, sep->len);
        if (rc == 0) rc = sb_put(c, at, &b, l->items[i].u.s->s, l->items[i].u.s->len);
    }
    v_drop(list_value(l));
    if (rc) { sb_free(&b); return -1; }
    return sb_to_value(c, at, &b, out);
}

/* Returns 1 when the string has no method of that name. */
static int str_method(rctx *c, const node *at, const str_obj *s, const char *name, const callargs *a, value *out) {
    const value *x = arg(a, 0, NULL), *y = arg(a, 1, NULL);
    const str_obj *chars = x && x->kind == V_STR ? x->u.s : NULL;
    if (x && x->kind != V_STR && x->kind != V_NONE && (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")))
        return need_str(c, at, x, "strip() argument");
    if (!strcmp(name, "strip")) return strip(c, at, s, chars, 1, 1, out);
    if (!strcmp(name, "lstrip")) return strip(c, at, s, chars, 1, 0, out);
    if (!strcmp(name, "rstrip")) return strip(c, at, s, chars, 0, 1, out);
    if (!strcmp(name, "startswith")) return affix(c, at, s, x, 0, out);
    if (!strcmp(name, "endswith")) return affix(c, at, s, x, 1, out);
    if (!strcmp(name, "upper")) return change_case(c, at, s, CASE_UPPER, out);
    if (!strcmp(name, "lower")) return change_case(c, at, s, CASE_LOWER, out);
    if (!strcmp(name, "capitalize")) return change_case(c, at, s, CASE_CAPITALIZE, out);
    if (!strcmp(name, "title")) return change_case(c, at, s, CASE_TITLE_PY, out);
    if (!strcmp(name, "split")) {
        const value *sep = arg(a, 0, "sep"), *max = arg(a, 1, "maxsplit");
        if (sep && sep->kind != V_NONE && need_str(c, at, sep, "split() separator")) return -1;
        if (max && need_int(c, at, max, "maxsplit")) return -1;
        return split(c, at, s, sep && sep->kind == V_STR ? sep->u.s : NULL, max ? as_int(*max) : -1, out);
    }
    if (!strcmp(name, "replace")) {
        const value *n = arg(a, 2, "count");
        if (need_str(c, at, x, "replace() argument") || need_str(c, at, y, "replace() argument")) return -1;
        if (n && need_int(c, at, n, "replace() count")) return -1;
        return replace(c, at, s, x->u.s, y->u.s, n ? as_int(*n) : -1, out);
    }
    if (!strcmp(name, "join")) {
        if (!x) return rfail(c, at, MT_ERR_FORMAT, "join() takes one argument");
        return join_strings(c, at, s, *x, out);
    }
    return 1;
}

static int pairs(rctx *c, const node *at, const dict_obj *d, int what, value *out) {
    list_obj *l = list_new(c, at);
    if (!l) return -1;
    for (int i = 0; i < d->n; i++) {
        value item;
        if (what == 0) item = v_ref(d->keys[i]);
        else if (what == 1) item = v_ref(d->vals[i]);
        else {
            list_obj *pair = list_new(c, at);
            if (!pair || list_push(c, at, pair, v_ref(d->keys[i])) || list_push(c, at, pair, v_ref(d->vals[i]))) {
                if (pair) v_drop(list_value(pair));
                v_drop(list_value(l));
                return -1;
            }
            pair->tuple = 1;
            item = list_value(pair);
        }
        if (list_push(c, at, l, item)) { v_drop(list_value(l)); return -1; }
    }
    *out = list_value(l);
    return 0;
}

static int call_method(rctx *c, const node *at, value obj, const char *name, const callargs *a, value *out) {
    if (obj.kind == V_STR) {
        int rc = str_method(c, at, obj.u.s, name, a, out);
        if (rc <= 0) return rc;
    }
    if (obj.kind == V_DICT) {
        if (!strcmp(name, "get")) {
            const value *key = arg(a, 0, "key"), *dflt = arg(a, 1, "default");
            value *v;
            if (!key) return rfail(c, at, MT_ERR_FORMAT, "get() takes a key");
            if (dict_lookup(c, at, obj.u.d, *key, &v)) return -1;
            *out = v ? v_ref(*v) : dflt ? v_ref(*dflt) : v_none();
            return 0;
        }
        if (!strcmp(name, "keys")) return pairs(c, at, obj.u.d, 0, out);
        if (!strcmp(name, "values")) return pairs(c, at, obj.u.d, 1, out);
        if (!strcmp(name, "items")) return pairs(c, at, obj.u.d, 2, out);
    }
    if (obj.kind == V_UNDEF) return undefined_error(c, at, obj);
    if (obj.kind == V_DICT || obj.kind == V_NS) {
        const value *f = dict_find_str(obj.u.d, name);
        if (f && f->kind == V_FUNC) return call_builtin(c, at, f->u.fn, a, out);
    }
    return rfail(c, at, MT_ERR_FORMAT, "'%s' object has no method '%s'", type_name(obj), name);
}

/* ======================================================================================
 * Filters. Each gets the filtered value and its arguments; names and parameters follow
 * Jinja's builtin filters (tojson follows transformers' override of it).
 * ==================================================================================== */

static int f_abs(rctx *c, const node *at, value in, const callargs *a, value *out) {
    (void)a;
    if (in.kind == V_FLOAT) { *out = v_float(fabs(in.u.f)); return 0; }
    if (is_integral(in) && as_int(in) != INT64_MIN) { *out = v_int(as_int(in) < 0 ? -as_int(in) : as_int(in)); return 0; }
    return rfail(c, at, MT_ERR_FORMAT, "bad operand type for abs(): '%s'", type_name(in));
}

static int f_case(rctx *c, const node *at, value in, int mode, value *out) {
    value s;
    if (to_str(c, at, in, &s)) return -1;
    int rc = change_case(c, at, s.u.s, mode, out);
    v_drop(s);
    return rc;
}
static int f_lower(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)a; return f_case(c, at, in, CASE_LOWER, out); }
static int f_upper(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)a; return f_case(c, at, in, CASE_UPPER, out); }
static int f_capitalize(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)a; return f_case(c, at, in, CASE_CAPITALIZE, out); }
static int f_title(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)a; return f_case(c, at, in, CASE_TITLE_JINJA, out); }

static int f_default(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *dflt = arg(a, 0, "default_value"), *boolean = arg(a, 1, "boolean");
    if (in.kind != V_UNDEF && !(boolean && truthy(*boolean) && !truthy(in))) { *out = v_ref(in); return 0; }
    if (dflt) { *out = v_ref(*dflt); return 0; }
    return str_new(c, at, "", 0, out);
}

static int f_length(rctx *c, const node *at, value in, const callargs *a, value *out) {
    (void)a;
    switch (in.kind) {
    case V_UNDEF: *out = v_int(0); return 0;
    case V_STR:
        if (charge(c, at, in.u.s->len / 64)) return -1;
        *out = v_int((int64_t)u8_count(in.u.s->s, in.u.s->len));
        return 0;
    case V_LIST: *out = v_int(in.u.l->n); return 0;
    case V_DICT: *out = v_int(in.u.d->n); return 0;
    default: return rfail(c, at, MT_ERR_FORMAT, "object of type '%s' has no len()", type_name(in));
    }
}

static int f_list(rctx *c, const node *at, value in, const callargs *a, value *out) {
    (void)a;
    list_obj *l;
    if (iter_items(c, at, in, &l)) return -1;
    *out = list_value(l);
    return 0;
}

static int f_first_last(rctx *c, const node *at, value in, int last, value *out) {
    list_obj *l;
    if (iter_items(c, at, in, &l)) return -1;
    *out = l->n ? v_ref(l->items[last ? l->n - 1 : 0]) : v_undef(NULL);
    v_drop(list_value(l));
    return 0;
}
static int f_first(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)a; return f_first_last(c, at, in, 0, out); }
static int f_last(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)a; return f_first_last(c, at, in, 1, out); }

static int f_reverse(rctx *c, const node *at, value in, const callargs *a, value *out) {
    (void)a;
    list_obj *l, *r;
    if (in.kind == V_STR) {
        sbuf b = {0};
        for (size_t end = in.u.s->len; end > 0;) {
            size_t p = end - 1;
            while (p > 0 && end - p < 4 && ((unsigned char)in.u.s->s[p] & 0xC0) == 0x80) p--;
            if (u8_next(in.u.s->s, in.u.s->len, p) != end) p = end - 1;
            if (sb_put(c, at, &b, in.u.s->s + p, end - p)) { sb_free(&b); return -1; }
            end = p;
        }
        return sb_to_value(c, at, &b, out);
    }
    if (iter_items(c, at, in, &l)) return -1;
    if (!(r = list_new(c, at))) { v_drop(list_value(l)); return -1; }
    for (int i = l->n - 1; i >= 0; i--)
        if (list_push(c, at, r, v_ref(l->items[i]))) { v_drop(list_value(r)); v_drop(list_value(l)); return -1; }
    v_drop(list_value(l));
    *out = list_value(r);
    return 0;
}

static int f_items(rctx *c, const node *at, value in, const callargs *a, value *out) {
    (void)a;
    if (in.kind == V_UNDEF) { list_obj *l = list_new(c, at); if (!l) return -1; *out = list_value(l); return 0; }
    if (in.kind != V_DICT) return rfail(c, at, MT_ERR_FORMAT, "items filter expects a dict, not '%s'", type_name(in));
    return pairs(c, at, in.u.d, 2, out);
}

/* Jinja's attribute getter for map / join / selectattr: "a.b.0" looks up a, then b, then 0. */
static int lookup_path(rctx *c, const node *at, value obj, const char *path, value *out) {
    value v = v_ref(obj);
    while (*path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        value key, next;
        int numeric = n > 0 && strspn(path, "0123456789") >= n;
        if (numeric) key = v_int(strtoll(path, NULL, 10));
        else if (str_new(c, at, path, n, &key)) { v_drop(v); return -1; }
        int rc = get_item(c, at, v, key, NULL, &next);
        v_drop(key);
        v_drop(v);
        if (rc) return -1;
        v = next;
        path += n + (dot ? 1 : 0);
    }
    *out = v;
    return 0;
}

static int f_join(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *sep = arg(a, 0, "d"), *attr = arg(a, 1, "attribute");
    list_obj *l;
    sbuf b = {0};
    if ((sep && need_str(c, at, sep, "join separator")) || (attr && need_str(c, at, attr, "join attribute"))) return -1;
    if (iter_items(c, at, in, &l)) return -1;
    int rc = 0;
    for (int i = 0; i < l->n && rc == 0; i++) {
        value item = v_ref(l->items[i]);
        if (attr) { value v; rc = lookup_path(c, at, item, attr->u.s->s, &v); v_drop(item); item = rc ? v_undef(NULL) : v; }
        if (rc == 0 && i && sep) rc = sb_put(c, at, &b, sep->u.s->s, sep->u.s->len);
        if (rc == 0) rc = write_value(c, at, &b, item);
        v_drop(item);
    }
    v_drop(list_value(l));
    if (rc) { sb_free(&b); return -1; }
    return sb_to_value(c, at, &b, out);
}

static int f_replace(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *old = arg(a, 0, "old"), *rep = arg(a, 1, "new"), *count = arg(a, 2, "count");
    value s, o, r;
    if (!old || !rep) return rfail(c, at, MT_ERR_FORMAT, "replace filter takes old and new strings");
    if (count && count->kind != V_NONE && need_int(c, at, count, "replace count")) return -1;
    if (to_str(c, at, in, &s)) return -1;
    if (to_str(c, at, *old, &o)) { v_drop(s); return -1; }
    if (to_str(c, at, *rep, &r)) { v_drop(s); v_drop(o); return -1; }
    int rc = replace(c, at, s.u.s, o.u.s, r.u.s, count && count->kind != V_NONE ? as_int(*count) : -1, out);
    v_drop(s);
    v_drop(o);
    v_drop(r);
    return rc;
}

static int f_safe(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)c; (void)at; (void)a; *out = v_ref(in); return 0; }
static int f_string(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)a; return to_str(c, at, in, out); }

static int f_trim(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *chars = arg(a, 0, "chars");
    value s;
    if (chars && chars->kind != V_NONE && need_str(c, at, chars, "trim characters")) return -1;
    if (to_str(c, at, in, &s)) return -1;
    int rc = strip(c, at, s.u.s, chars && chars->kind == V_STR ? chars->u.s : NULL, 1, 1, out);
    v_drop(s);
    return rc;
}

/* int(value, default=0): strings parse as Python int() (or float() then truncated). */
static int f_int(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *dflt = arg(a, 0, "default");
    (void)c; (void)at;
    if (is_integral(in)) { *out = v_int(as_int(in)); return 0; }
    if (in.kind == V_FLOAT && isfinite(in.u.f) && fabs(in.u.f) < 9.2e18) { *out = v_int((int64_t)in.u.f); return 0; }
    if (in.kind == V_STR) {
        char *end;
        errno = 0;
        long long v = strtoll(in.u.s->s, &end, 10);
        while (py_space(*end)) end++;
        if (!errno && end != in.u.s->s && !*end) { *out = v_int(v); return 0; }
        double f = strtod(in.u.s->s, &end);
        while (py_space(*end)) end++;
        if (end != in.u.s->s && !*end && isfinite(f) && fabs(f) < 9.2e18) { *out = v_int((int64_t)f); return 0; }
    }
    *out = dflt ? v_ref(*dflt) : v_int(0);
    return 0;
}

static int f_float(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *dflt = arg(a, 0, "default");
    (void)c; (void)at;
    if (is_number(in)) { *out = v_float(as_float(in)); return 0; }
    if (in.kind == V_STR) {
        char *end;
        double f = strtod(in.u.s->s, &end);
        while (py_space(*end)) end++;
        if (end != in.u.s->s && !*end) { *out = v_float(f); return 0; }
    }
    *out = dflt ? v_ref(*dflt) : v_float(0.0);
    return 0;
}

static int apply_test(rctx *c, const node *at, const char *name, value v, const callargs *rest, int *result);

/* select / reject / selectattr / rejectattr: keep items whose test (or truthiness) is `keep`. */
static int select_items(rctx *c, const node *at, value in, const callargs *a, int with_attr, int keep, value *out) {
    int skip = with_attr ? 1 : 0;
    const value *attr = with_attr ? arg(a, 0, NULL) : NULL;
    const value *test = arg(a, skip, NULL);
    if ((with_attr && need_str(c, at, attr, "attribute name")) || (test && need_str(c, at, test, "test name"))) return -1;
    callargs rest = {a->pos + skip + 1, a->n_pos > skip + 1 ? a->n_pos - skip - 1 : 0, a->kw_names, a->kw, a->n_kw};
    list_obj *l, *r;
    if (iter_items(c, at, in, &l)) return -1;
    if (!(r = list_new(c, at))) { v_drop(list_value(l)); return -1; }
    for (int i = 0; i < l->n; i++) {
        value v = v_ref(l->items[i]);
        int ok = 0, rc = 0;
        if (attr) { value x; rc = lookup_path(c, at, v, attr->u.s->s, &x); v_drop(v); v = rc ? v_undef(NULL) : x; }
        if (rc == 0) { if (test) rc = apply_test(c, at, test->u.s->s, v, &rest, &ok); else ok = truthy(v); }
        v_drop(v);
        if (rc == 0 && ok == keep) rc = list_push(c, at, r, v_ref(l->items[i]));
        if (rc) { v_drop(list_value(r)); v_drop(list_value(l)); return -1; }
    }
    v_drop(list_value(l));
    *out = list_value(r);
    return 0;
}
static int f_select(rctx *c, const node *at, value in, const callargs *a, value *out) { return select_items(c, at, in, a, 0, 1, out); }
static int f_reject(rctx *c, const node *at, value in, const callargs *a, value *out) { return select_items(c, at, in, a, 0, 0, out); }
static int f_selectattr(rctx *c, const node *at, value in, const callargs *a, value *out) { return select_items(c, at, in, a, 1, 1, out); }
static int f_rejectattr(rctx *c, const node *at, value in, const callargs *a, value *out) { return select_items(c, at, in, a, 1, 0, out); }

/* map(attribute='x') or map('filter', args...) */
static int f_map(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *attr = arg(a, -1, "attribute"), *name = arg(a, 0, NULL);
    int fn = -1;
    if (attr && need_str(c, at, attr, "map attribute")) return -1;
    if (!attr) {
        if (need_str(c, at, name, "map filter name")) return -1;
        if ((fn = find_filter(name->u.s->s)) < 0) return rfail(c, at, MT_ERR_UNSUPPORTED, "filter '%s' is not supported", name->u.s->s);
    }
    callargs rest = {a->pos + 1, a->n_pos > 1 ? a->n_pos - 1 : 0, a->kw_names, a->kw, attr ? 0 : a->n_kw};
    list_obj *l, *r;
    if (iter_items(c, at, in, &l)) return -1;
    if (!(r = list_new(c, at))) { v_drop(list_value(l)); return -1; }
    for (int i = 0; i < l->n; i++) {
        value v;
        int rc = attr ? lookup_path(c, at, l->items[i], attr->u.s->s, &v) : run_filter(c, at, fn, l->items[i], &rest, &v);
        if (rc == 0) rc = list_push(c, at, r, v);
        if (rc) { v_drop(list_value(r)); v_drop(list_value(l)); return -1; }
    }
    v_drop(list_value(l));
    *out = list_value(r);
    return 0;
}

/* ---- tojson: Python's json.dumps(ensure_ascii=False) as transformers binds it ---------- */

typedef struct {
    const char *indent; /* NULL: one line */
    size_t indent_len;
    const char *item_sep, *key_sep;
    int sort_keys, ensure_ascii;
} json_style;

static int json_string(rctx *c, const node *at, sbuf *b, const char *s, size_t n, int ensure_ascii) {
    if (sb_str(c, at, b, "\"")) return -1;
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)s[i];
        char esc[16];
        const char *e = NULL;
        size_t j = i + 1;
        switch (ch) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        default:
            if (ch < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", ch); e = esc; }
            else if (ch >= 0x80 && ensure_ascii) {
                uint32_t cp = u8_decode(s, n, i);
                j = u8_next(s, n, i);
                if (cp >= 0x10000) snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF));
                else snprintf(esc, sizeof esc, "\\u%04x", cp);
                e = esc;
            }
        }
        if (e ? sb_str(c, at, b, e) : sb_put(c, at, b, s + i, 1)) return -1;
        i = j;
    }
    return sb_str(c, at, b, "\"");
}

static int json_newline(rctx *c, const node *at, sbuf *b, const json_style *st, int level) {
    if (!st->indent) return 0;
    if (sb_str(c, at, b, "\n")) return -1;
    for (int i = 0; i < level; i++) if (sb_put(c, at, b, st->indent, st->indent_len)) return -1;
    return 0;
}

static int json_value(rctx *c, const node *at, sbuf *b, value v, const json_style *st, int level);

static int json_key(rctx *c, const node *at, sbuf *b, value k, const json_style *st) {
    if (k.kind == V_STR) return json_string(c, at, b, k.u.s->s, k.u.s->len, st->ensure_ascii);
    if (k.kind != V_INT && k.kind != V_BOOL && k.kind != V_FLOAT && k.kind != V_NONE)
        return rfail(c, at, MT_ERR_FORMAT, "keys must be str, int, float, bool or None, not '%s'", type_name(k));
    sbuf tmp = {0};
    int rc = json_value(c, at, &tmp, k, st, 0);
    if (rc == 0) rc = json_string(c, at, b, tmp.p, tmp.n, 0);
    sb_free(&tmp);
    return rc;
}

static int key_order(const dict_obj *d, int i, int j) {
    const str_obj *a = d->keys[i].u.s, *b = d->keys[j].u.s;
    size_t n = a->len < b->len ? a->len : b->len;
    int r = memcmp(a->s, b->s, n);
    return r ? r : (a->len > b->len) - (a->len < b->len);
}

static int json_dict(rctx *c, const node *at, sbuf *b, const dict_obj *d, const json_style *st, int level) {
    int order[64], *idx = d->n <= 64 ? order : malloc((size_t)d->n * sizeof *idx);
    if (!idx) return rfail(c, at, MT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < d->n; i++) idx[i] = i;
    if (st->sort_keys) {
        if (charge(c, at, (size_t)d->n * (size_t)d->n / 16)) { if (idx != order) free(idx); return -1; }
        for (int i = 0; i < d->n; i++)
            if (d->keys[i].kind != V_STR) { if (idx != order) free(idx); return rfail(c, at, MT_ERR_UNSUPPORTED, "sort_keys needs string keys"); }
        for (int i = 1; i < d->n; i++) /* insertion sort: dicts in templates are small */
            for (int j = i; j > 0 && key_order(d, idx[j - 1], idx[j]) > 0; j--) { int t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t; }
    }
    int rc = sb_str(c, at, b, "{");
    for (int i = 0; i < d->n && rc == 0; i++) {
        if (i) rc = sb_str(c, at, b, st->item_sep);
        if (rc == 0) rc = json_newline(c, at, b, st, level + 1);
        if (rc == 0) rc = json_key(c, at, b, d->keys[idx[i]], st);
        if (rc == 0) rc = sb_str(c, at, b, st->key_sep);
        if (rc == 0) rc = json_value(c, at, b, d->vals[idx[i]], st, level + 1);
    }
    if (rc == 0 && d->n) rc = json_newline(c, at, b, st, level);
    if (idx != order) free(idx);
    return rc ? -1 : sb_str(c, at, b, "}");
}

static int json_value(rctx *c, const node *at, sbuf *b, value v, const json_style *st, int level) {
    char num[48];
    switch (v.kind) {
    case V_NONE: return sb_str(c, at, b, "null");
    case V_BOOL: return sb_str(c, at, b, v.u.b ? "true" : "false");
    case V_INT: snprintf(num, sizeof num, "%lld", (long long)v.u.i); return sb_str(c, at, b, num);
    case V_FLOAT:
        if (isnan(v.u.f)) return sb_str(c, at, b, "NaN");
        if (isinf(v.u.f)) return sb_str(c, at, b, v.u.f < 0 ? "-Infinity" : "Infinity");
        format_float(v.u.f, num, sizeof num);
        return sb_str(c, at, b, num);
    case V_STR: return json_string(c, at, b, v.u.s->s, v.u.s->len, st->ensure_ascii);
    case V_LIST: {
        int rc = sb_str(c, at, b, "[");
        for (int i = 0; i < v.u.l->n && rc == 0; i++) {
            if (i) rc = sb_str(c, at, b, st->item_sep);
            if (rc == 0) rc = json_newline(c, at, b, st, level + 1);
            if (rc == 0) rc = json_value(c, at, b, v.u.l->items[i], st, level + 1);
        }
        if (rc == 0 && v.u.l->n) rc = json_newline(c, at, b, st, level);
        return rc ? -1 : sb_str(c, at, b, "]");
    }
    case V_DICT: return json_dict(c, at, b, v.u.d, st, level);
    case V_UNDEF: return undefined_error(c, at, v);
    default: return rfail(c, at, MT_ERR_FORMAT, "object of type '%s' is not JSON serializable", type_name(v));
    }
}

static int f_tojson(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *indent = arg(a, 1, "indent"), *sort = arg(a, 4, "sort_keys"), *ascii = arg(a, 0, "ensure_ascii");
    const value *seps = arg(a, 2, "separators");
    char spaces[64];
    json_style st = {NULL, 0, ", ", ": ", sort && truthy(*sort), ascii && truthy(*ascii)};
    if (indent && indent->kind != V_NONE) {
        if (indent->kind == V_STR) { st.indent = indent->u.s->s; st.indent_len = indent->u.s->len; }
        else if (is_integral(*indent)) {
            int64_t w = as_int(*indent);
            if (w > (int64_t)sizeof spaces) return rfail(c, at, MT_ERR_UNSUPPORTED, "indent wider than %zu", sizeof spaces);
            memset(spaces, ' ', sizeof spaces);
            st.indent = spaces;
            st.indent_len = w > 0 ? (size_t)w : 0;
        } else return rfail(c, at, MT_ERR_FORMAT, "indent must be an integer or a string");
        st.item_sep = ",";
    }
    if (seps && seps->kind != V_NONE) {
        if (seps->kind != V_LIST || seps->u.l->n != 2 || seps->u.l->items[0].kind != V_STR || seps->u.l->items[1].kind != V_STR)
            return rfail(c, at, MT_ERR_FORMAT, "separators must be two strings");
        st.item_sep = seps->u.l->items[0].u.s->s;
        st.key_sep = seps->u.l->items[1].u.s->s;
    }
    sbuf b = {0};
    if (json_value(c, at, &b, in, &st, 0)) { sb_free(&b); return -1; }
    return sb_to_value(c, at, &b, out);
}

static const filter_def FILTERS[] = {
    {"abs", f_abs}, {"capitalize", f_capitalize}, {"count", f_length}, {"d", f_default},
    {"default", f_default}, {"first", f_first}, {"float", f_float}, {"int", f_int},
    {"items", f_items}, {"join", f_join}, {"last", f_last}, {"length", f_length},
    {"list", f_list}, {"lower", f_lower}, {"map", f_map}, {"reject", f_reject},
    {"rejectattr", f_rejectattr}, {"replace", f_replace}, {"reverse", f_reverse}, {"safe", f_safe},
    {"select", f_select}, {"selectattr", f_selectattr}, {"string", f_string}, {"title", f_title},
    {"tojson", f_tojson}, {"trim", f_trim}, {"upper", f_upper},
};
static const int N_FILTERS = (int)(sizeof FILTERS / sizeof FILTERS[0]);

/* ======================================================================================
 * Tests ("x is defined", "x is divisibleby 3", ...)
 * ==================================================================================== */

#define SIMPLE_TEST(fname, expr) \
    static int fname(rctx *c, const node *at, value v, const callargs *a, int *r) { \
        (void)c; (void)at; (void)a; *r = (expr); return 0; }

SIMPLE_TEST(t_defined, v.kind != V_UNDEF)
SIMPLE_TEST(t_undefined, v.kind == V_UNDEF)
SIMPLE_TEST(t_none, v.kind == V_NONE)
SIMPLE_TEST(t_boolean, v.kind == V_BOOL)
SIMPLE_TEST(t_true, v.kind == V_BOOL && v.u.b)
SIMPLE_TEST(t_false, v.kind == V_BOOL && !v.u.b)
SIMPLE_TEST(t_integer, v.kind == V_INT)
SIMPLE_TEST(t_float, v.kind == V_FLOAT)
SIMPLE_TEST(t_number, is_number(v))
SIMPLE_TEST(t_string, v.kind == V_STR)
SIMPLE_TEST(t_mapping, v.kind == V_DICT)
SIMPLE_TEST(t_iterable, v.kind == V_STR || v.kind == V_LIST || v.kind == V_DICT || v.kind == V_UNDEF)
SIMPLE_TEST(t_callable, v.kind == V_FUNC)

static int t_even_odd(rctx *c, const node *at, value v, int odd, int *r) {
    if (need_int(c, at, &v, "even/odd test value")) return -1;
    *r = (floor_mod(as_int(v), 2) == 1) == odd;
    return 0;
}
static int t_even(rctx *c, const node *at, value v, const callargs *a, int *r) { (void)a; return t_even_odd(c, at, v, 0, r); }
static int t_odd(rctx *c, const node *at, value v, const callargs *a, int *r) { (void)a; return t_even_odd(c, at, v, 1, r); }

static int t_divisibleby(rctx *c, const node *at, value v, const callargs *a, int *r) {
    const value *n = arg(a, 0, "num");
    if (need_int(c, at, &v, "divisibleby value") || need_int(c, at, n, "divisibleby argument")) return -1;
    if (as_int(*n) == 0) return rfail(c, at, MT_ERR_FORMAT, "division by zero");
    *r = as_int(*n) == -1 || as_int(v) % as_int(*n) == 0;
    return 0;
}

static int t_compare(rctx *c, const node *at, value v, const callargs *a, int op, int *r) {
    const value *other = arg(a, 0, "other");
    if (!other) return rfail(c, at, MT_ERR_FORMAT, "comparison test needs an argument");
    return compare(c, at, op, v, *other, r);
}
static int t_eq(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, OP_EQ, r); }
static int t_ne(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, OP_NE, r); }
static int t_lt(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, '<', r); }
static int t_le(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, OP_LE, r); }
static int t_gt(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, '>', r); }
static int t_ge(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, OP_GE, r); }
static int t_in(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, OP_IN, r); }

static int t_sameas(rctx *c, const node *at, value v, const callargs *a, int *r) {
    const value *o = arg(a, 0, "other");
    if (!o) return rfail(c, at, MT_ERR_FORMAT, "sameas needs an argument");
    if (v.kind != o->kind) *r = 0;
    else if (v.kind == V_NONE || v.kind == V_UNDEF) *r = 1;
    else if (v.kind == V_BOOL) *r = v.u.b == o->u.b;
    else if (is_heap(v)) *r = hdr(v) == hdr(*o);
    else *r = v_equal(v, *o);
    return 0;
}

/* lower / upper: has a cased character and all of them are in that case (ASCII). */
static int t_case(value v, int upper) {
    int cased = 0;
    if (v.kind != V_STR) return 0;
    for (size_t i = 0; i < v.u.s->len; i++) {
        unsigned char ch = (unsigned char)v.u.s->s[i];
        if (isalpha(ch)) { if ((isupper(ch) != 0) != upper) return 0; cased = 1; }
    }
    return cased;
}
SIMPLE_TEST(t_lower, t_case(v, 0))
SIMPLE_TEST(t_upper, t_case(v, 1))

static const test_def TESTS[] = {
    {"boolean", t_boolean}, {"callable", t_callable}, {"defined", t_defined}, {"divisibleby", t_divisibleby},
    {"eq", t_eq}, {"equalto", t_eq}, {"even", t_even}, {"false", t_false}, {"float", t_float},
    {"ge", t_ge}, {"greaterthan", t_gt}, {"gt", t_gt}, {"in", t_in}, {"integer", t_integer},
    {"iterable", t_iterable}, {"le", t_le}, {"lessthan", t_lt}, {"lower", t_lower}, {"lt", t_lt},
    {"mapping", t_mapping}, {"ne", t_ne}, {"none", t_none}, {"number", t_number}, {"odd", t_odd},
    {"sameas", t_sameas}, {"sequence", t_iterable}, {"string", t_string}, {"true", t_true},
    {"undefined", t_undefined}, {"upper", t_upper},
};
static const int N_TESTS = (int)(sizeof TESTS / sizeof TESTS[0]);

static int find_filter(const char *name) {
    for (int i = 0; i < N_FILTERS; i++) if (strcmp(FILTERS[i].name, name) == 0) return i;
    return -1;
}

static int find_test(const char *name) {
    for (int i = 0; i < N_TESTS; i++) if (strcmp(TESTS[i].name, name) == 0) return i;
    return -1;
}

static int run_filter(rctx *c, const node *at, int fn, value in, const callargs *a, value *out) {
    return FILTERS[fn].fn(c, at, in, a, out);
}

static int run_test(rctx *c, const node *at, int fn, value in, const callargs *a, int *result) {
    return TESTS[fn].fn(c, at, in, a, result);
}

static int apply_test(rctx *c, const node *at, const char *name, value v, const callargs *rest, int *result) {
    int fn = find_test(name);
    if (fn < 0) return rfail(c, at, MT_ERR_UNSUPPORTED, "test '%s' is not supported", name);
    return run_test(c, at, fn, v, rest, result);
}

/* ======================================================================================
 * Statements
 * ==================================================================================== */

static int exec_body(rctx *c, const nlist *body);

static int bind_targets(rctx *c, const node *n, value item) {
    if (n->n_names == 1) return bind(c, n, n->names[0], v_ref(item));
    if (item.kind != V_LIST || item.u.l->n != n->n_names)
        return rfail(c, n, MT_ERR_FORMAT, "cannot unpack '%s' into %d loop variables", type_name(item), n->n_names);
    for (int i = 0; i < n->n_names; i++)
        if (bind(c, n, n->names[i], v_ref(item.u.l->items[i]))) return -1;
    return 0;
}

/* The `loop` object of iteration i over items. */
static int bind_loop(rctx *c, const node *n, const list_obj *items, int i) {
    const value *k = c->t->loop_keys;
    int len = items->n;
    dict_obj *d = dict_new(c, n);
    if (!d) return -1;
    value vals[N_LOOP_KEYS] = {
        v_int(i + 1), v_int(i), v_int(len - i), v_int(len - i - 1), v_bool(i == 0), v_bool(i == len - 1),
        v_int(len), v_int(1), v_int(0),
        i > 0 ? v_ref(items->items[i - 1]) : v_undef("loop.previtem"),
        i + 1 < len ? v_ref(items->items[i + 1]) : v_undef("loop.nextitem"),
    };
    int rc = 0;
    for (int j = 0; j < N_LOOP_KEYS; j++) {
        if (vals[j].kind == V_UNDEF) continue; /* absent: looking it up gives undefined */
        if (rc == 0) rc = dict_set(c, n, d, k[j], vals[j]);
        else v_drop(vals[j]);
    }
    if (rc) { v_drop(dict_value(d, V_DICT)); return -1; }
    return bind(c, n, "loop", dict_value(d, V_DICT));
}

/* {% for x in items if cond %}: the filter runs before the loop, so loop.length counts
 * only the items kept. */
static int filter_items(rctx *c, const node *n, list_obj **items) {
    list_obj *kept = list_new(c, n);
    if (!kept) return -1;
    for (int i = 0; i < (*items)->n; i++) {
        value cond;
        int rc = charge(c, n, 1) ? -1 : push_frame(c, n);
        if (rc) break;
        rc = bind_targets(c, n, (*items)->items[i]);
        if (rc == 0) rc = eval(c, n->b, &cond);
        pop_frame(c);
        int keep = 0;
        if (rc == 0) { keep = truthy(cond); v_drop(cond); }
        if (keep) rc = list_push(c, n, kept, v_ref((*items)->items[i]));
        if (rc) { v_drop(list_value(kept)); return -1; }
    }
    v_drop(list_value(*items));
    *items = kept;
    return 0;
}

static int exec_for(rctx *c, const node *n) {
    value seq;
    list_obj *items;
    if (eval(c, n->a, &seq)) return -1;
    int rc = iter_items(c, n->a, seq, &items);
    v_drop(seq);
    if (rc) return -1;
    if (n->b && filter_items(c, n, &items)) { v_drop(list_value(items)); return -1; }
    if (items->n == 0) {
        v_drop(list_value(items));
        return exec_body(c, &n->orelse);
    }
    for (int i = 0; i < items->n && rc == 0; i++) {
        if ((rc = charge(c, n, 1)) || (rc = push_frame(c, n))) break;
        rc = bind_targets(c, n, items->items[i]);
        if (rc == 0) rc = bind_loop(c, n, items, i);
        if (rc == 0) rc = exec_body(c, &n->body);
        pop_frame(c);
        int stop = c->ctl == CTL_BREAK;
        c->ctl = CTL_NONE;
        if (stop) break;
    }
    v_drop(list_value(items));
    return rc;
}

static int exec_set_attr(rctx *c, const node *n) {
    value ns = lookup(c, n->name), v;
    int rc;
    if (ns.kind != V_NS) {
        rc = rfail(c, n, MT_ERR_FORMAT, "cannot assign attribute '%s' on '%s': not a namespace", n->attr, n->name);
    } else if ((rc = eval(c, n->a, &v)) == 0) {
        rc = dict_set(c, n, ns.u.d, n->k, v);
    }
    v_drop(ns);
    return rc;
}

/* {% set x %}...{% endset %}: the body renders into a string. */
static int exec_set_block(rctx *c, const node *n) {
    sbuf buf = {0}, *saved = c->out;
    value v;
    c->out = &buf;
    int rc = exec_body(c, &n->body);
    c->out = saved;
    if (rc) { sb_free(&buf); return -1; }
    if (sb_to_value(c, n, &buf, &v)) return -1;
    return bind(c, n, n->name, v);
}

static int exec_stmt(rctx *c, const node *n) {
    value v;
    int rc;
    if (charge(c, n, 1)) return -1;
    switch (n->kind) {
    case N_TEXT: return sb_put(c, n, c->out, n->k.u.s->s, n->k.u.s->len);
    case N_OUTPUT:
        if (eval(c, n->a, &v)) return -1;
        rc = write_value(c, n, c->out, v);
        v_drop(v);
        return rc;
    case N_IF:
        for (int i = 0; i < n->args.n; i++) {
            if (eval(c, n->args.v[i], &v)) return -1;
            int t = truthy(v);
            v_drop(v);
            if (t) return exec_body(c, &n->branches[i]);
        }
        return exec_body(c, &n->orelse);
    case N_FOR: return exec_for(c, n);
    case N_SET: return eval(c, n->a, &v) ? -1 : bind(c, n, n->name, v);
    case N_SET_ATTR: return exec_set_attr(c, n);
    case N_SET_BLOCK: return exec_set_block(c, n);
    case N_BREAK: c->ctl = CTL_BREAK; return 0;
    case N_CONTINUE: c->ctl = CTL_CONTINUE; return 0;
    case N_GENERATION: return exec_body(c, &n->body);
    default: return rfail(c, n, MT_ERR_FORMAT, "internal error: expression used as a statement");
    }
}

/* Runs statements until one fails or a break / continue unwinds to its loop. */
static int exec_body(rctx *c, const nlist *body) {
    for (int i = 0; i < body->n; i++) {
        if (exec_stmt(c, body->v[i])) return -1;
        if (c->ctl != CTL_NONE) return 0;
    }
    return 0;
}

/* ======================================================================================
 * Public API
 * ==================================================================================== */

static const char DEFAULT_TEMPLATE[] =
    "{#- memtune's template for models without one (see chat_template.h): system and user\n"
    "    turns are their text and a newline; an assistant turn is its text and EOS. -#}\n"
    "{{- bos_token }}\n"
    "{%- for message in messages %}\n"
    "    {{- message['content'] }}\n"
    "    {%- if message['role'] == 'assistant' %}\n"
    "        {{- eos_token }}\n"
    "    {%- else %}\n"
    "        {{- '\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";

const char *mt_chat_template_default(void) { return DEFAULT_TEMPLATE; }

const char *mt_chat_template_source(const mt_chat_template *t) { return t ? t->source : NULL; }

void mt_chat_template_free(mt_chat_template *t) {
    if (!t) return;
    arena_free(&t->ar);
    free(t->source);
    free(t->norm);
    free(t);
}

/* Jinja's newline handling: \r\n and \r become \n, and one trailing newline is dropped
 * (keep_trailing_newline is off). */
static char *normalize_newlines(const char *src, size_t n, size_t *out_n) {
    char *d = malloc(n + 1);
    size_t k = 0;
    if (!d) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            d[k++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else {
            d[k++] = src[i];
        }
    }
    if (k && d[k - 1] == '\n') k--;
    d[k] = 0;
    *out_n = k;
    return d;
}

static int make_keys(mt_chat_template *t) {
    for (int i = 0; i < N_LOOP_KEYS; i++) {
        str_obj *o = arena_str(&t->ar, LOOP_KEYS[i], strlen(LOOP_KEYS[i]));
        if (!o) return -1;
        t->loop_keys[i].kind = V_STR;
        t->loop_keys[i].u.s = o;
    }
    str_obj *role = arena_str(&t->ar, "role", 4), *content = arena_str(&t->ar, "content", 7);
    if (!role || !content) return -1;
    t->key_role.kind = t->key_content.kind = V_STR;
    t->key_role.u.s = role;
    t->key_content.u.s = content;
    return 0;
}

mt_status mt_chat_template_compile(const char *source, mt_chat_template **out) {
    if (!source || !out) return mt_error(MT_ERR_ARG, "chat template: source and out must not be NULL");
    *out = NULL;
    size_t n = strlen(source), norm_n = 0;
    if (n > MAX_SOURCE) return mt_error(MT_ERR_FORMAT, "chat template is %zu bytes, over the %zu MiB limit", n, MAX_SOURCE >> 20);
    mt_chat_template *t = calloc(1, sizeof *t);
    if (!t || !(t->source = strdup(source)) || !(t->norm = normalize_newlines(source, n, &norm_n)) || make_keys(t)) {
        mt_chat_template_free(t);
        return mt_error(MT_ERR_NOMEM, "chat template: out of memory");
    }
    lexer lx = {.src = t->norm, .n = norm_n, .ar = &t->ar};
    mt_status status = MT_OK;
    if (lex_template(&lx)) {
        status = lx.status;
    } else {
        parser p = {.tok = lx.toks, .n = lx.n_toks, .ar = &t->ar, .src = t->norm};
        int which = 0;
        if (parse_body(&p, &t->body, NULL, &which, NULL) == 0 && cur(&p)->kind != T_EOF) unexpected(&p, NULL);
        status = p.status;
    }
    free(lx.toks); /* the AST keeps only arena strings */
    if (status != MT_OK) {
        mt_chat_template_free(t);
        return status;
    }
    *out = t;
    return MT_OK;
}

/* messages[0..n) as the list of {role, content} dicts templates iterate. */
static int build_messages(rctx *c, const mt_chat_message *msgs, int n, list_obj **out) {
    list_obj *l = list_new(c, NULL);
    if (!l) return -1;
    for (int i = 0; i < n; i++) {
        value role, content = v_none();
        dict_obj *d = NULL;
        if (!msgs[i].role) { rfail(c, NULL, MT_ERR_ARG, "message %d has no role", i); goto fail; }
        if (!(d = dict_new(c, NULL))) goto fail;
        if (str_new(c, NULL, msgs[i].role, strlen(msgs[i].role), &role) ||
            dict_set(c, NULL, d, c->t->key_role, role) ||
            (msgs[i].content && str_new(c, NULL, msgs[i].content, strlen(msgs[i].content), &content)) ||
            dict_set(c, NULL, d, c->t->key_content, content) ||
            list_push(c, NULL, l, dict_value(d, V_DICT))) {
            if (d) v_drop(dict_value(d, V_DICT));
            goto fail;
        }
    }
    *out = l;
    return 0;
fail:
    v_drop(list_value(l));
    return -1;
}

/* The first k messages, sharing the message dicts. */
static int first_messages(rctx *c, const list_obj *all, int k, list_obj **out) {
    list_obj *l = list_new(c, NULL);
    if (!l) return -1;
    for (int i = 0; i < k; i++)
        if (list_push(c, NULL, l, v_ref(all->items[i]))) { v_drop(list_value(l)); return -1; }
    *out = l;
    return 0;
}

/* Renders the template with the context transformers passes (see chat_template.h). */
static int render(rctx *c, list_obj *messages, int add_generation_prompt, const char *bos, const char *eos, sbuf *out) {
    value v;
    c->work = 0;
    c->ctl = CTL_NONE;
    c->out = out;
    if (push_frame(c, NULL)) return -1;
    int rc = bind(c, NULL, "messages", v_ref(list_value(messages)));
    if (rc == 0) rc = bind(c, NULL, "add_generation_prompt", v_bool(add_generation_prompt));
    if (rc == 0) rc = bind(c, NULL, "tools", v_none());
    if (rc == 0) rc = bind(c, NULL, "documents", v_none());
    if (rc == 0 && bos) rc = str_new(c, NULL, bos, strlen(bos), &v) || bind(c, NULL, "bos_token", v);
    if (rc == 0 && eos) rc = str_new(c, NULL, eos, strlen(eos), &v) || bind(c, NULL, "eos_token", v);
    if (rc == 0) rc = exec_body(c, &c->t->body);
    pop_frame(c);
    return rc;
}

static void ctx_init(rctx *c, const mt_chat_template *t) {
    memset(c, 0, sizeof *c);
    c->t = t;
    live_bytes = 0;
}

static void ctx_free(rctx *c) {
    while (c->n_frames) pop_frame(c);
    free(c->frames);
    live_bytes = 0;
}

/* Hands the buffer's text to the caller (an empty string when nothing was written). */
static char *take_text(sbuf *b) {
    char *p = b->p ? b->p : strdup("");
    b->p = NULL;
    b->n = b->cap = 0;
    return p;
}

mt_status mt_chat_template_render(const mt_chat_template *t, const mt_chat_message *messages, int n_messages,
                                  int add_generation_prompt, const char *bos_token, const char *eos_token, char **out) {
    if (!t || !out || n_messages < 0 || (n_messages > 0 && !messages))
        return mt_error(MT_ERR_ARG, "chat template render: bad arguments");
    *out = NULL;
    rctx c;
    list_obj *msgs = NULL;
    sbuf b = {0};
    ctx_init(&c, t);
    if (build_messages(&c, messages, n_messages, &msgs) == 0 &&
        render(&c, msgs, add_generation_prompt != 0, bos_token, eos_token, &b) == 0 && !(*out = take_text(&b)))
        rfail(&c, NULL, MT_ERR_NOMEM, "out of memory");
    if (msgs) v_drop(list_value(msgs));
    sb_free(&b);
    ctx_free(&c);
    return c.status;
}

/* A short, printable excerpt of s from byte `at`, for error messages. */
static void excerpt(const char *s, size_t n, size_t at, char *buf, size_t cap) {
    size_t k = 0;
    for (size_t i = at; i < n && i < at + 24 && k + 5 < cap; i++) {
        if (s[i] == '\n') { buf[k++] = '\\'; buf[k++] = 'n'; }
        else buf[k++] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
    }
    buf[k] = 0;
}

/* Fails unless a[0..a_n) is a prefix of b[0..b_n). */
static int check_prefix(rctx *c, const sbuf *a, const sbuf *b, int message, const char *what) {
    if (a->n <= b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0)) return 0;
    size_t i = 0;
    while (i < a->n && i < b->n && a->p[i] == b->p[i]) i++;
    char x[64], y[64];
    excerpt(a->p, a->n, i, x, sizeof x);
    excerpt(b->p, b->n, i, y, sizeof y);
    return rfail(c, NULL, MT_ERR_FORMAT,
                 "chat template is not prefix-stable at assistant message %d: %s (they differ at byte %zu: \"%s\" vs \"%s\")",
                 message, what, i, x, y);
}

/* The span of assistant message i: what render(0..i] adds to render(0..i) + generation prompt. */
static int assistant_span(rctx *c, list_obj *all, int i, const sbuf *full, const char *bos, const char *eos, mt_chat_span *span) {
    list_obj *before_msgs = NULL, *after_msgs = NULL;
    sbuf before = {0}, after = {0};
    int rc = first_messages(c, all, i, &before_msgs);
    if (rc == 0) rc = first_messages(c, all, i + 1, &after_msgs);
    if (rc == 0) rc = render(c, before_msgs, 1, bos, eos, &before);
    if (rc == 0) rc = render(c, after_msgs, 0, bos, eos, &after);
    if (rc == 0) rc = check_prefix(c, &before, &after, i, "its prompt (rendered with add_generation_prompt) does not begin the text that includes it");
    if (rc == 0) rc = check_prefix(c, &after, full, i, "the conversation up to it does not begin the whole conversation");
    if (rc == 0 && eos && *eos && i + 1 < all->n) {
        /* A template that closes a turn only when another message follows (Qwen1.5 writes
         * <|im_end|> after every message but the last) passes the prefix checks, but the
         * span would then miss the end marker the model must learn to produce. */
        size_t k = after.n;
        while (k < full->n && py_space(full->p[k])) k++;
        if (k < full->n && strncmp(full->p + k, eos, strlen(eos)) == 0)
            rc = rfail(c, NULL, MT_ERR_FORMAT,
                       "chat template is not prefix-stable at assistant message %d: its end marker \"%s\" is written "
                       "only when another message follows, so the last message of a conversation never gets one",
                       i, eos);
    }
    if (rc == 0) {
        /* the model stops at the turn's end marker: whitespace after it is not its to produce */
        size_t end = after.n;
        while (end > before.n && py_space(after.p[end - 1])) end--;
        span->message = i;
        span->begin = before.n;
        span->end = end;
    }
    if (before_msgs) v_drop(list_value(before_msgs));
    if (after_msgs) v_drop(list_value(after_msgs));
    sb_free(&before);
    sb_free(&after);
    return rc;
}

mt_status mt_chat_render_spans(const mt_chat_template *t, const mt_chat_message *messages, int n_messages,
                               const char *bos_token, const char *eos_token, char **text, mt_chat_span **spans, int *n_spans) {
    if (!t || !text || !spans || !n_spans || n_messages < 0 || (n_messages > 0 && !messages))
        return mt_error(MT_ERR_ARG, "chat template spans: bad arguments");
    *text = NULL;
    *spans = NULL;
    *n_spans = 0;
    rctx c;
    list_obj *all = NULL;
    sbuf full = {0};
    mt_chat_span *found = NULL;
    int n_found = 0, n_assistant = 0;
    ctx_init(&c, t);
    for (int i = 0; i < n_messages; i++) n_assistant += messages[i].role && !strcmp(messages[i].role, "assistant");
    int rc = build_messages(&c, messages, n_messages, &all);
    if (rc == 0) rc = render(&c, all, 0, bos_token, eos_token, &full);
    if (rc == 0 && n_assistant && !(found = malloc((size_t)n_assistant * sizeof *found)))
        rc = rfail(&c, NULL, MT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n_messages && rc == 0; i++)
        if (!strcmp(messages[i].role, "assistant"))
            rc = assistant_span(&c, all, i, &full, bos_token, eos_token, &found[n_found++]);
    if (rc == 0 && !(*text = take_text(&full))) rc = rfail(&c, NULL, MT_ERR_NOMEM, "out of memory");
    if (rc == 0) {
        *spans = found;
        *n_spans = n_found;
    } else {
        free(found);
    }
    if (all) v_drop(list_value(all));
    sb_free(&full);
    ctx_free(&c);
    return c.status;
}
