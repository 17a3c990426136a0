/* The greedy answer to one prompt/answer example, rendered exactly as in training: what
 * evaluation (eval/examples.c) scores and what memory tuning (train/memory.c) checks its
 * facts with. It sits here, below both, so neither train nor eval includes the other. */
#ifndef MT_DATASET_GREEDY_H
#define MT_DATASET_GREEDY_H
#include "memtune.h"
#include "dataset/batch.h"

/* Greedy answer to the prompt ids, as text (malloc'd): at most max_new tokens, stopping at
 * b's EOS or a control token; logits holds one vocabulary row. */
mt_status mt_greedy_answer(mt_model *m, const mt_seq_builder *b, float *logits, const int *ids, int n,
                           int max_new, char **out);
/* The same with each token constrained by a grammar matcher (NULL: unconstrained), which
 * is reset to the start of the grammar first. */
struct mt_grammar_matcher;
mt_status mt_greedy_answer_constrained(mt_model *m, const mt_seq_builder *b, float *logits, const int *ids, int n,
                                       int max_new, struct mt_grammar_matcher *grammar, char **out);

/* Greedy answer (malloc'd text) to e's prompt and whether it equals e's expected output
 * after trimming whitespace at both ends. */
mt_status mt_eval_greedy_example(mt_model *m, const mt_seq_builder *b, const mt_example *e, char **produced, int *exact);

#endif
