/* Lexer of the template engine: source text to tokens, with Jinja's whitespace control
 * (trim_blocks, lstrip_blocks, the - and + markers) applied to the text between tags (see internal.h). */
#include "template/internal.h"

static int lex_fail(lexer *lx, size_t off, mt_status code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int lex_fail(lexer *lx, size_t off, mt_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (lx->status == MT_OK) lx->status = tpl_vfail_at(lx->src, off, code, fmt, ap);
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
    str_obj *o = tpl_arena_str(lx->ar, lx->src + a, b - a);
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
    *o += (size_t)tpl_u8_encode(cp, out + *o);
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
    char *out = tpl_arena_alloc(lx->ar, end - start + 1);
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
    str_obj *o = tpl_arena_str(lx->ar, s + start, i - start);
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
    if (strip) while (pos < lx->n && tpl_py_space(lx->src[pos])) pos++;
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
        while (i < lx->n && tpl_py_space(s[i])) i++;
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
        while (b > a && tpl_py_space(s[b - 1])) b--;
    } else if (sign != '+' && kind != '{') {
        size_t l = b;
        while (l > a && s[l - 1] != '\n') l--;
        if (l > a || line_starting) {
            size_t k = l;
            while (k < b && tpl_py_space(s[k]) && s[k] != '\n') k++;
            if (k == b && b > l) b = l;
        }
    }
    return b;
}

int tpl_lex_template(lexer *lx) {
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
