/* Evaluation of the template engine: expressions (arithmetic, comparisons, calls), the
 * builtin functions and the statements (for, if, set, macro, ...) (see internal.h). */
#include "template/internal.h"

/* ======================================================================================
 * Expressions
 * ==================================================================================== */

static int eval(rctx *c, const node *n, value *out);

/* The items a for-loop or a filter iterates: a list's items, a dict's keys, a string's
 * characters; undefined iterates as empty. Returns a new list reference. */
int tpl_iter_items(rctx *c, const node *at, value v, list_obj **out) {
    if (v.kind == V_LIST) { tpl_v_ref(v); *out = v.u.l; return 0; }
    if (v.kind != V_DICT && v.kind != V_STR && v.kind != V_UNDEF)
        return tpl_rfail(c, at, MT_ERR_FORMAT, "'%s' object is not iterable", tpl_type_name(v));
    list_obj *l = tpl_list_new(c, at);
    if (!l) return -1;
    if (v.kind == V_DICT) {
        for (int i = 0; i < v.u.d->n; i++)
            if (tpl_list_push(c, at, l, tpl_v_ref(v.u.d->keys[i]))) goto fail;
    } else if (v.kind == V_STR) {
        const str_obj *s = v.u.s;
        for (size_t i = 0, j; i < s->len; i = j) {
            value ch;
            j = tpl_u8_next(s->s, s->len, i);
            if (tpl_str_new(c, at, s->s + i, j - i, &ch) || tpl_list_push(c, at, l, ch)) goto fail;
        }
    }
    *out = l;
    return 0;
fail:
    tpl_v_drop(tpl_list_value(l));
    return -1;
}

/* obj.name: a dict's or namespace's entry; anything else has no such attribute (undefined).
 * Only an attribute of something undefined is an error, as in Jinja. */
static int get_attr(rctx *c, const node *at, value obj, const char *name, value *out) {
    if (obj.kind == V_UNDEF) return tpl_undefined_error(c, at, obj);
    const value *v = (obj.kind == V_DICT || obj.kind == V_NS) ? tpl_dict_find_str(obj.u.d, name) : NULL;
    *out = v ? tpl_v_ref(*v) : v_undef(name);
    return 0;
}

/* Byte offset of code point `index` (index <= count). */
static size_t cp_offset(const str_obj *s, int64_t index) {
    size_t i = 0;
    for (int64_t k = 0; k < index && i < s->len; k++) i = tpl_u8_next(s->s, s->len, i);
    return i;
}

/* obj[key]: list and string positions (negative from the end), dict keys. A missing item
 * is undefined (hint names it when the key is a literal). */
int tpl_get_item(rctx *c, const node *at, value obj, value key, const char *hint, value *out) {
    if (obj.kind == V_UNDEF) return tpl_undefined_error(c, at, obj);
    *out = v_undef(hint);
    if ((obj.kind == V_LIST || obj.kind == V_STR) && is_integral(key)) {
        if (obj.kind == V_STR && tpl_charge(c, at, obj.u.s->len / 64)) return -1;
        int64_t len = obj.kind == V_LIST ? obj.u.l->n : (int64_t)tpl_u8_count(obj.u.s->s, obj.u.s->len);
        int64_t i = as_int(key);
        if (i < 0) i += len;
        if (i < 0 || i >= len) return 0;
        if (obj.kind == V_LIST) { *out = tpl_v_ref(obj.u.l->items[i]); return 0; }
        size_t a = cp_offset(obj.u.s, i);
        return tpl_str_new(c, at, obj.u.s->s + a, tpl_u8_next(obj.u.s->s, obj.u.s->len, a) - a, out);
    }
    if (obj.kind == V_DICT || obj.kind == V_NS) {
        value *v;
        if (tpl_dict_lookup(c, at, obj.u.d, key, &v)) return -1;
        if (v) *out = tpl_v_ref(*v);
    }
    return 0;
}

/* Python's slice.indices(): clamps start/stop for a sequence of length len. */
static int slice_bounds(rctx *c, const node *at, int64_t len, const value *ends[3], int64_t *start, int64_t *stop, int64_t *step) {
    for (int i = 0; i < 3; i++)
        if (ends[i] && ends[i]->kind != V_NONE && !is_integral(*ends[i]))
            return tpl_rfail(c, at, MT_ERR_FORMAT, "slice indices must be integers or none");
    *step = ends[2] && ends[2]->kind != V_NONE ? as_int(*ends[2]) : 1;
    if (*step == 0) return tpl_rfail(c, at, MT_ERR_FORMAT, "slice step cannot be zero");
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
    if (obj.kind == V_UNDEF) return tpl_undefined_error(c, at, obj);
    if (obj.kind != V_LIST && obj.kind != V_STR) { *out = v_undef(NULL); return 0; }
    if (obj.kind == V_STR && tpl_charge(c, at, obj.u.s->len / 64)) return -1;
    int64_t len = obj.kind == V_LIST ? obj.u.l->n : (int64_t)tpl_u8_count(obj.u.s->s, obj.u.s->len);
    int64_t start = 0, stop = 0, step = 1;
    if (slice_bounds(c, at, len, ends, &start, &stop, &step)) return -1;
    if (obj.kind == V_LIST) {
        list_obj *l = tpl_list_new(c, at);
        if (!l) return -1;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
            if (tpl_list_push(c, at, l, tpl_v_ref(obj.u.l->items[i]))) { tpl_v_drop(tpl_list_value(l)); return -1; }
        *out = tpl_list_value(l);
        return 0;
    }
    const str_obj *s = obj.u.s;
    if (step == 1) {
        size_t a = cp_offset(s, start), b = stop > start ? cp_offset(s, stop) : a;
        return tpl_str_new(c, at, s->s + a, b - a, out);
    }
    sbuf b = {0};
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        size_t a = cp_offset(s, i);
        if (tpl_charge(c, at, (size_t)(a / 64)) || tpl_sb_put(c, at, &b, s->s + a, tpl_u8_next(s->s, s->len, a) - a)) {
            tpl_sb_free(&b);
            return -1;
        }
    }
    return tpl_sb_to_value(c, at, &b, out);
}

static int eval_slice(rctx *c, const node *n, value *out) {
    value obj = v_undef(NULL), parts[3] = {v_none(), v_none(), v_none()};
    const node *kids[3] = {n->b, n->c, n->d};
    const value *ends[3] = {NULL, NULL, NULL};
    int rc = eval(c, n->a, &obj);
    for (int i = 0; i < 3 && rc == 0; i++)
        if (kids[i]) { rc = eval(c, kids[i], &parts[i]); ends[i] = &parts[i]; }
    if (rc == 0) rc = slice_value(c, n, obj, ends, out);
    tpl_v_drop(obj);
    for (int i = 0; i < 3; i++) tpl_v_drop(parts[i]);
    return rc;
}

/* ---- arithmetic ---------------------------------------------------------------------- */

static int type_error(rctx *c, const node *at, const char *op, value a, value b) {
    if (a.kind == V_UNDEF) return tpl_undefined_error(c, at, a);
    if (b.kind == V_UNDEF) return tpl_undefined_error(c, at, b);
    return tpl_rfail(c, at, MT_ERR_FORMAT, "unsupported operand types for %s: '%s' and '%s'", op, tpl_type_name(a), tpl_type_name(b));
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

int64_t tpl_floor_mod(int64_t a, int64_t b) {
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
        return tpl_rfail(c, at, MT_ERR_FORMAT, "division by zero");
    switch (op) {
    case '+': overflow = __builtin_add_overflow(a, b, &r); break;
    case '-': overflow = __builtin_sub_overflow(a, b, &r); break;
    case '*': overflow = __builtin_mul_overflow(a, b, &r); break;
    case '/': *out = v_float((double)a / (double)b); return 0;
    case OP_FLOORDIV: overflow = a == INT64_MIN && b == -1; if (!overflow) r = floor_div(a, b); break;
    case '%': r = (a == INT64_MIN && b == -1) ? 0 : tpl_floor_mod(a, b); break;
    case OP_POW:
        if (b < 0) { *out = v_float(pow((double)a, (double)b)); return 0; }
        overflow = int_pow(a, b, &r) != 0;
        break;
    }
    if (overflow) return tpl_rfail(c, at, MT_ERR_UNSUPPORTED, "integer overflow");
    *out = v_int(r);
    return 0;
}

static int float_arith(rctx *c, const node *at, int op, double a, double b, value *out) {
    if ((op == OP_FLOORDIV || op == '%' || op == '/') && b == 0.0) return tpl_rfail(c, at, MT_ERR_FORMAT, "division by zero");
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
            return tpl_rfail(c, at, MT_ERR_FORMAT, "string longer than %zu MiB", MAX_STRING >> 20);
        if (tpl_str_new(c, at, NULL, len * (size_t)times, out)) return -1;
        for (int64_t i = 0; i < times; i++) memcpy(out->u.s->s + (size_t)i * len, seq.u.s->s, len);
        return 0;
    }
    if (seq.u.l->n && times > MAX_LIST / seq.u.l->n) return tpl_rfail(c, at, MT_ERR_FORMAT, "list longer than %d items", MAX_LIST);
    list_obj *l = tpl_list_new(c, at);
    if (!l) return -1;
    for (int64_t i = 0; i < times; i++)
        for (int k = 0; k < seq.u.l->n; k++)
            if (tpl_list_push(c, at, l, tpl_v_ref(seq.u.l->items[k]))) { tpl_v_drop(tpl_list_value(l)); return -1; }
    *out = tpl_list_value(l);
    return 0;
}

static int concat(rctx *c, const node *at, value a, value b, value *out) {
    if (a.kind == V_STR) {
        if (b.u.s->len > MAX_STRING - a.u.s->len) return tpl_rfail(c, at, MT_ERR_FORMAT, "string longer than %zu MiB", MAX_STRING >> 20);
        if (tpl_str_new(c, at, NULL, a.u.s->len + b.u.s->len, out)) return -1;
        memcpy(out->u.s->s, a.u.s->s, a.u.s->len);
        memcpy(out->u.s->s + a.u.s->len, b.u.s->s, b.u.s->len);
        return 0;
    }
    list_obj *l = tpl_list_new(c, at);
    if (!l) return -1;
    for (int k = 0; k < a.u.l->n + b.u.l->n; k++) {
        value item = k < a.u.l->n ? a.u.l->items[k] : b.u.l->items[k - a.u.l->n];
        if (tpl_list_push(c, at, l, tpl_v_ref(item))) { tpl_v_drop(tpl_list_value(l)); return -1; }
    }
    *out = tpl_list_value(l);
    return 0;
}

static int arith(rctx *c, const node *at, int op, value a, value b, value *out) {
    static const char *names[] = {"+", "-", "*", "/", "//", "%", "**"};
    const char *name = op == '+' ? names[0] : op == '-' ? names[1] : op == '*' ? names[2] : op == '/' ? names[3]
                     : op == OP_FLOORDIV ? names[4] : op == '%' ? names[5] : names[6];
    if (op == '~') {
        sbuf s = {0};
        if (tpl_write_value(c, at, &s, a) || tpl_write_value(c, at, &s, b)) { tpl_sb_free(&s); return -1; }
        return tpl_sb_to_value(c, at, &s, out);
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
    if (eval(c, n->b, &b)) { tpl_v_drop(a); return -1; }
    int rc = arith(c, n, n->op, a, b, out);
    tpl_v_drop(a);
    tpl_v_drop(b);
    return rc;
}

static int eval_unary(rctx *c, const node *n, value *out) {
    value a;
    if (eval(c, n->a, &a)) return -1;
    int rc = 0;
    if (a.kind == V_FLOAT) *out = v_float(n->kind == N_NEG ? -a.u.f : a.u.f);
    else if (is_integral(a) && !(n->kind == N_NEG && as_int(a) == INT64_MIN)) *out = v_int(n->kind == N_NEG ? -as_int(a) : as_int(a));
    else if (a.kind == V_UNDEF) rc = tpl_undefined_error(c, n, a);
    else rc = tpl_rfail(c, n, MT_ERR_FORMAT, "bad operand type for unary %c: '%s'", n->kind == N_NEG ? '-' : '+', tpl_type_name(a));
    tpl_v_drop(a);
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
        if (tpl_charge(c, at, 1 + scan_cost(a))) return -1;
        for (int i = 0; i < a.u.l->n && i < b.u.l->n; i++)
            if (!tpl_v_equal(a.u.l->items[i], b.u.l->items[i])) return order(c, at, a.u.l->items[i], b.u.l->items[i], cmp);
        *cmp = (a.u.l->n > b.u.l->n) - (a.u.l->n < b.u.l->n);
        return 0;
    }
    if (a.kind == V_UNDEF) return tpl_undefined_error(c, at, a);
    if (b.kind == V_UNDEF) return tpl_undefined_error(c, at, b);
    return tpl_rfail(c, at, MT_ERR_FORMAT, "'<' not supported between '%s' and '%s'", tpl_type_name(a), tpl_type_name(b));
}

static int contains(rctx *c, const node *at, value item, value seq, int *result) {
    *result = 0;
    if (tpl_charge(c, at, 1 + scan_cost(seq) * (1 + scan_cost(item)))) return -1;
    if (seq.kind == V_STR) {
        if (item.kind != V_STR) return tpl_rfail(c, at, MT_ERR_FORMAT, "'in <string>' requires a string as left operand, not '%s'", tpl_type_name(item));
        *result = item.u.s->len == 0 || memmem(seq.u.s->s, seq.u.s->len, item.u.s->s, item.u.s->len) != NULL;
        return 0;
    }
    if (seq.kind == V_LIST) {
        for (int i = 0; i < seq.u.l->n && !*result; i++) *result = tpl_v_equal(item, seq.u.l->items[i]);
        return 0;
    }
    if (seq.kind == V_DICT) {
        value *v;
        if (tpl_dict_lookup(c, at, seq.u.d, item, &v)) return -1;
        *result = v != NULL;
        return 0;
    }
    if (seq.kind == V_UNDEF) return 0;
    return tpl_rfail(c, at, MT_ERR_FORMAT, "argument of type '%s' is not iterable", tpl_type_name(seq));
}

int tpl_compare(rctx *c, const node *at, int op, value a, value b, int *result) {
    int cmp = 0;
    if (tpl_charge(c, at, 1 + scan_cost(a))) return -1;
    switch (op) {
    case OP_EQ: *result = tpl_v_equal(a, b); return 0;
    case OP_NE: *result = !tpl_v_equal(a, b); return 0;
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
        if (eval(c, n->args.v[i], &right)) { tpl_v_drop(left); return -1; }
        int rc = tpl_compare(c, n, n->ops[i], left, right, &result);
        tpl_v_drop(left);
        left = right;
        if (rc) { tpl_v_drop(left); return -1; }
    }
    tpl_v_drop(left);
    *out = v_bool(result);
    return 0;
}

/* and / or return one of their operands, as in Python. */
static int eval_logic(rctx *c, const node *n, value *out) {
    if (eval(c, n->a, out)) return -1;
    if (tpl_truthy(*out) == (n->kind == N_OR)) return 0;
    tpl_v_drop(*out);
    return eval(c, n->b, out);
}

static int eval_cond(rctx *c, const node *n, value *out) {
    value cond;
    if (eval(c, n->b, &cond)) return -1;
    int t = tpl_truthy(cond);
    tpl_v_drop(cond);
    if (t) return eval(c, n->a, out);
    if (n->c) return eval(c, n->c, out);
    *out = v_undef(NULL);
    return 0;
}

static int eval_list(rctx *c, const node *n, value *out) {
    list_obj *l = tpl_list_new(c, n);
    if (!l) return -1;
    l->tuple = n->op;
    for (int i = 0; i < n->args.n; i++) {
        value v;
        if (eval(c, n->args.v[i], &v) || tpl_list_push(c, n, l, v)) { tpl_v_drop(tpl_list_value(l)); return -1; }
    }
    *out = tpl_list_value(l);
    return 0;
}

static int eval_dict(rctx *c, const node *n, value *out) {
    dict_obj *d = tpl_dict_new(c, n);
    if (!d) return -1;
    for (int i = 0; i < n->args.n; i++) {
        value k, v;
        if (eval(c, n->args.v[i], &k)) goto fail;
        if (eval(c, n->kwargs.v[i], &v)) { tpl_v_drop(k); goto fail; }
        if (tpl_dict_set(c, n, d, k, v)) goto fail;
    }
    *out = tpl_dict_value(d, V_DICT);
    return 0;
fail:
    tpl_v_drop(tpl_dict_value(d, V_DICT));
    return -1;
}

static void drop_args(argvals *v) {
    for (int i = 0; i < v->a.n_pos; i++) tpl_v_drop(v->pos[i]);
    for (int i = 0; i < v->a.n_kw; i++) tpl_v_drop(v->kw[i]);
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
const value *tpl_arg(const callargs *a, int i, const char *name) {
    if (i >= 0 && i < a->n_pos) return &a->pos[i];
    for (int k = 0; name && k < a->n_kw; k++) if (strcmp(a->kw_names[k], name) == 0) return &a->kw[k];
    return NULL;
}

static int eval_call(rctx *c, const node *n, value *out) {
    argvals args;
    value callee;
    int rc;
    if (n->a->kind == N_ATTR) {
        /* obj.method(...): string and dict methods are resolved on the object */
        if (eval(c, n->a->a, &callee)) return -1;
        if (eval_args(c, n, &args)) { tpl_v_drop(callee); return -1; }
        rc = tpl_call_method(c, n->a, callee, n->a->name, &args.a, out);
    } else {
        if (eval(c, n->a, &callee)) return -1;
        if (eval_args(c, n, &args)) { tpl_v_drop(callee); return -1; }
        if (callee.kind == V_FUNC) rc = tpl_call_builtin(c, n, callee.u.fn, &args.a, out);
        else if (callee.kind == V_UNDEF) rc = tpl_undefined_error(c, n, callee);
        else rc = tpl_rfail(c, n, MT_ERR_FORMAT, "'%s' object is not callable", tpl_type_name(callee));
    }
    tpl_v_drop(callee);
    drop_args(&args);
    return rc;
}

static int eval_filter(rctx *c, const node *n, value *out) {
    argvals args;
    value in;
    if (eval(c, n->a, &in)) return -1;
    if (eval_args(c, n, &args)) { tpl_v_drop(in); return -1; }
    int rc = tpl_run_filter(c, n, n->fn, in, &args.a, out);
    tpl_v_drop(in);
    drop_args(&args);
    return rc;
}

static int eval_test(rctx *c, const node *n, value *out) {
    argvals args;
    value in;
    int result = 0;
    if (eval(c, n->a, &in)) return -1;
    if (eval_args(c, n, &args)) { tpl_v_drop(in); return -1; }
    int rc = tpl_run_test(c, n, n->fn, in, &args.a, &result);
    tpl_v_drop(in);
    drop_args(&args);
    *out = v_bool(n->op ? !result : result);
    return rc;
}

static int eval(rctx *c, const node *n, value *out) {
    value obj, key;
    int rc;
    if (tpl_charge(c, n, 1)) return -1;
    switch (n->kind) {
    case N_CONST: *out = tpl_v_ref(n->k); return 0;
    case N_NAME: *out = tpl_lookup(c, n->name); return 0;
    case N_ATTR:
        if (eval(c, n->a, &obj)) return -1;
        rc = get_attr(c, n, obj, n->name, out);
        tpl_v_drop(obj);
        return rc;
    case N_ITEM:
        if (eval(c, n->a, &obj)) return -1;
        if (eval(c, n->b, &key)) { tpl_v_drop(obj); return -1; }
        rc = tpl_get_item(c, n, obj, key, (n->b->kind == N_CONST && n->b->k.kind == V_STR) ? n->b->k.u.s->s : NULL, out);
        tpl_v_drop(obj);
        tpl_v_drop(key);
        return rc;
    case N_SLICE: return eval_slice(c, n, out);
    case N_CALL: return eval_call(c, n, out);
    case N_FILTER: return eval_filter(c, n, out);
    case N_TEST: return eval_test(c, n, out);
    case N_NEG: case N_POS: return eval_unary(c, n, out);
    case N_NOT:
        if (eval(c, n->a, &obj)) return -1;
        *out = v_bool(!tpl_truthy(obj));
        tpl_v_drop(obj);
        return 0;
    case N_BINOP: return eval_binop(c, n, out);
    case N_AND: case N_OR: return eval_logic(c, n, out);
    case N_COMPARE: return eval_compare(c, n, out);
    case N_COND: return eval_cond(c, n, out);
    case N_LIST: return eval_list(c, n, out);
    case N_DICT: return eval_dict(c, n, out);
    default: return tpl_rfail(c, n, MT_ERR_FORMAT, "internal error: statement used as an expression");
    }
}

/* ======================================================================================
 * Builtin functions: raise_exception (transformers), namespace, range, dict (Jinja).
 * ==================================================================================== */

int tpl_need_str(rctx *c, const node *at, const value *v, const char *what) {
    if (v && v->kind == V_STR) return 0;
    if (v && v->kind == V_UNDEF) return tpl_undefined_error(c, at, *v);
    return tpl_rfail(c, at, MT_ERR_FORMAT, "%s must be a string, not '%s'", what, v ? tpl_type_name(*v) : "nothing");
}

int tpl_need_int(rctx *c, const node *at, const value *v, const char *what) {
    if (v && is_integral(*v)) return 0;
    if (v && v->kind == V_UNDEF) return tpl_undefined_error(c, at, *v);
    return tpl_rfail(c, at, MT_ERR_FORMAT, "%s must be an integer, not '%s'", what, v ? tpl_type_name(*v) : "nothing");
}

static int make_range(rctx *c, const node *at, const callargs *a, value *out) {
    int64_t r[3] = {0, 0, 1};
    if (a->n_pos < 1 || a->n_pos > 3 || a->n_kw) return tpl_rfail(c, at, MT_ERR_FORMAT, "range() takes 1 to 3 integer arguments");
    for (int i = 0; i < a->n_pos; i++) if (tpl_need_int(c, at, &a->pos[i], "range() argument")) return -1;
    if (a->n_pos == 1) r[1] = as_int(a->pos[0]);
    for (int i = 0; a->n_pos > 1 && i < a->n_pos; i++) r[i] = as_int(a->pos[i]);
    if (r[2] == 0) return tpl_rfail(c, at, MT_ERR_FORMAT, "range() step must not be zero");
    __int128 span = (__int128)r[1] - r[0], step = r[2];
    __int128 count = (span > 0) == (step > 0) && span != 0 ? (span + step + (step > 0 ? -1 : 1)) / step : 0;
    if (count > MAX_RANGE) return tpl_rfail(c, at, MT_ERR_FORMAT, "range() of more than %d items", MAX_RANGE);
    list_obj *l = tpl_list_new(c, at);
    if (!l) return -1;
    for (__int128 i = 0; i < count; i++)
        if (tpl_list_push(c, at, l, v_int((int64_t)(r[0] + i * step)))) { tpl_v_drop(tpl_list_value(l)); return -1; }
    *out = tpl_list_value(l);
    return 0;
}

/* namespace(...) and dict(...): from an optional dict and keyword arguments. */
static int make_dict(rctx *c, const node *at, const callargs *a, vkind kind, value *out) {
    if (a->n_pos > 1 || (a->n_pos == 1 && a->pos[0].kind != V_DICT))
        return tpl_rfail(c, at, MT_ERR_FORMAT, "%s() takes an optional dict and keyword arguments", kind == V_NS ? "namespace" : "dict");
    dict_obj *d = tpl_dict_new(c, at);
    if (!d) return -1;
    for (int i = 0; a->n_pos == 1 && i < a->pos[0].u.d->n; i++)
        if (tpl_dict_set(c, at, d, tpl_v_ref(a->pos[0].u.d->keys[i]), tpl_v_ref(a->pos[0].u.d->vals[i]))) goto fail;
    for (int i = 0; i < a->n_kw; i++) {
        value key;
        if (tpl_str_new(c, at, a->kw_names[i], strlen(a->kw_names[i]), &key) || tpl_dict_set(c, at, d, key, tpl_v_ref(a->kw[i]))) goto fail;
    }
    *out = tpl_dict_value(d, kind);
    return 0;
fail:
    tpl_v_drop(tpl_dict_value(d, kind));
    return -1;
}

int tpl_call_builtin(rctx *c, const node *at, int fn, const callargs *a, value *out) {
    if (fn == FN_RAISE_EXCEPTION) {
        const value *m = tpl_arg(a, 0, "message");
        value msg;
        if (tpl_to_str(c, at, m ? *m : v_undef(NULL), &msg)) return -1;
        tpl_rfail(c, at, MT_ERR_ARG, "%s", msg.u.s->s);
        tpl_v_drop(msg);
        return -1;
    }
    if (fn == FN_RANGE) return make_range(c, at, a, out);
    return make_dict(c, at, a, fn == FN_NAMESPACE ? V_NS : V_DICT, out);
}

/* ======================================================================================
 * Statements
 * ==================================================================================== */

static int bind_targets(rctx *c, const node *n, value item) {
    if (n->n_names == 1) return tpl_bind(c, n, n->names[0], tpl_v_ref(item));
    if (item.kind != V_LIST || item.u.l->n != n->n_names)
        return tpl_rfail(c, n, MT_ERR_FORMAT, "cannot unpack '%s' into %d loop variables", tpl_type_name(item), n->n_names);
    for (int i = 0; i < n->n_names; i++)
        if (tpl_bind(c, n, n->names[i], tpl_v_ref(item.u.l->items[i]))) return -1;
    return 0;
}

/* The `loop` object of iteration i over items. */
static int bind_loop(rctx *c, const node *n, const list_obj *items, int i) {
    const value *k = c->t->loop_keys;
    int len = items->n;
    dict_obj *d = tpl_dict_new(c, n);
    if (!d) return -1;
    value vals[N_LOOP_KEYS] = {
        v_int(i + 1), v_int(i), v_int(len - i), v_int(len - i - 1), v_bool(i == 0), v_bool(i == len - 1),
        v_int(len), v_int(1), v_int(0),
        i > 0 ? tpl_v_ref(items->items[i - 1]) : v_undef("loop.previtem"),
        i + 1 < len ? tpl_v_ref(items->items[i + 1]) : v_undef("loop.nextitem"),
    };
    int rc = 0;
    for (int j = 0; j < N_LOOP_KEYS; j++) {
        if (vals[j].kind == V_UNDEF) continue; /* absent: looking it up gives undefined */
        if (rc == 0) rc = tpl_dict_set(c, n, d, k[j], vals[j]);
        else tpl_v_drop(vals[j]);
    }
    if (rc) { tpl_v_drop(tpl_dict_value(d, V_DICT)); return -1; }
    return tpl_bind(c, n, "loop", tpl_dict_value(d, V_DICT));
}

/* {% for x in items if cond %}: the filter runs before the loop, so loop.length counts
 * only the items kept. */
static int filter_items(rctx *c, const node *n, list_obj **items) {
    list_obj *kept = tpl_list_new(c, n);
    if (!kept) return -1;
    for (int i = 0; i < (*items)->n; i++) {
        value cond;
        int rc = tpl_charge(c, n, 1) ? -1 : tpl_push_frame(c, n);
        if (rc) break;
        rc = bind_targets(c, n, (*items)->items[i]);
        if (rc == 0) rc = eval(c, n->b, &cond);
        tpl_pop_frame(c);
        int keep = 0;
        if (rc == 0) { keep = tpl_truthy(cond); tpl_v_drop(cond); }
        if (keep) rc = tpl_list_push(c, n, kept, tpl_v_ref((*items)->items[i]));
        if (rc) { tpl_v_drop(tpl_list_value(kept)); return -1; }
    }
    tpl_v_drop(tpl_list_value(*items));
    *items = kept;
    return 0;
}

static int exec_for(rctx *c, const node *n) {
    value seq;
    list_obj *items;
    if (eval(c, n->a, &seq)) return -1;
    int rc = tpl_iter_items(c, n->a, seq, &items);
    tpl_v_drop(seq);
    if (rc) return -1;
    if (n->b && filter_items(c, n, &items)) { tpl_v_drop(tpl_list_value(items)); return -1; }
    if (items->n == 0) {
        tpl_v_drop(tpl_list_value(items));
        return tpl_exec_body(c, &n->orelse);
    }
    for (int i = 0; i < items->n && rc == 0; i++) {
        if ((rc = tpl_charge(c, n, 1)) || (rc = tpl_push_frame(c, n))) break;
        rc = bind_targets(c, n, items->items[i]);
        if (rc == 0) rc = bind_loop(c, n, items, i);
        if (rc == 0) rc = tpl_exec_body(c, &n->body);
        tpl_pop_frame(c);
        int stop = c->ctl == CTL_BREAK;
        c->ctl = CTL_NONE;
        if (stop) break;
    }
    tpl_v_drop(tpl_list_value(items));
    return rc;
}

static int exec_set_attr(rctx *c, const node *n) {
    value ns = tpl_lookup(c, n->name), v;
    int rc;
    if (ns.kind != V_NS) {
        rc = tpl_rfail(c, n, MT_ERR_FORMAT, "cannot assign attribute '%s' on '%s': not a namespace", n->attr, n->name);
    } else if ((rc = eval(c, n->a, &v)) == 0) {
        rc = tpl_dict_set(c, n, ns.u.d, n->k, v);
    }
    tpl_v_drop(ns);
    return rc;
}

/* {% set x %}...{% endset %}: the body renders into a string. */
static int exec_set_block(rctx *c, const node *n) {
    sbuf buf = {0}, *saved = c->out;
    value v;
    c->out = &buf;
    int rc = tpl_exec_body(c, &n->body);
    c->out = saved;
    if (rc) { tpl_sb_free(&buf); return -1; }
    if (tpl_sb_to_value(c, n, &buf, &v)) return -1;
    return tpl_bind(c, n, n->name, v);
}

static int exec_stmt(rctx *c, const node *n) {
    value v;
    int rc;
    if (tpl_charge(c, n, 1)) return -1;
    switch (n->kind) {
    case N_TEXT: return tpl_sb_put(c, n, c->out, n->k.u.s->s, n->k.u.s->len);
    case N_OUTPUT:
        if (eval(c, n->a, &v)) return -1;
        rc = tpl_write_value(c, n, c->out, v);
        tpl_v_drop(v);
        return rc;
    case N_IF:
        for (int i = 0; i < n->args.n; i++) {
            if (eval(c, n->args.v[i], &v)) return -1;
            int t = tpl_truthy(v);
            tpl_v_drop(v);
            if (t) return tpl_exec_body(c, &n->branches[i]);
        }
        return tpl_exec_body(c, &n->orelse);
    case N_FOR: return exec_for(c, n);
    case N_SET: return eval(c, n->a, &v) ? -1 : tpl_bind(c, n, n->name, v);
    case N_SET_ATTR: return exec_set_attr(c, n);
    case N_SET_BLOCK: return exec_set_block(c, n);
    case N_BREAK: c->ctl = CTL_BREAK; return 0;
    case N_CONTINUE: c->ctl = CTL_CONTINUE; return 0;
    case N_GENERATION: return tpl_exec_body(c, &n->body);
    default: return tpl_rfail(c, n, MT_ERR_FORMAT, "internal error: expression used as a statement");
    }
}

/* Runs statements until one fails or a break / continue unwinds to its loop. */
int tpl_exec_body(rctx *c, const nlist *body) {
    for (int i = 0; i < body->n; i++) {
        if (exec_stmt(c, body->v[i])) return -1;
        if (c->ctl != CTL_NONE) return 0;
    }
    return 0;
}
