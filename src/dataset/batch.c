/* Tokenizing examples with their loss masks, and packing them into rows. */
#include "dataset/batch.h"
#include "core/error.h"
#include "core/rng.h"
#include "tokenizer/tokenizer.h"
#include <stdlib.h>
#include <string.h>

void mt_token_seq_free(mt_token_seq *s) {
    free(s->ids);
    free(s->learn);
    memset(s, 0, sizeof *s);
}

static int seq_append(mt_token_seq *s, const int *ids, int n, int learn, int *cap) {
    if (s->n + n > *cap) {
        int c = (s->n + n) * 2 + 16;
        int *i2 = realloc(s->ids, (size_t)c * sizeof *i2);
        if (!i2) return 0;
        s->ids = i2;
        unsigned char *l2 = realloc(s->learn, (size_t)c);
        if (!l2) return 0;
        s->learn = l2;
        *cap = c;
    }
    memcpy(s->ids + s->n, ids, (size_t)n * sizeof *ids);
    memset(s->learn + s->n, learn, (size_t)n);
    s->n += n;
    return 1;
}

static int is_stop(const mt_seq_builder *b, int id) {
    return id == b->eos_id || mt_tokenizer_type(b->tok, id) == MT_TOKTYPE_CONTROL;
}

/* Encodes text[from, to) as a piece of the sequence: the first piece gets the tokenizer's
 * BOS and SPM prefix space, later pieces continue the text with neither. */
static mt_status append_piece(const mt_seq_builder *b, mt_token_seq *s, int *cap, const char *text,
                              size_t from, size_t to, int first, int learn) {
    int *ids = NULL, n = 0;
    mt_status st = mt_tokenizer_encode_piece(b->tok, text + from, to - from, first, &ids, &n);
    if (st == MT_OK && !seq_append(s, ids, n, learn, cap)) st = mt_error(MT_ERR_NOMEM, "out of memory");
    free(ids);
    return st;
}

static const char *token_text_or_null(const mt_tokenizer *t, int id) {
    return id >= 0 ? mt_tokenizer_token_text(t, id) : NULL;
}

static mt_status render_spans(const mt_seq_builder *b, const mt_example *e, char **text,
                              mt_chat_span **spans, int *n_spans) {
    const mt_tokenizer *t = b->tok;
    return mt_chat_render_spans(b->tpl, e->messages, e->n_messages,
                                token_text_or_null(t, mt_tokenizer_bos(t)),
                                token_text_or_null(t, mt_tokenizer_eos(t)), text, spans, n_spans);
}

static mt_status chat_to_seq(const mt_seq_builder *b, const mt_example *e, mt_token_seq *out) {
    char *text = NULL;
    mt_chat_span *spans = NULL;
    int n_spans = 0, cap = 0, eos = b->eos_id;
    mt_status st = render_spans(b, e, &text, &spans, &n_spans);
    size_t at = 0;
    for (int i = 0; st == MT_OK && i < n_spans; i++) {
        st = append_piece(b, out, &cap, text, at, spans[i].begin, at == 0, 0);
        if (st == MT_OK) st = append_piece(b, out, &cap, text, spans[i].begin, spans[i].end, spans[i].begin == 0, 1);
        if (st == MT_OK && eos >= 0 && (out->n == 0 || !is_stop(b, out->ids[out->n - 1])) &&
            !seq_append(out, &eos, 1, 1, &cap))
            st = mt_error(MT_ERR_NOMEM, "out of memory");
        at = spans[i].end;
    }
    /* what the template writes after the last answer is never generated: dropped */
    free(text);
    free(spans);
    return st;
}

static mt_status text_to_seq(const mt_seq_builder *b, const mt_example *e, mt_token_seq *out) {
    int cap = 0;
    mt_status st = append_piece(b, out, &cap, e->text, 0, strlen(e->text), 1, 1);
    if (st == MT_OK && b->eos_id >= 0 && !seq_append(out, &b->eos_id, 1, 1, &cap))
        st = mt_error(MT_ERR_NOMEM, "out of memory");
    if (st == MT_OK && out->n > 0 && out->ids[0] == b->bos_id) out->learn[0] = 0;
    return st;
}

mt_status mt_example_to_seq(const mt_seq_builder *b, const mt_example *e, mt_token_seq *out) {
    memset(out, 0, sizeof *out);
    mt_status st = e->messages ? chat_to_seq(b, e, out) : text_to_seq(b, e, out);
    if (st) mt_token_seq_free(out);
    return st;
}

mt_status mt_example_prompt_ids(const mt_seq_builder *b, const mt_example *e, int **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (!e->messages || e->n_messages < 1 || strcmp(e->messages[e->n_messages - 1].role, "assistant"))
        return mt_error(MT_ERR_ARG, "example has no final assistant answer");
    const mt_tokenizer *t = b->tok;
    char *text = NULL;
    mt_status st = mt_chat_template_render(b->tpl, e->messages, e->n_messages - 1, 1,
                                           token_text_or_null(t, mt_tokenizer_bos(t)),
                                           token_text_or_null(t, mt_tokenizer_eos(t)), &text);
    if (st == MT_OK) st = mt_tokenizer_encode_piece(t, text, strlen(text), 1, ids, n);
    free(text);
    return st;
}

void mt_packed_data_free(mt_packed_data *p) {
    for (int i = 0; i < p->n_seqs; i++) mt_token_seq_free(&p->seqs[i]);
    free(p->seqs);
    memset(p, 0, sizeof *p);
}

/* A row holds seq_len positions; a sequence of n tokens fills n - 1 of them (inputs
 * 0..n-2 predicting 1..n-1). Longer sequences are cut to seq_len + 1 tokens. */
static void cut_to_row(mt_token_seq *s, int seq_len, long *n_truncated) {
    if (s->n > seq_len + 1) {
        s->n = seq_len + 1;
        (*n_truncated)++;
    }
}

mt_status mt_packed_data_build(const mt_seq_builder *b, const mt_dataset *ds, int seq_len, mt_packed_data *out) {
    memset(out, 0, sizeof *out);
    out->seq_len = seq_len;
    out->seqs = calloc((size_t)(ds->n ? ds->n : 1), sizeof *out->seqs);
    if (!out->seqs) return mt_error(MT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < ds->n; i++) {
        const mt_example *e = &ds->items[i];
        mt_status st = mt_example_to_seq(b, e, &out->seqs[i]);
        if (st) {
            mt_packed_data_free(out);
            return mt_error_prefix(st, "%s: example %d", ds->files[e->source_file], e->source_line);
        }
        out->n_seqs++;
        cut_to_row(&out->seqs[i], seq_len, &out->n_truncated);
        out->tokens_total += out->seqs[i].n;
        for (int k = 1; k < out->seqs[i].n; k++) out->targets_total += out->seqs[i].learn[k];
    }
    return MT_OK;
}

void mt_epoch_plan_free(mt_epoch_plan *e) {
    free(e->order);
    free(e->row_first);
    free(e->row_count);
    memset(e, 0, sizeof *e);
}

mt_status mt_epoch_plan_build(const mt_packed_data *p, uint64_t seed, int epoch, int shuffle, mt_epoch_plan *out) {
    memset(out, 0, sizeof *out);
    int n = p->n_seqs;
    out->order = malloc((size_t)(n ? n : 1) * sizeof(int));
    out->row_first = malloc((size_t)(n ? n : 1) * sizeof(int));
    out->row_count = malloc((size_t)(n ? n : 1) * sizeof(int));
    if (!out->order || !out->row_first || !out->row_count) {
        mt_epoch_plan_free(out);
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) out->order[i] = i;
    if (shuffle) { /* Fisher-Yates with a stream that depends only on (seed, epoch) */
        mt_rng r;
        mt_rng_seed(&r, seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch + 1);
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(mt_rng_next(&r) % (uint64_t)(i + 1));
            int t = out->order[i];
            out->order[i] = out->order[j];
            out->order[j] = t;
        }
    }
    int used = p->seq_len; /* forces a new row for the first sequence */
    for (int i = 0; i < n; i++) {
        int need = p->seqs[out->order[i]].n - 1;
        if (need < 1) continue;
        if (used + need > p->seq_len) {
            out->row_first[out->n_rows] = i;
            out->row_count[out->n_rows++] = 0;
            used = 0;
        }
        out->row_count[out->n_rows - 1] = i - out->row_first[out->n_rows - 1] + 1;
        used += need;
    }
    return MT_OK;
}

int mt_fill_row(const mt_packed_data *p, const mt_epoch_plan *e, int row, int pad_id,
                int *inputs, int *targets, int *pos, int *doc) {
    int T = p->seq_len, at = 0, placed = 0;
    for (int k = 0; k < e->row_count[row]; k++) {
        const mt_token_seq *s = &p->seqs[e->order[e->row_first[row] + k]];
        if (s->n < 2) continue;
        for (int i = 0; i + 1 < s->n && at < T; i++, at++) {
            inputs[at] = s->ids[i];
            targets[at] = s->learn[i + 1] ? s->ids[i + 1] : -1;
            placed += s->learn[i + 1];
            pos[at] = i;
            doc[at] = k;
        }
    }
    for (; at < T; at++) {
        inputs[at] = pad_id;
        targets[at] = -1;
        pos[at] = at;
        doc[at] = -1 - at; /* padding attends only to itself */
    }
    return placed;
}
