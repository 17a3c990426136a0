/* Filters and tests of the template engine, and the string helpers they share with the
 * methods of strings (Python's semantics) (see internal.h). */
#include "template/internal.h"

/* ======================================================================================
 * String helpers shared by methods and filters (ASCII case rules; Python's semantics
 * otherwise).
 * ==================================================================================== */

static int in_chars(uint32_t cp, const str_obj *chars) {
    if (!chars) return cp < 0x80 && tpl_py_space((char)cp);
    for (size_t i = 0; i < chars->len; i = tpl_u8_next(chars->s, chars->len, i))
        if (tpl_u8_decode(chars->s, chars->len, i) == cp) return 1;
    return 0;
}

/* str.strip / lstrip / rstrip with chars = NULL for whitespace. */
static int strip(rctx *c, const node *at, const str_obj *s, const str_obj *chars, int left, int right, value *out) {
    size_t a = 0, b = s->len, step = 1 + (chars ? chars->len / 16 : 0);
    while (left && a < b && in_chars(tpl_u8_decode(s->s, s->len, a), chars)) {
        if (tpl_charge(c, at, step)) return -1;
        a = tpl_u8_next(s->s, s->len, a);
    }
    while (right && b > a) {
        if (tpl_charge(c, at, step)) return -1;
        size_t p = b - 1;
        while (p > a && b - p < 4 && ((unsigned char)s->s[p] & 0xC0) == 0x80) p--;
        if (tpl_u8_next(s->s, s->len, p) != b) p = b - 1; /* not a whole character: one byte */
        if (!in_chars(p == b - 1 ? (unsigned char)s->s[p] : tpl_u8_decode(s->s, s->len, p), chars)) break;
        b = p;
    }
    return tpl_str_new(c, at, s->s + a, b - a, out);
}

static int change_case(rctx *c, const node *at, const str_obj *s, int mode, value *out) {
    if (tpl_str_new(c, at, s->s, s->len, out)) return -1;
    char *p = out->u.s->s;
    int boundary = 1;
    for (size_t i = 0; i < s->len; i++) {
        char ch = p[i];
        int up = mode == CASE_UPPER || (mode == CASE_CAPITALIZE && i == 0) ||
                 ((mode == CASE_TITLE_PY || mode == CASE_TITLE_JINJA) && boundary);
        if (isalpha((unsigned char)ch)) p[i] = (char)(up ? toupper((unsigned char)ch) : tolower((unsigned char)ch));
        if (mode == CASE_TITLE_PY) boundary = !isalpha((unsigned char)ch) && (unsigned char)ch < 0x80;
        else if (mode == CASE_TITLE_JINJA) boundary = tpl_py_space(ch) || strchr("-({[<", ch) != NULL;
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
            size_t j = i < s->len ? tpl_u8_next(s->s, s->len, i) : s->len + 1;
            rc = tpl_sb_put(c, at, &b, rep->s, rep->len);
            if (rc == 0 && i < s->len) rc = tpl_sb_put(c, at, &b, s->s + i, j - i);
            i = j;
        }
        if (rc == 0 && i < s->len) rc = tpl_sb_put(c, at, &b, s->s + i, s->len - i);
    } else {
        while (rc == 0 && (count < 0 || done < count)) {
            const char *hit = memmem(s->s + i, s->len - i, old->s, old->len);
            if (!hit) break;
            size_t k = (size_t)(hit - s->s);
            rc = tpl_sb_put(c, at, &b, s->s + i, k - i);
            if (rc == 0) rc = tpl_sb_put(c, at, &b, rep->s, rep->len);
            i = k + old->len;
            done++;
        }
        if (rc == 0) rc = tpl_sb_put(c, at, &b, s->s + i, s->len - i);
    }
    if (rc) { tpl_sb_free(&b); return -1; }
    return tpl_sb_to_value(c, at, &b, out);
}

/* str.split(sep=None, maxsplit=-1) */
static int split(rctx *c, const node *at, const str_obj *s, const str_obj *sep, int64_t maxsplit, value *out) {
    list_obj *l = tpl_list_new(c, at);
    size_t i = 0;
    int64_t done = 0;
    value piece;
    if (!l) return -1;
    if (sep && sep->len == 0) { tpl_v_drop(tpl_list_value(l)); return tpl_rfail(c, at, MT_ERR_FORMAT, "empty separator"); }
    for (;;) {
        if (!sep) while (i < s->len && tpl_py_space(s->s[i])) i++;
        if (!sep && i >= s->len) break;
        size_t k = i;
        if (maxsplit >= 0 && done >= maxsplit) {
            k = s->len;
            if (!sep) while (k > i && tpl_py_space(s->s[k - 1])) k--;
        } else if (sep) {
            const char *hit = memmem(s->s + i, s->len - i, sep->s, sep->len);
            k = hit ? (size_t)(hit - s->s) : s->len;
        } else {
            while (k < s->len && !tpl_py_space(s->s[k])) k++;
        }
        if (tpl_str_new(c, at, s->s + i, k - i, &piece) || tpl_list_push(c, at, l, piece)) { tpl_v_drop(tpl_list_value(l)); return -1; }
        done++;
        if (k >= s->len) break;
        i = k + (sep ? sep->len : 0);
        if (sep && i == s->len) {
            if (tpl_str_new(c, at, "", 0, &piece) || tpl_list_push(c, at, l, piece)) { tpl_v_drop(tpl_list_value(l)); return -1; }
            break;
        }
    }
    *out = tpl_list_value(l);
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
            if (tpl_need_str(c, at, &which->u.l->items[i], "prefix")) return -1;
            hit |= affix_match(s, which->u.l->items[i].u.s, at_end);
        }
        *out = v_bool(hit);
        return 0;
    }
    if (tpl_need_str(c, at, which, at_end ? "endswith() argument" : "startswith() argument")) return -1;
    *out = v_bool(affix_match(s, which->u.s, at_end));
    return 0;
}

static int join_strings(rctx *c, const node *at, const str_obj *sep, value items, value *out) {
    list_obj *l;
    sbuf b = {0};
    if (tpl_iter_items(c, at, items, &l)) return -1;
    int rc = 0;
    for (int i = 0; i < l->n && rc == 0; i++) {
        rc = tpl_need_str(c, at, &l->items[i], "join() item");
        if (rc == 0 && i) rc = tpl_sb_put(c, at, &b, sep->s, sep->len);
        if (rc == 0) rc = tpl_sb_put(c, at, &b, l->items[i].u.s->s, l->items[i].u.s->len);
    }
    tpl_v_drop(tpl_list_value(l));
    if (rc) { tpl_sb_free(&b); return -1; }
    return tpl_sb_to_value(c, at, &b, out);
}

/* Returns 1 when the string has no method of that name. */
static int str_method(rctx *c, const node *at, const str_obj *s, const char *name, const callargs *a, value *out) {
    const value *x = tpl_arg(a, 0, NULL), *y = tpl_arg(a, 1, NULL);
    const str_obj *chars = x && x->kind == V_STR ? x->u.s : NULL;
    if (x && x->kind != V_STR && x->kind != V_NONE && (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")))
        return tpl_need_str(c, at, x, "strip() argument");
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
        const value *sep = tpl_arg(a, 0, "sep"), *max = tpl_arg(a, 1, "maxsplit");
        if (sep && sep->kind != V_NONE && tpl_need_str(c, at, sep, "split() separator")) return -1;
        if (max && tpl_need_int(c, at, max, "maxsplit")) return -1;
        return split(c, at, s, sep && sep->kind == V_STR ? sep->u.s : NULL, max ? as_int(*max) : -1, out);
    }
    if (!strcmp(name, "replace")) {
        const value *n = tpl_arg(a, 2, "count");
        if (tpl_need_str(c, at, x, "replace() argument") || tpl_need_str(c, at, y, "replace() argument")) return -1;
        if (n && tpl_need_int(c, at, n, "replace() count")) return -1;
        return replace(c, at, s, x->u.s, y->u.s, n ? as_int(*n) : -1, out);
    }
    if (!strcmp(name, "join")) {
        if (!x) return tpl_rfail(c, at, MT_ERR_FORMAT, "join() takes one argument");
        return join_strings(c, at, s, *x, out);
    }
    return 1;
}

static int pairs(rctx *c, const node *at, const dict_obj *d, int what, value *out) {
    list_obj *l = tpl_list_new(c, at);
    if (!l) return -1;
    for (int i = 0; i < d->n; i++) {
        value item;
        if (what == 0) item = tpl_v_ref(d->keys[i]);
        else if (what == 1) item = tpl_v_ref(d->vals[i]);
        else {
            list_obj *pair = tpl_list_new(c, at);
            if (!pair || tpl_list_push(c, at, pair, tpl_v_ref(d->keys[i])) || tpl_list_push(c, at, pair, tpl_v_ref(d->vals[i]))) {
                if (pair) tpl_v_drop(tpl_list_value(pair));
                tpl_v_drop(tpl_list_value(l));
                return -1;
            }
            pair->tuple = 1;
            item = tpl_list_value(pair);
        }
        if (tpl_list_push(c, at, l, item)) { tpl_v_drop(tpl_list_value(l)); return -1; }
    }
    *out = tpl_list_value(l);
    return 0;
}

int tpl_call_method(rctx *c, const node *at, value obj, const char *name, const callargs *a, value *out) {
    if (obj.kind == V_STR) {
        int rc = str_method(c, at, obj.u.s, name, a, out);
        if (rc <= 0) return rc;
    }
    if (obj.kind == V_DICT) {
        if (!strcmp(name, "get")) {
            const value *key = tpl_arg(a, 0, "key"), *dflt = tpl_arg(a, 1, "default");
            value *v;
            if (!key) return tpl_rfail(c, at, MT_ERR_FORMAT, "get() takes a key");
            if (tpl_dict_lookup(c, at, obj.u.d, *key, &v)) return -1;
            *out = v ? tpl_v_ref(*v) : dflt ? tpl_v_ref(*dflt) : v_none();
            return 0;
        }
        if (!strcmp(name, "keys")) return pairs(c, at, obj.u.d, 0, out);
        if (!strcmp(name, "values")) return pairs(c, at, obj.u.d, 1, out);
        if (!strcmp(name, "items")) return pairs(c, at, obj.u.d, 2, out);
    }
    if (obj.kind == V_UNDEF) return tpl_undefined_error(c, at, obj);
    if (obj.kind == V_DICT || obj.kind == V_NS) {
        const value *f = tpl_dict_find_str(obj.u.d, name);
        if (f && f->kind == V_FUNC) return tpl_call_builtin(c, at, f->u.fn, a, out);
    }
    return tpl_rfail(c, at, MT_ERR_FORMAT, "'%s' object has no method '%s'", tpl_type_name(obj), name);
}

/* ======================================================================================
 * Filters. Each gets the filtered value and its arguments; names and parameters follow
 * Jinja's builtin filters (tojson follows transformers' override of it).
 * ==================================================================================== */

static int f_abs(rctx *c, const node *at, value in, const callargs *a, value *out) {
    (void)a;
    if (in.kind == V_FLOAT) { *out = v_float(fabs(in.u.f)); return 0; }
    if (is_integral(in) && as_int(in) != INT64_MIN) { *out = v_int(as_int(in) < 0 ? -as_int(in) : as_int(in)); return 0; }
    return tpl_rfail(c, at, MT_ERR_FORMAT, "bad operand type for abs(): '%s'", tpl_type_name(in));
}

static int f_case(rctx *c, const node *at, value in, int mode, value *out) {
    value s;
    if (tpl_to_str(c, at, in, &s)) return -1;
    int rc = change_case(c, at, s.u.s, mode, out);
    tpl_v_drop(s);
    return rc;
}
static int f_lower(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)a; return f_case(c, at, in, CASE_LOWER, out); }
static int f_upper(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)a; return f_case(c, at, in, CASE_UPPER, out); }
static int f_capitalize(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)a; return f_case(c, at, in, CASE_CAPITALIZE, out); }
static int f_title(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)a; return f_case(c, at, in, CASE_TITLE_JINJA, out); }

static int f_default(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *dflt = tpl_arg(a, 0, "default_value"), *boolean = tpl_arg(a, 1, "boolean");
    if (in.kind != V_UNDEF && !(boolean && tpl_truthy(*boolean) && !tpl_truthy(in))) { *out = tpl_v_ref(in); return 0; }
    if (dflt) { *out = tpl_v_ref(*dflt); return 0; }
    return tpl_str_new(c, at, "", 0, out);
}

static int f_length(rctx *c, const node *at, value in, const callargs *a, value *out) {
    (void)a;
    switch (in.kind) {
    case V_UNDEF: *out = v_int(0); return 0;
    case V_STR:
        if (tpl_charge(c, at, in.u.s->len / 64)) return -1;
        *out = v_int((int64_t)tpl_u8_count(in.u.s->s, in.u.s->len));
        return 0;
    case V_LIST: *out = v_int(in.u.l->n); return 0;
    case V_DICT: *out = v_int(in.u.d->n); return 0;
    default: return tpl_rfail(c, at, MT_ERR_FORMAT, "object of type '%s' has no len()", tpl_type_name(in));
    }
}

static int f_list(rctx *c, const node *at, value in, const callargs *a, value *out) {
    (void)a;
    list_obj *l;
    if (tpl_iter_items(c, at, in, &l)) return -1;
    *out = tpl_list_value(l);
    return 0;
}

static int f_first_last(rctx *c, const node *at, value in, int last, value *out) {
    list_obj *l;
    if (tpl_iter_items(c, at, in, &l)) return -1;
    *out = l->n ? tpl_v_ref(l->items[last ? l->n - 1 : 0]) : v_undef(NULL);
    tpl_v_drop(tpl_list_value(l));
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
            if (tpl_u8_next(in.u.s->s, in.u.s->len, p) != end) p = end - 1;
            if (tpl_sb_put(c, at, &b, in.u.s->s + p, end - p)) { tpl_sb_free(&b); return -1; }
            end = p;
        }
        return tpl_sb_to_value(c, at, &b, out);
    }
    if (tpl_iter_items(c, at, in, &l)) return -1;
    if (!(r = tpl_list_new(c, at))) { tpl_v_drop(tpl_list_value(l)); return -1; }
    for (int i = l->n - 1; i >= 0; i--)
        if (tpl_list_push(c, at, r, tpl_v_ref(l->items[i]))) { tpl_v_drop(tpl_list_value(r)); tpl_v_drop(tpl_list_value(l)); return -1; }
    tpl_v_drop(tpl_list_value(l));
    *out = tpl_list_value(r);
    return 0;
}

static int f_items(rctx *c, const node *at, value in, const callargs *a, value *out) {
    (void)a;
    if (in.kind == V_UNDEF) { list_obj *l = tpl_list_new(c, at); if (!l) return -1; *out = tpl_list_value(l); return 0; }
    if (in.kind != V_DICT) return tpl_rfail(c, at, MT_ERR_FORMAT, "items filter expects a dict, not '%s'", tpl_type_name(in));
    return pairs(c, at, in.u.d, 2, out);
}

/* Jinja's attribute getter for map / join / selectattr: "a.b.0" looks up a, then b, then 0. */
static int lookup_path(rctx *c, const node *at, value obj, const char *path, value *out) {
    value v = tpl_v_ref(obj);
    while (*path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        value key, next;
        int numeric = n > 0 && strspn(path, "0123456789") >= n;
        if (numeric) key = v_int(strtoll(path, NULL, 10));
        else if (tpl_str_new(c, at, path, n, &key)) { tpl_v_drop(v); return -1; }
        int rc = tpl_get_item(c, at, v, key, NULL, &next);
        tpl_v_drop(key);
        tpl_v_drop(v);
        if (rc) return -1;
        v = next;
        path += n + (dot ? 1 : 0);
    }
    *out = v;
    return 0;
}

static int f_join(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *sep = tpl_arg(a, 0, "d"), *attr = tpl_arg(a, 1, "attribute");
    list_obj *l;
    sbuf b = {0};
    if ((sep && tpl_need_str(c, at, sep, "join separator")) || (attr && tpl_need_str(c, at, attr, "join attribute"))) return -1;
    if (tpl_iter_items(c, at, in, &l)) return -1;
    int rc = 0;
    for (int i = 0; i < l->n && rc == 0; i++) {
        value item = tpl_v_ref(l->items[i]);
        if (attr) { value v; rc = lookup_path(c, at, item, attr->u.s->s, &v); tpl_v_drop(item); item = rc ? v_undef(NULL) : v; }
        if (rc == 0 && i && sep) rc = tpl_sb_put(c, at, &b, sep->u.s->s, sep->u.s->len);
        if (rc == 0) rc = tpl_write_value(c, at, &b, item);
        tpl_v_drop(item);
    }
    tpl_v_drop(tpl_list_value(l));
    if (rc) { tpl_sb_free(&b); return -1; }
    return tpl_sb_to_value(c, at, &b, out);
}

static int f_replace(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *old = tpl_arg(a, 0, "old"), *rep = tpl_arg(a, 1, "new"), *count = tpl_arg(a, 2, "count");
    value s, o, r;
    if (!old || !rep) return tpl_rfail(c, at, MT_ERR_FORMAT, "replace filter takes old and new strings");
    if (count && count->kind != V_NONE && tpl_need_int(c, at, count, "replace count")) return -1;
    if (tpl_to_str(c, at, in, &s)) return -1;
    if (tpl_to_str(c, at, *old, &o)) { tpl_v_drop(s); return -1; }
    if (tpl_to_str(c, at, *rep, &r)) { tpl_v_drop(s); tpl_v_drop(o); return -1; }
    int rc = replace(c, at, s.u.s, o.u.s, r.u.s, count && count->kind != V_NONE ? as_int(*count) : -1, out);
    tpl_v_drop(s);
    tpl_v_drop(o);
    tpl_v_drop(r);
    return rc;
}

static int f_safe(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)c; (void)at; (void)a; *out = tpl_v_ref(in); return 0; }
static int f_string(rctx *c, const node *at, value in, const callargs *a, value *out) { (void)a; return tpl_to_str(c, at, in, out); }

static int f_trim(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *chars = tpl_arg(a, 0, "chars");
    value s;
    if (chars && chars->kind != V_NONE && tpl_need_str(c, at, chars, "trim characters")) return -1;
    if (tpl_to_str(c, at, in, &s)) return -1;
    int rc = strip(c, at, s.u.s, chars && chars->kind == V_STR ? chars->u.s : NULL, 1, 1, out);
    tpl_v_drop(s);
    return rc;
}

/* int(value, default=0): strings parse as Python int() (or float() then truncated). */
static int f_int(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *dflt = tpl_arg(a, 0, "default");
    (void)c; (void)at;
    if (is_integral(in)) { *out = v_int(as_int(in)); return 0; }
    if (in.kind == V_FLOAT && isfinite(in.u.f) && fabs(in.u.f) < 9.2e18) { *out = v_int((int64_t)in.u.f); return 0; }
    if (in.kind == V_STR) {
        char *end;
        errno = 0;
        long long v = strtoll(in.u.s->s, &end, 10);
        while (tpl_py_space(*end)) end++;
        if (!errno && end != in.u.s->s && !*end) { *out = v_int(v); return 0; }
        double f = strtod(in.u.s->s, &end);
        while (tpl_py_space(*end)) end++;
        if (end != in.u.s->s && !*end && isfinite(f) && fabs(f) < 9.2e18) { *out = v_int((int64_t)f); return 0; }
    }
    *out = dflt ? tpl_v_ref(*dflt) : v_int(0);
    return 0;
}

static int f_float(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *dflt = tpl_arg(a, 0, "default");
    (void)c; (void)at;
    if (is_number(in)) { *out = v_float(as_float(in)); return 0; }
    if (in.kind == V_STR) {
        char *end;
        double f = strtod(in.u.s->s, &end);
        while (tpl_py_space(*end)) end++;
        if (end != in.u.s->s && !*end) { *out = v_float(f); return 0; }
    }
    *out = dflt ? tpl_v_ref(*dflt) : v_float(0.0);
    return 0;
}

static int apply_test(rctx *c, const node *at, const char *name, value v, const callargs *rest, int *result);

/* select / reject / selectattr / rejectattr: keep items whose test (or truthiness) is `keep`. */
static int select_items(rctx *c, const node *at, value in, const callargs *a, int with_attr, int keep, value *out) {
    int skip = with_attr ? 1 : 0;
    const value *attr = with_attr ? tpl_arg(a, 0, NULL) : NULL;
    const value *test = tpl_arg(a, skip, NULL);
    if ((with_attr && tpl_need_str(c, at, attr, "attribute name")) || (test && tpl_need_str(c, at, test, "test name"))) return -1;
    callargs rest = {a->pos + skip + 1, a->n_pos > skip + 1 ? a->n_pos - skip - 1 : 0, a->kw_names, a->kw, a->n_kw};
    list_obj *l, *r;
    if (tpl_iter_items(c, at, in, &l)) return -1;
    if (!(r = tpl_list_new(c, at))) { tpl_v_drop(tpl_list_value(l)); return -1; }
    for (int i = 0; i < l->n; i++) {
        value v = tpl_v_ref(l->items[i]);
        int ok = 0, rc = 0;
        if (attr) { value x; rc = lookup_path(c, at, v, attr->u.s->s, &x); tpl_v_drop(v); v = rc ? v_undef(NULL) : x; }
        if (rc == 0) { if (test) rc = apply_test(c, at, test->u.s->s, v, &rest, &ok); else ok = tpl_truthy(v); }
        tpl_v_drop(v);
        if (rc == 0 && ok == keep) rc = tpl_list_push(c, at, r, tpl_v_ref(l->items[i]));
        if (rc) { tpl_v_drop(tpl_list_value(r)); tpl_v_drop(tpl_list_value(l)); return -1; }
    }
    tpl_v_drop(tpl_list_value(l));
    *out = tpl_list_value(r);
    return 0;
}
static int f_select(rctx *c, const node *at, value in, const callargs *a, value *out) { return select_items(c, at, in, a, 0, 1, out); }
static int f_reject(rctx *c, const node *at, value in, const callargs *a, value *out) { return select_items(c, at, in, a, 0, 0, out); }
static int f_selectattr(rctx *c, const node *at, value in, const callargs *a, value *out) { return select_items(c, at, in, a, 1, 1, out); }
static int f_rejectattr(rctx *c, const node *at, value in, const callargs *a, value *out) { return select_items(c, at, in, a, 1, 0, out); }

/* map(attribute='x') or map('filter', args...) */
static int f_map(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *attr = tpl_arg(a, -1, "attribute"), *name = tpl_arg(a, 0, NULL);
    int fn = -1;
    if (attr && tpl_need_str(c, at, attr, "map attribute")) return -1;
    if (!attr) {
        if (tpl_need_str(c, at, name, "map filter name")) return -1;
        if ((fn = tpl_find_filter(name->u.s->s)) < 0) return tpl_rfail(c, at, MT_ERR_UNSUPPORTED, "filter '%s' is not supported", name->u.s->s);
    }
    callargs rest = {a->pos + 1, a->n_pos > 1 ? a->n_pos - 1 : 0, a->kw_names, a->kw, attr ? 0 : a->n_kw};
    list_obj *l, *r;
    if (tpl_iter_items(c, at, in, &l)) return -1;
    if (!(r = tpl_list_new(c, at))) { tpl_v_drop(tpl_list_value(l)); return -1; }
    for (int i = 0; i < l->n; i++) {
        value v;
        int rc = attr ? lookup_path(c, at, l->items[i], attr->u.s->s, &v) : tpl_run_filter(c, at, fn, l->items[i], &rest, &v);
        if (rc == 0) rc = tpl_list_push(c, at, r, v);
        if (rc) { tpl_v_drop(tpl_list_value(r)); tpl_v_drop(tpl_list_value(l)); return -1; }
    }
    tpl_v_drop(tpl_list_value(l));
    *out = tpl_list_value(r);
    return 0;
}

static int json_string(rctx *c, const node *at, sbuf *b, const char *s, size_t n, int ensure_ascii) {
    if (tpl_sb_str(c, at, b, "\"")) return -1;
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
                uint32_t cp = tpl_u8_decode(s, n, i);
                j = tpl_u8_next(s, n, i);
                if (cp >= 0x10000) snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF));
                else snprintf(esc, sizeof esc, "\\u%04x", cp);
                e = esc;
            }
        }
        if (e ? tpl_sb_str(c, at, b, e) : tpl_sb_put(c, at, b, s + i, 1)) return -1;
        i = j;
    }
    return tpl_sb_str(c, at, b, "\"");
}

static int json_newline(rctx *c, const node *at, sbuf *b, const json_style *st, int level) {
    if (!st->indent) return 0;
    if (tpl_sb_str(c, at, b, "\n")) return -1;
    for (int i = 0; i < level; i++) if (tpl_sb_put(c, at, b, st->indent, st->indent_len)) return -1;
    return 0;
}

static int json_value(rctx *c, const node *at, sbuf *b, value v, const json_style *st, int level);

static int json_key(rctx *c, const node *at, sbuf *b, value k, const json_style *st) {
    if (k.kind == V_STR) return json_string(c, at, b, k.u.s->s, k.u.s->len, st->ensure_ascii);
    if (k.kind != V_INT && k.kind != V_BOOL && k.kind != V_FLOAT && k.kind != V_NONE)
        return tpl_rfail(c, at, MT_ERR_FORMAT, "keys must be str, int, float, bool or None, not '%s'", tpl_type_name(k));
    sbuf tmp = {0};
    int rc = json_value(c, at, &tmp, k, st, 0);
    if (rc == 0) rc = json_string(c, at, b, tmp.p, tmp.n, 0);
    tpl_sb_free(&tmp);
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
    if (!idx) return tpl_rfail(c, at, MT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < d->n; i++) idx[i] = i;
    if (st->sort_keys) {
        if (tpl_charge(c, at, (size_t)d->n * (size_t)d->n / 16)) { if (idx != order) free(idx); return -1; }
        for (int i = 0; i < d->n; i++)
            if (d->keys[i].kind != V_STR) { if (idx != order) free(idx); return tpl_rfail(c, at, MT_ERR_UNSUPPORTED, "sort_keys needs string keys"); }
        for (int i = 1; i < d->n; i++) /* insertion sort: dicts in templates are small */
            for (int j = i; j > 0 && key_order(d, idx[j - 1], idx[j]) > 0; j--) { int t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t; }
    }
    int rc = tpl_sb_str(c, at, b, "{");
    for (int i = 0; i < d->n && rc == 0; i++) {
        if (i) rc = tpl_sb_str(c, at, b, st->item_sep);
        if (rc == 0) rc = json_newline(c, at, b, st, level + 1);
        if (rc == 0) rc = json_key(c, at, b, d->keys[idx[i]], st);
        if (rc == 0) rc = tpl_sb_str(c, at, b, st->key_sep);
        if (rc == 0) rc = json_value(c, at, b, d->vals[idx[i]], st, level + 1);
    }
    if (rc == 0 && d->n) rc = json_newline(c, at, b, st, level);
    if (idx != order) free(idx);
    return rc ? -1 : tpl_sb_str(c, at, b, "}");
}

static int json_value(rctx *c, const node *at, sbuf *b, value v, const json_style *st, int level) {
    char num[48];
    switch (v.kind) {
    case V_NONE: return tpl_sb_str(c, at, b, "null");
    case V_BOOL: return tpl_sb_str(c, at, b, v.u.b ? "true" : "false");
    case V_INT: snprintf(num, sizeof num, "%lld", (long long)v.u.i); return tpl_sb_str(c, at, b, num);
    case V_FLOAT:
        if (isnan(v.u.f)) return tpl_sb_str(c, at, b, "NaN");
        if (isinf(v.u.f)) return tpl_sb_str(c, at, b, v.u.f < 0 ? "-Infinity" : "Infinity");
        tpl_format_float(v.u.f, num, sizeof num);
        return tpl_sb_str(c, at, b, num);
    case V_STR: return json_string(c, at, b, v.u.s->s, v.u.s->len, st->ensure_ascii);
    case V_LIST: {
        int rc = tpl_sb_str(c, at, b, "[");
        for (int i = 0; i < v.u.l->n && rc == 0; i++) {
            if (i) rc = tpl_sb_str(c, at, b, st->item_sep);
            if (rc == 0) rc = json_newline(c, at, b, st, level + 1);
            if (rc == 0) rc = json_value(c, at, b, v.u.l->items[i], st, level + 1);
        }
        if (rc == 0 && v.u.l->n) rc = json_newline(c, at, b, st, level);
        return rc ? -1 : tpl_sb_str(c, at, b, "]");
    }
    case V_DICT: return json_dict(c, at, b, v.u.d, st, level);
    case V_UNDEF: return tpl_undefined_error(c, at, v);
    default: return tpl_rfail(c, at, MT_ERR_FORMAT, "object of type '%s' is not JSON serializable", tpl_type_name(v));
    }
}

static int f_tojson(rctx *c, const node *at, value in, const callargs *a, value *out) {
    const value *indent = tpl_arg(a, 1, "indent"), *sort = tpl_arg(a, 4, "sort_keys"), *ascii = tpl_arg(a, 0, "ensure_ascii");
    const value *seps = tpl_arg(a, 2, "separators");
    char spaces[64];
    json_style st = {NULL, 0, ", ", ": ", sort && tpl_truthy(*sort), ascii && tpl_truthy(*ascii)};
    if (indent && indent->kind != V_NONE) {
        if (indent->kind == V_STR) { st.indent = indent->u.s->s; st.indent_len = indent->u.s->len; }
        else if (is_integral(*indent)) {
            int64_t w = as_int(*indent);
            if (w > (int64_t)sizeof spaces) return tpl_rfail(c, at, MT_ERR_UNSUPPORTED, "indent wider than %zu", sizeof spaces);
            memset(spaces, ' ', sizeof spaces);
            st.indent = spaces;
            st.indent_len = w > 0 ? (size_t)w : 0;
        } else return tpl_rfail(c, at, MT_ERR_FORMAT, "indent must be an integer or a string");
        st.item_sep = ",";
    }
    if (seps && seps->kind != V_NONE) {
        if (seps->kind != V_LIST || seps->u.l->n != 2 || seps->u.l->items[0].kind != V_STR || seps->u.l->items[1].kind != V_STR)
            return tpl_rfail(c, at, MT_ERR_FORMAT, "separators must be two strings");
        st.item_sep = seps->u.l->items[0].u.s->s;
        st.key_sep = seps->u.l->items[1].u.s->s;
    }
    sbuf b = {0};
    if (json_value(c, at, &b, in, &st, 0)) { tpl_sb_free(&b); return -1; }
    return tpl_sb_to_value(c, at, &b, out);
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
    if (tpl_need_int(c, at, &v, "even/odd test value")) return -1;
    *r = (tpl_floor_mod(as_int(v), 2) == 1) == odd;
    return 0;
}
static int t_even(rctx *c, const node *at, value v, const callargs *a, int *r) { (void)a; return t_even_odd(c, at, v, 0, r); }
static int t_odd(rctx *c, const node *at, value v, const callargs *a, int *r) { (void)a; return t_even_odd(c, at, v, 1, r); }

static int t_divisibleby(rctx *c, const node *at, value v, const callargs *a, int *r) {
    const value *n = tpl_arg(a, 0, "num");
    if (tpl_need_int(c, at, &v, "divisibleby value") || tpl_need_int(c, at, n, "divisibleby argument")) return -1;
    if (as_int(*n) == 0) return tpl_rfail(c, at, MT_ERR_FORMAT, "division by zero");
    *r = as_int(*n) == -1 || as_int(v) % as_int(*n) == 0;
    return 0;
}

static int t_compare(rctx *c, const node *at, value v, const callargs *a, int op, int *r) {
    const value *other = tpl_arg(a, 0, "other");
    if (!other) return tpl_rfail(c, at, MT_ERR_FORMAT, "comparison test needs an argument");
    return tpl_compare(c, at, op, v, *other, r);
}
static int t_eq(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, OP_EQ, r); }
static int t_ne(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, OP_NE, r); }
static int t_lt(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, '<', r); }
static int t_le(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, OP_LE, r); }
static int t_gt(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, '>', r); }
static int t_ge(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, OP_GE, r); }
static int t_in(rctx *c, const node *at, value v, const callargs *a, int *r) { return t_compare(c, at, v, a, OP_IN, r); }

static int t_sameas(rctx *c, const node *at, value v, const callargs *a, int *r) {
    const value *o = tpl_arg(a, 0, "other");
    if (!o) return tpl_rfail(c, at, MT_ERR_FORMAT, "sameas needs an argument");
    if (v.kind != o->kind) *r = 0;
    else if (v.kind == V_NONE || v.kind == V_UNDEF) *r = 1;
    else if (v.kind == V_BOOL) *r = v.u.b == o->u.b;
    else if (is_heap(v)) *r = hdr(v) == hdr(*o);
    else *r = tpl_v_equal(v, *o);
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

int tpl_find_filter(const char *name) {
    for (int i = 0; i < N_FILTERS; i++) if (strcmp(FILTERS[i].name, name) == 0) return i;
    return -1;
}

int tpl_find_test(const char *name) {
    for (int i = 0; i < N_TESTS; i++) if (strcmp(TESTS[i].name, name) == 0) return i;
    return -1;
}

int tpl_run_filter(rctx *c, const node *at, int fn, value in, const callargs *a, value *out) {
    return FILTERS[fn].fn(c, at, in, a, out);
}

int tpl_run_test(rctx *c, const node *at, int fn, value in, const callargs *a, int *result) {
    return TESTS[fn].fn(c, at, in, a, result);
}

static int apply_test(rctx *c, const node *at, const char *name, value v, const callargs *rest, int *result) {
    int fn = tpl_find_test(name);
    if (fn < 0) return tpl_rfail(c, at, MT_ERR_UNSUPPORTED, "test '%s' is not supported", name);
    return tpl_run_test(c, at, fn, v, rest, result);
}
