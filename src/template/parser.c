/* Parser of the template engine: recursive descent over the tokens following Jinja's
 * grammar, building the AST in the template's arena (see internal.h). */
#include "template/internal.h"

static node *perr(parser *p, size_t off, mt_status code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static node *perr(parser *p, size_t off, mt_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (p->status == MT_OK) p->status = tpl_vfail_at(p->src, off, code, fmt, ap);
    va_end(ap);
    return NULL;
}

const token *tpl_cur(const parser *p) { return &p->tok[p->pos]; }
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

node *tpl_unexpected(parser *p, const char *wanted) {
    char buf[64];
    const token *t = tpl_cur(p);
    if (wanted) return perr(p, t->off, MT_ERR_FORMAT, "expected %s, got %s", wanted, describe(t, buf, sizeof buf));
    return perr(p, t->off, MT_ERR_FORMAT, "unexpected %s", describe(t, buf, sizeof buf));
}

static int expect_op(parser *p, int op, const char *wanted) {
    if (!is_op(tpl_cur(p), op)) { tpl_unexpected(p, wanted); return -1; }
    p->pos++;
    return 0;
}

static int expect_kind(parser *p, tkind kind, const char *wanted) {
    if (tpl_cur(p)->kind != kind) { tpl_unexpected(p, wanted); return -1; }
    p->pos++;
    return 0;
}

static int enter(parser *p) {
    if (++p->depth > MAX_NEST) { perr(p, tpl_cur(p)->off, MT_ERR_FORMAT, "template nests too deeply"); return -1; }
    return 0;
}
static void leave(parser *p) { p->depth--; }

static node *new_node(parser *p, nkind kind, size_t off) {
    node *n = tpl_arena_alloc(p->ar, sizeof *n);
    if (!n) return perr(p, off, MT_ERR_NOMEM, "out of memory");
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->off = (uint32_t)off;
    n->height = 1;
    return n;
}

static int nbuf_push(parser *p, nbuf *b, node *n) {
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 8;
        node **v = tpl_arena_alloc(p->ar, (size_t)cap * sizeof *v);
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
    size_t off = tpl_cur(p)->off;
    node *n = new_node(p, N_LIST, off);
    nbuf items = {0};
    if (!n || expect_op(p, '[', "'['")) return NULL;
    while (!is_op(tpl_cur(p), ']')) {
        if (items.n && expect_op(p, ',', "',' or ']'")) return NULL;
        if (is_op(tpl_cur(p), ']')) break;
        node *e = parse_expression(p, 1);
        if (!e || nbuf_push(p, &items, e)) return NULL;
    }
    p->pos++;
    n->args = nbuf_list(&items);
    return finish(p, n);
}

static node *parse_dict(parser *p) {
    size_t off = tpl_cur(p)->off;
    node *n = new_node(p, N_DICT, off);
    nbuf keys = {0}, vals = {0};
    if (!n || expect_op(p, '{', "'{'")) return NULL;
    while (!is_op(tpl_cur(p), '}')) {
        if (keys.n && expect_op(p, ',', "',' or '}'")) return NULL;
        if (is_op(tpl_cur(p), '}')) break;
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
    const token *t = tpl_cur(p);
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
        str_obj *o = tpl_arena_alloc(p->ar, sizeof *o + len + 1);
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
    return tpl_unexpected(p, "an expression");
}

/* (args..., name=value...) into n->args, n->names / n->kwargs. */
static int parse_call_args(parser *p, node *n) {
    nbuf args = {0}, kwargs = {0};
    const char *names[MAX_ARGS];
    if (expect_op(p, '(', "'('")) return -1;
    while (!is_op(tpl_cur(p), ')')) {
        if (args.n + kwargs.n > 0) {
            if (expect_op(p, ',', "',' or ')'")) return -1;
            if (is_op(tpl_cur(p), ')')) break;
        }
        if (is_op(tpl_cur(p), '*') || is_op(tpl_cur(p), OP_POW)) {
            perr(p, tpl_cur(p)->off, MT_ERR_UNSUPPORTED, "*args and **kwargs are not supported");
            return -1;
        }
        if (args.n + kwargs.n >= MAX_ARGS) { perr(p, tpl_cur(p)->off, MT_ERR_UNSUPPORTED, "too many arguments"); return -1; }
        if (tpl_cur(p)->kind == T_NAME && is_op(peek(p, 1), '=')) {
            names[kwargs.n] = tpl_cur(p)->s;
            p->pos += 2;
            node *e = parse_expression(p, 1);
            if (!e || nbuf_push(p, &kwargs, e)) return -1;
        } else {
            if (kwargs.n) { perr(p, tpl_cur(p)->off, MT_ERR_FORMAT, "positional argument after keyword argument"); return -1; }
            node *e = parse_expression(p, 1);
            if (!e || nbuf_push(p, &args, e)) return -1;
        }
    }
    p->pos++;
    n->args = nbuf_list(&args);
    n->kwargs = nbuf_list(&kwargs);
    n->n_names = kwargs.n;
    if (kwargs.n) {
        n->names = tpl_arena_alloc(p->ar, (size_t)kwargs.n * sizeof *n->names);
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
    const token *t = tpl_cur(p);
    p->pos++;
    if (is_op(t, '.')) {
        const token *a = tpl_cur(p);
        p->pos++;
        if (a->kind == T_NAME) {
            node *n = new_node(p, N_ATTR, t->off);
            if (!n) return NULL;
            n->a = obj;
            n->name = a->s;
            return finish(p, n);
        }
        if (a->kind != T_INT) { p->pos--; return tpl_unexpected(p, "a name or number after '.'"); }
        node *n = new_node(p, N_ITEM, t->off);
        if (!n || !(n->b = parse_const(p, v_int(a->i), a->off))) return NULL;
        n->a = obj;
        return finish(p, n);
    }
    node *start = NULL, *stop = NULL, *step = NULL;
    int is_slice = 0;
    if (is_op(tpl_cur(p), ']')) return tpl_unexpected(p, "a subscript");
    if (!is_op(tpl_cur(p), ':') && !(start = parse_expression(p, 1))) return NULL;
    if (is_op(tpl_cur(p), ':')) {
        is_slice = 1;
        p->pos++;
        if (!is_op(tpl_cur(p), ']') && !is_op(tpl_cur(p), ':') && !(stop = parse_expression(p, 1))) return NULL;
        if (is_op(tpl_cur(p), ':')) {
            p->pos++;
            if (!is_op(tpl_cur(p), ']') && !(step = parse_expression(p, 1))) return NULL;
        }
    }
    if (is_op(tpl_cur(p), ',')) return perr(p, tpl_cur(p)->off, MT_ERR_UNSUPPORTED, "tuple subscripts are not supported");
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
        const token *t = tpl_cur(p);
        if (is_op(t, '.') || is_op(t, '[')) e = parse_subscript(p, e);
        else if (is_op(t, '(')) e = parse_call(p, e);
        else break;
    }
    return e;
}

static node *parse_filter(parser *p, node *e) {
    const token *t = tpl_cur(p);
    if (t->kind != T_NAME) return tpl_unexpected(p, "a filter name");
    p->pos++;
    if (is_op(tpl_cur(p), '.')) return perr(p, t->off, MT_ERR_UNSUPPORTED, "dotted filter names are not supported");
    int fn = tpl_find_filter(t->s);
    if (fn < 0) return perr(p, t->off, MT_ERR_UNSUPPORTED, "filter '%s' is not supported", t->s);
    node *n = new_node(p, N_FILTER, t->off);
    if (!n) return NULL;
    n->a = e;
    n->fn = fn;
    n->name = t->s;
    if (is_op(tpl_cur(p), '(') && parse_call_args(p, n)) return NULL;
    return finish(p, n);
}

/* "is [not] name", with arguments in parentheses or one bare argument ("is sameas false"). */
static node *parse_test(parser *p, node *e) {
    size_t off = tpl_cur(p)->off;
    p->pos++;
    int negated = 0;
    if (is_name(tpl_cur(p), "not")) { negated = 1; p->pos++; }
    const token *t = tpl_cur(p);
    if (t->kind != T_NAME) return tpl_unexpected(p, "a test name");
    p->pos++;
    int fn = tpl_find_test(t->s);
    if (fn < 0) return perr(p, t->off, MT_ERR_UNSUPPORTED, "test '%s' is not supported", t->s);
    node *n = new_node(p, N_TEST, off);
    if (!n) return NULL;
    n->a = e;
    n->fn = fn;
    n->op = negated;
    n->name = t->s;
    const token *c = tpl_cur(p);
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
        const token *t = tpl_cur(p);
        if (is_op(t, '|')) { p->pos++; e = parse_filter(p, e); }
        else if (is_name(t, "is")) e = parse_test(p, e);
        else if (is_op(t, '(')) e = parse_call(p, e);
        else break;
    }
    return e;
}

static node *parse_unary(parser *p, int with_filter) {
    const token *t = tpl_cur(p);
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
    while (e && is_op(tpl_cur(p), OP_POW)) {
        size_t off = tpl_cur(p)->off;
        p->pos++;
        e = binop(p, N_BINOP, OP_POW, off, e, parse_unary(p, 1));
    }
    return e;
}

static node *parse_math2(parser *p) {
    node *e = parse_pow(p);
    for (;;) {
        const token *t = tpl_cur(p);
        if (!e || !(is_op(t, '*') || is_op(t, '/') || is_op(t, OP_FLOORDIV) || is_op(t, '%'))) return e;
        p->pos++;
        e = binop(p, N_BINOP, t->op, t->off, e, parse_pow(p));
    }
}

static node *parse_concat(parser *p) {
    node *e = parse_math2(p);
    while (e && is_op(tpl_cur(p), '~')) {
        size_t off = tpl_cur(p)->off;
        p->pos++;
        e = binop(p, N_BINOP, '~', off, e, parse_math2(p));
    }
    return e;
}

static node *parse_math1(parser *p) {
    node *e = parse_concat(p);
    for (;;) {
        const token *t = tpl_cur(p);
        if (!e || !(is_op(t, '+') || is_op(t, '-'))) return e;
        p->pos++;
        e = binop(p, N_BINOP, t->op, t->off, e, parse_concat(p));
    }
}

static node *parse_compare(parser *p) {
    node *e = parse_math1(p);
    int ops[MAX_ARGS];
    nbuf operands = {0};
    size_t off = tpl_cur(p)->off;
    while (e) {
        const token *t = tpl_cur(p);
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
    if (!n || !(n->ops = tpl_arena_alloc(p->ar, (size_t)operands.n * sizeof *ops))) return perr(p, off, MT_ERR_NOMEM, "out of memory");
    memcpy(n->ops, ops, (size_t)operands.n * sizeof *ops);
    n->a = e;
    n->args = nbuf_list(&operands);
    return finish(p, n);
}

static node *parse_not(parser *p) {
    if (!is_name(tpl_cur(p), "not")) return parse_compare(p);
    size_t off = tpl_cur(p)->off;
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
    while (e && is_name(tpl_cur(p), "and")) {
        size_t off = tpl_cur(p)->off;
        p->pos++;
        e = binop(p, N_AND, 0, off, e, parse_not(p));
    }
    return e;
}

static node *parse_or(parser *p) {
    if (enter(p)) return NULL;
    node *e = parse_and(p);
    while (e && is_name(tpl_cur(p), "or")) {
        size_t off = tpl_cur(p)->off;
        p->pos++;
        e = binop(p, N_OR, 0, off, e, parse_and(p));
    }
    leave(p);
    return e;
}

static node *parse_condexpr(parser *p) {
    node *e = parse_or(p);
    while (e && is_name(tpl_cur(p), "if")) {
        node *n = new_node(p, N_COND, tpl_cur(p)->off);
        if (!n) return NULL;
        p->pos++;
        n->a = e;
        if (!(n->b = parse_or(p))) return NULL;
        if (is_name(tpl_cur(p), "else")) {
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
    size_t off = tpl_cur(p)->off;
    nbuf items = {0};
    int is_tuple = 0;
    for (;;) {
        if (items.n && expect_op(p, ',', "','")) return NULL;
        if (tuple_end(tpl_cur(p))) break;
        node *e = parse_expression(p, with_condexpr);
        if (!e || nbuf_push(p, &items, e)) return NULL;
        if (!is_op(tpl_cur(p), ',')) break;
        is_tuple = 1;
    }
    if (!is_tuple) {
        if (items.n) return items.v[0];
        if (!explicit_parens) return tpl_unexpected(p, "an expression");
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
int tpl_parse_body(parser *p, nlist *out, const char *const *ends, int *which, const token *open) {
    nbuf b = {0};
    if (enter(p)) return -1;
    for (;;) {
        const token *t = tpl_cur(p);
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
            if (name->kind != T_NAME) { p->pos++; tpl_unexpected(p, "a tag name"); return -1; }
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
            tpl_unexpected(p, NULL);
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
            nlist *v = tpl_arena_alloc(p->ar, (size_t)cap * sizeof *v);
            if (!v) return perr(p, tag->off, MT_ERR_NOMEM, "out of memory");
            if (n_branches) memcpy(v, n->branches, (size_t)n_branches * sizeof *v);
            n->branches = v;
        }
        if (tpl_parse_body(p, &n->branches[n_branches++], ends, &which, tag)) return NULL;
    } while (which == 0);
    if (which == 1 && (end_tag(p) || tpl_parse_body(p, &n->orelse, endif, &which, tag))) return NULL;
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
        if (tpl_cur(p)->kind != T_NAME) return tpl_unexpected(p, "a loop variable");
        if (n->n_names == 8) return perr(p, tpl_cur(p)->off, MT_ERR_UNSUPPORTED, "too many loop variables");
        names[n->n_names++] = tpl_cur(p)->s;
        p->pos++;
    } while (is_op(tpl_cur(p), ','));
    if (!(n->names = tpl_arena_alloc(p->ar, (size_t)n->n_names * sizeof *names)))
        return perr(p, tag->off, MT_ERR_NOMEM, "out of memory");
    memcpy(n->names, names, (size_t)n->n_names * sizeof *names);
    if (!is_name(tpl_cur(p), "in")) return tpl_unexpected(p, "'in'");
    p->pos++;
    if (!(n->a = parse_tuple(p, 0, 0))) return NULL;
    if (is_name(tpl_cur(p), "if")) {
        p->pos++;
        if (!(n->b = parse_expression(p, 1))) return NULL;
    }
    if (is_name(tpl_cur(p), "recursive")) return perr(p, tpl_cur(p)->off, MT_ERR_UNSUPPORTED, "recursive loops are not supported");
    if (end_tag(p)) return NULL;
    p->loops++;
    int rc = tpl_parse_body(p, &n->body, ends, &which, tag);
    p->loops--;
    if (rc) return NULL;
    if (which == 0 && (end_tag(p) || tpl_parse_body(p, &n->orelse, endfor, &which, tag))) return NULL;
    return end_tag(p) ? NULL : n;
}

static node *parse_set(parser *p, const token *tag) {
    static const char *const endset[] = {"endset", NULL};
    const token *target = tpl_cur(p);
    int which = 0;
    if (target->kind != T_NAME) return tpl_unexpected(p, "a variable name");
    p->pos++;
    node *n = new_node(p, N_SET, tag->off);
    if (!n) return NULL;
    n->name = target->s;
    if (is_op(tpl_cur(p), '.')) {
        p->pos++;
        if (tpl_cur(p)->kind != T_NAME) return tpl_unexpected(p, "an attribute name");
        n->kind = N_SET_ATTR;
        n->attr = tpl_cur(p)->s;
        n->k.kind = V_STR;
        n->k.u.s = tpl_cur(p)->obj;
        p->pos++;
    }
    if (is_op(tpl_cur(p), ',')) return perr(p, tpl_cur(p)->off, MT_ERR_UNSUPPORTED, "assigning to several names is not supported");
    if (is_op(tpl_cur(p), '=')) {
        p->pos++;
        if (!(n->a = parse_tuple(p, 1, 0)) || end_tag(p)) return NULL;
        return n;
    }
    if (n->kind == N_SET_ATTR) return tpl_unexpected(p, "'='");
    if (is_op(tpl_cur(p), '|')) return perr(p, tpl_cur(p)->off, MT_ERR_UNSUPPORTED, "filtered set blocks are not supported");
    if (end_tag(p) || tpl_parse_body(p, &n->body, endset, &which, tag) || end_tag(p)) return NULL;
    n->kind = N_SET_BLOCK;
    return n;
}

static node *parse_statement(parser *p) {
    p->pos++; /* {% */
    const token *tag = tpl_cur(p);
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
        if (!n || end_tag(p) || tpl_parse_body(p, &n->body, ends, &which, tag) || end_tag(p)) return NULL;
        return n;
    }
    static const char *const unsupported[] = {"macro", "call", "filter", "include", "import", "from", "extends",
                                              "block", "raw", "with", "autoescape", "do", NULL};
    for (int i = 0; unsupported[i]; i++)
        if (!strcmp(s, unsupported[i])) return perr(p, tag->off, MT_ERR_UNSUPPORTED, "'{%% %s %%}' is not supported", s);
    return perr(p, tag->off, MT_ERR_FORMAT, "unknown tag '%s'", s);
}
