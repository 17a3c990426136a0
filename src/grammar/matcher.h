/* The grammar matcher: the parse state of one generation (a set of stacks of grammar
 * positions, as llama.cpp's, plus the bytes of an unfinished UTF-8 character), advanced
 * byte by byte, and the per-step mask of the tokens whose bytes cannot continue the parse.
 *
 * Stacks are hash-consed linked nodes, so equal stacks are equal ids and a set of stacks is
 * a short list of ints; the step of one stack over one code point is computed once and
 * cached. The mask walks a trie of the vocabulary's token bytes, carrying the stack set
 * down and pruning a subtree as soon as its prefix cannot continue. */
#ifndef MT_GRAMMAR_MATCHER_H
#define MT_GRAMMAR_MATCHER_H
#include <stddef.h>
#include "memtune.h"

typedef struct mt_grammar_matcher mt_grammar_matcher;

/* tok may be NULL: the matcher then takes bytes only (mt_grammar_match). */
mt_status mt_grammar_matcher_new(const mt_grammar *g, const mt_tokenizer *tok, mt_grammar_matcher **out);
void mt_grammar_matcher_free(mt_grammar_matcher *m);
/* Back to the start of the grammar. strip_first_space: the first token's leading space is
 * dropped from the text (an SPM tokenizer's first piece, see mt_detok_push), so the grammar
 * sees the token without it. */
mt_status mt_grammar_matcher_reset(mt_grammar_matcher *m, int strip_first_space);
/* Sets logits[i] = -inf for every token that cannot continue the parse (and for EOS where
 * the grammar cannot end). MT_ERR_ARG when no token at all can continue. */
mt_status mt_grammar_matcher_mask(mt_grammar_matcher *m, float *logits, int n_vocab);
/* Whether the mask would allow token id now (1 or 0; -1 on an error, mt_last_error says
 * which), without building the mask or changing the state: greedy decoding checks the most
 * likely token first and masks only when the grammar refuses it. */
int mt_grammar_matcher_allows(mt_grammar_matcher *m, int id);
/* Advances the state over a token (EOS ends it). MT_ERR_ARG if it cannot continue. */
mt_status mt_grammar_matcher_accept_token(mt_grammar_matcher *m, int id);
mt_status mt_grammar_matcher_accept_bytes(mt_grammar_matcher *m, const char *bytes, size_t len);
/* The text so far is a complete match. */
int mt_grammar_matcher_can_end(const mt_grammar_matcher *m);
/* Nothing but the end can follow (or EOS was accepted). */
int mt_grammar_matcher_finished(const mt_grammar_matcher *m);

/* The sampler's constraint hook (model/sampler.h) over a matcher: 0 on success, -1 with
 * mt_last_error() set. */
int mt_grammar_hook_mask(void *matcher, float *logits, int n_vocab);
int mt_grammar_hook_accept(void *matcher, int token);
int mt_grammar_hook_allows(void *matcher, int token); /* 1, 0, or -1 with mt_last_error() set */

#endif
