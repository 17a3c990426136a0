/* Chat templates: the subset of Jinja2 that Hugging Face chat templates use, rendered the
 * way transformers' apply_chat_template renders them, so a conversation becomes exactly the
 * text the model was trained on.
 *
 * The engine follows transformers' Jinja environment: trim_blocks and lstrip_blocks are on
 * (the first newline after a {% %} or {# #} tag is dropped; spaces and tabs before a tag
 * at the start of a line are dropped), one trailing newline at the end of the template is
 * dropped, "\r\n" and "\r" become "\n", loop controls ({% break %}, {% continue %}) and
 * transformers' {% generation %} tag are available, tojson does not escape HTML and keeps
 * non-ASCII text as it is. Rendered variables: messages (a list of {role, content} dicts),
 * add_generation_prompt, bos_token, eos_token (undefined when NULL), tools and documents
 * (none, as transformers passes them); every other name is undefined.
 *
 * Supported: text, {{ }}, {% if/elif/else %}, {% for a[, b] in x [if cond] %} with loop.index,
 * index0, revindex, revindex0, first, last, length, previtem, nextitem, {% else %} on empty
 * loops, {% set x = e %}, {% set ns.attr = e %}, {% set x %}...{% endset %}, whitespace
 * control ({%- -%} {{- -}} {#- -#} and {%+ +%}), comments; literals (strings with Python
 * escapes, integers, floats, true/false/none in either case, lists, dicts, tuples), names,
 * attribute, subscript and slice access, calls, + - * / // % ** ~, comparisons (chained),
 * in / not in, and / or / not, a if c else b, filters and tests (see chat_template.c), string
 * and dict methods (strip, lstrip, rstrip, startswith, endswith, split, upper, lower, title,
 * capitalize, replace, join; get, items, keys, values) and the functions raise_exception,
 * namespace, range and dict.
 * Not supported (compile fails with MT_ERR_UNSUPPORTED): macros, call blocks, filter blocks,
 * include/import/extends/block, raw, with; filters and tests not listed in chat_template.c.
 * strftime_now is deliberately left undefined so renders are reproducible: templates that
 * ask for it (Llama 3.2) take their own fixed-date fallback.
 *
 * Safety: the source, every string and the output are capped (MT_CHAT_TEMPLATE_MAX_OUTPUT),
 * nesting depth and evaluation work are bounded, and memory used by values is capped, so
 * any input compiles or fails with a message naming the line and column. */
#ifndef MT_TEMPLATE_CHAT_TEMPLATE_H
#define MT_TEMPLATE_CHAT_TEMPLATE_H
#include <stddef.h>
#include "memtune.h"

#define MT_CHAT_TEMPLATE_MAX_OUTPUT ((size_t)64 << 20)

typedef struct mt_chat_template mt_chat_template;

typedef struct {
    const char *role;    /* "system", "user", "assistant", or any other role the template knows */
    const char *content; /* UTF-8 text; NULL is Python's None (prints "None") */
} mt_chat_message;

/* One trained span: bytes [begin, end) of the rendered text are what the model must
 * produce for assistant message `message` (its text and the template's end marker). */
typedef struct {
    int message;
    size_t begin, end;
} mt_chat_span;

/* Parses a template. Malformed templates fail with MT_ERR_FORMAT and a message naming the
 * line and column ("chat template line 3, column 14: ..."). */
mt_status mt_chat_template_compile(const char *source, mt_chat_template **out);
void mt_chat_template_free(mt_chat_template *t);
/* The source the template was compiled from (to store with a trained model). */
const char *mt_chat_template_source(const mt_chat_template *t);

/* Renders messages[0..n_messages) to *out (malloc'd, NUL-terminated; free() it).
 * bos_token / eos_token may be NULL (then undefined in the template, printing as "").
 * raise_exception(msg) in the template fails with MT_ERR_ARG and the message; other
 * runtime errors (a type error, an undefined attribute of an undefined value, a limit)
 * fail with MT_ERR_FORMAT naming the line and column. Thread-safe for a shared template. */
mt_status mt_chat_template_render(const mt_chat_template *t, const mt_chat_message *messages,
                                  int n_messages, int add_generation_prompt,
                                  const char *bos_token, const char *eos_token, char **out);

/* Renders the whole conversation (add_generation_prompt = 0) to *text and finds, for each
 * assistant message i, the bytes the model must learn to produce, by prefix rendering:
 *   before = render(messages[0..i), add_generation_prompt = 1)  -- the prompt for turn i
 *   after  = render(messages[0..i], add_generation_prompt = 0)  -- the prompt plus turn i
 * The span is after minus before, less any whitespace the template writes after the turn's
 * last non-space byte (a model stops at its end marker and never produces what follows it,
 * such as ChatML's "\n" after "<|im_end|>"). Examples: Llama 3 "Hi<|eot_id|>", ChatML
 * "Hi<|im_end|>", Llama 2 " Hi </s>". Each before must be a prefix of its after and each
 * after a prefix of *text, and eos_token must not follow a turn in *text where the turn
 * rendered last had none (Qwen1.5 writes <|im_end|> only when another message follows, so
 * its last turn would never teach the model to stop). A template or conversation that
 * fails these checks (also: a conversation opening with an assistant turn under a template
 * that then inserts a default system message) fails with MT_ERR_FORMAT, naming the message.
 * *spans is malloc'd (NULL when *n_spans is 0); free() both outputs. */
mt_status mt_chat_render_spans(const mt_chat_template *t, const mt_chat_message *messages,
                               int n_messages, const char *bos_token, const char *eos_token,
                               char **text, mt_chat_span **spans, int *n_spans);

/* The template memtune uses for models that have none (base models), in Jinja so that it
 * goes through the same engine and is saved with a trained model like any other:
 *
 *   bos_token, then for each message in order:
 *     assistant:            content + eos_token
 *     system, user, other:  content + "\n"
 *
 * add_generation_prompt adds nothing (a prompt already ends with "\n"). So an
 * {input, output} example renders as  bos + input + "\n" + output + eos  and the trained
 * span is  output + eos.  Pass bos_token = NULL when the tokenizer adds BOS itself. */
const char *mt_chat_template_default(void);

#endif
