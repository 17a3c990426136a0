/* Values of the template engine: reference counting, equality and truthiness, UTF-8 by code
 * point, the arena, error positions, and the rendering context's output buffers, strings,
 * lists, dicts, scopes, str() and repr() (see internal.h). */
#include "template/internal.h"

/* Bytes held by the values alive in this thread's current render. */
_Thread_local size_t tpl_live_bytes;

value tpl_v_ref(value v) {
    if (is_heap(v) && hdr(v)->refs != IMMORTAL) hdr(v)->refs++;
    return v;
}

static void heap_release(heap_hdr *h, void *obj) {
    tpl_live_bytes -= h->bytes < tpl_live_bytes ? h->bytes : tpl_live_bytes;
    free(obj);
}

/* Recursion here is bounded by MAX_VALUE_DEPTH: containers deeper than that are never built. */
void tpl_v_drop(value v) {
    if (!is_heap(v) || hdr(v)->refs == IMMORTAL || --hdr(v)->refs > 0) return;
    if (v.kind == V_LIST) {
        for (int i = 0; i < v.u.l->n; i++) tpl_v_drop(v.u.l->items[i]);
        free(v.u.l->items);
        heap_release(&v.u.l->h, v.u.l);
    } else if (v.kind == V_DICT || v.kind == V_NS) {
        for (int i = 0; i < v.u.d->n; i++) { tpl_v_drop(v.u.d->keys[i]); tpl_v_drop(v.u.d->vals[i]); }
        free(v.u.d->keys);
        free(v.u.d->vals);
        heap_release(&v.u.d->h, v.u.d);
    } else {
        heap_release(&v.u.s->h, v.u.s);
    }
}

const char *tpl_type_name(value v) {
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
int tpl_truthy(value v) {
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
int tpl_v_equal(value a, value b) {
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
        for (int i = 0; i < a.u.l->n; i++) if (!tpl_v_equal(a.u.l->items[i], b.u.l->items[i])) return 0;
        return 1;
    case V_DICT:
        if (a.u.d->n != b.u.d->n) return 0;
        for (int i = 0; i < a.u.d->n; i++) {
            int found = 0;
            for (int j = 0; j < b.u.d->n && !found; j++)
                if (tpl_v_equal(a.u.d->keys[i], b.u.d->keys[j])) {
                    if (!tpl_v_equal(a.u.d->vals[i], b.u.d->vals[j])) return 0;
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

size_t tpl_u8_next(const char *s, size_t n, size_t i) {
    unsigned char c = (unsigned char)s[i];
    size_t want = c < 0x80 ? 0 : c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    size_t j = i + 1;
    while (want-- > 0 && j < n && ((unsigned char)s[j] & 0xC0) == 0x80) j++;
    return j;
}

size_t tpl_u8_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i = tpl_u8_next(s, n, i)) k++;
    return k;
}

uint32_t tpl_u8_decode(const char *s, size_t n, size_t i) {
    size_t j = tpl_u8_next(s, n, i);
    unsigned char c = (unsigned char)s[i];
    if (j - i == 1) return c;
    uint32_t cp = c & (j - i == 2 ? 0x1F : j - i == 3 ? 0x0F : 0x07);
    for (size_t k = i + 1; k < j; k++) cp = (cp << 6) | ((unsigned char)s[k] & 0x3F);
    return cp;
}

int tpl_u8_encode(uint32_t cp, char *out) {
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
int tpl_py_space(char ch) {
    unsigned char c = (unsigned char)ch;
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

void *tpl_arena_alloc(arena *a, size_t n) {
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

void tpl_arena_free(arena *a) {
    for (arena_block *b = a->head, *next; b; b = next) { next = b->next; free(b); }
    a->head = NULL;
}

/* An immortal string constant in the arena. */
str_obj *tpl_arena_str(arena *a, const char *s, size_t n) {
    str_obj *o = tpl_arena_alloc(a, sizeof *o + n + 1);
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
    *col = 1 + (int)tpl_u8_count(src + start, off - start);
}

mt_status tpl_vfail_at(const char *src, size_t off, mt_status code, const char *fmt, va_list ap) {
    char msg[768];
    int line, col;
    vsnprintf(msg, sizeof msg, fmt, ap);
    line_col(src, off, &line, &col);
    return mt_error(code, "chat template line %d, column %d: %s", line, col, msg);
}

const char *const tpl_loop_keys[N_LOOP_KEYS] = {"index", "index0", "revindex", "revindex0", "first", "last",
                                                   "length", "depth", "depth0", "previtem", "nextitem"};

int tpl_rfail(rctx *c, const node *at, mt_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (c->status == MT_OK && at) {
        c->status = tpl_vfail_at(c->t->norm, at->off, code, fmt, ap);
    } else if (c->status == MT_OK) {
        char msg[768];
        vsnprintf(msg, sizeof msg, fmt, ap);
        c->status = mt_error(code, "chat template: %s", msg);
    }
    va_end(ap);
    return -1;
}

int tpl_undefined_error(rctx *c, const node *at, value u) {
    if (u.u.hint) return tpl_rfail(c, at, MT_ERR_FORMAT, "'%s' is undefined", u.u.hint);
    return tpl_rfail(c, at, MT_ERR_FORMAT, "undefined value (a missing item or attribute) used");
}

int tpl_charge(rctx *c, const node *at, size_t units) {
    c->work += (long)(units < (size_t)MAX_WORK ? units : (size_t)MAX_WORK);
    if (c->work > MAX_WORK) return tpl_rfail(c, at, MT_ERR_FORMAT, "template takes too long to render (over %ld steps)", MAX_WORK);
    return 0;
}

static int account(rctx *c, const node *at, size_t bytes) {
    if (bytes > MAX_LIVE_BYTES - (tpl_live_bytes < MAX_LIVE_BYTES ? tpl_live_bytes : MAX_LIVE_BYTES))
        return tpl_rfail(c, at, MT_ERR_FORMAT, "template values use more than %zu MiB", MAX_LIVE_BYTES >> 20);
    tpl_live_bytes += bytes;
    return 0;
}

static void *heap_alloc(rctx *c, const node *at, size_t bytes) {
    if (account(c, at, bytes)) return NULL;
    heap_hdr *h = malloc(bytes);
    if (!h) {
        tpl_live_bytes -= bytes;
        tpl_rfail(c, at, MT_ERR_NOMEM, "out of memory");
        return NULL;
    }
    h->refs = 1;
    h->depth = 0;
    h->bytes = bytes;
    return h;
}

/* ---- output buffers ------------------------------------------------------------------ */

int tpl_sb_put(rctx *c, const node *at, sbuf *b, const char *s, size_t n) {
    if (n > MAX_STRING - b->n) return tpl_rfail(c, at, MT_ERR_FORMAT, "text longer than %zu MiB", MAX_STRING >> 20);
    if (tpl_charge(c, at, 1 + n / 256)) return -1;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        if (account(c, at, cap - b->cap)) return -1;
        char *p = realloc(b->p, cap);
        if (!p) { tpl_live_bytes -= cap - b->cap; return tpl_rfail(c, at, MT_ERR_NOMEM, "out of memory"); }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int tpl_sb_str(rctx *c, const node *at, sbuf *b, const char *s) { return tpl_sb_put(c, at, b, s, strlen(s)); }

void tpl_sb_free(sbuf *b) {
    tpl_live_bytes -= b->cap < tpl_live_bytes ? b->cap : tpl_live_bytes;
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* ---- strings, lists, dicts ----------------------------------------------------------- */

/* A new string of n bytes, copied from s when s is not NULL (else left for the caller to fill). */
int tpl_str_new(rctx *c, const node *at, const char *s, size_t n, value *out) {
    if (n > MAX_STRING) return tpl_rfail(c, at, MT_ERR_FORMAT, "string longer than %zu MiB", MAX_STRING >> 20);
    if (tpl_charge(c, at, 1 + n / 256)) return -1;
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
int tpl_sb_to_value(rctx *c, const node *at, sbuf *b, value *out) {
    int rc = tpl_str_new(c, at, b->p ? b->p : "", b->n, out);
    tpl_sb_free(b);
    return rc;
}

value tpl_list_value(list_obj *l) { value v = {.kind = V_LIST}; v.u.l = l; return v; }
value tpl_dict_value(dict_obj *d, vkind kind) { value v = {.kind = kind}; v.u.d = d; return v; }

list_obj *tpl_list_new(rctx *c, const node *at) {
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
        tpl_v_drop(v);
        return tpl_rfail(c, at, MT_ERR_UNSUPPORTED, "a namespace cannot be stored in a list, dict or namespace");
    }
    if (value_depth(v) + 1 > MAX_VALUE_DEPTH) {
        tpl_v_drop(v);
        return tpl_rfail(c, at, MT_ERR_FORMAT, "lists and dicts nest more than %d deep", MAX_VALUE_DEPTH);
    }
    if ((uint32_t)value_depth(v) + 1 > *depth) *depth = (uint32_t)value_depth(v) + 1;
    return 0;
}

/* Appends v (owned; dropped on failure). */
int tpl_list_push(rctx *c, const node *at, list_obj *l, value v) {
    if (tpl_charge(c, at, 1)) { tpl_v_drop(v); return -1; }
    if (storable(c, at, v, &l->h.depth)) return -1;
    if (l->n == l->cap) {
        if (l->n >= MAX_LIST) { tpl_v_drop(v); return tpl_rfail(c, at, MT_ERR_FORMAT, "list longer than %d items", MAX_LIST); }
        int cap = l->cap ? l->cap * 2 : 8;
        size_t grow = (size_t)(cap - l->cap) * sizeof(value);
        if (account(c, at, grow)) { tpl_v_drop(v); return -1; }
        value *items = realloc(l->items, (size_t)cap * sizeof(value));
        if (!items) { tpl_live_bytes -= grow; tpl_v_drop(v); return tpl_rfail(c, at, MT_ERR_NOMEM, "out of memory"); }
        l->items = items;
        l->cap = cap;
        l->h.bytes += grow;
    }
    l->items[l->n++] = v;
    return 0;
}

dict_obj *tpl_dict_new(rctx *c, const node *at) {
    dict_obj *d = heap_alloc(c, at, sizeof *d);
    if (!d) return NULL;
    d->h.depth = 1;
    d->n = d->cap = 0;
    d->keys = d->vals = NULL;
    return d;
}

static value *dict_find(const dict_obj *d, value key) {
    for (int i = 0; i < d->n; i++) if (tpl_v_equal(d->keys[i], key)) return &d->vals[i];
    return NULL;
}

value *tpl_dict_find_str(const dict_obj *d, const char *s) {
    size_t n = strlen(s);
    for (int i = 0; i < d->n; i++)
        if (d->keys[i].kind == V_STR && d->keys[i].u.s->len == n && memcmp(d->keys[i].u.s->s, s, n) == 0)
            return &d->vals[i];
    return NULL;
}

/* dict_find, charged for the linear scan. */
int tpl_dict_lookup(rctx *c, const node *at, const dict_obj *d, value key, value **out) {
    if (tpl_charge(c, at, 1 + (size_t)d->n / 8)) return -1;
    *out = dict_find(d, key);
    return 0;
}

/* Sets d[key] = val (both owned; dropped on failure). */
int tpl_dict_set(rctx *c, const node *at, dict_obj *d, value key, value val) {
    if (key.kind == V_LIST || key.kind == V_DICT || key.kind == V_NS || key.kind == V_UNDEF) {
        int rc = tpl_rfail(c, at, MT_ERR_FORMAT, "unhashable dict key of type '%s'", tpl_type_name(key));
        tpl_v_drop(key);
        tpl_v_drop(val);
        return rc;
    }
    if (storable(c, at, val, &d->h.depth)) { tpl_v_drop(key); return -1; }
    value *slot;
    if (tpl_dict_lookup(c, at, d, key, &slot)) { tpl_v_drop(key); tpl_v_drop(val); return -1; }
    if (slot) {
        tpl_v_drop(*slot);
        *slot = val;
        tpl_v_drop(key);
        return 0;
    }
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 8;
        size_t grow = (size_t)(cap - d->cap) * 2 * sizeof(value);
        value *k = NULL, *v = NULL;
        if (d->n >= MAX_LIST || account(c, at, grow)) {
            if (d->n >= MAX_LIST) tpl_rfail(c, at, MT_ERR_FORMAT, "dict larger than %d items", MAX_LIST);
            tpl_v_drop(key);
            tpl_v_drop(val);
            return -1;
        }
        d->h.bytes += grow;
        if ((k = realloc(d->keys, (size_t)cap * sizeof *k))) d->keys = k;
        if ((v = realloc(d->vals, (size_t)cap * sizeof *v))) d->vals = v;
        if (!k || !v) { tpl_v_drop(key); tpl_v_drop(val); return tpl_rfail(c, at, MT_ERR_NOMEM, "out of memory"); }
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = val;
    return 0;
}

/* ---- scopes -------------------------------------------------------------------------- */

int tpl_push_frame(rctx *c, const node *at) {
    if (c->n_frames == c->cap_frames) {
        int cap = c->cap_frames ? c->cap_frames * 2 : 8;
        frame *f = realloc(c->frames, (size_t)cap * sizeof *f);
        if (!f) return tpl_rfail(c, at, MT_ERR_NOMEM, "out of memory");
        c->frames = f;
        c->cap_frames = cap;
    }
    memset(&c->frames[c->n_frames++], 0, sizeof(frame));
    return 0;
}

void tpl_pop_frame(rctx *c) {
    frame *f = &c->frames[--c->n_frames];
    for (int i = 0; i < f->n; i++) tpl_v_drop(f->b[i].v);
    free(f->b);
}

/* Binds name = v (owned) in the innermost frame. */
int tpl_bind(rctx *c, const node *at, const char *name, value v) {
    frame *f = &c->frames[c->n_frames - 1];
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->b[i].name, name) == 0) {
            tpl_v_drop(f->b[i].v);
            f->b[i].v = v;
            return 0;
        }
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 8;
        binding *b = realloc(f->b, (size_t)cap * sizeof *b);
        if (!b) { tpl_v_drop(v); return tpl_rfail(c, at, MT_ERR_NOMEM, "out of memory"); }
        f->b = b;
        f->cap = cap;
    }
    f->b[f->n].name = name;
    f->b[f->n++].v = v;
    return 0;
}

static const char *const BUILTINS[] = {"raise_exception", "namespace", "range", "dict"};

/* Innermost binding first, then the builtin functions; otherwise undefined. */
value tpl_lookup(const rctx *c, const char *name) {
    for (int f = c->n_frames - 1; f >= 0; f--)
        for (int i = c->frames[f].n - 1; i >= 0; i--)
            if (strcmp(c->frames[f].b[i].name, name) == 0) return tpl_v_ref(c->frames[f].b[i].v);
    for (int i = 0; i < (int)(sizeof BUILTINS / sizeof BUILTINS[0]); i++)
        if (strcmp(BUILTINS[i], name) == 0) return v_func(i);
    return v_undef(name);
}

/* ---- str() and repr() ---------------------------------------------------------------- */

/* Python's repr(float): the shortest digits that read back to the same double, in fixed
 * notation for exponents -4..15 and scientific notation otherwise. */
void tpl_format_float(double f, char *out, size_t cap) {
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
int tpl_write_value(rctx *c, const node *at, sbuf *b, value v) {
    char num[48];
    switch (v.kind) {
    case V_UNDEF: return 0;
    case V_NONE: return tpl_sb_str(c, at, b, "None");
    case V_BOOL: return tpl_sb_str(c, at, b, v.u.b ? "True" : "False");
    case V_INT: snprintf(num, sizeof num, "%lld", (long long)v.u.i); return tpl_sb_str(c, at, b, num);
    case V_FLOAT: tpl_format_float(v.u.f, num, sizeof num); return tpl_sb_str(c, at, b, num);
    case V_STR: return tpl_sb_put(c, at, b, v.u.s->s, v.u.s->len);
    default: return write_repr(c, at, b, v);
    }
}

static int write_str_repr(rctx *c, const node *at, sbuf *b, const str_obj *s) {
    char quote = (memchr(s->s, '\'', s->len) && !memchr(s->s, '"', s->len)) ? '"' : '\'';
    if (tpl_sb_put(c, at, b, &quote, 1)) return -1;
    for (size_t i = 0; i < s->len; i++) {
        unsigned char ch = (unsigned char)s->s[i];
        char esc[8];
        const char *e = NULL;
        if (ch == '\\' || ch == (unsigned char)quote) { esc[0] = '\\'; esc[1] = (char)ch; esc[2] = 0; e = esc; }
        else if (ch == '\n') e = "\\n";
        else if (ch == '\r') e = "\\r";
        else if (ch == '\t') e = "\\t";
        else if (ch < 0x20 || ch == 0x7f) { snprintf(esc, sizeof esc, "\\x%02x", ch); e = esc; }
        if (e ? tpl_sb_str(c, at, b, e) : tpl_sb_put(c, at, b, s->s + i, 1)) return -1;
    }
    return tpl_sb_put(c, at, b, &quote, 1);
}

static int write_dict_repr(rctx *c, const node *at, sbuf *b, const dict_obj *d) {
    if (tpl_sb_str(c, at, b, "{")) return -1;
    for (int i = 0; i < d->n; i++) {
        if ((i && tpl_sb_str(c, at, b, ", ")) || write_repr(c, at, b, d->keys[i]) || tpl_sb_str(c, at, b, ": ") ||
            write_repr(c, at, b, d->vals[i]))
            return -1;
    }
    return tpl_sb_str(c, at, b, "}");
}

/* Python's repr(v); containers recurse at most MAX_VALUE_DEPTH deep. */
static int write_repr(rctx *c, const node *at, sbuf *b, value v) {
    switch (v.kind) {
    case V_UNDEF: return tpl_sb_str(c, at, b, "Undefined");
    case V_STR: return write_str_repr(c, at, b, v.u.s);
    case V_LIST:
        if (tpl_sb_str(c, at, b, v.u.l->tuple ? "(" : "[")) return -1;
        for (int i = 0; i < v.u.l->n; i++)
            if ((i && tpl_sb_str(c, at, b, ", ")) || write_repr(c, at, b, v.u.l->items[i])) return -1;
        if (v.u.l->tuple && v.u.l->n == 1 && tpl_sb_str(c, at, b, ",")) return -1;
        return tpl_sb_str(c, at, b, v.u.l->tuple ? ")" : "]");
    case V_DICT: return write_dict_repr(c, at, b, v.u.d);
    case V_NS:
        return tpl_sb_str(c, at, b, "<Namespace ") || write_dict_repr(c, at, b, v.u.d) || tpl_sb_str(c, at, b, ">") ? -1 : 0;
    case V_FUNC:
        return tpl_sb_str(c, at, b, "<built-in function ") || tpl_sb_str(c, at, b, BUILTINS[v.u.fn]) || tpl_sb_str(c, at, b, ">") ? -1 : 0;
    default: return tpl_write_value(c, at, b, v);
    }
}

/* str(v) as a string value (a new reference). */
int tpl_to_str(rctx *c, const node *at, value v, value *out) {
    if (v.kind == V_STR) { *out = tpl_v_ref(v); return 0; }
    sbuf b = {0};
    if (tpl_write_value(c, at, &b, v)) { tpl_sb_free(&b); return -1; }
    return tpl_sb_to_value(c, at, &b, out);
}
