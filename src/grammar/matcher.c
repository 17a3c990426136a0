/* Grammar matcher: see matcher.h. A stack is a node id (-1: the empty stack, a complete
 * match); node = (element index, parent node). The top element of a live stack is always a
 * character set: rule references are expanded ("advanced") as soon as they reach the top. */
#include "grammar/matcher.h"
#include "grammar/grammar.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NODES (1 << 24)
#define ADVANCE_BUDGET 2000000 /* rule expansions per character: beyond it the grammar is too ambiguous */
#define MAX_DEPTH 20000

typedef struct { int32_t elem, parent; } snode;
typedef struct { int32_t top; uint32_t cp; int32_t off, len; } step_entry;
typedef struct { int32_t *v; int n, cap; } ivec;

typedef struct {
    int32_t first_child, next_sibling, first_token;
    uint8_t byte;
} trie_node;

enum { FILTER_ALL, FILTER_UNSTRIPPED, FILTER_STRIPPED };

struct mt_grammar_matcher {
    const mt_grammar *g;
    snode *nodes;
    int n_nodes, cap_nodes;
    int32_t *node_table;        /* open addressing: node id or -1 */
    uint32_t node_mask;
    step_entry *steps;          /* cache of (stack, code point) -> stacks */
    uint32_t step_mask;
    int n_steps;
    ivec results;               /* stacks lists the cache points into */
    uint32_t *seen_adv, *seen_union; /* [cap_nodes] dedup stamps */
    uint32_t stamp_adv, stamp_union;
    int done_adv, done_union;   /* the empty stack was added (per stamp) */
    ivec scratch;               /* building one stack set */
    /* interned stack sets (sorted stack ids) and their steps: the trie walk moves from set
     * to set with one lookup per byte */
    ivec set_data;
    int32_t *set_off, *set_len;
    uint32_t *set_hash;
    int n_sets, cap_sets;
    int32_t *set_table;         /* open addressing: set id or -1 */
    uint32_t set_mask;
    struct set_step { int32_t set; uint32_t cp; int32_t to; } *set_steps; /* to: set id, -1 empty */
    uint32_t set_step_mask;
    int n_set_steps;
    ivec cur;                   /* the current state */
    uint32_t partial_val, partial_min;
    int partial_rem;            /* continuation bytes still expected */
    int finished, strip_first;
    long budget;
    mt_status err;
    /* vocabulary */
    const mt_tokenizer *tok;
    int n_tok, eos;
    trie_node *trie;
    int n_trie, cap_trie;
    int32_t *token_next;        /* tokens ending at the same trie node */
    uint8_t *strip_ok, *allowed;
    int n_allowed;
};

static int ivec_push(ivec *v, int32_t x) {
    if (v->n == v->cap) {
        int c = v->cap ? v->cap * 2 : 64;
        int32_t *n = realloc(v->v, (size_t)c * sizeof *n);
        if (!n) return -1;
        v->v = n;
        v->cap = c;
    }
    v->v[v->n++] = x;
    return 0;
}

static void set_err(mt_grammar_matcher *m, mt_status s) {
    if (!m->err) m->err = s;
}

static void oom(mt_grammar_matcher *m) { set_err(m, mt_error(MT_ERR_NOMEM, "grammar: out of memory")); }

static uint32_t hash2(uint32_t a, uint32_t b) {
    uint64_t h = (uint64_t)a * 0x9E3779B97F4A7C15ull ^ ((uint64_t)b + 0x632BE59BD9B4E019ull) * 0xC2B2AE3D27D4EB4Full;
    return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

static int node_table_grow(mt_grammar_matcher *m) {
    uint32_t size = m->node_mask ? (m->node_mask + 1) * 2 : 1024;
    int32_t *t = malloc(size * sizeof *t);
    if (!t) return -1;
    memset(t, 0xff, size * sizeof *t);
    for (int i = 0; i < m->n_nodes; i++) {
        uint32_t h = hash2((uint32_t)m->nodes[i].elem, (uint32_t)m->nodes[i].parent) & (size - 1);
        while (t[h] >= 0) h = (h + 1) & (size - 1);
        t[h] = i;
    }
    free(m->node_table);
    m->node_table = t;
    m->node_mask = size - 1;
    return 0;
}

/* The node (elem, parent), made once. */
static int32_t push(mt_grammar_matcher *m, int32_t elem, int32_t parent) {
    if (m->err) return -1;
    uint32_t h = hash2((uint32_t)elem, (uint32_t)parent) & m->node_mask;
    for (int32_t id; (id = m->node_table[h]) >= 0; h = (h + 1) & m->node_mask)
        if (m->nodes[id].elem == elem && m->nodes[id].parent == parent) return id;
    if (m->n_nodes >= MAX_NODES) {
        set_err(m, mt_error(MT_ERR_UNSUPPORTED, "grammar: over %d parse stacks (the grammar is too ambiguous)", MAX_NODES));
        return -1;
    }
    if (m->n_nodes == m->cap_nodes) {
        int c = m->cap_nodes * 2;
        snode *n = realloc(m->nodes, (size_t)c * sizeof *n);
        uint32_t *a = n ? realloc(m->seen_adv, (size_t)c * sizeof *a) : NULL;
        if (n) m->nodes = n;
        if (a) m->seen_adv = a;
        uint32_t *u = a ? realloc(m->seen_union, (size_t)c * sizeof *u) : NULL;
        if (!u) {
            oom(m);
            return -1;
        }
        m->seen_union = u;
        memset(m->seen_adv + m->cap_nodes, 0, (size_t)(c - m->cap_nodes) * sizeof *a);
        memset(m->seen_union + m->cap_nodes, 0, (size_t)(c - m->cap_nodes) * sizeof *u);
        m->cap_nodes = c;
    }
    int32_t id = m->n_nodes++;
    m->nodes[id] = (snode){elem, parent};
    m->node_table[h] = id;
    if ((uint32_t)m->n_nodes * 2 > m->node_mask && node_table_grow(m)) oom(m);
    return id;
}

/* Adds every stack that `top` expands to (tops that are character sets, or the empty
 * stack) to m->results, deduplicated by the seen_adv stamp. */
static void advance(mt_grammar_matcher *m, int32_t top, int depth) {
    if (m->err) return;
    if (--m->budget < 0 || depth > MAX_DEPTH) {
        set_err(m, mt_error(MT_ERR_UNSUPPORTED, "grammar: too ambiguous (over %d rule expansions for one character)", ADVANCE_BUDGET));
        return;
    }
    if (top < 0) {
        if (!m->done_adv && ivec_push(&m->results, -1)) oom(m);
        m->done_adv = 1;
        return;
    }
    const mt_grammar *g = m->g;
    int32_t elem = m->nodes[top].elem, parent = m->nodes[top].parent;
    const mt_gelem *e = &g->elems[elem];
    if (e->type == MT_GE_CHARSET) {
        if (m->seen_adv[top] != m->stamp_adv) {
            m->seen_adv[top] = m->stamp_adv;
            if (ivec_push(&m->results, top)) oom(m);
        }
        return;
    }
    int32_t base = g->elems[elem + 1].type == MT_GE_END ? parent : push(m, elem + 1, parent);
    int rule = e->value;
    for (int a = 0; a < g->alt_count[rule] && !m->err; a++) {
        int32_t start = g->alts[g->alt_first[rule] + a];
        advance(m, g->elems[start].type == MT_GE_END ? base : push(m, start, base), depth + 1);
    }
}

static void begin_advance(mt_grammar_matcher *m) {
    if (++m->stamp_adv == 0) {
        memset(m->seen_adv, 0, (size_t)m->cap_nodes * sizeof *m->seen_adv);
        m->stamp_adv = 1;
    }
    m->done_adv = 0;
    m->budget = ADVANCE_BUDGET;
}

static int step_table_grow(mt_grammar_matcher *m) {
    uint32_t size = m->step_mask ? (m->step_mask + 1) * 2 : 4096;
    step_entry *t = malloc(size * sizeof *t);
    if (!t) return -1;
    for (uint32_t i = 0; i < size; i++) t[i].top = -1;
    for (uint32_t i = 0; m->steps && i <= m->step_mask; i++) {
        if (m->steps[i].top < 0) continue;
        uint32_t h = hash2((uint32_t)m->steps[i].top, m->steps[i].cp) & (size - 1);
        while (t[h].top >= 0) h = (h + 1) & (size - 1);
        t[h] = m->steps[i];
    }
    free(m->steps);
    m->steps = t;
    m->step_mask = size - 1;
    return 0;
}

/* The stacks that stack `top` becomes after code point cp: a slice of m->results. */
static void step_one(mt_grammar_matcher *m, int32_t top, uint32_t cp, int32_t *off, int32_t *len) {
    *off = *len = 0;
    if (top < 0) return;
    const mt_gelem *e = &m->g->elems[m->nodes[top].elem];
    if (!mt_charset_has(m->g, &m->g->sets[e->value], cp)) return;
    uint32_t h = hash2((uint32_t)top, cp) & m->step_mask;
    for (; m->steps[h].top >= 0; h = (h + 1) & m->step_mask)
        if (m->steps[h].top == top && m->steps[h].cp == cp) {
            *off = m->steps[h].off;
            *len = m->steps[h].len;
            return;
        }
    int32_t start = m->results.n;
    begin_advance(m);
    int32_t elem = m->nodes[top].elem, parent = m->nodes[top].parent;
    int32_t next = m->g->elems[elem + 1].type == MT_GE_END ? parent : push(m, elem + 1, parent);
    advance(m, next, 0);
    if (m->err) return;
    m->steps[h] = (step_entry){top, cp, start, m->results.n - start};
    *off = start;
    *len = m->results.n - start;
    if ((uint32_t)++m->n_steps * 2 > m->step_mask && step_table_grow(m)) oom(m);
}

/* Appends to `out` the set of stacks that set[0..n) becomes after cp. The input may live in
 * `out` itself (read by index before the appends). Returns the new set's length. */
static int step_set(mt_grammar_matcher *m, const ivec *in, int in_off, int n, uint32_t cp, ivec *out) {
    if (++m->stamp_union == 0) {
        memset(m->seen_union, 0, (size_t)m->cap_nodes * sizeof *m->seen_union);
        m->stamp_union = 1;
    }
    m->done_union = 0;
    int start = out->n;
    for (int i = 0; i < n && !m->err; i++) {
        int32_t off, len;
        step_one(m, in->v[in_off + i], cp, &off, &len);
        for (int k = 0; k < len; k++) {
            int32_t t = m->results.v[off + k];
            if (t < 0) {
                if (m->done_union) continue;
                m->done_union = 1;
            } else {
                if (m->seen_union[t] == m->stamp_union) continue;
                m->seen_union[t] = m->stamp_union;
            }
            if (ivec_push(out, t)) oom(m);
        }
    }
    return m->err ? 0 : out->n - start;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static uint32_t hash_ints(const int32_t *v, int n) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < n; i++) h = hash2(h, (uint32_t)v[i]);
    return h;
}

static int set_table_grow(mt_grammar_matcher *m) {
    uint32_t size = m->set_mask ? (m->set_mask + 1) * 2 : 1024;
    int32_t *t = malloc(size * sizeof *t);
    if (!t) return -1;
    memset(t, 0xff, size * sizeof *t);
    for (int i = 0; i < m->n_sets; i++) {
        uint32_t h = m->set_hash[i] & (size - 1);
        while (t[h] >= 0) h = (h + 1) & (size - 1);
        t[h] = i;
    }
    free(m->set_table);
    m->set_table = t;
    m->set_mask = size - 1;
    return 0;
}

/* The id of the set v[0..n) (sorted in place first); -1 on error. */
static int32_t intern_set(mt_grammar_matcher *m, int32_t *v, int n) {
    if (m->err) return -1;
    qsort(v, (size_t)n, sizeof *v, cmp_i32);
    uint32_t hash = hash_ints(v, n), h = hash & m->set_mask;
    for (int32_t id; (id = m->set_table[h]) >= 0; h = (h + 1) & m->set_mask)
        if (m->set_hash[id] == hash && m->set_len[id] == n && !memcmp(m->set_data.v + m->set_off[id], v, (size_t)n * sizeof *v))
            return id;
    if (m->n_sets == m->cap_sets) {
        int c = m->cap_sets ? m->cap_sets * 2 : 256;
        int32_t *o = realloc(m->set_off, (size_t)c * sizeof *o);
        if (o) m->set_off = o;
        int32_t *l = o ? realloc(m->set_len, (size_t)c * sizeof *l) : NULL;
        if (l) m->set_len = l;
        uint32_t *hs = l ? realloc(m->set_hash, (size_t)c * sizeof *hs) : NULL;
        if (!hs) {
            oom(m);
            return -1;
        }
        m->set_hash = hs;
        m->cap_sets = c;
    }
    int32_t id = m->n_sets++;
    m->set_off[id] = m->set_data.n;
    m->set_len[id] = n;
    m->set_hash[id] = hash;
    for (int i = 0; i < n; i++)
        if (ivec_push(&m->set_data, v[i])) oom(m);
    m->set_table[h] = id;
    if ((uint32_t)m->n_sets * 2 > m->set_mask && set_table_grow(m)) oom(m);
    return m->err ? -1 : id;
}

static int set_step_table_grow(mt_grammar_matcher *m) {
    uint32_t size = m->set_step_mask ? (m->set_step_mask + 1) * 2 : 4096;
    struct set_step *t = malloc(size * sizeof *t);
    if (!t) return -1;
    for (uint32_t i = 0; i < size; i++) t[i].set = -1;
    for (uint32_t i = 0; m->set_steps && i <= m->set_step_mask; i++) {
        if (m->set_steps[i].set < 0) continue;
        uint32_t h = hash2((uint32_t)m->set_steps[i].set, m->set_steps[i].cp) & (size - 1);
        while (t[h].set >= 0) h = (h + 1) & (size - 1);
        t[h] = m->set_steps[i];
    }
    free(m->set_steps);
    m->set_steps = t;
    m->set_step_mask = size - 1;
    return 0;
}

/* The set that set `id` becomes after cp: an id, or -1 when no stack can take cp. */
static int32_t step_set_id(mt_grammar_matcher *m, int32_t id, uint32_t cp) {
    uint32_t h = hash2((uint32_t)id, cp) & m->set_step_mask;
    for (; m->set_steps[h].set >= 0; h = (h + 1) & m->set_step_mask)
        if (m->set_steps[h].set == id && m->set_steps[h].cp == cp) return m->set_steps[h].to;
    m->scratch.n = 0;
    int n = step_set(m, &m->set_data, m->set_off[id], m->set_len[id], cp, &m->scratch);
    int32_t to = n > 0 ? intern_set(m, m->scratch.v, n) : -1;
    if (m->err) return -1;
    m->set_steps[h] = (struct set_step){id, cp, to};
    if ((uint32_t)++m->n_set_steps * 2 > m->set_step_mask && set_step_table_grow(m)) oom(m);
    return to;
}

/* UTF-8 decoding one byte at a time: *val holds the bits so far, *rem the continuation
 * bytes still expected, *min the smallest code point the sequence's length may encode
 * (shorter, overlong forms and surrogates are invalid). Returns 1 when a code point
 * completed (*cp), 0 when more bytes are needed, -1 when the byte cannot come here. */
static int utf8_feed(uint32_t *val, int *rem, uint32_t *min, unsigned char b, uint32_t *cp) {
    if (*rem == 0) {
        if (b < 0x80) {
            *cp = b;
            return 1;
        }
        if ((b & 0xE0) == 0xC0 && b >= 0xC2) *val = b & 0x1F, *rem = 1, *min = 0x80;
        else if ((b & 0xF0) == 0xE0) *val = b & 0x0F, *rem = 2, *min = 0x800;
        else if ((b & 0xF8) == 0xF0 && b <= 0xF4) *val = b & 0x07, *rem = 3, *min = 0x10000;
        else return -1;
        return 0;
    }
    if ((b & 0xC0) != 0x80) return -1;
    *val = (*val << 6) | (b & 0x3F);
    uint32_t hi = ((*val + 1) << (6 * (*rem - 1))) - 1; /* the largest code point still reachable */
    if (hi < *min || (*val << (6 * (*rem - 1))) > 0x10FFFF) return -1;
    if (--*rem > 0) return 0;
    if (*val >= 0xD800 && *val <= 0xDFFF) return -1;
    *cp = *val;
    return 1;
}

/* Whether some stack of the set can take a character starting with the pending bytes. */
static int partial_possible(const mt_grammar_matcher *m, const int32_t *set, int n, uint32_t val, int rem, uint32_t min) {
    uint32_t lo = val << (6 * rem), hi = lo | ((1u << (6 * rem)) - 1);
    if (lo < min) lo = min;
    if (hi > 0x10FFFF) hi = 0x10FFFF;
    if (lo > hi) return 0;
    for (int i = 0; i < n; i++) {
        if (set[i] < 0) continue;
        const mt_gelem *e = &m->g->elems[m->nodes[set[i]].elem];
        if (mt_charset_intersects(m->g, &m->g->sets[e->value], lo, hi)) return 1;
    }
    return 0;
}

static void mark_tokens(mt_grammar_matcher *m, int node, int filter) {
    for (int32_t id = m->trie[node].first_token; id >= 0; id = m->token_next[id]) {
        if (filter == FILTER_STRIPPED && !m->strip_ok[id]) continue;
        if (filter == FILTER_UNSTRIPPED && m->strip_ok[id]) continue;
        if (!m->allowed[id]) m->n_allowed++;
        m->allowed[id] = 1;
    }
}

static void walk(mt_grammar_matcher *m, int node, int32_t set, uint32_t val, int rem, uint32_t min, int filter) {
    for (int c = m->trie[node].first_child; c >= 0 && !m->err; c = m->trie[c].next_sibling) {
        uint32_t v2 = val, cp = 0, min2 = min;
        int r2 = rem;
        int rc = utf8_feed(&v2, &r2, &min2, m->trie[c].byte, &cp);
        if (rc < 0) continue;
        int32_t next = set;
        if (rc == 1) {
            if ((next = step_set_id(m, set, cp)) < 0) continue;
        } else if (!partial_possible(m, m->set_data.v + m->set_off[set], m->set_len[set], v2, r2, min2)) {
            continue;
        }
        mark_tokens(m, c, filter);
        walk(m, c, next, v2, r2, min2, filter);
    }
}

int mt_grammar_matcher_can_end(const mt_grammar_matcher *m) {
    if (m->finished) return 1;
    if (m->partial_rem) return 0;
    for (int i = 0; i < m->cur.n; i++)
        if (m->cur.v[i] < 0) return 1;
    return 0;
}

int mt_grammar_matcher_finished(const mt_grammar_matcher *m) {
    return m->finished || (m->cur.n == 1 && m->cur.v[0] < 0 && !m->partial_rem);
}

mt_status mt_grammar_matcher_mask(mt_grammar_matcher *m, float *logits, int n_vocab) {
    if (m->err) return m->err;
    if (!m->tok) return mt_error(MT_ERR_ARG, "grammar: the matcher has no vocabulary");
    memset(m->allowed, 0, (size_t)m->n_tok);
    m->n_allowed = 0;
    if (!m->finished) {
        m->scratch.n = 0;
        for (int i = 0; i < m->cur.n; i++)
            if (ivec_push(&m->scratch, m->cur.v[i])) oom(m);
        int32_t set = m->err ? -1 : intern_set(m, m->scratch.v, m->scratch.n);
        if (!m->err) walk(m, 0, set, m->partial_val, m->partial_rem, m->partial_min, m->strip_first ? FILTER_UNSTRIPPED : FILTER_ALL);
        if (m->strip_first && !m->err) /* the first token's space is dropped: walk below it as if at the root */
            for (int c = m->trie[0].first_child; c >= 0; c = m->trie[c].next_sibling)
                if (m->trie[c].byte == ' ') walk(m, c, set, m->partial_val, m->partial_rem, m->partial_min, FILTER_STRIPPED);
        if (m->err) return m->err;
    }
    int eos_ok = m->eos >= 0 && m->eos < m->n_tok && mt_grammar_matcher_can_end(m);
    if (eos_ok && !m->allowed[m->eos]) {
        m->allowed[m->eos] = 1;
        m->n_allowed++;
    } else if (!eos_ok && m->eos >= 0 && m->eos < m->n_tok && m->allowed[m->eos]) {
        m->allowed[m->eos] = 0;
        m->n_allowed--;
    }
    if (m->n_allowed == 0)
        return mt_error(MT_ERR_ARG, "grammar: no token of the vocabulary can continue the text here");
    for (int i = 0; i < n_vocab; i++)
        if (i >= m->n_tok || !m->allowed[i]) logits[i] = -INFINITY;
    return MT_OK;
}

/* The same answer the mask gives for one token, without building the mask or changing the
 * state: every code point of the token's bytes steps the (interned) stack set, and bytes of
 * an unfinished character must start one some stack allows. */
int mt_grammar_matcher_allows(mt_grammar_matcher *m, int id) {
    if (m->err) return -1;
    if (!m->tok || id < 0 || id >= m->n_tok) return 0;
    if (id == m->eos) return mt_grammar_matcher_can_end(m);
    if (m->finished) return 0;
    size_t len = 0;
    const unsigned char *b = (const unsigned char *)mt_tokenizer_token_bytes(m->tok, id, &len);
    if (m->strip_first && m->strip_ok[id]) b++, len--;
    if (len == 0) return 0;
    m->scratch.n = 0;
    for (int i = 0; i < m->cur.n; i++)
        if (ivec_push(&m->scratch, m->cur.v[i])) oom(m);
    int32_t set = m->err ? -1 : intern_set(m, m->scratch.v, m->scratch.n);
    uint32_t val = m->partial_val, min = m->partial_min;
    int rem = m->partial_rem;
    for (size_t i = 0; i < len && set >= 0; i++) {
        uint32_t cp = 0;
        int rc = utf8_feed(&val, &rem, &min, b[i], &cp);
        if (rc < 0) return 0;
        if (rc == 1) set = step_set_id(m, set, cp);
    }
    if (m->err) return -1;
    if (set < 0) return 0;
    return !rem || partial_possible(m, m->set_data.v + m->set_off[set], m->set_len[set], val, rem, min);
}

mt_status mt_grammar_matcher_accept_bytes(mt_grammar_matcher *m, const char *bytes, size_t len) {
    if (m->err) return m->err;
    if (m->finished && len) return mt_error(MT_ERR_ARG, "grammar: text after the end");
    for (size_t i = 0; i < len; i++) {
        uint32_t cp = 0;
        int rc = utf8_feed(&m->partial_val, &m->partial_rem, &m->partial_min, (unsigned char)bytes[i], &cp);
        if (rc < 0) return mt_error(MT_ERR_ARG, "grammar: invalid UTF-8 at byte %zu", i);
        if (rc == 0) continue;
        int n0 = m->cur.n;
        int n = step_set(m, &m->cur, 0, n0, cp, &m->cur);
        if (m->err) return m->err;
        if (n) memmove(m->cur.v, m->cur.v + n0, (size_t)n * sizeof *m->cur.v);
        m->cur.n = n;
        if (n == 0) return mt_error(MT_ERR_ARG, "grammar: the text cannot continue with U+%04X (byte %zu)", cp, i);
    }
    if (m->partial_rem && !partial_possible(m, m->cur.v, m->cur.n, m->partial_val, m->partial_rem, m->partial_min))
        return mt_error(MT_ERR_ARG, "grammar: no character the grammar allows starts with these bytes");
    return MT_OK;
}

mt_status mt_grammar_matcher_accept_token(mt_grammar_matcher *m, int id) {
    if (!m->tok || id < 0 || id >= m->n_tok) return mt_error(MT_ERR_ARG, "grammar: token %d is not in the vocabulary", id);
    if (id == m->eos) {
        if (!mt_grammar_matcher_can_end(m)) return mt_error(MT_ERR_ARG, "grammar: end of text where the grammar cannot end");
        m->finished = 1;
        return MT_OK;
    }
    size_t len = 0;
    const char *b = mt_tokenizer_token_bytes(m->tok, id, &len);
    if (m->strip_first && m->strip_ok[id]) {
        b++;
        len--;
    }
    if (len == 0) return mt_error(MT_ERR_ARG, "grammar: token %d has no text", id);
    m->strip_first = 0;
    return mt_grammar_matcher_accept_bytes(m, b, len);
}

mt_status mt_grammar_matcher_reset(mt_grammar_matcher *m, int strip_first_space) {
    m->cur.n = 0;
    m->partial_val = m->partial_min = 0;
    m->partial_rem = 0;
    m->finished = 0;
    m->strip_first = strip_first_space && m->tok;
    m->err = MT_OK;
    const mt_grammar *g = m->g;
    begin_advance(m);
    int32_t start = m->results.n;
    for (int a = 0; a < g->alt_count[g->root] && !m->err; a++) {
        int32_t s = g->alts[g->alt_first[g->root] + a];
        advance(m, g->elems[s].type == MT_GE_END ? -1 : push(m, s, -1), 0);
    }
    for (int32_t i = start; i < m->results.n && !m->err; i++)
        if (ivec_push(&m->cur, m->results.v[i])) oom(m);
    m->results.n = start;
    return m->err;
}

static mt_status build_trie(mt_grammar_matcher *m) {
    const mt_tokenizer *t = m->tok;
    m->n_tok = mt_tokenizer_vocab_size(t);
    m->eos = mt_tokenizer_eos(t);
    m->token_next = malloc((size_t)m->n_tok * sizeof *m->token_next);
    m->strip_ok = calloc((size_t)m->n_tok + 1, 1);
    m->allowed = calloc((size_t)m->n_tok + 1, 1);
    m->cap_trie = 1024;
    m->trie = malloc((size_t)m->cap_trie * sizeof *m->trie);
    if (!m->token_next || !m->strip_ok || !m->allowed || !m->trie) return mt_error(MT_ERR_NOMEM, "grammar: out of memory");
    m->trie[0] = (trie_node){-1, -1, -1, 0};
    m->n_trie = 1;
    int spm_prefix = mt_tokenizer_kind_of(t) == MT_TOK_SPM && mt_tokenizer_add_space_prefix(t);
    for (int id = 0; id < m->n_tok; id++) {
        size_t len = 0;
        const unsigned char *b = (const unsigned char *)mt_tokenizer_token_bytes(t, id, &len);
        m->token_next[id] = -1;
        if (len == 0 || id == m->eos) continue;
        int type = mt_tokenizer_type(t, id);
        m->strip_ok[id] = spm_prefix && (type == MT_TOKTYPE_NORMAL || type == MT_TOKTYPE_USER_DEFINED) && b[0] == ' ';
        int node = 0;
        for (size_t i = 0; i < len; i++) {
            int c = m->trie[node].first_child;
            while (c >= 0 && m->trie[c].byte != b[i]) c = m->trie[c].next_sibling;
            if (c < 0) {
                if (m->n_trie == m->cap_trie) {
                    trie_node *n = realloc(m->trie, (size_t)m->cap_trie * 2 * sizeof *n);
                    if (!n) return mt_error(MT_ERR_NOMEM, "grammar: out of memory");
                    m->trie = n;
                    m->cap_trie *= 2;
                }
                c = m->n_trie++;
                m->trie[c] = (trie_node){-1, m->trie[node].first_child, -1, b[i]};
                m->trie[node].first_child = c;
            }
            node = c;
        }
        m->token_next[id] = m->trie[node].first_token;
        m->trie[node].first_token = id;
    }
    return MT_OK;
}

mt_status mt_grammar_matcher_new(const mt_grammar *g, const mt_tokenizer *tok, mt_grammar_matcher **out) {
    *out = NULL;
    mt_grammar_matcher *m = calloc(1, sizeof *m);
    if (!m) return mt_error(MT_ERR_NOMEM, "grammar: out of memory");
    m->g = g;
    m->tok = tok;
    m->eos = -1;
    m->cap_nodes = 1024;
    m->nodes = malloc((size_t)m->cap_nodes * sizeof *m->nodes);
    m->seen_adv = calloc((size_t)m->cap_nodes, sizeof *m->seen_adv);
    m->seen_union = calloc((size_t)m->cap_nodes, sizeof *m->seen_union);
    mt_status s = MT_OK;
    if (!m->nodes || !m->seen_adv || !m->seen_union || node_table_grow(m) || step_table_grow(m) || set_table_grow(m) ||
        set_step_table_grow(m))
        s = mt_error(MT_ERR_NOMEM, "grammar: out of memory");
    if (!s && tok) s = build_trie(m);
    if (!s) s = mt_grammar_matcher_reset(m, 0);
    if (s) {
        mt_grammar_matcher_free(m);
        return s;
    }
    *out = m;
    return MT_OK;
}

void mt_grammar_matcher_free(mt_grammar_matcher *m) {
    if (!m) return;
    free(m->nodes);
    free(m->node_table);
    free(m->steps);
    free(m->results.v);
    free(m->seen_adv);
    free(m->seen_union);
    free(m->scratch.v);
    free(m->cur.v);
    free(m->set_data.v);
    free(m->set_off);
    free(m->set_len);
    free(m->set_hash);
    free(m->set_table);
    free(m->set_steps);
    free(m->trie);
    free(m->token_next);
    free(m->strip_ok);
    free(m->allowed);
    free(m);
}

int mt_grammar_match(const mt_grammar *g, const char *text, size_t len) {
    mt_grammar_matcher *m;
    if (!g || mt_grammar_matcher_new(g, NULL, &m)) return -1;
    mt_status s = mt_grammar_matcher_accept_bytes(m, text, len);
    int r = s == MT_OK ? mt_grammar_matcher_can_end(m) : (s == MT_ERR_ARG ? 0 : -1);
    mt_grammar_matcher_free(m);
    return r;
}

int mt_grammar_hook_mask(void *matcher, float *logits, int n_vocab) {
    return mt_grammar_matcher_mask(matcher, logits, n_vocab) ? -1 : 0;
}

int mt_grammar_hook_allows(void *matcher, int token) {
    return mt_grammar_matcher_allows(matcher, token);
}

int mt_grammar_hook_accept(void *matcher, int token) {
    return mt_grammar_matcher_accept_token(matcher, token) ? -1 : 0;
}
