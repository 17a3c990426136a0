/* llama2.c tokenizer files (tokenizer.bin, tok512.bin): reader and writer, side by side.
 *
 * Layout (little-endian): int32 max_token_length, then for every token float32 score,
 * int32 length and that many bytes. There is no token count: the file simply ends. The
 * exporter (llama2.c tokenizer.py) wrote SentencePiece pieces with U+2581 replaced by a
 * plain space and BOS/EOS as "\n<s>\n" and "\n</s>\n"; the reader undoes both so that the
 * tokenizer holds pieces exactly as SentencePiece and GGUF spell them, and the writer
 * redoes them so that llama2.c's run.c reads our files. Types are implied by position:
 * 0 is <unk>, 1 and 2 are BOS and EOS, the "<0xNN>" pieces are byte tokens. */
#include "tokenizer/tok_internal.h"
#include "core/error.h"
#include "core/file.h"
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *path;
    const uint8_t *data;
    size_t size;
    int count;
    int max_len;
} l2c_file;

static int32_t read_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static float read_f32(const uint8_t *p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}

/* First pass: checks every record against the file size and counts them. */
static mt_status count_tokens(l2c_file *f) {
    if (f->size < 4) return mt_error(MT_ERR_FORMAT, "%s: truncated header (%zu bytes)", f->path, f->size);
    f->max_len = read_i32(f->data);
    if (f->max_len <= 0 || f->max_len > MT_TOK_MAX_TOKEN_BYTES)
        return mt_error(MT_ERR_FORMAT, "%s: max_token_length %d out of range (1..%d)", f->path, f->max_len,
                        MT_TOK_MAX_TOKEN_BYTES);
    size_t pos = 4;
    f->count = 0;
    while (pos < f->size) {
        if (f->count >= MT_TOK_MAX_VOCAB)
            return mt_error(MT_ERR_FORMAT, "%s: more than %d tokens", f->path, MT_TOK_MAX_VOCAB);
        if (f->size - pos < 8) return mt_error(MT_ERR_FORMAT, "%s: truncated at token %d", f->path, f->count);
        int32_t len = read_i32(f->data + pos + 4);
        if (len < 0 || len > MT_TOK_MAX_TOKEN_BYTES)
            return mt_error(MT_ERR_FORMAT, "%s: token %d has length %d (limit %d)", f->path, f->count, len,
                            MT_TOK_MAX_TOKEN_BYTES);
        if (f->size - pos - 8 < (size_t)len)
            return mt_error(MT_ERR_FORMAT, "%s: truncated at token %d", f->path, f->count);
        pos += 8 + (size_t)len;
        f->count++;
    }
    return MT_OK;
}

/* The piece as SentencePiece spells it: ' ' -> U+2581, "\n<s>\n" -> "<s>". */
static char *piece_from_file(const uint8_t *p, int len, int id) {
    if (id == 1 && len == 5 && !memcmp(p, "\n<s>\n", 5)) return strdup("<s>");
    if (id == 2 && len == 6 && !memcmp(p, "\n</s>\n", 6)) return strdup("</s>");
    char *s = malloc(3 * (size_t)len + 1), *q = s;
    if (!s) return NULL;
    for (int i = 0; i < len; i++) {
        if (p[i] == ' ') {
            memcpy(q, "\xe2\x96\x81", 3);
            q += 3;
        } else *q++ = (char)p[i];
    }
    *q = 0;
    return s;
}

static int type_at(int id, const char *text) {
    if (id == 0) return MT_TOKTYPE_UNKNOWN;
    if (id == 1 || id == 2) return MT_TOKTYPE_CONTROL;
    char want[8];
    snprintf(want, sizeof want, "<0x%02X>", (id - 3) & 0xff);
    if (id >= 3 && id <= 258 && !strcmp(text, want)) return MT_TOKTYPE_BYTE;
    return MT_TOKTYPE_NORMAL;
}

typedef struct {
    char **tokens;
    float *scores;
    int *types;
    int n;
} token_table;

static void table_free(token_table *tt) {
    for (int i = 0; tt->tokens && i < tt->n; i++) free(tt->tokens[i]);
    free(tt->tokens);
    free(tt->scores);
    free(tt->types);
}

/* Second pass: copies the (already bounds-checked) records into a token table. */
static mt_status read_tokens(const l2c_file *f, token_table *tt) {
    tt->n = f->count;
    tt->tokens = calloc((size_t)f->count, sizeof *tt->tokens);
    tt->scores = malloc((size_t)f->count * sizeof *tt->scores);
    tt->types = malloc((size_t)f->count * sizeof *tt->types);
    if (!tt->tokens || !tt->scores || !tt->types) return mt_error(MT_ERR_NOMEM, "%s: out of memory", f->path);
    size_t pos = 4;
    for (int i = 0; i < f->count; i++) {
        int len = read_i32(f->data + pos + 4);
        const uint8_t *bytes = f->data + pos + 8;
        if (memchr(bytes, 0, (size_t)len)) return mt_error(MT_ERR_FORMAT, "%s: token %d contains a NUL byte", f->path, i);
        tt->scores[i] = read_f32(f->data + pos);
        if (tt->scores[i] != tt->scores[i]) return mt_error(MT_ERR_FORMAT, "%s: token %d has a NaN score", f->path, i);
        if (!(tt->tokens[i] = piece_from_file(bytes, len, i))) return mt_error(MT_ERR_NOMEM, "%s: out of memory", f->path);
        tt->types[i] = type_at(i, tt->tokens[i]);
        pos += 8 + (size_t)len;
    }
    return MT_OK;
}

static mt_status build_from_table(const char *path, const token_table *tt, mt_tokenizer **out) {
    mt_vocab_spec spec = {
        .kind = MT_TOK_SPM,
        .n_vocab = tt->n,
        .tokens = (const char *const *)tt->tokens,
        .scores = tt->scores,
        .types = tt->types,
        .unk_id = tt->n > 0 ? 0 : -1,
        .bos_id = tt->n > 1 ? 1 : -1,
        .eos_id = tt->n > 2 ? 2 : -1,
        .pad_id = -1,
        .add_bos = 1,
        .add_space_prefix = 1,
    };
    mt_status s = mt_tokenizer_from_spec(&spec, out);
    return s ? mt_error_prefix(s, "%s", path) : MT_OK;
}

mt_status mt_tokenizer_load_llama2c(const char *path, int vocab_size, mt_tokenizer **out) {
    if (!out || !path) return mt_error(MT_ERR_ARG, "mt_tokenizer_load_llama2c: path or out is NULL");
    *out = NULL;
    mt_mapped_file mf;
    mt_status s = mt_file_map(path, &mf);
    if (s) return s;
    l2c_file f = {.path = path, .data = mf.data, .size = mf.size};
    token_table tt = {0};
    if (!(s = count_tokens(&f))) {
        if (f.count == 0) s = mt_error(MT_ERR_FORMAT, "%s: truncated: no tokens after the header", path);
        else if (vocab_size > 0 && f.count != vocab_size)
            s = mt_error(MT_ERR_MISMATCH, "%s: holds %d tokens but the model's vocabulary has %d", path, f.count,
                         vocab_size);
    }
    if (!s) s = read_tokens(&f, &tt);
    if (!s) s = build_from_table(path, &tt, out);
    table_free(&tt);
    mt_file_unmap(&mf);
    return s;
}

/* ---- writer --------------------------------------------------------------------------- */

/* The token as llama2.c stores it (into buf, 3 * text length + 8 bytes). */
static int piece_to_file(const mt_tokenizer *t, int id, char *buf) {
    const char *s = mt_tokenizer_token_text(t, id);
    if (id == 1 && id == t->bos_id && !strcmp(s, "<s>")) return (int)(strcpy(buf, "\n<s>\n"), 5);
    if (id == 2 && id == t->eos_id && !strcmp(s, "</s>")) return (int)(strcpy(buf, "\n</s>\n"), 6);
    int n = 0;
    for (const char *p = s; *p; p++) {
        if (!memcmp(p, "\xe2\x96\x81", 3)) {
            buf[n++] = ' ';
            p += 2;
        } else buf[n++] = *p;
    }
    return n;
}

mt_status mt_tokenizer_save_llama2c(const mt_tokenizer *t, const char *path) {
    if (!t || !path) return mt_error(MT_ERR_ARG, "mt_tokenizer_save_llama2c: tokenizer or path is NULL");
    if (t->kind != MT_TOK_SPM)
        return mt_error(MT_ERR_UNSUPPORTED, "%s: llama2.c tokenizer files hold SentencePiece vocabularies only", path);
    char *buf = malloc(3 * (size_t)t->max_token_bytes + 8);
    if (!buf) return mt_error(MT_ERR_NOMEM, "out of memory");
    int32_t max_len = 1;
    for (int i = 0; i < t->n_vocab; i++) {
        int n = piece_to_file(t, i, buf);
        if (n > max_len) max_len = n;
    }
    mt_atomic_file f;
    mt_status s = mt_atomic_open(&f, path);
    if (!s) s = mt_atomic_write(&f, &max_len, 4);
    for (int i = 0; i < t->n_vocab && !s; i++) {
        int32_t n = piece_to_file(t, i, buf);
        float score = t->score[i];
        if (!(s = mt_atomic_write(&f, &score, 4)) && !(s = mt_atomic_write(&f, &n, 4))) s = mt_atomic_write(&f, buf, (size_t)n);
    }
    free(buf);
    if (s) {
        mt_atomic_abort(&f);
        return s;
    }
    return mt_atomic_commit(&f);
}
