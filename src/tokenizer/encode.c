/* Encoding: text to token ids.
 *
 * Both kinds share one merge engine. The text becomes a linked list of symbols (SPM: one
 * per UTF-8 character; byte-level BPE: one per byte, in GPT-2's byte-to-character form);
 * every adjacent pair that may merge goes into a heap keyed by its priority, and the best
 * pair is merged until none is left. Stale heap entries (a side already merged into
 * something else) are recognised by their length and skipped, so the whole thing is
 * O(n log n) rather than the O(n^2) rescans of llama2.c.
 *
 *  - SPM (SentencePiece BPE, llama2.c run.c / llama.cpp llm_tokenizer_spm): spaces become
 *    U+2581, a dummy-prefix space goes in front when add_space_prefix, a pair may merge
 *    when the joined string is a token, the priority is that token's score (ties: the
 *    leftmost pair). Symbols that are not tokens fall back to <0xNN> byte tokens.
 *  - Byte-level BPE (GPT-2 and descendants): the text is first cut by the pre-tokenizer
 *    regexes (PCRE2, UTF + Unicode properties); within each piece a pair may merge when it
 *    is in the merge list, the priority is its rank (lower first, ties: leftmost).
 *
 * Special tokens found in the text split it into fragments first; they are never merged
 * with their neighbours. */
#include "tokenizer/tok_internal.h"
#include "core/error.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int start, len;  /* bytes of the working buffer this symbol covers; len 0 = merged away */
    int prev, next;  /* neighbours in the list, -1 at the ends */
    int id;          /* token id when known, else -1 */
} symbol;

typedef struct {
    double priority; /* higher merges first */
    int left, right; /* symbol indices */
    int len;         /* left.len + right.len when queued: detects stale entries */
    int id;          /* the merged token */
} candidate;

typedef struct {
    const mt_tokenizer *t;
    char *buf;       /* the fragment as the model spells it (U+2581 or mapped bytes) */
    size_t buf_cap;
    symbol *sym;
    size_t sym_cap;
    candidate *heap;
    size_t n_heap, heap_cap;
    int *ids;
    size_t n_ids, ids_cap;
    pcre2_match_data *match;
    mt_status status; /* first failure; later steps do nothing */
    int continuation; /* the text continues earlier text: no SPM prefix space */
} encoder;

static int reserve(encoder *e, void **p, size_t *cap, size_t need, size_t elem) {
    if (e->status) return 0;
    if (need <= *cap) return 1;
    size_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) {
        e->status = mt_error(MT_ERR_NOMEM, "out of memory while tokenizing");
        return 0;
    }
    *p = q;
    *cap = n;
    return 1;
}

static void push_id(encoder *e, int id) {
    if (e->n_ids >= INT_MAX - 1) {
        if (!e->status) e->status = mt_error(MT_ERR_ARG, "text too long: more than %d tokens", INT_MAX - 1);
        return;
    }
    if (!reserve(e, (void **)&e->ids, &e->ids_cap, e->n_ids + 1, sizeof *e->ids)) return;
    e->ids[e->n_ids++] = id;
}

/* ---- the merge engine ----------------------------------------------------------------- */

static int better(const candidate *a, const candidate *b) {
    return a->priority > b->priority || (a->priority == b->priority && a->left < b->left);
}

static void heap_push(encoder *e, candidate c) {
    if (!reserve(e, (void **)&e->heap, &e->heap_cap, e->n_heap + 1, sizeof *e->heap)) return;
    size_t i = e->n_heap++;
    while (i > 0 && better(&c, &e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = c;
}

static candidate heap_pop(encoder *e) {
    candidate top = e->heap[0], last = e->heap[--e->n_heap];
    size_t i = 0, n = e->n_heap;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && better(&e->heap[child + 1], &e->heap[child])) child++;
        if (!better(&e->heap[child], &last)) break;
        e->heap[i] = e->heap[child];
        i = child;
    }
    if (n > 0) e->heap[i] = last;
    return top;
}

typedef void (*pair_fn)(encoder *e, int left, int right);

/* Links n symbols into a list and queues every adjacent pair. */
static void link_symbols(encoder *e, int n, pair_fn try_pair) {
    for (int k = 0; k < n; k++) {
        e->sym[k].prev = k - 1;
        e->sym[k].next = k + 1 < n ? k + 1 : -1;
    }
    e->n_heap = 0;
    for (int k = 1; k < n; k++) try_pair(e, k - 1, k);
}

static void merge_all(encoder *e, pair_fn try_pair) {
    while (e->n_heap > 0 && !e->status) {
        candidate c = heap_pop(e);
        symbol *l = &e->sym[c.left], *r = &e->sym[c.right];
        if (l->len == 0 || r->len == 0 || l->next != c.right || l->len + r->len != c.len) continue;
        l->len += r->len;
        l->id = c.id;
        l->next = r->next;
        if (r->next >= 0) e->sym[r->next].prev = c.left;
        r->len = 0;
        try_pair(e, l->prev, c.left);
        try_pair(e, c.left, l->next);
    }
}

/* ---- SentencePiece BPE ---------------------------------------------------------------- */

/* SentencePiece never merges into byte, control or unknown tokens: literal "<0x41>" in a
 * text stays text. */
static int spm_mergeable(int type) { return type == MT_TOKTYPE_NORMAL || type == MT_TOKTYPE_USER_DEFINED; }

static void spm_try_pair(encoder *e, int left, int right) {
    if (left < 0 || right < 0) return;
    const symbol *l = &e->sym[left], *r = &e->sym[right];
    int id = mt_strmap_find(&e->t->vocab, e->buf + l->start, (size_t)(l->len + r->len));
    if (id < 0 || !spm_mergeable(e->t->type[id])) return;
    heap_push(e, (candidate){e->t->score[id], left, right, l->len + r->len, id});
}

static void spm_emit(encoder *e, const symbol *s) {
    const mt_tokenizer *t = e->t;
    int id = s->id >= 0 ? s->id : mt_strmap_find(&t->vocab, e->buf + s->start, (size_t)s->len);
    if (id >= 0) {
        push_id(e, id);
        return;
    }
    for (int i = 0; i < s->len; i++) { /* byte fallback */
        int b = t->byte_id[(unsigned char)e->buf[s->start + i]];
        if (b < 0) b = t->unk_id;
        if (b >= 0) push_id(e, b);
    }
}

/* One word (or the whole fragment): escape, split into characters, merge, emit. */
static void spm_chunk(encoder *e, const char *text, size_t len, int add_prefix) {
    if (!reserve(e, (void **)&e->buf, &e->buf_cap, 3 * len + 3, 1)) return;
    size_t n = 0;
    if (add_prefix) {
        memcpy(e->buf, "\xe2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(e->buf + n, "\xe2\x96\x81", 3);
            n += 3;
        } else e->buf[n++] = text[i];
    }
    if (n > INT_MAX || !reserve(e, (void **)&e->sym, &e->sym_cap, n, sizeof *e->sym)) {
        if (!e->status) e->status = mt_error(MT_ERR_ARG, "text fragment too long (%zu bytes)", n);
        return;
    }
    int count = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = (size_t)mt_utf8_seq_len((unsigned char)e->buf[i]);
        if (cl > n - i) cl = n - i;
        e->sym[count++] = (symbol){(int)i, (int)cl, 0, 0, -1};
        i += cl;
    }
    link_symbols(e, count, spm_try_pair);
    merge_all(e, spm_try_pair);
    for (int k = 0; count > 0 && k >= 0 && !e->status; k = e->sym[k].next) spm_emit(e, &e->sym[k]);
}

/* When no token has a space after another character, no merge can cross the boundary in
 * front of a space that follows a non-space, so such words are encoded one by one: the
 * same result in memory bounded by the longest word. */
static void spm_fragment(encoder *e, const char *text, size_t len) {
    int prefix = e->t->add_space_prefix && !e->continuation;
    if (!e->t->spm_word_split) {
        spm_chunk(e, text, len, prefix);
        return;
    }
    size_t start = 0;
    for (size_t i = 1; i < len && !e->status; i++) {
        if (text[i] != ' ' || text[i - 1] == ' ') continue;
        spm_chunk(e, text + start, i - start, prefix && start == 0);
        start = i;
    }
    spm_chunk(e, text + start, len - start, prefix && start == 0);
}

/* ---- byte-level BPE ------------------------------------------------------------------- */

static void bpe_try_pair(encoder *e, int left, int right) {
    if (left < 0 || right < 0) return;
    const symbol *l = &e->sym[left], *r = &e->sym[right];
    if (l->id < 0 || r->id < 0) return;
    int merged, rank = mt_pairmap_find(&e->t->pairs, l->id, r->id, &merged);
    if (rank >= 0) heap_push(e, (candidate){-(double)rank, left, right, l->len + r->len, merged});
}

/* One pre-token: map bytes to GPT-2 characters, merge by rank, emit. */
static void bpe_piece(encoder *e, const char *p, size_t n) {
    const mt_tokenizer *t = e->t;
    if (n == 0 || n > INT_MAX / 2) return;
    if (!reserve(e, (void **)&e->buf, &e->buf_cap, 2 * n, 1) ||
        !reserve(e, (void **)&e->sym, &e->sym_cap, n, sizeof *e->sym))
        return;
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)p[i];
        int len = mt_utf8_encode(mt_gpt2_byte_to_cp(b), e->buf + m);
        e->sym[i] = (symbol){m, len, 0, 0, t->byte_id[b]};
        m += len;
    }
    if (t->ignore_merges) { /* Llama 3: a whole pre-token that is a token is taken as is */
        int id = mt_strmap_find(&t->vocab, e->buf, (size_t)m);
        if (id >= 0) {
            push_id(e, id);
            return;
        }
    }
    link_symbols(e, (int)n, bpe_try_pair);
    merge_all(e, bpe_try_pair);
    for (int k = 0; k >= 0 && !e->status; k = e->sym[k].next) {
        int id = e->sym[k].id >= 0 ? e->sym[k].id : t->unk_id;
        if (id >= 0) push_id(e, id);
    }
}

/* Finds the next match of pre-tokenizer regex `stage` in p[from..n): 1 with [*ms, *me),
 * 0 when there is none. The input is known valid UTF-8, so PCRE2's own check (linear in
 * the whole subject on every call) is skipped. */
static int pre_match(encoder *e, int stage, const char *p, size_t n, size_t from, size_t *ms, size_t *me) {
    const pcre2_code *re = e->t->pre_code[stage];
    int rc = pcre2_match(re, (PCRE2_SPTR)p, n, from, PCRE2_NO_UTF_CHECK, e->match, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)p, n, from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, e->match, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        e->status = mt_error(MT_ERR_UNSUPPORTED, "pre-tokenizer regex failed: %s", (char *)msg);
        return 0;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->match);
    *ms = ov[0];
    *me = ov[1];
    return *ms <= *me && *me <= n;
}

/* HF's Split with behaviour "Isolated": matches and the gaps between them are pieces; each
 * piece goes through the next regex, the last stage's pieces through BPE. */
static void pre_split(encoder *e, int stage, const char *p, size_t n) {
    if (n == 0 || e->status) return;
    if (stage >= e->t->n_pre) {
        bpe_piece(e, p, n);
        return;
    }
    size_t gap = 0, from = 0, ms, me;
    while (from < n && pre_match(e, stage, p, n, from, &ms, &me)) {
        if (me == ms) { /* an empty match cuts nothing: look again one character later */
            if (ms >= n) break;
            from = ms + (size_t)mt_utf8_seq_len((unsigned char)p[ms]);
            continue;
        }
        pre_split(e, stage + 1, p + gap, ms - gap);
        pre_split(e, stage + 1, p + ms, me - ms);
        gap = from = me;
    }
    pre_split(e, stage + 1, p + gap, n - gap);
}

/* Invalid UTF-8 cannot go through the regexes: each invalid byte is a pre-token alone. */
static void bpe_fragment(encoder *e, const char *text, size_t len) {
    size_t i = 0;
    while (i < len && !e->status) {
        size_t valid = mt_utf8_valid_prefix(text + i, len - i);
        pre_split(e, 0, text + i, valid);
        i += valid;
        if (i < len) bpe_piece(e, text + i++, 1);
    }
}

/* ---- special tokens and the entry points ---------------------------------------------- */

/* The longest special token starting at s, or -1. */
static int match_special(const mt_tokenizer *t, const char *s, size_t n, int parse_special, size_t *len) {
    unsigned char b = (unsigned char)s[0];
    for (int k = t->special_start[b]; k < t->special_start[b + 1]; k++) {
        int id = t->special[k];
        size_t l = (size_t)t->text_len[id];
        if (!parse_special && t->type[id] != MT_TOKTYPE_USER_DEFINED) continue;
        if (l <= n && memcmp(s, t->text[id], l) == 0) {
            *len = l;
            return id;
        }
    }
    return -1;
}

static void encode_fragment(encoder *e, const char *text, size_t len) {
    if (len == 0) return;
    if (e->t->kind == MT_TOK_SPM) spm_fragment(e, text, len);
    else bpe_fragment(e, text, len);
}

static void encode_text(encoder *e, const char *text, size_t len, int parse_special) {
    const mt_tokenizer *t = e->t;
    size_t start = 0, i = 0;
    while (i < len && !e->status) {
        size_t mlen = 0;
        int id = t->n_special ? match_special(t, text + i, len - i, parse_special, &mlen) : -1;
        if (id < 0) {
            i++;
            continue;
        }
        encode_fragment(e, text + start, i - start);
        push_id(e, id);
        start = i = i + mlen;
    }
    encode_fragment(e, text + start, len - start);
}

static mt_status encode_with(const mt_tokenizer *t, const char *text, size_t len, int add_special,
                             int parse_special, int continuation, int **ids, int *n_ids);

mt_status mt_tokenizer_encode(const mt_tokenizer *t, const char *text, size_t len, int add_special,
                              int parse_special, int **ids, int *n_ids) {
    return encode_with(t, text, len, add_special, parse_special, 0, ids, n_ids);
}

mt_status mt_tokenizer_encode_piece(const mt_tokenizer *t, const char *text, size_t len, int first,
                                    int **ids, int *n_ids) {
    if (!first) return encode_with(t, text, len, 0, 1, 1, ids, n_ids);
    /* a template that writes the BOS text itself already yields the BOS token */
    const char *bos = t && t->bos_id >= 0 ? mt_tokenizer_token_text(t, t->bos_id) : NULL;
    int has_bos_text = bos && *bos && len >= strlen(bos) && !memcmp(text, bos, strlen(bos));
    return encode_with(t, text, len, !has_bos_text, 1, 0, ids, n_ids);
}

static mt_status encode_with(const mt_tokenizer *t, const char *text, size_t len, int add_special,
                             int parse_special, int continuation, int **ids, int *n_ids) {
    if (!ids || !n_ids) return mt_error(MT_ERR_ARG, "mt_tokenizer_encode: ids or n_ids is NULL");
    *ids = NULL;
    *n_ids = 0;
    if (!t || (!text && len > 0)) return mt_error(MT_ERR_ARG, "mt_tokenizer_encode: tokenizer or text is NULL");
    encoder e = {.t = t, .continuation = continuation};
    if (t->kind == MT_TOK_BPE && t->n_pre > 0 && !(e.match = pcre2_match_data_create(1, NULL)))
        return mt_error(MT_ERR_NOMEM, "out of memory");
    reserve(&e, (void **)&e.ids, &e.ids_cap, len / 2 + 4, sizeof *e.ids);
    if (add_special && t->add_bos && t->bos_id >= 0) push_id(&e, t->bos_id);
    if (len > 0) encode_text(&e, text, len, parse_special);
    if (add_special && t->add_eos && t->eos_id >= 0) push_id(&e, t->eos_id);
    pcre2_match_data_free(e.match);
    free(e.buf);
    free(e.sym);
    free(e.heap);
    if (e.status) {
        free(e.ids);
        return e.status;
    }
    *ids = e.ids;
    *n_ids = (int)e.n_ids;
    return MT_OK;
}

mt_status mt_tokenize(const mt_tokenizer *t, const char *text, int add_special, int **ids, int *n_ids) {
    if (!ids || !n_ids) return mt_error(MT_ERR_ARG, "mt_tokenize: ids or n_ids is NULL");
    *ids = NULL;
    *n_ids = 0;
    if (!t || !text) return mt_error(MT_ERR_ARG, "mt_tokenize: tokenizer or text is NULL");
    size_t len = strlen(text), valid = mt_utf8_valid_prefix(text, len);
    if (valid != len) return mt_error(MT_ERR_ARG, "invalid UTF-8 in text at byte %zu", valid);
    /* Users who write "<|im_start|>" in a prompt mean the special token. */
    return mt_tokenizer_encode(t, text, len, add_special, 1, ids, n_ids);
}
