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
    const int *types;           /* MT_TOKTYPE_*; may be NULL (inferred, see below) */
    int n_merges;               /* BPE only */
    const char *const *merges;  /* "left right", rank order */
    int bos_id, eos_id, unk_id, pad_id; /* -1 when absent */
    int add_bos;                /* prepend BOS when encoding with add_special */
    int add_eos;
    int add_space_prefix;       /* SPM: prepend " " to the text (default 1) */
    const char *pre;            /* byte-level pre-tokenizer: "gpt2", "llama3", "smollm",
                                   "qwen2" (llama.cpp's "gpt-2", "default", "llama-bpe" are
                                   accepted too), "none" (no split); NULL = gpt2 */
    /* Fields below may be left zero. */
    int n_pre_regex;            /* > 0: the pre-tokenizer is these regexes instead of a name
                                   (HF Split patterns): each splits the pieces of the one
                                   before, matches and the gaps between them both kept */
    const char *const *pre_regex;
    int ignore_merges;          /* BPE: a pre-token that is itself a token is not merged
                                   (HF "ignore_merges"; always on for "llama3") */
} mt_vocab_spec;

/* Checks the vocabulary (sizes, ids, scores: it comes from a file) and builds the
 * tokenizer. Without types, "<0xNN>" SPM tokens are byte tokens, BOS/EOS control and UNK
 * unknown; without scores, SPM merges follow vocabulary order. Errors do not name a file:
 * loaders prefix them with mt_error_prefix(). When two tokens have the same text, the
 * first is the one encoding produces. */
mt_status mt_tokenizer_from_spec(const mt_vocab_spec *spec, mt_tokenizer **out);
void mt_tokenizer_free(mt_tokenizer *t);

/* llama2.c tokenizer .bin (int32 max_token_length, then {float32 score, int32 len, len
 * bytes} per token; spaces stored as ' ', BOS/EOS as "\n<s>\n"/"\n</s>\n"). The file must
 * hold exactly vocab_size tokens (MT_ERR_MISMATCH otherwise); vocab_size <= 0 takes what
 * the file has. Ids 0/1/2 are UNK/BOS/EOS, "<0xNN>" tokens are byte tokens. */
mt_status mt_tokenizer_load_llama2c(const char *path, int vocab_size, mt_tokenizer **out);
/* HF tokenizer.json (path to the file); reads tokenizer_config.json beside it when present
 * for bos/eos/add_bos and the chat template (returned malloc'd in *chat_template if non-NULL;
 * NULL when there is none). BPE with byte_fallback or a U+2581 normalizer/Metaspace loads as
 * MT_TOK_SPM (scores from merge order), byte-level BPE as MT_TOK_BPE with the file's own
 * Split regexes. */
mt_status mt_tokenizer_load_hf(const char *tokenizer_json_path, mt_tokenizer **out, char **chat_template);
/* GPT-2's original files: encoder.json (token -> id) and vocab.bpe (merges). */
mt_status mt_tokenizer_load_gpt2_files(const char *encoder_json, const char *vocab_bpe, mt_tokenizer **out);

/* Writers (atomic). llama2c: SPM tokenizers only. hf: writes dir/tokenizer.json (Llama 2
 * shape for SPM, GPT-2 shape with Split regexes for byte-level BPE) and
 * dir/tokenizer_config.json; chat_template may be NULL. */
mt_status mt_tokenizer_save_llama2c(const mt_tokenizer *t, const char *path);
mt_status mt_tokenizer_save_hf(const mt_tokenizer *t, const char *dir, const char *chat_template);

/* Encoding without the text-must-be-UTF-8 check done by mt_tokenize() (SPM byte-falls back
 * on invalid bytes, byte-level BPE makes each invalid byte its own pre-token).
 * parse_special: recognise control and unknown token strings ("<s>", "<|im_start|>") in the
 * text; user-defined tokens are recognised always, as in HF and llama.cpp. Where several
 * match, the longest wins. For SPM, the space prefix goes before the text and after each
 * special token found in it (llama.cpp). add_special: BOS/EOS as add_bos/add_eos say.
 * *ids is malloc'd (also when *n_ids is 0). mt_tokenize() is this with parse_special = 1
 * (users who write "<|im_start|>" in a prompt mean the token) after a UTF-8 check. */
mt_status mt_tokenizer_encode(const mt_tokenizer *t, const char *text, size_t len, int add_special,
                              int parse_special, int **ids, int *n_ids);

/* Encodes a piece of a longer text that is tokenized piece by piece (a chat rendering
 * split at the trained spans). first: the piece starts the text, so it gets BOS (unless it
 * already begins with the BOS token's text) and the SPM prefix space; later pieces get
 * neither. Special-token texts are recognised. */
mt_status mt_tokenizer_encode_piece(const mt_tokenizer *t, const char *text, size_t len, int first,
                                    int **ids, int *n_ids);

/* Raw bytes a token decodes to (SPM: U+2581 -> ' ', <0xNN> -> byte; BPE: byte-unmapped;
 * user-defined tokens of byte-level BPE as stored). Control, unknown and unused tokens
 * decode to "". The bytes may be an incomplete UTF-8 sequence; out-of-range ids give "".
 * The leading-space rule for SPM lives in the streaming decoder below. */
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
int mt_tokenizer_add_eos(const mt_tokenizer *t);
int mt_tokenizer_unk(const mt_tokenizer *t);
int mt_tokenizer_pad(const mt_tokenizer *t);
int mt_tokenizer_ignore_merges(const mt_tokenizer *t);
/* The pre-tokenizer as regexes (what mt_tokenizer_pre() names; "custom" when unnamed). */
int mt_tokenizer_n_pre_regex(const mt_tokenizer *t);
const char *mt_tokenizer_pre_regex(const mt_tokenizer *t, int i);
int mt_tokenizer_max_token_bytes(const mt_tokenizer *t); /* longest stored token text */
int mt_tokenizer_find(const mt_tokenizer *t, const char *text); /* id of a stored text, or -1 */

/* Streaming decoder: feed token ids, get back only complete UTF-8 sequences (bytes of a
 * character split across tokens are held until complete). */
typedef struct {
    unsigned char pending[8];   /* bytes of an unfinished UTF-8 character */
    int n_pending;
    int n_emitted_tokens;       /* tokens that produced bytes so far */
} mt_detok_stream;

void mt_detok_init(mt_detok_stream *s);
/* Writes the text that token `id` completes to buf (cap bytes including the NUL it always
 * writes) and returns its length. Control tokens (BOS, EOS) give nothing; for SPM with
 * add_space_prefix the leading space of the first text is dropped (llama2.c, llama.cpp).
 * Bytes that cannot start or continue a UTF-8 sequence come out as U+FFFD, so the output
 * is always valid UTF-8. Text that does not fit in cap is cut at a character boundary: a
 * cap of 4 * mt_tokenizer_max_token_bytes() + 16 never cuts. Invalid ids give nothing. */
size_t mt_detok_push(const mt_tokenizer *t, mt_detok_stream *s, int id, char *buf, size_t cap);
/* End of stream: bytes of an unfinished sequence come out as U+FFFD (at most 3 bytes + NUL
 * written; cap >= 4 suffices). */
size_t mt_detok_flush(mt_detok_stream *s, char *buf, size_t cap);

/* 1 when s[0..len) is valid UTF-8. */
int mt_utf8_valid(const char *s, size_t len);

#endif
