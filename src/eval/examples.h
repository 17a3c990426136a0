/* Evaluation of prompt/answer examples (see mt_eval_data_file in memtune.h), and the one
 * piece memory tuning reuses: the greedy answer to one example, rendered as in training. */
#ifndef MT_EVAL_EXAMPLES_H
#define MT_EVAL_EXAMPLES_H
#include "memtune.h"
#include "dataset/batch.h"

/* Greedy answer (malloc'd text) to e's prompt and whether it equals e's expected output
 * after trimming whitespace at both ends. */
mt_status mt_eval_greedy_example(mt_model *m, const mt_seq_builder *b, const mt_example *e, char **produced, int *exact);

#endif
