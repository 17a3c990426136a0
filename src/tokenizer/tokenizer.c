/* Building a tokenizer from a vocabulary description (mt_vocab_spec), freeing it, and the
 * read-only accessors. Every loader (llama2.c .bin, tokenizer.json, GPT-2 files, GGUF)
 * ends here, so this is where untrusted vocabularies are checked: sizes are bounded, ids
 * range-checked and scores must be numbers. The build precomputes everything encoding and
 * decoding need: a hash from token text to id, the merge-pair table, the byte-fallback
 * tokens, the raw bytes each token decodes to, the special tokens to recognise in text
 * and the compiled pre-tokenizer regexes. */
#include "tokenizer/tok_internal.h"
#include "core/error.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hash maps ------------------------------------------------------------------------ */

uint32_t mt_tok_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a: tokens are short, so a simple byte hash is enough */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint32_t table_capacity(size_t entries) {
    uint32_t cap = 16;
    while (cap < 2 * entries) cap *= 2;
    return cap;
}

static mt_status strmap_init(mt_strmap *m, char *const *keys, const int *key_len, int n) {
    uint32_t cap = table_capacity((size_t)n);
    m->hash = malloc(cap * sizeof *m->hash);
    m->id = malloc(cap * sizeof *m->id);
    if (!m->hash || !m->id) return mt_error(MT_ERR_NOMEM, "out of memory");
    memset(m->id, 0xff, cap * sizeof *m->id);
    m->mask = cap - 1;
    m->keys = keys;
    m->key_len = key_len;
    return MT_OK;
}

/* Inserts id unless its text is already present: the first of duplicate tokens wins. */
static void strmap_insert(mt_strmap *m, int id) {
    const char *s = m->keys[id];
    int n = m->key_len[id];
    uint32_t h = mt_tok_hash(s, (size_t)n);
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        int other = m->id[i];
        if (other < 0) {
            m->id[i] = id;
            m->hash[i] = h;
            return;
        }
        if (m->hash[i] == h && m->key_len[other] == n && memcmp(m->keys[other], s, (size_t)n) == 0) return;
    }
}

int mt_strmap_find(const mt_strmap *m, const char *s, size_t n) {
    uint32_t h = mt_tok_hash(s, n);
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        int id = m->id[i];
        if (id < 0) return -1;
        if (m->hash[i] == h && (size_t)m->key_len[id] == n && memcmp(m->keys[id], s, n) == 0) return id;
    }
}

static uint32_t pair_slot(uint64_t key, uint32_t mask) {
    key ^= key >> 33; /* murmur3's finaliser spreads consecutive ids over the table */
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ULL;
    key ^= key >> 33;
    return (uint32_t)key & mask;
}

static mt_status pairmap_init(mt_pairmap *m, int n) {
    uint32_t cap = table_capacity((size_t)n);
    m->key = malloc(cap * sizeof *m->key);
    m->rank = malloc(cap * sizeof *m->rank);
    m->merged = malloc(cap * sizeof *m->merged);
    if (!m->key || !m->rank || !m->merged) return mt_error(MT_ERR_NOMEM, "out of memory");
    memset(m->key, 0xff, cap * sizeof *m->key);
    m->mask = cap - 1;
    return MT_OK;
}

/* The first (best-ranked) merge of a pair wins, as in HF tokenizers. */
static void pairmap_insert(mt_pairmap *m, int left, int right, int rank, int merged) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (uint32_t i = pair_slot(key, m->mask);; i = (i + 1) & m->mask) {
        if (m->key[i] == key) return;
        if (m->key[i] == UINT64_MAX) {
            m->key[i] = key;
            m->rank[i] = rank;
            m->merged[i] = merged;
            return;
        }
    }
}

int mt_pairmap_find(const mt_pairmap *m, int left, int right, int *merged) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (uint32_t i = pair_slot(key, m->mask);; i = (i + 1) & m->mask) {
        if (m->key[i] == key) {
            *merged = m->merged[i];
            return m->rank[i];
        }
        if (m->key[i] == UINT64_MAX) return -1;
    }
}

/* ---- GPT-2 byte <-> unicode ----------------------------------------------------------- */

/* Printable Latin-1 bytes stand for themselves; the other 68 bytes are numbered in order
 * from U+0100, so every byte becomes a visible character and BPE never sees whitespace or
 * control characters. */
static int gpt2_byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
}

uint32_t mt_gpt2_byte_to_cp(unsigned char b) {
    if (gpt2_byte_is_printable(b)) return b;
    uint32_t n = 0;
    for (unsigned i = 0; i < b; i++) n += !gpt2_byte_is_printable(i);
    return 256 + n;
}

int mt_gpt2_cp_to_byte(uint32_t cp) {
    if (cp < 256) return gpt2_byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    uint32_t n = cp - 256;
    for (unsigned b = 0; b < 256; b++)
        if (!gpt2_byte_is_printable(b) && n-- == 0) return (int)b;
    return -1;
}

/* ---- pre-tokenizers by name ----------------------------------------------------------- */

static const struct {
    const char *name;
    int n;
    const char *patterns[2];
    int ignore_merges;
} pre_table[] = {
    {"gpt2", 1, {MT_PRE_GPT2, NULL}, 0},
    {"llama3", 1, {MT_PRE_LLAMA3, NULL}, 1},
    {"smollm", 2, {MT_PRE_DIGITS, MT_PRE_GPT2}, 0},
    {"qwen2", 1, {MT_PRE_QWEN2, NULL}, 0},
    {"none", 0, {NULL, NULL}, 0},
};

/* llama.cpp's names for the same pre-tokenizers (tokenizer.ggml.pre). */
static const char *pre_alias(const char *name) {
    if (!strcmp(name, "gpt-2") || !strcmp(name, "default")) return "gpt2";
    if (!strcmp(name, "llama-bpe") || !strcmp(name, "llama-v3")) return "llama3";
    return name;
}

int mt_tok_pre_lookup(const char *name, const char **patterns, int *n, int *ignore_merges) {
    name = pre_alias(name);
    for (size_t i = 0; i < sizeof pre_table / sizeof pre_table[0]; i++) {
        if (strcmp(pre_table[i].name, name) != 0) continue;
        *n = pre_table[i].n;
        for (int k = 0; k < *n; k++) patterns[k] = pre_table[i].patterns[k];
        *ignore_merges = pre_table[i].ignore_merges;
        return 1;
    }
    return 0;
}

const char *mt_tok_pre_name(const char *const *patterns, int n) {
    for (size_t i = 0; i < sizeof pre_table / sizeof pre_table[0]; i++) {
        if (pre_table[i].n != n) continue;
        int same = 1;
        for (int k = 0; k < n && same; k++) same = !strcmp(pre_table[i].patterns[k], patterns[k]);
        if (same) return pre_table[i].name;
    }
    return NULL;
}

/* ---- building ------------------------------------------------------------------------- */

static mt_status check_id(int id, int n_vocab, const char *what) {
    if (id < -1 || id >= n_vocab)
        return mt_error(MT_ERR_FORMAT, "%s id %d out of range (vocabulary has %d tokens)", what, id, n_vocab);
    return MT_OK;
}

static mt_status validate_spec(const mt_vocab_spec *spec) {
    if (spec->kind != MT_TOK_SPM && spec->kind != MT_TOK_BPE)
        return mt_error(MT_ERR_ARG, "unknown tokenizer kind %d", (int)spec->kind);
    if (spec->n_vocab < 1 || spec->n_vocab > MT_TOK_MAX_VOCAB)
        return mt_error(MT_ERR_FORMAT, "vocabulary size %d out of range (1..%d)", spec->n_vocab, MT_TOK_MAX_VOCAB);
    if (!spec->tokens) return mt_error(MT_ERR_ARG, "vocabulary has no token list");
    for (int i = 0; i < spec->n_vocab; i++) {
        if (!spec->tokens[i]) return mt_error(MT_ERR_FORMAT, "token %d has no text", i);
        if (strnlen(spec->tokens[i], MT_TOK_MAX_TOKEN_BYTES + 1) > MT_TOK_MAX_TOKEN_BYTES)
            return mt_error(MT_ERR_FORMAT, "token %d is longer than %d bytes", i, MT_TOK_MAX_TOKEN_BYTES);
        if (spec->scores && isnan(spec->scores[i])) return mt_error(MT_ERR_FORMAT, "token %d has a NaN score", i);
        if (spec->types && (spec->types[i] < 0 || spec->types[i] > MT_TOKTYPE_BYTE))
            return mt_error(MT_ERR_FORMAT, "token %d has unknown type %d", i, spec->types[i]);
    }
    mt_status s;
    if ((s = check_id(spec->bos_id, spec->n_vocab, "BOS")) || (s = check_id(spec->eos_id, spec->n_vocab, "EOS")) ||
        (s = check_id(spec->unk_id, spec->n_vocab, "unknown-token")) ||
        (s = check_id(spec->pad_id, spec->n_vocab, "padding")))
        return s;
    if (spec->n_merges < 0 || spec->n_merges > MT_TOK_MAX_MERGES)
        return mt_error(MT_ERR_FORMAT, "merge count %d out of range (0..%d)", spec->n_merges, MT_TOK_MAX_MERGES);
    if (spec->n_merges > 0 && !spec->merges) return mt_error(MT_ERR_ARG, "merge list missing");
    for (int i = 0; i < spec->n_merges; i++)
        if (!spec->merges[i] || strnlen(spec->merges[i], 2 * MT_TOK_MAX_TOKEN_BYTES + 2) > 2 * MT_TOK_MAX_TOKEN_BYTES + 1)
            return mt_error(MT_ERR_FORMAT, "merge %d is missing or too long", i);
    if (spec->n_pre_regex < 0 || spec->n_pre_regex > MT_TOK_MAX_PRE || (spec->n_pre_regex && !spec->pre_regex))
        return mt_error(MT_ERR_ARG, "pre-tokenizer regex count %d out of range (0..%d)", spec->n_pre_regex, MT_TOK_MAX_PRE);
    return MT_OK;
}

/* "<0xNN>" -> NN, else -1. */
static int parse_byte_token(const char *s, int n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Without types in the spec: byte tokens are recognised by their text, BOS/EOS are control
 * tokens and the unknown token is unknown, as every real vocabulary has them. */
static int infer_type(const mt_vocab_spec *spec, int id) {
    if (spec->types && spec->types[id] != 0) return spec->types[id];
    if (spec->types) return MT_TOKTYPE_NORMAL; /* GGUF's "undefined" */
    if (id == spec->bos_id || id == spec->eos_id) return MT_TOKTYPE_CONTROL;
    if (id == spec->unk_id) return MT_TOKTYPE_UNKNOWN;
    const char *s = spec->tokens[id];
    if (spec->kind == MT_TOK_SPM && parse_byte_token(s, (int)strlen(s)) >= 0) return MT_TOKTYPE_BYTE;
    return MT_TOKTYPE_NORMAL;
}

/* Writes the bytes token `id` decodes to at out (which has text_len + 1 bytes); returns
 * the length. */
static int make_piece(const mt_tokenizer *t, int id, char *out) {
    const char *s = t->text[id];
    int n = t->text_len[id], type = t->type[id], k = 0;
    if (type == MT_TOKTYPE_CONTROL || type == MT_TOKTYPE_UNKNOWN || type == MT_TOKTYPE_UNUSED) return 0;
    if (type == MT_TOKTYPE_BYTE && parse_byte_token(s, n) >= 0) {
        out[0] = (char)parse_byte_token(s, n);
        return 1;
    }
    if (t->kind == MT_TOK_SPM) {
        for (int i = 0; i < n; i++) {
            if (i + 2 < n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
                out[k++] = ' ';
                i += 2;
            } else out[k++] = s[i];
        }
        return k;
    }
    if (type == MT_TOKTYPE_USER_DEFINED) { /* HF added tokens are stored as raw text */
        memcpy(out, s, (size_t)n);
        return n;
    }
    for (int i = 0; i < n;) {
        uint32_t cp;
        int len = mt_utf8_decode((const unsigned char *)s + i, (size_t)(n - i), &cp);
        int b = len ? mt_gpt2_cp_to_byte(cp) : -1;
        if (b >= 0) out[k++] = (char)b;
        else { /* not a mapped byte: keep the text as it is */
            if (!len) len = 1;
            memcpy(out + k, s + i, (size_t)len);
            k += len;
        }
        i += len;
    }
    return k;
}

static mt_status copy_tokens(mt_tokenizer *t, const mt_vocab_spec *spec) {
    int n = spec->n_vocab;
    size_t total = 0;
    t->text = calloc((size_t)n, sizeof *t->text);
    t->piece = calloc((size_t)n, sizeof *t->piece);
    t->text_len = calloc((size_t)n, sizeof *t->text_len);
    t->piece_len = calloc((size_t)n, sizeof *t->piece_len);
    t->score = calloc((size_t)n, sizeof *t->score);
    t->type = calloc((size_t)n, sizeof *t->type);
    if (!t->text || !t->piece || !t->text_len || !t->piece_len || !t->score || !t->type)
        return mt_error(MT_ERR_NOMEM, "out of memory for %d tokens", n);
    for (int i = 0; i < n; i++) {
        t->text_len[i] = (int)strlen(spec->tokens[i]);
        total += 2 * ((size_t)t->text_len[i] + 1); /* a piece is never longer than its text */
        if (t->text_len[i] > t->max_token_bytes) t->max_token_bytes = t->text_len[i];
    }
    t->arena = malloc(total);
    if (!t->arena) return mt_error(MT_ERR_NOMEM, "out of memory for %d tokens", n);
    char *p = t->arena;
    for (int i = 0; i < n; i++) {
        t->text[i] = p;
        memcpy(p, spec->tokens[i], (size_t)t->text_len[i] + 1);
        p += t->text_len[i] + 1;
        /* SPM without scores: vocabulary order (the order SentencePiece BPE learned them) */
        t->score[i] = spec->scores ? spec->scores[i] : (spec->kind == MT_TOK_SPM ? (float)-i : 0.0f);
        t->type[i] = infer_type(spec, i);
        t->piece[i] = p;
        t->piece_len[i] = make_piece(t, i, p);
        p[t->piece_len[i]] = 0;
        p += t->piece_len[i] + 1;
    }
    return MT_OK;
}

static void find_byte_tokens(mt_tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        char s[8];
        int n;
        if (t->kind == MT_TOK_SPM) n = snprintf(s, sizeof s, "<0x%02X>", b);
        else n = mt_utf8_encode(mt_gpt2_byte_to_cp((unsigned char)b), s);
        t->byte_id[b] = mt_strmap_find(&t->vocab, s, (size_t)n);
    }
}

/* Splits "left right" into two token ids. Normally at the only space; if a token itself
 * contains a space, the first split whose halves are both tokens. */
static int split_merge(const mt_tokenizer *t, const char *m, int *left, int *right) {
    for (const char *sp = strchr(m, ' '); sp; sp = strchr(sp + 1, ' ')) {
        *left = mt_strmap_find(&t->vocab, m, (size_t)(sp - m));
        *right = mt_strmap_find(&t->vocab, sp + 1, strlen(sp + 1));
        if (*left >= 0 && *right >= 0) return 1;
    }
    return 0;
}

/* Merges whose parts or result are not tokens are kept for writers but never applied
 * (llama.cpp does the same; HF would refuse the file). */
static mt_status build_merges(mt_tokenizer *t, const mt_vocab_spec *spec) {
    int n = spec->n_merges;
    t->merge = calloc((size_t)n + 1, sizeof *t->merge);
    if (!t->merge) return mt_error(MT_ERR_NOMEM, "out of memory for %d merges", n);
    mt_status s = pairmap_init(&t->pairs, n);
    if (s) return s;
    t->n_merges = n;
    char *buf = malloc(2 * MT_TOK_MAX_TOKEN_BYTES + 2);
    if (!buf) return mt_error(MT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        if (!(t->merge[i] = strdup(spec->merges[i]))) {
            free(buf);
            return mt_error(MT_ERR_NOMEM, "out of memory for %d merges", n);
        }
        int left, right;
        if (!split_merge(t, spec->merges[i], &left, &right)) continue;
        size_t ll = (size_t)t->text_len[left], rl = (size_t)t->text_len[right];
        memcpy(buf, t->text[left], ll);
        memcpy(buf + ll, t->text[right], rl);
        int merged = mt_strmap_find(&t->vocab, buf, ll + rl);
        if (merged >= 0) pairmap_insert(&t->pairs, left, right, i, merged);
    }
    free(buf);
    return MT_OK;
}

static int is_special_type(int type) {
    return type == MT_TOKTYPE_CONTROL || type == MT_TOKTYPE_USER_DEFINED || type == MT_TOKTYPE_UNKNOWN;
}

/* qsort has no context argument; thread-local keeps concurrent builds apart */
static _Thread_local const mt_tokenizer *sort_tok;

static int special_cmp(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    unsigned char fx = (unsigned char)sort_tok->text[x][0], fy = (unsigned char)sort_tok->text[y][0];
    if (fx != fy) return fx < fy ? -1 : 1;
    if (sort_tok->text_len[x] != sort_tok->text_len[y]) return sort_tok->text_len[x] > sort_tok->text_len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Special tokens are matched in text by first byte, then longest first. */
static mt_status build_specials(mt_tokenizer *t) {
    int n = 0;
    for (int i = 0; i < t->n_vocab; i++) n += is_special_type(t->type[i]) && t->text_len[i] > 0;
    t->special = malloc(((size_t)n + 1) * sizeof *t->special);
    if (!t->special) return mt_error(MT_ERR_NOMEM, "out of memory");
    t->n_special = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if (is_special_type(t->type[i]) && t->text_len[i] > 0) t->special[t->n_special++] = i;
    sort_tok = t;
    qsort(t->special, (size_t)n, sizeof *t->special, special_cmp);
    sort_tok = NULL;
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < n && (unsigned char)t->text[t->special[k]][0] < b) k++;
        t->special_start[b] = k;
    }
    return MT_OK;
}

/* Whether no mergeable token has U+2581 right after a character other than U+2581. */
static int spm_words_independent(const mt_tokenizer *t) {
    for (int id = 0; id < t->n_vocab; id++) {
        if (t->type[id] != MT_TOKTYPE_NORMAL && t->type[id] != MT_TOKTYPE_USER_DEFINED) continue;
        const char *s = t->text[id];
        for (const char *p = strstr(s + 1, "\xe2\x96\x81"); p; p = strstr(p + 1, "\xe2\x96\x81"))
            if (p - s < 3 || memcmp(p - 3, "\xe2\x96\x81", 3) != 0) return 0;
    }
    return 1;
}

static mt_status compile_pre(mt_tokenizer *t, int k, const char *pattern) {
    int err;
    PCRE2_SIZE off;
    t->pre_pattern[k] = strdup(pattern);
    if (!t->pre_pattern[k]) return mt_error(MT_ERR_NOMEM, "out of memory");
    t->pre_code[k] = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!t->pre_code[k]) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return mt_error(MT_ERR_FORMAT, "pre-tokenizer regex \"%.200s\": %s at offset %zu", pattern, (char *)msg, (size_t)off);
    }
    pcre2_jit_compile(t->pre_code[k], PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    t->n_pre = k + 1;
    return MT_OK;
}

static mt_status build_pre(mt_tokenizer *t, const mt_vocab_spec *spec) {
    const char *patterns[MT_TOK_MAX_PRE];
    int n = 0, ignore = 0;
    const char *name = spec->pre ? spec->pre : "gpt2";
    if (t->kind == MT_TOK_SPM) return MT_OK;
    if (spec->n_pre_regex > 0) {
        n = spec->n_pre_regex;
        for (int k = 0; k < n; k++) patterns[k] = spec->pre_regex[k];
        const char *known = mt_tok_pre_name(patterns, n);
        name = known ? known : spec->pre ? spec->pre : "custom";
    } else if (!mt_tok_pre_lookup(name, patterns, &n, &ignore)) {
        return mt_error(MT_ERR_UNSUPPORTED, "unknown pre-tokenizer \"%.64s\"", name);
    }
    snprintf(t->pre_name, sizeof t->pre_name, "%s", pre_alias(name));
    t->ignore_merges = spec->ignore_merges || ignore;
    for (int k = 0; k < n; k++) {
        if (!patterns[k]) return mt_error(MT_ERR_ARG, "pre-tokenizer regex %d missing", k);
        mt_status s = compile_pre(t, k, patterns[k]);
        if (s) return s;
    }
    return MT_OK;
}

static mt_status build(mt_tokenizer *t, const mt_vocab_spec *spec) {
    mt_status s = validate_spec(spec);
    if (s) return s;
    t->kind = spec->kind;
    t->n_vocab = spec->n_vocab;
    t->bos_id = spec->bos_id;
    t->eos_id = spec->eos_id;
    t->unk_id = spec->unk_id;
    t->pad_id = spec->pad_id;
    t->add_bos = spec->add_bos != 0;
    t->add_eos = spec->add_eos != 0;
    t->add_space_prefix = spec->kind == MT_TOK_SPM && spec->add_space_prefix != 0;
    if ((s = copy_tokens(t, spec))) return s;
    if ((s = strmap_init(&t->vocab, t->text, t->text_len, t->n_vocab))) return s;
    for (int i = 0; i < t->n_vocab; i++) strmap_insert(&t->vocab, i);
    find_byte_tokens(t);
    t->spm_word_split = t->kind == MT_TOK_SPM && spm_words_independent(t);
    /* SPM merges by score; a merge list given with it is not used */
    if ((s = build_merges(t, t->kind == MT_TOK_BPE ? spec : &(mt_vocab_spec){0}))) return s;
    if ((s = build_specials(t))) return s;
    return build_pre(t, spec);
}

mt_status mt_tokenizer_from_spec(const mt_vocab_spec *spec, mt_tokenizer **out) {
    if (!out) return mt_error(MT_ERR_ARG, "mt_tokenizer_from_spec: out is NULL");
    *out = NULL;
    if (!spec) return mt_error(MT_ERR_ARG, "mt_tokenizer_from_spec: spec is NULL");
    mt_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_status s = build(t, spec);
    if (s) {
        mt_tokenizer_free(t);
        return s;
    }
    *out = t;
    return MT_OK;
}

void mt_tokenizer_free(mt_tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->text_len);
    free(t->piece);
    free(t->piece_len);
    free(t->arena);
    free(t->score);
    free(t->type);
    free(t->vocab.hash);
    free(t->vocab.id);
    for (int i = 0; t->merge && i < t->n_merges; i++) free(t->merge[i]);
    free(t->merge);
    free(t->pairs.key);
    free(t->pairs.rank);
    free(t->pairs.merged);
    free(t->special);
    for (int k = 0; k < MT_TOK_MAX_PRE; k++) {
        free(t->pre_pattern[k]);
        pcre2_code_free(t->pre_code[k]);
    }
    free(t);
}

/* ---- accessors ------------------------------------------------------------------------ */

static int valid_id(const mt_tokenizer *t, int id) { return t && id >= 0 && id < t->n_vocab; }

int mt_tokenizer_vocab_size(const mt_tokenizer *t) { return t ? t->n_vocab : 0; }
int mt_tokenizer_bos(const mt_tokenizer *t) { return t ? t->bos_id : -1; }
int mt_tokenizer_eos(const mt_tokenizer *t) { return t ? t->eos_id : -1; }
int mt_tokenizer_unk(const mt_tokenizer *t) { return t ? t->unk_id : -1; }
int mt_tokenizer_pad(const mt_tokenizer *t) { return t ? t->pad_id : -1; }
mt_tokenizer_kind mt_tokenizer_kind_of(const mt_tokenizer *t) { return t->kind; }
const char *mt_tokenizer_token_text(const mt_tokenizer *t, int id) { return valid_id(t, id) ? t->text[id] : NULL; }
float mt_tokenizer_score(const mt_tokenizer *t, int id) { return valid_id(t, id) ? t->score[id] : 0.0f; }
int mt_tokenizer_type(const mt_tokenizer *t, int id) { return valid_id(t, id) ? t->type[id] : 0; }
int mt_tokenizer_n_merges(const mt_tokenizer *t) { return t ? t->n_merges : 0; }
const char *mt_tokenizer_merge(const mt_tokenizer *t, int i) {
    return t && i >= 0 && i < t->n_merges ? t->merge[i] : NULL;
}
const char *mt_tokenizer_pre(const mt_tokenizer *t) { return t && t->kind == MT_TOK_BPE ? t->pre_name : NULL; }
int mt_tokenizer_n_pre_regex(const mt_tokenizer *t) { return t ? t->n_pre : 0; }
const char *mt_tokenizer_pre_regex(const mt_tokenizer *t, int i) {
    return t && i >= 0 && i < t->n_pre ? t->pre_pattern[i] : NULL;
}
int mt_tokenizer_add_bos(const mt_tokenizer *t) { return t ? t->add_bos : 0; }
int mt_tokenizer_add_eos(const mt_tokenizer *t) { return t ? t->add_eos : 0; }
int mt_tokenizer_add_space_prefix(const mt_tokenizer *t) { return t ? t->add_space_prefix : 0; }
int mt_tokenizer_ignore_merges(const mt_tokenizer *t) { return t ? t->ignore_merges : 0; }
int mt_tokenizer_max_token_bytes(const mt_tokenizer *t) { return t ? t->max_token_bytes : 0; }
int mt_tokenizer_find(const mt_tokenizer *t, const char *text) {
    return t && text ? mt_strmap_find(&t->vocab, text, strlen(text)) : -1;
}
