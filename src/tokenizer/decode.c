/* Decoding: token ids back to text. Each token's raw bytes were computed when the
 * tokenizer was built; here they are joined, with two subtleties. A character may be split
 * over several tokens (SPM byte tokens <0xE2><0x96><0x81>, byte-level BPE pieces of an
 * emoji), so the streaming decoder holds an unfinished UTF-8 sequence until its last byte
 * arrives and only ever hands out whole characters. And SentencePiece's dummy prefix: the
 * first piece of an SPM text starts with the space the encoder added, which is dropped.
 * Also the strict UTF-8 helpers the rest of the tokenizer uses. */
#include "tokenizer/tok_internal.h"
#include "core/error.h"
#include <stdlib.h>
#include <string.h>

/* ---- UTF-8 ---------------------------------------------------------------------------- */

int mt_utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

int mt_utf8_seq_len(unsigned char lead) {
    if (lead >= 0xc2 && lead <= 0xdf) return 2;
    if (lead >= 0xe0 && lead <= 0xef) return 3;
    if (lead >= 0xf0 && lead <= 0xf4) return 4;
    return 1;
}

/* Whether b may follow the len bytes of an unfinished sequence in p. The second byte
 * carries the rules against overlong forms, surrogates and code points past U+10FFFF. */
static int utf8_continues(const unsigned char *p, int len, unsigned char b) {
    if ((b & 0xc0) != 0x80) return 0;
    if (len != 1) return 1;
    switch (p[0]) {
    case 0xe0: return b >= 0xa0;
    case 0xed: return b <= 0x9f;
    case 0xf0: return b >= 0x90;
    case 0xf4: return b <= 0x8f;
    default: return 1;
    }
}

int mt_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    int len = mt_utf8_seq_len(s[0]);
    if (len == 1 || n < (size_t)len) return 0;
    uint32_t v = s[0] & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if (!utf8_continues(s, i, s[i])) return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    *cp = v;
    return len;
}

size_t mt_utf8_valid_prefix(const char *s, size_t n) {
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        if ((unsigned char)s[i] < 0x80) { /* ASCII runs are the common case */
            i++;
            continue;
        }
        int len = mt_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (!len) break;
        i += (size_t)len;
    }
    return i;
}

int mt_utf8_valid(const char *s, size_t len) { return s && mt_utf8_valid_prefix(s, len) == len; }

/* ---- pieces --------------------------------------------------------------------------- */

const char *mt_tokenizer_token_bytes(const mt_tokenizer *t, int id, size_t *len) {
    if (!t || id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return "";
    }
    if (len) *len = (size_t)t->piece_len[id];
    return t->piece[id];
}

/* ---- streaming decoder ---------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t cap; /* including the NUL */
    size_t n;
} text_out;

/* Whole characters only, so a full buffer cuts the text at a character boundary. */
static void put(text_out *o, const void *p, size_t n) {
    if (o->cap == 0 || o->n + n > o->cap - 1) return;
    memcpy(o->buf + o->n, p, n);
    o->n += n;
}

static const char replacement_char[] = "\xef\xbf\xbd"; /* U+FFFD */

static void feed_byte(mt_detok_stream *s, text_out *o, unsigned char b) {
    if (s->n_pending > 0) {
        if (utf8_continues(s->pending, s->n_pending, b)) {
            s->pending[s->n_pending++] = b;
            if (s->n_pending == mt_utf8_seq_len(s->pending[0])) {
                put(o, s->pending, (size_t)s->n_pending);
                s->n_pending = 0;
            }
            return;
        }
        put(o, replacement_char, 3); /* the unfinished sequence; b starts afresh */
        s->n_pending = 0;
    }
    if (b < 0x80) put(o, &b, 1);
    else if (mt_utf8_seq_len(b) > 1) s->pending[s->n_pending++] = b;
    else put(o, replacement_char, 3);
}

void mt_detok_init(mt_detok_stream *s) { memset(s, 0, sizeof *s); }

static int strips_leading_space(const mt_tokenizer *t, const mt_detok_stream *s, int id) {
    int type = t->type[id];
    return t->kind == MT_TOK_SPM && t->add_space_prefix && s->n_emitted_tokens == 0 &&
           (type == MT_TOKTYPE_NORMAL || type == MT_TOKTYPE_USER_DEFINED) && t->piece[id][0] == ' ';
}

size_t mt_detok_push(const mt_tokenizer *t, mt_detok_stream *s, int id, char *buf, size_t cap) {
    text_out o = {buf, cap, 0};
    if (cap) buf[0] = 0;
    if (!t || !s || id < 0 || id >= t->n_vocab || t->piece_len[id] == 0) return 0;
    if (s->n_pending < 0 || s->n_pending > 3) s->n_pending = 0; /* never trust the caller's struct */
    const unsigned char *p = (const unsigned char *)t->piece[id];
    size_t n = (size_t)t->piece_len[id];
    if (strips_leading_space(t, s, id)) {
        p++;
        n--;
    }
    s->n_emitted_tokens++;
    for (size_t i = 0; i < n; i++) feed_byte(s, &o, p[i]);
    if (cap) buf[o.n] = 0;
    return o.n;
}

size_t mt_detok_flush(mt_detok_stream *s, char *buf, size_t cap) {
    text_out o = {buf, cap, 0};
    if (cap) buf[0] = 0;
    if (s && s->n_pending != 0) put(&o, replacement_char, 3);
    if (s) s->n_pending = 0;
    if (cap) buf[o.n] = 0;
    return o.n;
}

mt_status mt_detokenize(const mt_tokenizer *t, const int *ids, int n_ids, char **text) {
    if (!text) return mt_error(MT_ERR_ARG, "mt_detokenize: text is NULL");
    *text = NULL;
    if (!t || n_ids < 0 || (n_ids > 0 && !ids)) return mt_error(MT_ERR_ARG, "mt_detokenize: bad arguments");
    size_t cap = 8;
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return mt_error(MT_ERR_ARG, "token id %d at position %d out of range (vocabulary has %d tokens)", ids[i],
                            i, t->n_vocab);
        /* every byte may become a 3-byte U+FFFD, plus one flushed sequence */
        cap += 4 * (size_t)t->piece_len[ids[i]] + 4;
    }
    char *out = malloc(cap);
    if (!out) return mt_error(MT_ERR_NOMEM, "out of memory decoding %d tokens", n_ids);
    mt_detok_stream s;
    mt_detok_init(&s);
    size_t n = 0;
    for (int i = 0; i < n_ids; i++) n += mt_detok_push(t, &s, ids[i], out + n, cap - n);
    n += mt_detok_flush(&s, out + n, cap - n);
    out[n] = 0;
    *text = out;
    return MT_OK;
}
