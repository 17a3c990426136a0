/* From examples to training batches.
 *
 * An example becomes one token sequence with a per-token "learn this" flag: a chat example
 * is rendered with the chat template, and only the assistant spans the template reports
 * (the answer and its end marker) are learned, plus EOS after each answer when the span
 * does not already end in a stop token; a raw {"text"} example is BOS + text + EOS, all
 * learned. Sequences are packed several to a row of seq_len positions: attention stays
 * inside each example (doc ids) and positions restart at 0 for each. A sequence longer than
 * a row is cut to fit and counted. The order of examples is a seeded shuffle per epoch, so
 * the batches of any epoch can be rebuilt exactly on resume. */
#ifndef MT_DATASET_BATCH_H
#define MT_DATASET_BATCH_H
#include "memtune.h"
#include "template/chat_template.h"
#include "dataset/data.h"

typedef struct {
    int *ids;
    unsigned char *learn; /* learn[i]: token i is a target the model is trained to produce */
    int n;
} mt_token_seq;

typedef struct {
    const mt_tokenizer *tok;
    const mt_chat_template *tpl;
    int eos_id;            /* appended after answers; also a stop token */
    int bos_id;            /* starts raw text; -1 when the tokenizer has none */
} mt_seq_builder;

/* Tokenizes one example into a sequence. */
mt_status mt_example_to_seq(const mt_seq_builder *b, const mt_example *e, mt_token_seq *out);
void mt_token_seq_free(mt_token_seq *s);
/* The prompt of a chat example for inference: every message but the last (an assistant
 * answer), rendered with add_generation_prompt, tokenized as in training. */
mt_status mt_example_prompt_ids(const mt_seq_builder *b, const mt_example *e, int **ids, int *n);

typedef struct {
    mt_token_seq *seqs;
    int n_seqs;
    long n_truncated;      /* sequences cut to fit a row */
    long tokens_total;     /* tokens over all sequences (after cutting) */
    long targets_total;    /* learned targets over all sequences */
    int seq_len;
} mt_packed_data;

/* Tokenizes every example; fails on the first example that cannot be rendered. */
mt_status mt_packed_data_build(const mt_seq_builder *b, const mt_dataset *ds, int seq_len, mt_packed_data *out);
void mt_packed_data_free(mt_packed_data *p);

/* One epoch's rows: order[i] = index of the sequence placed i-th (seeded shuffle), and
 * rows described by (first, count) into order. Rebuilt deterministically from (seed, epoch). */
typedef struct {
    int *order;
    int *row_first, *row_count;
    int n_rows;
} mt_epoch_plan;

mt_status mt_epoch_plan_build(const mt_packed_data *p, uint64_t seed, int epoch, int shuffle, mt_epoch_plan *out);
void mt_epoch_plan_free(mt_epoch_plan *e);

/* Fills one row (seq_len positions) of a batch: inputs, targets (-1 = not learned),
 * positions and document ids; padding uses pad_id with target -1. Returns targets placed. */
int mt_fill_row(const mt_packed_data *p, const mt_epoch_plan *e, int row, int pad_id,
                int *inputs, int *targets, int *pos, int *doc);

#endif
