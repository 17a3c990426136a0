/* Hugging Face Hub names (ORG/NAME[@REVISION][:QUANT]) and the matching of a GGUF file name
 * to a quantization suffix: the parsing part of mt_hub_resolve, kept apart from the network
 * code (hub.c) so that the fuzz target links without libcurl. */
#ifndef MT_FORMATS_HUB_H
#define MT_FORMATS_HUB_H
#include <stddef.h>

#define MT_HUB_PART_MAX 96    /* the Hub's limit on an organisation or repository name */
#define MT_HUB_REV_MAX 255
#define MT_HUB_QUANT_MAX 63

typedef struct {
    char org[MT_HUB_PART_MAX + 1], name[MT_HUB_PART_MAX + 1];
    char rev[MT_HUB_REV_MAX + 1];     /* "main" when the name gives none */
    char quant[MT_HUB_QUANT_MAX + 1]; /* "" when none */
} mt_hub_name;

/* 1 and *out filled when s is ORG/NAME[@REV][:QUANT]: ORG and NAME of [A-Za-z0-9._-] (not
 * starting with '.' or '-', no "--" or ".."), REV of [A-Za-z0-9._/-] (no "..", not starting
 * with '/' or '.'), QUANT of [A-Za-z0-9_]; 0 otherwise. */
int mt_hub_name_parse(const char *s, mt_hub_name *out);
/* How well the file name (a repository path) matches quant, case-insensitively: 2 when it is
 * a .gguf file whose name holds quant as a whole part (bounded by start, '.', '-' or '_'
 * before and '.' or '-' after: "x.Q4_K_M.gguf" for Q4_K_M but not for Q4_K), 1 when a .gguf
 * name merely contains it, 0 otherwise. */
int mt_hub_gguf_match(const char *file, const char *quant);
/* 1 when path ends in ".gguf" (any case). */
int mt_hub_is_gguf(const char *path);
/* 1 when s is 40 lowercase hex digits (a commit hash) or, with n = 64, a sha256. */
int mt_hub_is_hex(const char *s, size_t n);

#endif
