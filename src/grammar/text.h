/* A growing printf buffer shared by the grammar writers (JSON Schema, SQL). UTF-8 decoding
 * comes from the tokenizer layer (mt_utf8_decode in tokenizer/tok_internal.h). */
#ifndef MT_GRAMMAR_TEXT_H
#define MT_GRAMMAR_TEXT_H
#include <stddef.h>
#include <stdint.h>

/* Text appended printf-style; an allocation failure sets oom and later appends do nothing.
 * Zero-initialise; free(s) when done. */
typedef struct { char *s; size_t len, cap; int oom; } mt_gtext;
void mt_gtext_printf(mt_gtext *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
