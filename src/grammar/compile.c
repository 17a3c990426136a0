/* GBNF compiler: parses llama.cpp's grammar language into the rule/element form of
 * grammar.h and checks what would make matching fail at run time: undefined rules, a root
 * that can derive no finite string (the grammar matches nothing), and left recursion (a rule
 * that reaches itself before consuming a character would make the matcher loop). Errors
 * give the line and column of the problem. The input is untrusted: nesting, repetition
 * counts and the compiled size are capped. */
#include "grammar/grammar.h"
#include "tokenizer/tok_internal.h"
#include "core/error.h"
#include "core/file.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NESTING 200
#define MAX_REPEAT 10000
#define MAX_ELEMS (1 << 21)
#define MAX_CHAIN 10000 /* rules reached before a character: recursion depth here and in the matcher */
#define MAX_GRAMMAR_BYTES (64u << 20)

typedef struct { mt_gelem *v; int n, cap; } elem_vec;

typedef struct {
    char *name;
    int defined;
    int ref_line, ref_col;   /* first reference, for "undefined rule" */
    int def_line, def_col;   /* definition, for rule-level errors */
    elem_vec *alts;          /* each alternative's elements (no END) */
    int n_alts, cap_alts;
} rule_def;

typedef struct {
    const char *src, *end;
    const char *p;
    rule_def *rules;
    int n_rules, cap_rules;
    mt_cprange *ranges;      /* all set ranges (normalized per set) */
    int n_ranges, cap_ranges;
    mt_charset *sets;
    int n_sets, cap_sets;
    long total_elems;
    int depth;
    mt_status err;
} parser;

static void line_col(const parser *ps, const char *at, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (const char *q = ps->src; q < at && q < ps->end; q++) {
        if (*q == '\n') {
            (*line)++;
            *col = 1;
        } else if (((unsigned char)*q & 0xC0) != 0x80) {
            (*col)++;
        }
    }
}

#define FAIL_AT(ps, at, ...) fail_at(ps, at, __VA_ARGS__)
__attribute__((format(printf, 3, 4))) static int fail_at(parser *ps, const char *at, const char *fmt, ...);

static int fail_at(parser *ps, const char *at, const char *fmt, ...) {
    if (ps->err) return -1;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    line_col(ps, at, &line, &col);
    ps->err = mt_error(MT_ERR_FORMAT, "grammar line %d, column %d: %s", line, col, msg);
    return -1;
}

static int nomem(parser *ps) {
    if (!ps->err) ps->err = mt_error(MT_ERR_NOMEM, "out of memory compiling a grammar");
    return -1;
}

static int grow(void **v, int *cap, int need, size_t size) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 8;
    while (c < need) c *= 2;
    void *n = realloc(*v, (size_t)c * size);
    if (!n) return -1;
    *v = n;
    *cap = c;
    return 0;
}

static int elem_push(parser *ps, elem_vec *e, int type, int value) {
    if (++ps->total_elems > MAX_ELEMS) return FAIL_AT(ps, ps->p, "grammar too large (over %d elements)", MAX_ELEMS);
    if (grow((void **)&e->v, &e->cap, e->n + 1, sizeof *e->v)) return nomem(ps);
    e->v[e->n].type = type;
    e->v[e->n++].value = value;
    return 0;
}

static int is_word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Rule id for a name (created undefined on first sight). */
static int rule_id(parser *ps, const char *name, size_t len, const char *at) {
    for (int i = 0; i < ps->n_rules; i++)
        if (strlen(ps->rules[i].name) == len && !memcmp(ps->rules[i].name, name, len)) return i;
    if (grow((void **)&ps->rules, &ps->cap_rules, ps->n_rules + 1, sizeof *ps->rules)) return nomem(ps);
    rule_def *r = &ps->rules[ps->n_rules];
    memset(r, 0, sizeof *r);
    r->name = malloc(len + 1);
    if (!r->name) return nomem(ps);
    memcpy(r->name, name, len);
    r->name[len] = 0;
    line_col(ps, at, &r->ref_line, &r->ref_col);
    return ps->n_rules++;
}

static int new_synth_rule(parser *ps, int parent, const char *at) {
    /* "<defined rule>/<rule number>": unique however deep the nesting */
    char name[300];
    const char *base = ps->rules[parent].name;
    int base_len = (int)strcspn(base, "/");
    snprintf(name, sizeof name, "%.*s/%d", base_len > 200 ? 200 : base_len, base, ps->n_rules);
    int id = rule_id(ps, name, strlen(name), at);
    if (id < 0) return -1;
    ps->rules[id].defined = 1;
    line_col(ps, at, &ps->rules[id].def_line, &ps->rules[id].def_col);
    return id;
}

static elem_vec *new_alt(parser *ps, int rule) {
    rule_def *r = &ps->rules[rule];
    if (grow((void **)&r->alts, &r->cap_alts, r->n_alts + 1, sizeof *r->alts)) {
        nomem(ps);
        return NULL;
    }
    memset(&r->alts[r->n_alts], 0, sizeof r->alts[0]);
    return &r->alts[r->n_alts++];
}

static void skip_space(parser *ps, int newline_ok) {
    while (ps->p < ps->end) {
        char c = *ps->p;
        if (c == '#') {
            while (ps->p < ps->end && *ps->p != '\n' && *ps->p != '\r') ps->p++;
        } else if (c == ' ' || c == '\t' || (newline_ok && (c == '\n' || c == '\r'))) {
            ps->p++;
        } else {
            break;
        }
    }
}

/* One UTF-8 code point from the source (validated). */
static int read_utf8(parser *ps, uint32_t *cp) {
    int n = mt_utf8_decode((const unsigned char *)ps->p, (size_t)(ps->end - ps->p), cp);
    if (n == 0) return FAIL_AT(ps, ps->p, "invalid UTF-8");
    ps->p += n;
    return 0;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A character of a literal or class, escapes decoded. */
static int read_char(parser *ps, uint32_t *cp) {
    if (ps->p >= ps->end) return FAIL_AT(ps, ps->p, "unexpected end of grammar");
    if (*ps->p != '\\') return read_utf8(ps, cp);
    const char *at = ps->p++;
    if (ps->p >= ps->end) return FAIL_AT(ps, at, "unfinished escape");
    char c = *ps->p++;
    int digits = 0;
    switch (c) {
    case 'x': digits = 2; break;
    case 'u': digits = 4; break;
    case 'U': digits = 8; break;
    case 't': *cp = '\t'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 'n': *cp = '\n'; return 0;
    case '\\': case '"': case '[': case ']': case '-': case '^': case '/': *cp = (uint32_t)c; return 0;
    default: return FAIL_AT(ps, at, "unknown escape \\%c", c);
    }
    uint32_t v = 0;
    for (int i = 0; i < digits; i++) {
        int h = ps->p < ps->end ? hex_value(*ps->p) : -1;
        if (h < 0) return FAIL_AT(ps, at, "\\%c needs %d hex digits", c, digits);
        v = (v << 4) | (uint32_t)h;
        ps->p++;
    }
    if (v > 0x10FFFF) return FAIL_AT(ps, at, "code point U+%X is beyond U+10FFFF", v);
    *cp = v;
    return 0;
}

static int by_lo(const void *a, const void *b) {
    uint32_t x = ((const mt_cprange *)a)->lo, y = ((const mt_cprange *)b)->lo;
    return (x > y) - (x < y);
}

/* Turns ranges r[0..n) into a charset: sorted, merged, complemented when negated. */
static int add_set(parser *ps, mt_cprange *r, int n, int negated) {
    qsort(r, (size_t)n, sizeof *r, by_lo);
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (m > 0 && r[i].lo <= r[m - 1].hi + 1) {
            if (r[i].hi > r[m - 1].hi) r[m - 1].hi = r[i].hi;
        } else {
            r[m++] = r[i];
        }
    }
    int need = ps->n_ranges + m + 1;
    if (grow((void **)&ps->ranges, &ps->cap_ranges, need, sizeof *ps->ranges)) return nomem(ps);
    if (grow((void **)&ps->sets, &ps->cap_sets, ps->n_sets + 1, sizeof *ps->sets)) return nomem(ps);
    mt_charset *s = &ps->sets[ps->n_sets];
    memset(s, 0, sizeof *s);
    s->first_range = ps->n_ranges;
    mt_cprange *out = ps->ranges + ps->n_ranges;
    int k = 0;
    if (!negated) {
        memcpy(out, r, (size_t)m * sizeof *r);
        k = m;
    } else {
        uint32_t next = 0;
        for (int i = 0; i < m; i++) {
            if (r[i].lo > next) out[k++] = (mt_cprange){next, r[i].lo - 1};
            next = r[i].hi + 1;
        }
        if (next <= 0x10FFFF) out[k++] = (mt_cprange){next, 0x10FFFF};
    }
    s->n_ranges = k;
    for (int i = 0; i < k; i++)
        for (uint32_t c = out[i].lo; c <= out[i].hi && c < 128; c++) s->ascii[c >> 6] |= 1ull << (c & 63);
    ps->n_ranges += k;
    return ps->n_sets++;
}

static int add_char_elem(parser *ps, elem_vec *seq, uint32_t cp) {
    mt_cprange r = {cp, cp};
    int set = add_set(ps, &r, 1, 0);
    return set < 0 ? -1 : elem_push(ps, seq, MT_GE_CHARSET, set);
}

static int parse_class(parser *ps, elem_vec *seq) {
    const char *start = ps->p++; /* '[' */
    int negated = 0;
    if (ps->p < ps->end && *ps->p == '^') {
        negated = 1;
        ps->p++;
    }
    mt_cprange *r = NULL;
    int n = 0, cap = 0;
    while (ps->p < ps->end && *ps->p != ']') {
        uint32_t lo, hi;
        if (read_char(ps, &lo)) goto fail;
        hi = lo;
        if (ps->p + 1 < ps->end && ps->p[0] == '-' && ps->p[1] != ']') {
            ps->p++;
            if (read_char(ps, &hi)) goto fail;
            if (hi < lo) {
                FAIL_AT(ps, start, "character range is backwards (U+%04X-U+%04X)", lo, hi);
                goto fail;
            }
        }
        if (grow((void **)&r, &cap, n + 1, sizeof *r)) {
            nomem(ps);
            goto fail;
        }
        r[n++] = (mt_cprange){lo, hi};
    }
    if (ps->p >= ps->end) {
        FAIL_AT(ps, start, "unclosed character class");
        goto fail;
    }
    ps->p++;
    int set = add_set(ps, r ? r : &(mt_cprange){0, 0}, n, negated);
    free(r);
    return set < 0 ? -1 : elem_push(ps, seq, MT_GE_CHARSET, set);
fail:
    free(r);
    return -1;
}

static int parse_alternates(parser *ps, int rule, int nested);

/* Repeats the elements seq[from..] min..max times (max < 0: unbounded). */
static int repeat_last(parser *ps, int rule, elem_vec *seq, int from, long min, long max, const char *at) {
    if (from >= seq->n) return FAIL_AT(ps, at, "repetition with nothing before it");
    if (min > MAX_REPEAT || max > MAX_REPEAT) return FAIL_AT(ps, at, "repetition count over %d", MAX_REPEAT);
    mt_gelem item;
    if (seq->n - from == 1) {
        item = seq->v[from];
    } else { /* a literal of several characters: repeat it as one rule */
        int sub = new_synth_rule(ps, rule, at);
        if (sub < 0) return -1;
        elem_vec *alt = new_alt(ps, sub);
        if (!alt) return -1;
        for (int i = from; i < seq->n; i++)
            if (elem_push(ps, alt, seq->v[i].type, seq->v[i].value)) return -1;
        item = (mt_gelem){MT_GE_RULE, sub};
    }
    seq->n = from;
    for (long i = 0; i < min; i++)
        if (elem_push(ps, seq, item.type, item.value)) return -1;
    if (max == min) return 0;
    if (max < 0) { /* rec ::= item rec | (empty) */
        int rec = new_synth_rule(ps, rule, at);
        if (rec < 0) return -1;
        elem_vec *a = new_alt(ps, rec);
        if (!a || elem_push(ps, a, item.type, item.value) || elem_push(ps, a, MT_GE_RULE, rec)) return -1;
        if (!new_alt(ps, rec)) return -1;
        return elem_push(ps, seq, MT_GE_RULE, rec);
    }
    /* opt_k ::= item opt_(k-1) | (empty), opt_1 ::= item | (empty) */
    int prev = -1;
    for (long k = 1; k <= max - min; k++) {
        int opt = new_synth_rule(ps, rule, at);
        if (opt < 0) return -1;
        elem_vec *a = new_alt(ps, opt);
        if (!a || elem_push(ps, a, item.type, item.value)) return -1;
        if (prev >= 0 && elem_push(ps, a, MT_GE_RULE, prev)) return -1;
        if (!new_alt(ps, opt)) return -1;
        prev = opt;
    }
    return elem_push(ps, seq, MT_GE_RULE, prev);
}

static int parse_count(parser *ps, long *v) {
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return -1;
    *v = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        *v = *v * 10 + (*ps->p++ - '0');
        if (*v > MAX_REPEAT) *v = MAX_REPEAT + 1;
    }
    return 0;
}

/* One alternative: items until '|', ')' or (at the top level) the end of the line. */
static int parse_sequence(parser *ps, int rule, elem_vec *seq, int nested) {
    int last = -1; /* where the last item's elements start */
    while (ps->p < ps->end) {
        char c = *ps->p;
        const char *at = ps->p;
        if (c == '"') {
            ps->p++;
            last = seq->n;
            while (ps->p < ps->end && *ps->p != '"') {
                uint32_t cp;
                if (read_char(ps, &cp) || add_char_elem(ps, seq, cp)) return -1;
            }
            if (ps->p >= ps->end) return FAIL_AT(ps, at, "unclosed string literal");
            ps->p++;
        } else if (c == '[') {
            last = seq->n;
            if (parse_class(ps, seq)) return -1;
        } else if (c == '.') {
            ps->p++;
            last = seq->n;
            mt_cprange all = {0, 0x10FFFF};
            int set = add_set(ps, &all, 1, 0);
            if (set < 0 || elem_push(ps, seq, MT_GE_CHARSET, set)) return -1;
        } else if (is_word_char(c)) {
            const char *name = ps->p;
            while (ps->p < ps->end && is_word_char(*ps->p)) ps->p++;
            int id = rule_id(ps, name, (size_t)(ps->p - name), name);
            last = seq->n;
            if (id < 0 || elem_push(ps, seq, MT_GE_RULE, id)) return -1;
        } else if (c == '(') {
            if (++ps->depth > MAX_NESTING) return FAIL_AT(ps, at, "groups nested deeper than %d", MAX_NESTING);
            ps->p++;
            skip_space(ps, 1);
            int sub = new_synth_rule(ps, rule, at);
            if (sub < 0 || parse_alternates(ps, sub, 1)) return -1;
            if (ps->p >= ps->end || *ps->p != ')') return FAIL_AT(ps, at, "unclosed '('");
            ps->p++;
            ps->depth--;
            last = seq->n;
            if (elem_push(ps, seq, MT_GE_RULE, sub)) return -1;
        } else if (c == '*' || c == '+' || c == '?') {
            ps->p++;
            if (repeat_last(ps, rule, seq, last < 0 ? seq->n : last, c == '+', c == '?' ? 1 : -1, at)) return -1;
            last = -1;
        } else if (c == '{') {
            ps->p++;
            skip_space(ps, nested);
            long min, max;
            if (parse_count(ps, &min)) return FAIL_AT(ps, at, "expected a number after '{'");
            max = min;
            skip_space(ps, nested);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                skip_space(ps, nested);
                if (parse_count(ps, &max)) max = -1;
                skip_space(ps, nested);
            }
            if (ps->p >= ps->end || *ps->p != '}') return FAIL_AT(ps, at, "expected '}'");
            ps->p++;
            if (max >= 0 && max < min) return FAIL_AT(ps, at, "repetition {%ld,%ld}: maximum below minimum", min, max);
            if (repeat_last(ps, rule, seq, last < 0 ? seq->n : last, min, max, at)) return -1;
            last = -1;
        } else {
            break;
        }
        skip_space(ps, nested);
    }
    return 0;
}

static int parse_alternates(parser *ps, int rule, int nested) {
    for (;;) {
        elem_vec *alt = new_alt(ps, rule);
        if (!alt) return -1;
        /* parse into a local vector: new_alt may move the rule's alternative array */
        elem_vec seq = {0};
        int rc = parse_sequence(ps, rule, &seq, nested);
        ps->rules[rule].alts[ps->rules[rule].n_alts - 1] = seq;
        if (rc) return -1;
        if (ps->p < ps->end && *ps->p == '|') {
            ps->p++;
            skip_space(ps, 1);
            continue;
        }
        return 0;
    }
}

static int parse_rule(parser *ps) {
    const char *at = ps->p;
    const char *name = ps->p;
    while (ps->p < ps->end && is_word_char(*ps->p)) ps->p++;
    if (ps->p == name) return FAIL_AT(ps, at, "expected a rule name");
    int id = rule_id(ps, name, (size_t)(ps->p - name), name);
    if (id < 0) return -1;
    if (ps->rules[id].defined) return FAIL_AT(ps, at, "rule '%s' is defined twice", ps->rules[id].name);
    ps->rules[id].defined = 1;
    line_col(ps, at, &ps->rules[id].def_line, &ps->rules[id].def_col);
    skip_space(ps, 0);
    if (ps->end - ps->p < 3 || memcmp(ps->p, "::=", 3)) return FAIL_AT(ps, ps->p, "expected '::=' after rule name '%s'", ps->rules[id].name);
    ps->p += 3;
    skip_space(ps, 1);
    if (parse_alternates(ps, id, 0)) return -1;
    if (ps->p < ps->end && *ps->p == '\r') ps->p++;
    if (ps->p < ps->end && *ps->p == '\n') ps->p++;
    else if (ps->p < ps->end) return FAIL_AT(ps, ps->p, "unexpected '%c'", *ps->p);
    skip_space(ps, 1);
    return 0;
}

/* Per rule: can derive the empty string (nullable), can derive some finite string
 * (productive). Fixpoints over the rules. */
static int elem_flag(const mt_grammar *g, const mt_gelem *e, const char *flags, int want_productive) {
    if (e->type == MT_GE_RULE) return flags[e->value];
    return want_productive ? g->sets[e->value].n_ranges > 0 : 0;
}

static void rule_fixpoint(const mt_grammar *g, char *flags, int want_productive) {
    memset(flags, 0, (size_t)g->n_rules);
    for (int changed = 1; changed;) {
        changed = 0;
        for (int r = 0; r < g->n_rules; r++) {
            if (flags[r]) continue;
            for (int a = 0; a < g->alt_count[r] && !flags[r]; a++) {
                const mt_gelem *e = g->elems + g->alts[g->alt_first[r] + a];
                int ok = 1;
                for (; e->type != MT_GE_END && ok; e++) ok = elem_flag(g, e, flags, want_productive);
                if (ok) flags[r] = changed = 1;
            }
        }
    }
}

/* DFS over "rule r can start with rule s" edges; 1 when a cycle goes through r. */
static int left_cycle(const mt_grammar *g, const char *nullable, char *state, int r, int *culprit, int depth) {
    if (depth > MAX_CHAIN) {
        *culprit = -2;
        return 1;
    }
    state[r] = 1;
    for (int a = 0; a < g->alt_count[r]; a++) {
        for (const mt_gelem *e = g->elems + g->alts[g->alt_first[r] + a]; e->type != MT_GE_END; e++) {
            if (e->type == MT_GE_RULE) {
                if (state[e->value] == 1) {
                    *culprit = e->value;
                    return 1;
                }
                if (state[e->value] == 0 && left_cycle(g, nullable, state, e->value, culprit, depth + 1)) return 1;
            }
            if (!elem_flag(g, e, nullable, 0)) break;
        }
    }
    state[r] = 2;
    return 0;
}

static mt_status check_grammar(const mt_grammar *g, const parser *ps) {
    char *flags = malloc((size_t)g->n_rules * 2 + 1);
    if (!flags) return mt_error(MT_ERR_NOMEM, "out of memory compiling a grammar");
    char *nullable = flags, *state = flags + g->n_rules;
    rule_fixpoint(g, nullable, 1);
    if (!nullable[g->root]) {
        free(flags);
        return mt_error(MT_ERR_FORMAT, "grammar line %d, column %d: the grammar matches nothing (rule 'root' derives no finite string)",
                        ps->rules[g->root].def_line, ps->rules[g->root].def_col);
    }
    rule_fixpoint(g, nullable, 0);
    memset(state, 0, (size_t)g->n_rules);
    mt_status s = MT_OK;
    int culprit = -1;
    for (int r = 0; r < g->n_rules && !s; r++)
        if (!state[r] && left_cycle(g, nullable, state, r, &culprit, 0)) {
            const rule_def *d = &ps->rules[culprit < 0 ? r : culprit];
            if (culprit < 0)
                s = mt_error(MT_ERR_UNSUPPORTED, "grammar line %d, column %d: rule '%s' starts a chain of over %d rules that may match nothing",
                             d->def_line, d->def_col, g->names[culprit < 0 ? r : culprit], MAX_CHAIN);
            else s = mt_error(MT_ERR_FORMAT, "grammar line %d, column %d: rule '%s' is left-recursive (it can reach itself before matching a character)",
                         d->def_line, d->def_col, g->names[culprit]);
        }
    free(flags);
    return s;
}

static mt_status build(parser *ps, mt_grammar **out) {
    mt_grammar *g = calloc(1, sizeof *g);
    if (!g) return mt_error(MT_ERR_NOMEM, "out of memory compiling a grammar");
    g->n_rules = ps->n_rules;
    long n_alts = 0, n_elems = 0;
    for (int r = 0; r < ps->n_rules; r++) {
        n_alts += ps->rules[r].n_alts;
        for (int a = 0; a < ps->rules[r].n_alts; a++) n_elems += ps->rules[r].alts[a].n + 1;
    }
    g->alt_first = malloc(sizeof(int32_t) * (size_t)(g->n_rules + 1));
    g->alt_count = malloc(sizeof(int32_t) * (size_t)(g->n_rules + 1));
    g->alts = malloc(sizeof(int32_t) * (size_t)(n_alts + 1));
    g->names = calloc((size_t)g->n_rules + 1, sizeof(char *));
    g->elems = malloc(sizeof(mt_gelem) * (size_t)(n_elems + 1));
    if (!g->alt_first || !g->alt_count || !g->alts || !g->names || !g->elems) {
        mt_grammar_free(g);
        return mt_error(MT_ERR_NOMEM, "out of memory compiling a grammar");
    }
    int ai = 0, ei = 0;
    for (int r = 0; r < ps->n_rules; r++) {
        rule_def *d = &ps->rules[r];
        g->names[r] = d->name;
        d->name = NULL;
        g->alt_first[r] = ai;
        g->alt_count[r] = d->n_alts;
        for (int a = 0; a < d->n_alts; a++) {
            g->alts[ai++] = ei;
            if (d->alts[a].n) memcpy(g->elems + ei, d->alts[a].v, sizeof(mt_gelem) * (size_t)d->alts[a].n);
            ei += d->alts[a].n;
            g->elems[ei++] = (mt_gelem){MT_GE_END, 0};
        }
    }
    g->n_elems = ei;
    g->sets = ps->sets;
    g->n_sets = ps->n_sets;
    g->ranges = ps->ranges;
    ps->sets = NULL;
    ps->ranges = NULL;
    *out = g;
    return MT_OK;
}

static void parser_free(parser *ps) {
    for (int r = 0; r < ps->n_rules; r++) {
        free(ps->rules[r].name);
        for (int a = 0; a < ps->rules[r].n_alts; a++) free(ps->rules[r].alts[a].v);
        free(ps->rules[r].alts);
    }
    free(ps->rules);
    free(ps->sets);
    free(ps->ranges);
}

mt_status mt_grammar_compile(const char *gbnf, size_t len, mt_grammar **out) {
    *out = NULL;
    if (!gbnf) return mt_error(MT_ERR_ARG, "grammar: no text");
    if (len > MAX_GRAMMAR_BYTES) return mt_error(MT_ERR_ARG, "grammar: %zu bytes is over the %u MiB limit", len, MAX_GRAMMAR_BYTES >> 20);
    parser ps = {.src = gbnf, .end = gbnf + len, .p = gbnf};
    skip_space(&ps, 1);
    while (!ps.err && ps.p < ps.end)
        if (parse_rule(&ps)) break;
    mt_status s = ps.err;
    int root = -1;
    for (int r = 0; !s && r < ps.n_rules; r++) {
        if (!strcmp(ps.rules[r].name, "root")) root = r;
        if (!ps.rules[r].defined)
            s = mt_error(MT_ERR_FORMAT, "grammar line %d, column %d: undefined rule '%s'", ps.rules[r].ref_line,
                         ps.rules[r].ref_col, ps.rules[r].name);
    }
    if (!s && root < 0) s = mt_error(MT_ERR_FORMAT, "grammar: no rule named 'root' (the start rule)");
    mt_grammar *g = NULL;
    if (!s) s = build(&ps, &g);
    if (!s) {
        g->root = root;
        s = check_grammar(g, &ps);
    }
    parser_free(&ps);
    if (s) {
        mt_grammar_free(g);
        return s;
    }
    *out = g;
    return MT_OK;
}

mt_status mt_grammar_load(const char *path, mt_grammar **out) {
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    mt_status s = mt_file_read_all(path, MAX_GRAMMAR_BYTES, &text, &len);
    if (s) return s;
    s = mt_grammar_compile(text, len, out);
    free(text);
    if (s) return mt_error_prefix(s, "%s", path);
    return MT_OK;
}

void mt_grammar_free(mt_grammar *g) {
    if (!g) return;
    if (g->names)
        for (int r = 0; r < g->n_rules; r++) free(g->names[r]);
    free(g->names);
    free(g->alt_first);
    free(g->alt_count);
    free(g->alts);
    free(g->elems);
    free(g->sets);
    free(g->ranges);
    free(g);
}

int mt_charset_intersects(const mt_grammar *g, const mt_charset *s, uint32_t lo, uint32_t hi) {
    const mt_cprange *r = g->ranges + s->first_range;
    for (int i = 0; i < s->n_ranges; i++)
        if (r[i].lo <= hi && r[i].hi >= lo) return 1;
    return 0;
}
