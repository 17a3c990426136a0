/* Grammars for constrained decoding: llama.cpp's GBNF compiled into rules of element
 * sequences (the compiled form below), and the matcher that walks them byte by byte.
 *
 * A rule is a list of alternatives; an alternative is a run of elements in `elems` ended by
 * GE_END. An element is a character set (code point ranges, sorted, disjoint, negation
 * already applied) or a reference to a rule. Repetitions, groups and multi-character
 * literals under a repetition become synthesized rules at compile time, as in llama.cpp,
 * so the matcher only sees sets and references. */
#ifndef MT_GRAMMAR_GRAMMAR_H
#define MT_GRAMMAR_GRAMMAR_H
#include <stdint.h>
#include "memtune.h"

enum { MT_GE_END = 0, MT_GE_CHARSET = 1, MT_GE_RULE = 2 };

typedef struct { int32_t type, value; } mt_gelem; /* value: charset index or rule index */
typedef struct { uint32_t lo, hi; } mt_cprange;    /* inclusive code point range */
typedef struct {
    int32_t first_range, n_ranges;
    uint64_t ascii[2];                             /* membership of code points 0..127 */
} mt_charset;

struct mt_grammar {
    int n_rules;
    int32_t *alt_first;  /* [n_rules]: index into alts of the rule's first alternative */
    int32_t *alt_count;  /* [n_rules] */
    int32_t *alts;       /* element index where each alternative starts */
    char **names;        /* [n_rules]; synthesized rules are named "<parent>-<n>" */
    mt_gelem *elems;
    int n_elems;
    mt_charset *sets;
    int n_sets;
    mt_cprange *ranges;
    int root;
};

/* Whether code point cp is in set s. */
static inline int mt_charset_has(const mt_grammar *g, const mt_charset *s, uint32_t cp) {
    if (cp < 128) return (int)((s->ascii[cp >> 6] >> (cp & 63)) & 1);
    const mt_cprange *r = g->ranges + s->first_range;
    int lo = 0, hi = s->n_ranges - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid].lo) hi = mid - 1;
        else if (cp > r[mid].hi) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* Whether any code point in [lo, hi] is in set s. */
int mt_charset_intersects(const mt_grammar *g, const mt_charset *s, uint32_t lo, uint32_t hi);

#endif
