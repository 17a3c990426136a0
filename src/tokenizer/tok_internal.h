/* Private to src/tokenizer/: the in-memory layout of a tokenizer, the two hash maps that
 * make encoding fast (token text -> id, merge pair -> rank), GPT-2's byte <-> character
 * mapping and the UTF-8 helpers shared by the builder, the encoders, the decoder and the
 * file readers and writers. Nothing outside this folder includes it. */
#ifndef MT_TOKENIZER_TOK_INTERNAL_H
#define MT_TOKENIZER_TOK_INTERNAL_H
#include <stdint.h>
#include "tokenizer/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* Bounds on untrusted vocabularies: big enough for every real tokenizer (Gemma has 256k
 * tokens, the longest real tokens are a few hundred bytes), small enough that sizes
 * computed from them cannot overflow. */
#define MT_TOK_MAX_TOKEN_BYTES (1 << 16)
#define MT_TOK_MAX_VOCAB (1 << 22)
#define MT_TOK_MAX_MERGES (1 << 24)
#define MT_TOK_MAX_PRE 4

/* The pre-tokenizer regexes by name (HF and llama.cpp spell them this way). */
#define MT_PRE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define MT_PRE_LLAMA3 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|" \
                      " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define MT_PRE_QWEN2 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|" \
                     " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define MT_PRE_DIGITS "\\p{N}"

/* Open addressing over token ids; the keys are the tokenizer's own token strings, so the
 * table holds only (hash, id) pairs. */
typedef struct {
    uint32_t *hash;  /* full hash of the key in each slot */
    int32_t *id;     /* -1 = empty */
    uint32_t mask;   /* capacity - 1 (capacity is a power of two, >= 2 * entries) */
    char *const *keys;
    const int *key_len;
} mt_strmap;

/* Merge table for byte-level BPE: (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t *key;   /* left << 32 | right; UINT64_MAX = empty */
    int32_t *rank;
    int32_t *merged;
    uint32_t mask;
} mt_pairmap;

struct mt_tokenizer {
    mt_tokenizer_kind kind;
    int n_vocab;
    char **text;       /* as stored: SPM uses U+2581 for space, BPE GPT-2's mapped bytes */
    int *text_len;
    char **piece;      /* the raw bytes each token decodes to ("" for control tokens) */
    int *piece_len;
    char *arena;       /* holds every text and piece string */
    float *score;
    int *type;
    int max_token_bytes;
    mt_strmap vocab;
    int byte_id[256];  /* token for one raw byte: SPM "<0xNN>", BPE the mapped char; -1 none */

    int n_merges;      /* BPE: merges as given, in rank order */
    char **merge;      /* "left right" */
    mt_pairmap pairs;

    int *special;      /* ids recognised inside text, grouped by first byte, longest first */
    int n_special;
    int special_start[257]; /* special[special_start[b] .. special_start[b+1]) start with b */

    int bos_id, eos_id, unk_id, pad_id;
    int add_bos, add_eos, add_space_prefix, ignore_merges;
    int spm_word_split; /* SPM: no token has U+2581 after another character (encode.c) */
    char pre_name[32];
    int n_pre;
    char *pre_pattern[MT_TOK_MAX_PRE];
    pcre2_code *pre_code[MT_TOK_MAX_PRE];
};

/* hash maps (tokenizer.c) */
uint32_t mt_tok_hash(const char *s, size_t n);
int mt_strmap_find(const mt_strmap *m, const char *s, size_t n);
int mt_pairmap_find(const mt_pairmap *m, int left, int right, int *merged);

/* GPT-2 bytes_to_unicode: every byte maps to one printable code point (< 0x144). */
uint32_t mt_gpt2_byte_to_cp(unsigned char b);
int mt_gpt2_cp_to_byte(uint32_t cp); /* -1 when cp is not the image of a byte */

/* UTF-8 (decode.c) */
int mt_utf8_encode(uint32_t cp, char *out); /* returns 1..4 */
/* Length of the sequence a lead byte announces (1 for invalid leads, so scans progress). */
int mt_utf8_seq_len(unsigned char lead);
/* Decodes one code point at s (n bytes available); returns its length or 0 when invalid. */
int mt_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* Length of the longest valid UTF-8 prefix of s[0..n). */
size_t mt_utf8_valid_prefix(const char *s, size_t n);

/* Pre-tokenizer name (or llama.cpp alias) -> regex list (tokenizer.c). */
int mt_tok_pre_lookup(const char *name, const char **patterns, int *n, int *ignore_merges);
/* Name of a known regex list, or NULL. */
const char *mt_tok_pre_name(const char *const *patterns, int n);

#endif
