/* llama2.c checkpoints (legacy "version 0" export): seven int32 header fields (dim,
 * hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
 * means the classifier is stored separately), then every tensor as f32 in a fixed order,
 * grouped by kind across layers. Q/K rows are in the interleaved RoPE layout; RMSNorm eps
 * (1e-5) and RoPE theta (10000) are fixed by run.c, not stored. Also the tokenizer that
 * goes beside a .bin: found here, parsed by the tokenizer module. */
#include "formats/formats.h"
#include "formats/dtype.h"
#include "core/error.h"
#include "core/file.h"
#include "tokenizer/tokenizer.h"
#include <dirent.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_BYTES 28
#define LLAMA2C_EPS 1e-5f
#define LLAMA2C_THETA 10000.0f

/* File order of the per-layer tensors: rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3. */
static const int layer_order[] = {MT_T_ATTN_NORM, MT_T_WQ, MT_T_WK, MT_T_WV, MT_T_WO,
                                  MT_T_FFN_NORM, MT_T_GATE, MT_T_DOWN, MT_T_UP};
#define N_LAYER_ORDER ((int)(sizeof layer_order / sizeof layer_order[0]))
#define N_KINDS (MT_T_DOWN + 1)

/* Two freq_cis tables of seq_len * head_dim / 2 floats that run.c never reads. */
static size_t freq_cis_floats(const mt_config *c) { return 2 * (size_t)c->max_seq_len * (c->head_dim / 2); }

static size_t expected_floats(const mt_config *c) {
    return mt_config_param_count(c) + freq_cis_floats(c);
}

/* Header fields are checked one by one so the message names the field at fault. */
static mt_status config_from_header(const char *path, const int32_t h[7], mt_config *c) {
    static const char *const names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                                         "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++)
        if (h[i] <= 0 && !(i == 5 && h[i] < 0 && h[i] != INT_MIN))
            return mt_error(MT_ERR_FORMAT, "%s: invalid llama2.c header: %s = %d", path, names[i], h[i]);
    if (h[0] % h[3] != 0)
        return mt_error(MT_ERR_FORMAT, "%s: invalid llama2.c header: dim %d is not divisible by n_heads %d", path,
                        h[0], h[3]);
    memset(c, 0, sizeof *c);
    snprintf(c->arch, sizeof c->arch, "llama");
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->head_dim = h[0] / h[3];
    c->vocab_size = h[5] < 0 ? -h[5] : h[5];
    c->tied_embeddings = h[5] > 0;
    c->max_seq_len = h[6];
    c->norm_eps = LLAMA2C_EPS;
    c->rope_theta = LLAMA2C_THETA;
    c->rope_interleaved = 1;
    c->bos_id = 1; /* llama2.c's convention (its tokenizer files do not say) */
    c->eos_id = 2;
    c->pad_id = -1;
    char what[1100];
    snprintf(what, sizeof what, "%s: invalid llama2.c header", path);
    return mt_config_validate(c, what);
}

/* Tensor refs indexed by [layer][kind], so file order can be walked directly. */
static const mt_tensor_ref **index_refs(const mt_tensor_ref *refs, int n, int n_layers) {
    const mt_tensor_ref **table = calloc((size_t)(n_layers + 1) * N_KINDS, sizeof *table);
    if (!table) return NULL;
    for (int i = 0; i < n; i++)
        table[(size_t)(refs[i].layer + 1) * N_KINDS + refs[i].kind] = &refs[i];
    return table;
}

static const mt_tensor_ref *ref_at(const mt_tensor_ref **table, int layer, int kind) {
    return table[(size_t)(layer + 1) * N_KINDS + kind];
}

static size_t ref_floats(const mt_tensor_ref *r) { return (size_t)r->rows * r->cols; }

/* Copies the tensors out of the file's f32 payload in llama2.c order. */
static mt_status read_weights(mt_model *m, const uint8_t *p) {
    int n;
    mt_tensor_ref *refs = mt_model_tensor_list(m, &n);
    const mt_tensor_ref **t = refs ? index_refs(refs, n, m->cfg.n_layers) : NULL;
    if (!t) {
        free(refs);
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
#define TAKE(r) do { memcpy((r)->data, p, ref_floats(r) * 4); p += ref_floats(r) * 4; } while (0)
    TAKE(ref_at(t, -1, MT_T_EMBED));
    for (int k = 0; k < N_LAYER_ORDER; k++)
        for (int l = 0; l < m->cfg.n_layers; l++) TAKE(ref_at(t, l, layer_order[k]));
    TAKE(ref_at(t, -1, MT_T_NORM_FINAL));
    p += freq_cis_floats(&m->cfg) * 4;
    if (!m->cfg.tied_embeddings) TAKE(ref_at(t, -1, MT_T_OUTPUT));
#undef TAKE
    free(t);
    free(refs);
    return MT_OK;
}

static int is_tokenizer_name(const char *name) {
    size_t n = strlen(name);
    return strncmp(name, "tok", 3) == 0 && n > 7 && strcmp(name + n - 4, ".bin") == 0;
}

/* The single tok*.bin beside the model, NULL when there is none. */
static mt_status find_tokenizer_beside(const char *model_path, char **found) {
    *found = NULL;
    char *dir_copy = mt_path_dir(model_path), *base_copy = strdup(model_path);
    DIR *d = dir_copy && base_copy ? opendir(dir_copy) : NULL;
    const char *self = base_copy ? basename(base_copy) : "";
    char *first = NULL, *second = NULL;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!is_tokenizer_name(e->d_name) || strcmp(e->d_name, self) == 0) continue;
        if (!first) first = strdup(e->d_name);
        else if (!second) second = strdup(e->d_name);
    }
    if (d) closedir(d);
    mt_status s = MT_OK;
    if (second)
        s = mt_error(MT_ERR_ARG, "%s: several tokenizers beside the model (%s, %s, ...): choose one with "
                     "--tokenizer", model_path, first, second);
    else if (first && !(*found = mt_path_join(dir_copy, first)))
        s = mt_error(MT_ERR_NOMEM, "out of memory");
    free(first);
    free(second);
    free(dir_copy);
    free(base_copy);
    return s;
}

static mt_status attach_tokenizer(mt_model *m, const char *path, const mt_load_options *opts) {
    char *beside = NULL;
    const char *tok_path = opts && opts->tokenizer_path ? opts->tokenizer_path : NULL;
    if (!tok_path) {
        mt_status s = find_tokenizer_beside(path, &beside);
        if (s) return s;
        tok_path = beside;
    }
    mt_status s = MT_OK;
    if (tok_path) s = mt_load_user_tokenizer(tok_path, path, m->cfg.vocab_size, 1, &m->tok, &m->chat_template);
    if (!s && m->tok) {
        m->cfg.bos_id = mt_tokenizer_bos(m->tok);
        m->cfg.eos_id = mt_tokenizer_eos(m->tok);
    }
    free(beside);
    return s;
}

mt_status mt_llama2c_load(const char *path, const mt_load_options *opts, mt_model **out) {
    *out = NULL;
    mt_mapped_file f;
    mt_status s = mt_file_map(path, &f);
    if (s) return s;
    mt_config cfg;
    int32_t h[7];
    if (f.size < HEADER_BYTES) {
        s = mt_error(MT_ERR_FORMAT, "%s: %zu bytes is too small for a llama2.c model", path, f.size);
    } else if (memcmp(f.data, "24ka", 4) == 0) {
        s = mt_error(MT_ERR_UNSUPPORTED, "%s: llama2.c export version %u is not supported; export with "
                     "--version 0 (legacy)", path, mt_load_u32(f.data + 4));
    } else {
        for (int i = 0; i < 7; i++) h[i] = (int32_t)mt_load_u32(f.data + 4 * i);
        s = config_from_header(path, h, &cfg);
    }
    if (!s && (f.size - HEADER_BYTES) / 4 < expected_floats(&cfg))
        s = mt_error(MT_ERR_FORMAT, "%s: truncated: expected %zu bytes, file has %zu", path,
                     HEADER_BYTES + 4 * expected_floats(&cfg), f.size);
    mt_model *m = NULL;
    if (!s) s = mt_model_alloc(&cfg, &m);
    if (!s) s = read_weights(m, f.data + HEADER_BYTES);
    mt_file_unmap(&f);
    if (!s) s = attach_tokenizer(m, path, opts);
    if (s) mt_model_free(m);
    else *out = m;
    return s;
}

/* ---- writer ---- */

static mt_status check_representable(const mt_model *m, const char *path) {
    const mt_config *c = &m->cfg;
    const char *why = c->attn_bias ? "attention biases"
                      : c->rope_scaling != MT_ROPE_SCALING_NONE ? "RoPE scaling"
                      : c->head_dim * c->n_heads != c->dim ? "head_dim different from dim / n_heads"
                      : c->rope_theta != LLAMA2C_THETA ? "RoPE theta other than 10000"
                      : c->norm_eps != LLAMA2C_EPS ? "RMSNorm eps other than 1e-5"
                      : NULL;
    if (why)
        return mt_error(MT_ERR_UNSUPPORTED, "%s: the llama2.c format cannot store a model with %s; use hf or gguf",
                        path, why);
    if (m->tok && mt_tokenizer_vocab_size(m->tok) != c->vocab_size)
        return mt_error(MT_ERR_UNSUPPORTED, "%s: llama2.c needs as many tokenizer entries (%d) as model vocabulary "
                        "(%d)", path, mt_tokenizer_vocab_size(m->tok), c->vocab_size);
    return MT_OK;
}

static mt_status write_header(mt_atomic_file *f, const mt_config *c) {
    int32_t h[7] = {c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                    c->tied_embeddings ? c->vocab_size : -c->vocab_size, c->max_seq_len};
    return mt_atomic_write(f, h, sizeof h);
}

/* freq_cis_real then freq_cis_imag, as llama2.c's export computes them. */
static mt_status write_freq_cis(mt_atomic_file *f, const mt_config *c) {
    int half = c->head_dim / 2;
    float *row = malloc((size_t)half * sizeof(float));
    mt_status s = row ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    for (int part = 0; part < 2 && !s; part++)
        for (int p = 0; p < c->max_seq_len && !s; p++) {
            for (int i = 0; i < half; i++) {
                double a = p / pow(c->rope_theta, (double)(2 * i) / c->head_dim);
                row[i] = (float)(part == 0 ? cos(a) : sin(a));
            }
            s = mt_atomic_write(f, row, (size_t)half * sizeof(float));
        }
    free(row);
    return s;
}

static mt_status write_weights(mt_atomic_file *f, const mt_model *m, const mt_tensor_ref **t, float *scratch) {
    mt_status s = MT_OK;
#define PUT(r) do { if (!s) s = mt_atomic_write(f, mt_tensor_in_layout(m, (r), 1, scratch), ref_floats(r) * 4); } while (0)
    PUT(ref_at(t, -1, MT_T_EMBED));
    for (int k = 0; k < N_LAYER_ORDER; k++)
        for (int l = 0; l < m->cfg.n_layers; l++) PUT(ref_at(t, l, layer_order[k]));
    PUT(ref_at(t, -1, MT_T_NORM_FINAL));
    if (!s) s = write_freq_cis(f, &m->cfg);
    if (!m->cfg.tied_embeddings) PUT(ref_at(t, -1, MT_T_OUTPUT));
#undef PUT
    return s;
}

static mt_status write_tokenizer_beside(const mt_model *m, const char *path) {
    char *copy = mt_path_dir(path);
    char *tok_path = copy ? mt_path_join(copy, "tokenizer.bin") : NULL;
    mt_status s = tok_path ? mt_tokenizer_save_llama2c(m->tok, tok_path) : mt_error(MT_ERR_NOMEM, "out of memory");
    free(tok_path);
    free(copy);
    return s;
}

mt_status mt_llama2c_save(const mt_model *m, const char *path) {
    mt_status s = check_representable(m, path);
    /* The tokenizer goes first: if it cannot be written, no model file appears either. */
    if (!s && m->tok) s = write_tokenizer_beside(m, path);
    if (s) return s;
    int n;
    mt_tensor_ref *refs = mt_model_tensor_list(m, &n);
    const mt_tensor_ref **table = refs ? index_refs(refs, n, m->cfg.n_layers) : NULL;
    float *scratch = malloc(mt_qk_scratch_floats(&m->cfg) * sizeof(float));
    mt_atomic_file f;
    if (!table || !scratch) s = mt_error(MT_ERR_NOMEM, "out of memory writing %s", path);
    else if (!(s = mt_atomic_open(&f, path))) {
        s = write_header(&f, &m->cfg);
        if (!s) s = write_weights(&f, m, table, scratch);
        if (!s) s = mt_atomic_commit(&f);
        else mt_atomic_abort(&f);
    }
    free(scratch);
    free(table);
    free(refs);
    return s;
}
