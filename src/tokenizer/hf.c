/* Hugging Face tokenizers: tokenizer.json (+ tokenizer_config.json) reader and writer,
 * and GPT-2's original encoder.json + vocab.bpe.
 *
 * A tokenizer.json is a pipeline (normalizer, pre_tokenizer, model, decoder, ...). memtune
 * runs two shapes of it, recognised here:
 *  - SentencePiece-style (Llama 2, Mistral): model BPE with byte_fallback, spaces replaced
 *    by U+2581 by a normalizer or a Metaspace pre-tokenizer. Loaded as MT_TOK_SPM. HF keeps
 *    no scores, only merges ordered by score, so a token's score is minus the rank of the
 *    first merge producing it: merging by score then merges in the same order.
 *  - Byte-level BPE (GPT-2, SmolLM, Llama 3, Qwen2): ByteLevel plus optional Split regexes
 *    and Digits. Loaded as MT_TOK_BPE; the pre-tokenizer is kept as the file's own regex
 *    strings (and named when it is one memtune knows).
 * Anything else (WordPiece, Unigram, lowercasing, ...) is refused as unsupported rather
 * than encoded differently from HF. The writer produces those same two shapes, so a saved
 * tokenizer loads back here and in HF tokenizers. */
#include "core/json.h"
#include "tokenizer/tok_internal.h"
#include "core/error.h"
#include "core/file.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_JSON_BYTES ((size_t)1 << 30)

/* flags: JSON_DECODE_INT_AS_REAL for files whose integers we never need exactly
 * (tokenizer_config.json has model_max_length = 1e30, beyond any integer type). */
static mt_status load_json(const char *path, size_t flags, json_t **out) {
    return mt_json_load_file(path, MAX_JSON_BYTES, flags, out);
}

static const char *jstr(const json_t *obj, const char *key) { return json_string_value(json_object_get(obj, key)); }

static int jbool(const json_t *obj, const char *key, int dflt) {
    json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* bos_token and friends: a string, or {"content": "..."} (AddedToken). */
static const char *token_content(const json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    return jstr(v, "content");
}

/* ---- the token table being assembled -------------------------------------------------- */

typedef struct {
    const char *path;
    const char **tokens; /* borrowed from the JSON document or from owned */
    int *types;
    int n, cap;
    char **owned;
    int n_owned, owned_cap;
    const char **merges;
    int n_merges;
} hf_table;

static void table_free(hf_table *tt) {
    for (int i = 0; i < tt->n_owned; i++) free(tt->owned[i]);
    free(tt->owned);
    free(tt->tokens);
    free(tt->types);
    free(tt->merges);
}

static char *table_own(hf_table *tt, char *s) {
    if (!s) return NULL;
    if (tt->n_owned == tt->owned_cap) {
        int cap = tt->owned_cap ? 2 * tt->owned_cap : 64;
        char **p = realloc(tt->owned, (size_t)cap * sizeof *p);
        if (!p) {
            free(s);
            return NULL;
        }
        tt->owned = p;
        tt->owned_cap = cap;
    }
    return tt->owned[tt->n_owned++] = s;
}

static mt_status table_set(hf_table *tt, json_int_t id, const char *text, int type) {
    if (id < 0 || id >= MT_TOK_MAX_VOCAB)
        return mt_error(MT_ERR_FORMAT, "%s: token id %lld out of range (0..%d)", tt->path, (long long)id, MT_TOK_MAX_VOCAB - 1);
    if (id >= tt->cap) {
        int cap = tt->cap ? tt->cap : 1024;
        while (cap <= id) cap *= 2;
        const char **t = realloc(tt->tokens, (size_t)cap * sizeof *t);
        if (t) tt->tokens = t;
        int *ty = realloc(tt->types, (size_t)cap * sizeof *ty);
        if (ty) tt->types = ty;
        if (!t || !ty) return mt_error(MT_ERR_NOMEM, "%s: out of memory", tt->path);
        for (int i = tt->cap; i < cap; i++) tt->tokens[i] = NULL;
        tt->cap = cap;
    }
    tt->tokens[id] = text;
    tt->types[id] = type;
    if (id >= tt->n) tt->n = (int)id + 1;
    return MT_OK;
}

static int table_find(const hf_table *tt, const char *text) {
    for (int i = 0; text && i < tt->n; i++)
        if (tt->tokens[i] && !strcmp(tt->tokens[i], text)) return i;
    return -1;
}

/* model.vocab / encoder.json: {"token": id, ...}. Two tokens with one id is an error. */
static mt_status read_vocab(hf_table *tt, const json_t *vocab) {
    if (!json_is_object(vocab)) return mt_error(MT_ERR_FORMAT, "%s: vocabulary is not an object", tt->path);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)vocab, key, value) {
        if (!json_is_integer(value)) return mt_error(MT_ERR_FORMAT, "%s: id of token \"%.64s\" is not an integer", tt->path, key);
        json_int_t id = json_integer_value(value);
        if (id >= 0 && id < tt->n && tt->tokens[id])
            return mt_error(MT_ERR_FORMAT, "%s: token id %lld is used twice", tt->path, (long long)id);
        mt_status s = table_set(tt, id, key, MT_TOKTYPE_NORMAL);
        if (s) return s;
    }
    return MT_OK;
}

/* Ids no token claims become unused placeholders, so ids stay those of the file. */
static mt_status fill_gaps(hf_table *tt) {
    if (tt->n == 0) return mt_error(MT_ERR_FORMAT, "%s: vocabulary is empty", tt->path);
    for (int i = 0; i < tt->n; i++) {
        if (tt->tokens[i]) continue;
        char *s = table_own(tt, mt_strdup_printf("[UNUSED_TOKEN_%d]", i));
        if (!s) return mt_error(MT_ERR_NOMEM, "%s: out of memory", tt->path);
        tt->tokens[i] = s;
        tt->types[i] = MT_TOKTYPE_UNUSED;
    }
    return MT_OK;
}

/* merges: ["a b", ...] (classic) or [["a", "b"], ...] (tokenizers >= 0.20). */
static mt_status read_merges(hf_table *tt, const json_t *merges) {
    if (!merges || json_is_null(merges)) return MT_OK;
    if (!json_is_array(merges)) return mt_error(MT_ERR_FORMAT, "%s: merges is not a list", tt->path);
    size_t n = json_array_size(merges);
    if (n > MT_TOK_MAX_MERGES) return mt_error(MT_ERR_FORMAT, "%s: %zu merges (limit %d)", tt->path, n, MT_TOK_MAX_MERGES);
    tt->merges = malloc((n + 1) * sizeof *tt->merges);
    if (!tt->merges) return mt_error(MT_ERR_NOMEM, "%s: out of memory", tt->path);
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(merges, i);
        const char *a = json_string_value(json_array_get(m, 0)), *b = json_string_value(json_array_get(m, 1));
        if (json_is_string(m)) tt->merges[i] = json_string_value(m);
        else if (json_is_array(m) && json_array_size(m) == 2 && a && b) {
            if (!(tt->merges[i] = table_own(tt, mt_strdup_printf("%s %s", a, b))))
                return mt_error(MT_ERR_NOMEM, "%s: out of memory", tt->path);
        } else return mt_error(MT_ERR_FORMAT, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", tt->path, i);
        tt->n_merges = (int)i + 1;
    }
    return MT_OK;
}

/* added_tokens: special ones are control tokens, the others user-defined. */
static mt_status read_added(hf_table *tt, const json_t *added) {
    if (!added || json_is_null(added)) return MT_OK;
    if (!json_is_array(added)) return mt_error(MT_ERR_FORMAT, "%s: added_tokens is not a list", tt->path);
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        json_t *id = json_object_get(a, "id");
        const char *content = jstr(a, "content");
        if (!json_is_integer(id) || !content || !*content)
            return mt_error(MT_ERR_FORMAT, "%s: added token %zu lacks an integer id or a content", tt->path, i);
        mt_status s = table_set(tt, json_integer_value(id), content,
                                jbool(a, "special", 0) ? MT_TOKTYPE_CONTROL : MT_TOKTYPE_USER_DEFINED);
        if (s) return s;
    }
    return MT_OK;
}

/* ---- the pipeline --------------------------------------------------------------------- */

typedef struct {
    const char *path;
    int spm;            /* SentencePiece-style: byte fallback and U+2581 for spaces */
    int prepend_space;  /* the dummy prefix */
    int byte_level;
    int n_regex;
    const char *regex[MT_TOK_MAX_PRE];
    char *owned_regex[MT_TOK_MAX_PRE];
} hf_pipeline;

static mt_status unsupported(const hf_pipeline *p, const char *what, const char *type) {
    return mt_error(MT_ERR_UNSUPPORTED, "%s: %s \"%.64s\" is not supported", p->path, what, type ? type : "(no type)");
}

static mt_status add_regex(hf_pipeline *p, const char *regex, char *owned) {
    if (p->n_regex == MT_TOK_MAX_PRE) {
        free(owned);
        return mt_error(MT_ERR_UNSUPPORTED, "%s: more than %d pre-tokenizer splits", p->path, MT_TOK_MAX_PRE);
    }
    p->owned_regex[p->n_regex] = owned;
    p->regex[p->n_regex++] = regex;
    return MT_OK;
}

static int is_space_marker(const char *s) { return s && !strcmp(s, "\xe2\x96\x81"); }

static mt_status parse_normalizer(hf_pipeline *p, const json_t *n) {
    if (!n || json_is_null(n)) return MT_OK;
    const char *type = jstr(n, "type");
    if (type && !strcmp(type, "Sequence")) {
        size_t i;
        json_t *sub;
        json_array_foreach(json_object_get(n, "normalizers"), i, sub) {
            mt_status s = parse_normalizer(p, sub);
            if (s) return s;
        }
        return MT_OK;
    }
    if (type && !strcmp(type, "Prepend") && is_space_marker(jstr(n, "prepend"))) {
        p->prepend_space = p->spm = 1;
        return MT_OK;
    }
    const char *from = jstr(json_object_get(n, "pattern"), "String");
    if (type && !strcmp(type, "Replace") && from && !strcmp(from, " ") && is_space_marker(jstr(n, "content"))) {
        p->spm = 1;
        return MT_OK;
    }
    /* Text is NFC already in practice; memtune does not normalise it (documented). */
    if (type && !strcmp(type, "NFC")) return MT_OK;
    return unsupported(p, "normalizer", type);
}

/* A literal Split pattern as a regex: every ASCII punctuation character escaped. */
static char *escape_literal(const char *s) {
    char *out = malloc(2 * strlen(s) + 1), *q = out;
    if (!out) return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) *q++ = '\\';
        *q++ = *s;
    }
    *q = 0;
    return out;
}

static mt_status parse_split(hf_pipeline *p, const json_t *n) {
    const json_t *pattern = json_object_get(n, "pattern");
    const char *behavior = jstr(n, "behavior");
    if (!behavior || strcmp(behavior, "Isolated") != 0 || jbool(n, "invert", 0))
        return unsupported(p, "Split behaviour", behavior);
    if (jstr(pattern, "Regex")) return add_regex(p, jstr(pattern, "Regex"), NULL);
    if (!jstr(pattern, "String")) return mt_error(MT_ERR_FORMAT, "%s: Split without a pattern", p->path);
    char *re = escape_literal(jstr(pattern, "String"));
    if (!re) return mt_error(MT_ERR_NOMEM, "out of memory");
    return add_regex(p, re, re);
}

static mt_status parse_metaspace(hf_pipeline *p, const json_t *n) {
    const char *scheme = jstr(n, "prepend_scheme");
    if (!is_space_marker(jstr(n, "replacement"))) return unsupported(p, "Metaspace replacement", jstr(n, "replacement"));
    p->spm = 1;
    p->prepend_space = scheme ? strcmp(scheme, "never") != 0 : jbool(n, "add_prefix_space", 1);
    return MT_OK;
}

static mt_status parse_pre(hf_pipeline *p, const json_t *n) {
    if (!n || json_is_null(n)) return MT_OK;
    const char *type = jstr(n, "type");
    if (!type) return unsupported(p, "pre-tokenizer", NULL);
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *sub;
        json_array_foreach(json_object_get(n, "pretokenizers"), i, sub) {
            mt_status s = parse_pre(p, sub);
            if (s) return s;
        }
        return MT_OK;
    }
    if (!strcmp(type, "Split")) return parse_split(p, n);
    if (!strcmp(type, "Digits")) return add_regex(p, jbool(n, "individual_digits", 0) ? MT_PRE_DIGITS : "\\p{N}+", NULL);
    if (!strcmp(type, "Metaspace")) return parse_metaspace(p, n);
    if (!strcmp(type, "ByteLevel")) {
        if (jbool(n, "add_prefix_space", 0)) return unsupported(p, "ByteLevel option", "add_prefix_space");
        p->byte_level = 1;
        return jbool(n, "use_regex", 1) ? add_regex(p, MT_PRE_GPT2, NULL) : MT_OK;
    }
    return unsupported(p, "pre-tokenizer", type);
}

static int has_byte_level(const json_t *n) {
    const char *type = jstr(n, "type");
    if (type && !strcmp(type, "ByteLevel")) return 1;
    size_t i;
    json_t *sub;
    json_array_foreach(json_object_get(n, "decoders"), i, sub) if (has_byte_level(sub)) return 1;
    return 0;
}

static mt_status parse_model(hf_pipeline *p, hf_table *tt, const json_t *model) {
    const char *type = jstr(model, "type");
    if (!json_is_object(model)) return mt_error(MT_ERR_FORMAT, "%s: no \"model\" section", p->path);
    if (!type || strcmp(type, "BPE") != 0) return unsupported(p, "model type", type);
    if (jstr(model, "continuing_subword_prefix") || jstr(model, "end_of_word_suffix"))
        return unsupported(p, "BPE option", "continuing_subword_prefix/end_of_word_suffix");
    if (jbool(model, "byte_fallback", 0)) p->spm = 1;
    mt_status s = read_vocab(tt, json_object_get(model, "vocab"));
    return s ? s : read_merges(tt, json_object_get(model, "merges"));
}

/* ---- special-token settings ----------------------------------------------------------- */

typedef struct {
    const char *bos, *eos, *unk, *pad; /* token texts */
    int add_bos, add_eos;              /* -1 = not said */
} hf_specials;

/* TemplateProcessing (possibly inside a Sequence): a special token before/after $A means
 * BOS/EOS are added. */
static void parse_post(const json_t *n, hf_specials *sp) {
    const char *type = jstr(n, "type");
    size_t i;
    json_t *sub;
    json_array_foreach(json_object_get(n, "processors"), i, sub) parse_post(sub, sp);
    if (!type || strcmp(type, "TemplateProcessing") != 0) return;
    const json_t *single = json_object_get(n, "single");
    size_t len = json_array_size(single);
    if (len == 0) return;
    const char *first = jstr(json_object_get(json_array_get(single, 0), "SpecialToken"), "id");
    const char *last = jstr(json_object_get(json_array_get(single, len - 1), "SpecialToken"), "id");
    if (sp->add_bos < 0) sp->add_bos = first != NULL;
    if (first && !sp->bos) sp->bos = first;
    if (sp->add_eos < 0) sp->add_eos = last != NULL && len > 1;
    if (last && len > 1 && !sp->eos) sp->eos = last;
}

static void parse_config(const json_t *cfg, hf_specials *sp) {
    json_t *v;
    if ((v = json_object_get(cfg, "add_bos_token")) && json_is_boolean(v)) sp->add_bos = json_is_true(v);
    if ((v = json_object_get(cfg, "add_eos_token")) && json_is_boolean(v)) sp->add_eos = json_is_true(v);
    if (token_content(json_object_get(cfg, "bos_token"))) sp->bos = token_content(json_object_get(cfg, "bos_token"));
    if (token_content(json_object_get(cfg, "eos_token"))) sp->eos = token_content(json_object_get(cfg, "eos_token"));
    if (token_content(json_object_get(cfg, "unk_token"))) sp->unk = token_content(json_object_get(cfg, "unk_token"));
    if (token_content(json_object_get(cfg, "pad_token"))) sp->pad = token_content(json_object_get(cfg, "pad_token"));
}

/* chat_template: a string, or [{"name": ..., "template": ...}] where "default" is the one. */
static char *chat_template_of(const json_t *cfg) {
    const json_t *ct = json_object_get(cfg, "chat_template");
    if (json_is_string(ct)) return strdup(json_string_value(ct));
    size_t i;
    json_t *e;
    const char *first = NULL;
    json_array_foreach(ct, i, e) {
        const char *name = jstr(e, "name"), *tmpl = jstr(e, "template");
        if (!first) first = tmpl;
        if (name && tmpl && !strcmp(name, "default")) return strdup(tmpl);
    }
    return first ? strdup(first) : NULL;
}

static char *sibling_path(const char *path, const char *name) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(name);
    return mt_strdup_printf("%.*s/%s", (int)(slash - path), path, name);
}

/* tokenizer_config.json beside the file (optional), and chat_template.jinja (newer HF). */
static mt_status read_config(const char *path, hf_specials *sp, json_t **cfg, char **chat_template) {
    char *cfg_path = sibling_path(path, "tokenizer_config.json");
    char *jinja_path = sibling_path(path, "chat_template.jinja");
    mt_status s = cfg_path && jinja_path ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s && mt_file_exists(cfg_path) && !(s = load_json(cfg_path, JSON_DECODE_INT_AS_REAL, cfg))) parse_config(*cfg, sp);
    if (!s && chat_template) {
        *chat_template = *cfg ? chat_template_of(*cfg) : NULL;
        if (!*chat_template && mt_file_exists(jinja_path)) s = mt_file_read_all(jinja_path, MAX_JSON_BYTES, chat_template, NULL);
    }
    free(cfg_path);
    free(jinja_path);
    return s;
}

/* ---- assembling the tokenizer --------------------------------------------------------- */

static void set_types(hf_table *tt, const hf_pipeline *p, int unk) {
    for (int i = 0; i < tt->n; i++) {
        if (tt->types[i] != MT_TOKTYPE_NORMAL) continue;
        const char *s = tt->tokens[i];
        if (p->spm && strlen(s) == 6 && !strncmp(s, "<0x", 3) && s[5] == '>') tt->types[i] = MT_TOKTYPE_BYTE;
    }
    if (unk >= 0) tt->types[unk] = MT_TOKTYPE_UNKNOWN;
}

/* Scores for SentencePiece-style vocabularies: minus the rank of the first merge that
 * produces the token; tokens no merge produces come after all of them, in vocab order. */
static void spm_scores_from_merges(mt_tokenizer *t, const hf_table *tt) {
    for (int i = 0; i < t->n_vocab; i++) t->score[i] = -(float)tt->n_merges - (float)i;
    char *buf = malloc(2 * (size_t)MT_TOK_MAX_TOKEN_BYTES + 2);
    if (!buf) return;
    for (int r = tt->n_merges - 1; r >= 0; r--) { /* backwards: the first rank is written last */
        const char *m = tt->merges[r], *sp = strchr(m, ' ');
        if (!sp || strlen(m) > 2 * (size_t)MT_TOK_MAX_TOKEN_BYTES) continue;
        size_t ll = (size_t)(sp - m), rl = strlen(sp + 1);
        memcpy(buf, m, ll);
        memcpy(buf + ll, sp + 1, rl);
        int id = mt_strmap_find(&t->vocab, buf, ll + rl);
        if (id >= 0) t->score[id] = -(float)r;
    }
    free(buf);
}

static mt_status build_tokenizer(const char *path, hf_table *tt, const hf_pipeline *p, const hf_specials *sp,
                                 int ignore_merges, mt_tokenizer **out) {
    mt_status s = fill_gaps(tt);
    if (s) return s;
    int unk = table_find(tt, sp->unk);
    set_types(tt, p, unk);
    mt_vocab_spec spec = {
        .kind = p->spm ? MT_TOK_SPM : MT_TOK_BPE,
        .n_vocab = tt->n,
        .tokens = tt->tokens,
        .types = tt->types,
        .n_merges = p->spm ? 0 : tt->n_merges,
        .merges = tt->merges,
        .bos_id = table_find(tt, sp->bos),
        .eos_id = table_find(tt, sp->eos),
        .unk_id = unk,
        .pad_id = table_find(tt, sp->pad),
        .add_bos = sp->add_bos > 0,
        .add_eos = sp->add_eos > 0,
        .add_space_prefix = p->prepend_space,
        .pre = p->n_regex ? NULL : "none",
        .n_pre_regex = p->n_regex,
        .pre_regex = p->regex,
        .ignore_merges = ignore_merges,
    };
    s = mt_tokenizer_from_spec(&spec, out);
    if (s) return mt_error_prefix(s, "%s", path);
    if (p->spm) spm_scores_from_merges(*out, tt);
    return MT_OK;
}

static mt_status check_pipeline(const hf_pipeline *p) {
    if (p->spm && p->n_regex > 0)
        return mt_error(MT_ERR_UNSUPPORTED, "%s: byte-fallback BPE with Split pre-tokenizers is not supported", p->path);
    if (!p->spm && !p->byte_level)
        return mt_error(MT_ERR_UNSUPPORTED, "%s: BPE without byte-level pre-tokenizer or byte fallback is not supported",
                        p->path);
    return MT_OK;
}

static mt_status load_hf_parsed(const char *path, const json_t *root, mt_tokenizer **out, char **chat_template) {
    hf_table tt = {.path = path};
    hf_pipeline p = {.path = path};
    hf_specials sp = {.add_bos = -1, .add_eos = -1};
    json_t *cfg = NULL;
    const json_t *model = json_object_get(root, "model");
    mt_status s = parse_model(&p, &tt, model);
    if (!s) s = read_added(&tt, json_object_get(root, "added_tokens"));
    if (!s) s = parse_normalizer(&p, json_object_get(root, "normalizer"));
    if (!s) s = parse_pre(&p, json_object_get(root, "pre_tokenizer"));
    if (!s) {
        p.byte_level |= has_byte_level(json_object_get(root, "decoder"));
        s = check_pipeline(&p);
    }
    if (!s) {
        sp.unk = jstr(model, "unk_token");
        parse_post(json_object_get(root, "post_processor"), &sp);
        s = read_config(path, &sp, &cfg, chat_template);
    }
    if (!s && !sp.eos && table_find(&tt, "<|endoftext|>") >= 0) sp.eos = "<|endoftext|>"; /* GPT-2 */
    if (!s && p.spm && !sp.bos && table_find(&tt, "<s>") >= 0) sp.bos = "<s>";
    if (!s && p.spm && !sp.eos && table_find(&tt, "</s>") >= 0) sp.eos = "</s>";
    if (!s) s = build_tokenizer(path, &tt, &p, &sp, jbool(model, "ignore_merges", 0), out);
    for (int i = 0; i < p.n_regex; i++) free(p.owned_regex[i]);
    table_free(&tt);
    json_decref(cfg);
    return s;
}

mt_status mt_tokenizer_load_hf(const char *tokenizer_json_path, mt_tokenizer **out, char **chat_template) {
    if (!out || !tokenizer_json_path) return mt_error(MT_ERR_ARG, "mt_tokenizer_load_hf: path or out is NULL");
    *out = NULL;
    if (chat_template) *chat_template = NULL;
    json_t *root;
    mt_status s = load_json(tokenizer_json_path, 0, &root);
    if (s) return s;
    if (!json_is_object(root)) s = mt_error(MT_ERR_FORMAT, "%s: not a JSON object", tokenizer_json_path);
    else s = load_hf_parsed(tokenizer_json_path, root, out, chat_template);
    json_decref(root);
    if (s && chat_template) {
        free(*chat_template);
        *chat_template = NULL;
    }
    return s;
}

/* ---- GPT-2's own files ---------------------------------------------------------------- */

/* vocab.bpe: "#version: 0.2" then one "a b" merge per line. Lines are cut in place. */
static mt_status read_bpe_lines(hf_table *tt, char *text, size_t len) {
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    if (lines > MT_TOK_MAX_MERGES) return mt_error(MT_ERR_FORMAT, "%s: %zu merges (limit %d)", tt->path, lines, MT_TOK_MAX_MERGES);
    tt->merges = malloc(lines * sizeof *tt->merges);
    if (!tt->merges) return mt_error(MT_ERR_NOMEM, "%s: out of memory", tt->path);
    for (char *line = text, *next; line && line < text + len; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r') line[--n] = 0;
        if (n == 0 || !strncmp(line, "#version", 8)) continue;
        if (!strchr(line, ' ')) return mt_error(MT_ERR_FORMAT, "%s: merge \"%.64s\" has no space", tt->path, line);
        tt->merges[tt->n_merges++] = line;
    }
    return MT_OK;
}

mt_status mt_tokenizer_load_gpt2_files(const char *encoder_json, const char *vocab_bpe, mt_tokenizer **out) {
    if (!out || !encoder_json || !vocab_bpe) return mt_error(MT_ERR_ARG, "mt_tokenizer_load_gpt2_files: NULL argument");
    *out = NULL;
    json_t *root = NULL;
    char *bpe = NULL;
    size_t bpe_len = 0;
    hf_table tt = {.path = encoder_json};
    mt_status s = load_json(encoder_json, 0, &root);
    if (!s) s = read_vocab(&tt, root);
    if (!s) s = mt_file_read_all(vocab_bpe, MAX_JSON_BYTES, &bpe, &bpe_len);
    if (!s) {
        tt.path = vocab_bpe;
        s = read_bpe_lines(&tt, bpe, bpe_len);
        tt.path = encoder_json;
    }
    if (!s) s = fill_gaps(&tt);
    if (!s) {
        int eot = table_find(&tt, "<|endoftext|>");
        if (eot >= 0) tt.types[eot] = MT_TOKTYPE_CONTROL;
        mt_vocab_spec spec = {.kind = MT_TOK_BPE, .n_vocab = tt.n, .tokens = tt.tokens, .types = tt.types,
                              .n_merges = tt.n_merges, .merges = tt.merges, .bos_id = eot, .eos_id = eot,
                              .unk_id = -1, .pad_id = -1, .pre = "gpt2"};
        if ((s = mt_tokenizer_from_spec(&spec, out))) mt_error_prefix(s, "%s", encoder_json);
    }
    table_free(&tt);
    free(bpe);
    json_decref(root);
    return s;
}

/* ---- writer --------------------------------------------------------------------------- */

#define ADD(obj, key, value) json_object_set_new((obj), (key), (value))

static json_t *string_or_null(const char *s) { return s ? json_string(s) : json_null(); }

static const char *text_or_null(const mt_tokenizer *t, int id) { return id >= 0 ? t->text[id] : NULL; }

static json_t *write_added_tokens(const mt_tokenizer *t) {
    json_t *list = json_array();
    for (int i = 0; i < t->n_vocab; i++) {
        int type = t->type[i];
        if (type != MT_TOKTYPE_CONTROL && type != MT_TOKTYPE_USER_DEFINED && type != MT_TOKTYPE_UNKNOWN) continue;
        json_t *a = json_object();
        ADD(a, "id", json_integer(i));
        ADD(a, "content", json_string(t->text[i]));
        ADD(a, "single_word", json_false());
        ADD(a, "lstrip", json_false());
        ADD(a, "rstrip", json_false());
        ADD(a, "normalized", json_false());
        ADD(a, "special", json_boolean(type != MT_TOKTYPE_USER_DEFINED));
        json_array_append_new(list, a);
    }
    return list;
}

static json_t *replace(const char *from, const char *to) {
    json_t *r = json_object();
    ADD(r, "type", json_string("Replace"));
    json_t *pattern = json_object();
    ADD(pattern, "String", json_string(from));
    ADD(r, "pattern", pattern);
    ADD(r, "content", json_string(to));
    return r;
}

static json_t *spm_normalizer(const mt_tokenizer *t) {
    json_t *list = json_array();
    if (t->add_space_prefix) {
        json_t *pre = json_object();
        ADD(pre, "type", json_string("Prepend"));
        ADD(pre, "prepend", json_string("\xe2\x96\x81"));
        json_array_append_new(list, pre);
    }
    json_array_append_new(list, replace(" ", "\xe2\x96\x81"));
    json_t *n = json_object();
    ADD(n, "type", json_string("Sequence"));
    ADD(n, "normalizers", list);
    return n;
}

static json_t *byte_level(int use_regex) {
    json_t *b = json_object();
    ADD(b, "type", json_string("ByteLevel"));
    ADD(b, "add_prefix_space", json_false());
    ADD(b, "trim_offsets", json_true());
    ADD(b, "use_regex", json_boolean(use_regex));
    return b;
}

static json_t *bpe_pre_tokenizer(const mt_tokenizer *t) {
    json_t *list = json_array();
    for (int k = 0; k < t->n_pre; k++) {
        json_t *split = json_object(), *pattern = json_object();
        ADD(split, "type", json_string("Split"));
        ADD(pattern, "Regex", json_string(t->pre_pattern[k]));
        ADD(split, "pattern", pattern);
        ADD(split, "behavior", json_string("Isolated"));
        ADD(split, "invert", json_false());
        json_array_append_new(list, split);
    }
    json_array_append_new(list, byte_level(0));
    json_t *n = json_object();
    ADD(n, "type", json_string("Sequence"));
    ADD(n, "pretokenizers", list);
    return n;
}

static json_t *spm_decoder(const mt_tokenizer *t) {
    json_t *list = json_array(), *d = json_object();
    json_array_append_new(list, replace("\xe2\x96\x81", " "));
    json_array_append_new(list, json_pack("{s:s}", "type", "ByteFallback"));
    json_array_append_new(list, json_pack("{s:s}", "type", "Fuse"));
    if (t->add_space_prefix)
        json_array_append_new(list, json_pack("{s:s,s:s,s:i,s:i}", "type", "Strip", "content", " ", "start", 1, "stop", 0));
    ADD(d, "type", json_string("Sequence"));
    ADD(d, "decoders", list);
    return d;
}

static json_t *template_piece(const char *special, const char *sequence, int type_id) {
    if (special) return json_pack("{s:{s:s,s:i}}", "SpecialToken", "id", special, "type_id", type_id);
    return json_pack("{s:{s:s,s:i}}", "Sequence", "id", sequence, "type_id", type_id);
}

/* [BOS] $X [EOS] as template pieces, appended to list. */
static void template_sequence(json_t *list, const char *bos, const char *seq, const char *eos, int type_id) {
    if (bos) json_array_append_new(list, template_piece(bos, NULL, type_id));
    json_array_append_new(list, template_piece(NULL, seq, type_id));
    if (eos) json_array_append_new(list, template_piece(eos, NULL, type_id));
}

/* TemplateProcessing that adds BOS/EOS (Llama 2's shape), or null when neither is added. */
static json_t *post_processor(const mt_tokenizer *t) {
    const char *bos = t->add_bos ? text_or_null(t, t->bos_id) : NULL;
    const char *eos = t->add_eos ? text_or_null(t, t->eos_id) : NULL;
    if (!bos && !eos) return json_null();
    json_t *single = json_array(), *pair = json_array(), *special = json_object(), *p = json_object();
    template_sequence(single, bos, "A", eos, 0);
    template_sequence(pair, bos, "A", eos, 0);
    template_sequence(pair, bos, "B", eos, 1);
    for (int k = 0; k < 2; k++) {
        int id = k ? t->eos_id : t->bos_id;
        const char *s = k ? eos : bos;
        if (s) ADD(special, s, json_pack("{s:s,s:[i],s:[s]}", "id", s, "ids", id, "tokens", s));
    }
    ADD(p, "type", json_string("TemplateProcessing"));
    ADD(p, "single", single);
    ADD(p, "pair", pair);
    ADD(p, "special_tokens", special);
    return p;
}

typedef struct {
    float score;
    int merged, left, right;
} spm_merge;

static int spm_merge_cmp(const void *a, const void *b) {
    const spm_merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->merged != y->merged) return x->merged < y->merged ? -1 : 1;
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    return (x->right > y->right) - (x->right < y->right);
}

/* HF needs merges where SentencePiece has scores: every split of every mergeable token into
 * two tokens, ordered by the token's score (what transformers' converter does). */
static json_t *spm_merges(const mt_tokenizer *t) {
    size_t n = 0, cap = 1024;
    spm_merge *m = malloc(cap * sizeof *m);
    for (int id = 0; m && id < t->n_vocab; id++) {
        if (t->type[id] != MT_TOKTYPE_NORMAL && t->type[id] != MT_TOKTYPE_USER_DEFINED) continue;
        const char *s = t->text[id];
        int len = t->text_len[id];
        for (int k = mt_utf8_seq_len((unsigned char)s[0]); k < len; k += mt_utf8_seq_len((unsigned char)s[k])) {
            int l = mt_strmap_find(&t->vocab, s, (size_t)k), r = mt_strmap_find(&t->vocab, s + k, (size_t)(len - k));
            if (l < 0 || r < 0) continue;
            if (n == cap) {
                spm_merge *q = realloc(m, 2 * cap * sizeof *m);
                if (!q) break;
                m = q;
                cap *= 2;
            }
            m[n++] = (spm_merge){t->score[id], id, l, r};
        }
    }
    if (!m) return NULL;
    qsort(m, n, sizeof *m, spm_merge_cmp);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        char *joined = mt_strdup_printf("%s %s", t->text[m[i].left], t->text[m[i].right]);
        if (joined) json_array_append_new(list, json_string(joined));
        free(joined);
    }
    free(m);
    return list;
}

static json_t *write_model(const mt_tokenizer *t) {
    json_t *model = json_object(), *vocab = json_object(), *merges;
    int spm = t->kind == MT_TOK_SPM;
    for (int i = 0; i < t->n_vocab; i++)
        if (!json_object_get(vocab, t->text[i])) ADD(vocab, t->text[i], json_integer(i));
    if (spm) merges = spm_merges(t);
    else {
        merges = json_array();
        for (int i = 0; i < t->n_merges; i++) json_array_append_new(merges, json_string(t->merge[i]));
    }
    ADD(model, "type", json_string("BPE"));
    ADD(model, "dropout", json_null());
    ADD(model, "unk_token", string_or_null(text_or_null(t, t->unk_id)));
    ADD(model, "continuing_subword_prefix", json_null());
    ADD(model, "end_of_word_suffix", json_null());
    ADD(model, "fuse_unk", json_boolean(spm));
    ADD(model, "byte_fallback", json_boolean(spm));
    ADD(model, "ignore_merges", json_boolean(t->ignore_merges));
    ADD(model, "vocab", vocab);
    ADD(model, "merges", merges ? merges : json_array());
    return model;
}

static json_t *tokenizer_json(const mt_tokenizer *t) {
    json_t *root = json_object();
    int spm = t->kind == MT_TOK_SPM;
    ADD(root, "version", json_string("1.0"));
    ADD(root, "truncation", json_null());
    ADD(root, "padding", json_null());
    ADD(root, "added_tokens", write_added_tokens(t));
    ADD(root, "normalizer", spm ? spm_normalizer(t) : json_null());
    ADD(root, "pre_tokenizer", spm ? json_null() : bpe_pre_tokenizer(t));
    ADD(root, "post_processor", post_processor(t));
    ADD(root, "decoder", spm ? spm_decoder(t) : byte_level(1));
    ADD(root, "model", write_model(t));
    return root;
}

static json_t *tokenizer_config(const mt_tokenizer *t, const char *chat_template) {
    json_t *cfg = json_object();
    ADD(cfg, "add_bos_token", json_boolean(t->add_bos));
    ADD(cfg, "add_eos_token", json_boolean(t->add_eos));
    ADD(cfg, "bos_token", string_or_null(text_or_null(t, t->bos_id)));
    ADD(cfg, "eos_token", string_or_null(text_or_null(t, t->eos_id)));
    ADD(cfg, "unk_token", string_or_null(text_or_null(t, t->unk_id)));
    ADD(cfg, "pad_token", string_or_null(text_or_null(t, t->pad_id)));
    ADD(cfg, "clean_up_tokenization_spaces", json_false());
    ADD(cfg, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    if (chat_template) ADD(cfg, "chat_template", json_string(chat_template));
    return cfg;
}

static mt_status write_json(const char *dir, const char *name, json_t *doc) {
    char *path = mt_path_join(dir, name);
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    mt_status s = path && text ? mt_write_file_atomic(path, text, strlen(text))
                               : mt_error(MT_ERR_NOMEM, "%s/%s: out of memory", dir, name);
    free(path);
    free(text);
    json_decref(doc);
    return s;
}

mt_status mt_tokenizer_save_hf(const mt_tokenizer *t, const char *dir, const char *chat_template) {
    if (!t || !dir) return mt_error(MT_ERR_ARG, "mt_tokenizer_save_hf: tokenizer or dir is NULL");
    if (chat_template && !mt_utf8_valid(chat_template, strlen(chat_template)))
        return mt_error(MT_ERR_ARG, "%s: chat template is not valid UTF-8", dir);
    for (int i = 0; i < t->n_vocab; i++) /* JSON strings must be UTF-8 */
        if (!mt_utf8_valid(t->text[i], (size_t)t->text_len[i]))
            return mt_error(MT_ERR_UNSUPPORTED, "%s: token %d is not valid UTF-8 and cannot be written to JSON", dir, i);
    mt_status s = mt_mkdir_p(dir);
    if (!s) s = write_json(dir, "tokenizer.json", tokenizer_json(t));
    if (!s) s = write_json(dir, "tokenizer_config.json", tokenizer_config(t, chat_template));
    return s;
}
