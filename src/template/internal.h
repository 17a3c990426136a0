/* Chat-template engine (internal header of src/template/): the part of Jinja2 that Hugging Face chat templates use.
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
 * memory cap, and a work counter stops templates that loop for too long.
 *
 * The engine is split along those stages: value.c (values, UTF-8, the arena, errors,
 * output buffers, scopes, str()/repr()), lexer.c, parser.c, eval.c (expressions,
 * builtins, statements), filters.c (string helpers, filters, tests) and chat_template.c
 * (the public API in chat_template.h). This header is shared by them only. */
#ifndef MT_TEMPLATE_INTERNAL_H
#define MT_TEMPLATE_INTERNAL_H
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

/* ======================================================================================
 * Arena: the template's tokens, AST and constants live here and are freed at once.
 * ==================================================================================== */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

typedef struct { arena_block *head; } arena;

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

/* Growable node list, moved into the arena when it grows. */
typedef struct { node **v; int n, cap; } nbuf;

/* ======================================================================================
 * Rendering context: variable scopes, the output, the work and memory budgets.
 * ==================================================================================== */

typedef struct { const char *name; value v; } binding;

typedef struct { binding *b; int n, cap; } frame;

typedef struct { char *p; size_t n, cap; } sbuf;

enum { CTL_NONE, CTL_BREAK, CTL_CONTINUE };

enum { LK_INDEX, LK_INDEX0, LK_REVINDEX, LK_REVINDEX0, LK_FIRST, LK_LAST, LK_LENGTH, LK_DEPTH,
       LK_DEPTH0, LK_PREVITEM, LK_NEXTITEM, N_LOOP_KEYS };

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

/* ---- calls, filters, tests ----------------------------------------------------------- */

typedef struct {
    value pos[MAX_ARGS], kw[MAX_ARGS];
    callargs a;
} argvals;

enum { CASE_LOWER, CASE_UPPER, CASE_CAPITALIZE, CASE_TITLE_PY, CASE_TITLE_JINJA };

/* ---- tojson: Python's json.dumps(ensure_ascii=False) as transformers binds it ---------- */

typedef struct {
    const char *indent; /* NULL: one line */
    size_t indent_len;
    const char *item_sep, *key_sep;
    int sort_keys, ensure_ascii;
} json_style;

/* What one file defines and others use; hidden so the shared library does not export it
 * (the tpl_ prefix keeps it apart from a static link's other symbols). */
#pragma GCC visibility push(hidden)
/* Bytes held by the values alive in this thread's current render (value.c). */
extern _Thread_local size_t tpl_live_bytes;
/* The loop variable's attributes, indexed by LK_* (value.c). */
extern const char *const tpl_loop_keys[N_LOOP_KEYS];
value tpl_v_ref(value v);
void tpl_v_drop(value v);
const char *tpl_type_name(value v);
int tpl_truthy(value v);
int tpl_v_equal(value a, value b);
size_t tpl_u8_next(const char *s, size_t n, size_t i);
size_t tpl_u8_count(const char *s, size_t n);
uint32_t tpl_u8_decode(const char *s, size_t n, size_t i);
int tpl_u8_encode(uint32_t cp, char *out);
int tpl_py_space(char ch);
void *tpl_arena_alloc(arena *a, size_t n);
void tpl_arena_free(arena *a);
str_obj *tpl_arena_str(arena *a, const char *s, size_t n);
mt_status tpl_vfail_at(const char *src, size_t off, mt_status code, const char *fmt, va_list ap);
int tpl_lex_template(lexer *lx);
const token *tpl_cur(const parser *p);
node *tpl_unexpected(parser *p, const char *wanted);
int tpl_parse_body(parser *p, nlist *out, const char *const *ends, int *which, const token *open);
int tpl_rfail(rctx *c, const node *at, mt_status code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
int tpl_undefined_error(rctx *c, const node *at, value u);
int tpl_charge(rctx *c, const node *at, size_t units);
int tpl_sb_put(rctx *c, const node *at, sbuf *b, const char *s, size_t n);
int tpl_sb_str(rctx *c, const node *at, sbuf *b, const char *s);
void tpl_sb_free(sbuf *b);
int tpl_str_new(rctx *c, const node *at, const char *s, size_t n, value *out);
int tpl_sb_to_value(rctx *c, const node *at, sbuf *b, value *out);
value tpl_list_value(list_obj *l);
value tpl_dict_value(dict_obj *d, vkind kind);
list_obj *tpl_list_new(rctx *c, const node *at);
int tpl_list_push(rctx *c, const node *at, list_obj *l, value v);
dict_obj *tpl_dict_new(rctx *c, const node *at);
value *tpl_dict_find_str(const dict_obj *d, const char *s);
int tpl_dict_lookup(rctx *c, const node *at, const dict_obj *d, value key, value **out);
int tpl_dict_set(rctx *c, const node *at, dict_obj *d, value key, value val);
int tpl_push_frame(rctx *c, const node *at);
void tpl_pop_frame(rctx *c);
int tpl_bind(rctx *c, const node *at, const char *name, value v);
value tpl_lookup(const rctx *c, const char *name);
void tpl_format_float(double f, char *out, size_t cap);
int tpl_write_value(rctx *c, const node *at, sbuf *b, value v);
int tpl_to_str(rctx *c, const node *at, value v, value *out);
int tpl_iter_items(rctx *c, const node *at, value v, list_obj **out);
int tpl_get_item(rctx *c, const node *at, value obj, value key, const char *hint, value *out);
int64_t tpl_floor_mod(int64_t a, int64_t b);
int tpl_compare(rctx *c, const node *at, int op, value a, value b, int *result);
const value *tpl_arg(const callargs *a, int i, const char *name);
int tpl_need_str(rctx *c, const node *at, const value *v, const char *what);
int tpl_need_int(rctx *c, const node *at, const value *v, const char *what);
int tpl_call_builtin(rctx *c, const node *at, int fn, const callargs *a, value *out);
int tpl_call_method(rctx *c, const node *at, value obj, const char *name, const callargs *a, value *out);
int tpl_find_filter(const char *name);
int tpl_find_test(const char *name);
int tpl_run_filter(rctx *c, const node *at, int fn, value in, const callargs *a, value *out);
int tpl_run_test(rctx *c, const node *at, int fn, value in, const callargs *a, int *result);
int tpl_exec_body(rctx *c, const nlist *body);
int tpl_render(rctx *c, list_obj *messages, int add_generation_prompt, const char *bos, const char *eos, sbuf *out);
#pragma GCC visibility pop

/* The smallest value helpers, inline in every file. */
static inline value v_undef(const char *hint) { value v = {.kind = V_UNDEF}; v.u.hint = hint; return v; }
static inline value v_none(void) { value v = {.kind = V_NONE}; return v; }
static inline value v_bool(int b) { value v = {.kind = V_BOOL}; v.u.b = !!b; return v; }
static inline value v_int(int64_t i) { value v = {.kind = V_INT}; v.u.i = i; return v; }
static inline value v_float(double f) { value v = {.kind = V_FLOAT}; v.u.f = f; return v; }
static inline value v_func(int fn) { value v = {.kind = V_FUNC}; v.u.fn = fn; return v; }
static inline int is_heap(value v) { return v.kind == V_STR || v.kind == V_LIST || v.kind == V_DICT || v.kind == V_NS; }
static inline heap_hdr *hdr(value v) { return v.kind == V_STR ? &v.u.s->h : v.kind == V_LIST ? &v.u.l->h : &v.u.d->h; }
static inline int value_depth(value v) { return (v.kind == V_LIST || v.kind == V_DICT) ? (int)hdr(v)->depth : 0; }
static inline int is_number(value v) { return v.kind == V_BOOL || v.kind == V_INT || v.kind == V_FLOAT; }
static inline int is_integral(value v) { return v.kind == V_BOOL || v.kind == V_INT; }
static inline int64_t as_int(value v) { return v.kind == V_BOOL ? v.u.b : v.u.i; }
static inline double as_float(value v) { return v.kind == V_FLOAT ? v.u.f : (double)as_int(v); }

#endif
