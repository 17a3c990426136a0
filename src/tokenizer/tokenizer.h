/* Tokenizers: SentencePiece-style BPE with byte fallback (llama2.c .bin, GGUF "llama",
 * Llama 2 tokenizer.json) and byte-level BPE (GPT-2, SmolLM, Llama 3, Qwen2 tokenizer.json,
 * GGUF "gpt2") with Unicode-aware pre-tokenizer regexes (PCRE2).
 *
 * All vocabularies are built through mt_tokenizer_from_spec(); the file loaders below
 * parse their format and call it. Token text is stored as the model file stores it:
 * SPM pieces use U+2581 for space and "<0xNN>" for byte tokens; byte-level BPE tokens use
 * GPT-2's byte-to-unicode mapping. */
#ifndef MT_TOKENIZER_TOKENIZER_H
#define MT_TOKENIZER_TOKENIZER_H
#include <stddef.h>
#include "memtune.h"

typedef enum { MT_TOK_SPM = 0, MT_TOK_BPE = 1 } mt_tokenizer_kind;

/* GGUF token types */
enum { MT_TOKTYPE_NORMAL = 1, MT_TOKTYPE_UNKNOWN = 2, MT_TOKTYPE_CONTROL = 3,
       MT_TOKTYPE_USER_DEFINED = 4, MT_TOKTYPE_UNUSED = 5, MT_TOKTYPE_BYTE = 6 };

typedef struct {
    mt_tokenizer_kind kind;
    int n_vocab;
    const char *const *tokens;  /* n_vocab NUL-terminated strings (as stored in the file) */
    const float *scores;        /* SPM merge scores; may be NULL */
    const int *types;           /* MT_TOKTYPE_*; may be NULL (all normal) */
    int n_merges;               /* BPE only */
    const char *const *merges;  /* "left right", rank order */
    int bos_id, eos_id, unk_id, pad_id; /* -1 when absent */
    int add_bos;                /* prepend BOS when encoding with add_special */
    int add_eos;
    int add_space_prefix;       /* SPM: prepend " " to the text (default 1) */
    const char *pre;            /* byte-level pre-tokenizer: "gpt2", "llama3", "smollm",
                                   "qwen2"; NULL = gpt2 */
} mt_vocab_spec;

mt_status mt_tokenizer_from_spec(const mt_vocab_spec *spec, mt_tokenizer **out);
void mt_tokenizer_free(mt_tokenizer *t);

/* llama2.c tokenizer .bin (max_token_length, then {score, len, bytes} per token). */
mt_status mt_tokenizer_load_llama2c(const char *path, int vocab_size, mt_tokenizer **out);
/* HF tokenizer.json (path to the file); reads tokenizer_config.json beside it when present
 * for bos/eos/add_bos and the chat template (returned malloc'd in *chat_template if non-NULL). */
mt_status mt_tokenizer_load_hf(const char *tokenizer_json_path, mt_tokenizer **out, char **chat_template);

/* Writers (atomic). */
mt_status mt_tokenizer_save_llama2c(const mt_tokenizer *t, const char *path);
mt_status mt_tokenizer_save_hf(const mt_tokenizer *t, const char *dir, const char *chat_template);

/* Encoding without the text-must-be-UTF-8 check done by mt_tokenize(). parse_special:
 * recognise control/user-defined token strings in the text. */
mt_status mt_tokenizer_encode(const mt_tokenizer *t, const char *text, size_t len, int add_special,
                              int parse_special, int **ids, int *n_ids);

/* Raw bytes a token decodes to (SPM: U+2581 -> ' ', <0xNN> -> byte; BPE: byte-unmapped).
 * Control tokens decode to "". is_first: SPM strips the leading space of the first token. */
const char *mt_tokenizer_token_bytes(const mt_tokenizer *t, int id, size_t *len);

/* Accessors for writers. */
mt_tokenizer_kind mt_tokenizer_kind_of(const mt_tokenizer *t);
const char *mt_tokenizer_token_text(const mt_tokenizer *t, int id); /* as stored */
float mt_tokenizer_score(const mt_tokenizer *t, int id);
int mt_tokenizer_type(const mt_tokenizer *t, int id);
int mt_tokenizer_n_merges(const mt_tokenizer *t);
const char *mt_tokenizer_merge(const mt_tokenizer *t, int i);
const char *mt_tokenizer_pre(const mt_tokenizer *t);
int mt_tokenizer_add_bos(const mt_tokenizer *t);
int mt_tokenizer_add_space_prefix(const mt_tokenizer *t);

/* Streaming decoder: feed token ids, get back only complete UTF-8 sequences (bytes of a
 * character split across tokens are held until complete). */
typedef struct {
    unsigned char pending[8];
    int n_pending;
    int n_emitted_tokens;
} mt_detok_stream;

void mt_detok_init(mt_detok_stream *s);
/* Appends the decodable text to buf (cap bytes incl. NUL); returns bytes written. */
size_t mt_detok_push(const mt_tokenizer *t, mt_detok_stream *s, int id, char *buf, size_t cap);

/* 1 when s[0..len) is valid UTF-8. */
int mt_utf8_valid(const char *s, size_t len);

#endif
