/* Model files in and out: mt_model_load picks the format from the path (a directory is a
 * Hugging Face checkpoint, ".gguf" or the GGUF magic is GGUF, anything else a llama2.c
 * .bin), mt_model_save writes any of the three. Also the helpers every format shares: the
 * tensor list, RoPE layout conversion on write, and tokenizer files named by the user. */
#include "formats/formats.h"
#include "formats/gguf.h"
#include "core/error.h"
#include "core/file.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

mt_status mt_format_parse(const char *name, mt_format *out) {
    if (name && strcasecmp(name, "hf") == 0) *out = MT_FORMAT_HF;
    else if (name && strcasecmp(name, "gguf") == 0) *out = MT_FORMAT_GGUF;
    else if (name && strcasecmp(name, "llama2c") == 0) *out = MT_FORMAT_LLAMA2C;
    else return mt_error(MT_ERR_ARG, "unknown format '%s' (hf, gguf or llama2c)", name ? name : "(null)");
    return MT_OK;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int has_gguf_magic(const char *path) {
    char magic[4] = {0};
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    size_t got = fread(magic, 1, 4, fp);
    fclose(fp);
    return got == 4 && memcmp(magic, "GGUF", 4) == 0;
}

/* A path to config.json or a .safetensors file inside a checkpoint means the checkpoint. */
static mt_status load_hf_from_file(const char *path, const mt_load_options *opts, mt_model **out) {
    char *copy = mt_path_dir(path);
    if (!copy) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_status s = mt_hf_load(copy, opts, out);
    free(copy);
    return s;
}

mt_status mt_model_load(const char *path, const mt_load_options *opts, mt_model **out) {
    *out = NULL;
    if (!path) return mt_error(MT_ERR_ARG, "mt_model_load: no path");
    struct stat st;
    if (stat(path, &st) != 0) return mt_error(MT_ERR_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return mt_hf_load(path, opts, out);
    if (ends_with(path, "config.json") || ends_with(path, ".safetensors") || ends_with(path, ".index.json"))
        return load_hf_from_file(path, opts, out);
    if (ends_with(path, ".gguf") || has_gguf_magic(path)) return mt_gguf_load_model(path, opts, out);
    return mt_llama2c_load(path, opts, out);
}

mt_status mt_model_save(const mt_model *m, const char *path, mt_format fmt) {
    if (!m || !path) return mt_error(MT_ERR_ARG, "mt_model_save: no model or path");
    if (m->base)
        return mt_error(MT_ERR_ARG, "mt_model_save: the model's linear layers are held as %s; go back to f32 first "
                        "(mt_model_set_base_dtype(m, \"f32\"))", mt_model_base_dtype(m));
    /* Memory experts are picked per token by a router: no change to the weights equals them,
     * so a saved model would silently lose what they memorised. */
    if (m->mome)
        return mt_error(MT_ERR_UNSUPPORTED, "%s: the model has memory experts attached (a memory-tuned adapter): they "
                        "are chosen per token by a router, not a change to the weights, so no model file can hold them "
                        "and saving would drop the memorised facts; use the adapter unmerged (mt_adapter_set_load, "
                        "--adapter DIR), or detach it first", path);
    /* Such a file could not be loaded again. */
    if (m->tok && mt_tokenizer_vocab_size(m->tok) > m->cfg.vocab_size)
        return mt_error(MT_ERR_MISMATCH, "%s: tokenizer has %d tokens, more than the model's vocabulary of %d", path,
                        mt_tokenizer_vocab_size(m->tok), m->cfg.vocab_size);
    switch (fmt) {
    case MT_FORMAT_HF: return mt_hf_save(m, path);
    case MT_FORMAT_GGUF: return mt_gguf_save_model(m, path);
    case MT_FORMAT_LLAMA2C: return mt_llama2c_save(m, path);
    }
    return mt_error(MT_ERR_ARG, "mt_model_save: unknown format %d", (int)fmt);
}

/* ---- shared helpers ---- */

mt_tensor_ref *mt_model_tensor_list(const mt_model *m, int *n) {
    *n = mt_model_tensors(m, NULL, 0);
    mt_tensor_ref *refs = malloc((size_t)*n * sizeof *refs);
    if (refs) mt_model_tensors(m, refs, *n);
    else mt_error(MT_ERR_NOMEM, "out of memory listing %d tensors", *n);
    return refs;
}

int mt_tensor_rope_heads(const mt_config *c, int kind) {
    if (kind == MT_T_WQ || kind == MT_T_BQ) return c->n_heads;
    if (kind == MT_T_WK || kind == MT_T_BK) return c->n_kv_heads;
    return 0;
}

mt_status mt_check_params_fit(const char *path, const mt_config *cfg, uint64_t bytes, double min_bytes_per_param) {
    double need = (double)mt_config_param_count(cfg) * min_bytes_per_param;
    if (need <= (double)bytes) return MT_OK;
    return mt_error(MT_ERR_FORMAT, "%s: the config implies %zu parameters, more than the %llu bytes of tensor data "
                    "can hold", path, mt_config_param_count(cfg), (unsigned long long)bytes);
}

size_t mt_qk_scratch_floats(const mt_config *c) { return (size_t)c->n_heads * c->head_dim * c->dim; }

const float *mt_tensor_in_layout(const mt_model *m, const mt_tensor_ref *r, int interleaved, float *scratch) {
    int heads = mt_tensor_rope_heads(&m->cfg, r->kind);
    if (!heads || m->cfg.rope_interleaved == interleaved) return r->data;
    mt_permute_qk_rows(scratch, r->data, heads, m->cfg.head_dim, r->cols, interleaved);
    return scratch;
}

mt_status mt_check_tokenizer_fits(const mt_tokenizer *tok, const char *tok_path, const char *model_path,
                                  int model_vocab, int exact) {
    int n = mt_tokenizer_vocab_size(tok);
    if (exact ? n == model_vocab : n <= model_vocab) return MT_OK;
    return mt_error(MT_ERR_MISMATCH, "tokenizer %s has %d tokens but model %s has a vocabulary of %d%s", tok_path, n,
                    model_path, model_vocab, exact ? " (they must be equal)" : "");
}

mt_status mt_load_user_tokenizer(const char *tok_path, const char *model_path, int model_vocab, int exact,
                                 mt_tokenizer **tok, char **chat_template) {
    *tok = NULL;
    mt_status s;
    if (ends_with(tok_path, ".json")) {
        s = mt_tokenizer_load_hf(tok_path, tok, chat_template);
    } else if (ends_with(tok_path, ".gguf") || has_gguf_magic(tok_path)) {
        s = mt_tokenizer_load_gguf(tok_path, tok);
    } else {
        /* 0: take every token the file holds; the fit check below names both files. */
        s = mt_tokenizer_load_llama2c(tok_path, 0, tok);
    }
    if (!s) s = mt_check_tokenizer_fits(*tok, tok_path, model_path, model_vocab, exact);
    if (s && *tok) {
        mt_tokenizer_free(*tok);
        *tok = NULL;
    }
    return s;
}
