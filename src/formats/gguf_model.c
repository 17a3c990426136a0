/* GGUF models: llama.cpp's "llama" (and "qwen2") metadata keys and tensor names mapped to
 * mt_config and the model's tensors, the tokenizer.ggml.* vocabulary mapped to and from
 * mt_vocab_spec, and Llama 3 RoPE scaling, which llama.cpp stores as a rope_freqs.weight
 * tensor of per-frequency divisors rather than as parameters.
 *
 * Layouts: GGUF lists dimensions innermost first (a [rows, cols] weight has ne = {cols,
 * rows}). llama.cpp's converter permutes llama Q/K rows into interleaved RoPE pairs; qwen2
 * weights keep HF's rotate-half layout. The writer writes a Qwen2 model as "qwen2" and every
 * other as "llama" with interleaved Q/K, plus memtune.* keys that restore what llama's keys
 * cannot say exactly, with tensors in F32 or the type convert --type asks for. */
#include "formats/formats.h"
#include "formats/gguf.h"
#include "core/error.h"
#include "kernels/quant.h"
#include "model/adapter.h"
#include "model/base_store.h"
#include "tokenizer/tokenizer.h"
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tensor names ---- */

static const char *layer_tensor_base(int kind) {
    switch (kind) {
    case MT_T_ATTN_NORM: return "attn_norm";
    case MT_T_WQ: case MT_T_BQ: return "attn_q";
    case MT_T_WK: case MT_T_BK: return "attn_k";
    case MT_T_WV: case MT_T_BV: return "attn_v";
    case MT_T_WO: return "attn_output";
    case MT_T_FFN_NORM: return "ffn_norm";
    case MT_T_GATE: return "ffn_gate";
    case MT_T_UP: return "ffn_up";
    default: return "ffn_down";
    }
}

static void gguf_tensor_name(const mt_tensor_ref *r, char *buf, size_t cap) {
    if (r->kind == MT_T_EMBED) snprintf(buf, cap, "token_embd.weight");
    else if (r->kind == MT_T_NORM_FINAL) snprintf(buf, cap, "output_norm.weight");
    else if (r->kind == MT_T_OUTPUT) snprintf(buf, cap, "output.weight");
    else {
        int bias = r->kind == MT_T_BQ || r->kind == MT_T_BK || r->kind == MT_T_BV;
        snprintf(buf, cap, "blk.%d.%s.%s", r->layer, layer_tensor_base(r->kind), bias ? "bias" : "weight");
    }
}

/* ---- Llama 3 RoPE scaling as per-frequency divisors ---- */

/* What llama.cpp's converter stores in rope_freqs.weight: the factor each frequency of
 * theta^(-2i/d) is divided by under Llama 3 scaling. */
static void llama3_rope_divisors(const mt_config *c, double factor, double low, double high, double orig,
                                 float *out) {
    const double two_pi = 6.283185307179586;
    for (int i = 0; i < c->head_dim / 2; i++) {
        double wavelen = two_pi * pow(c->rope_theta, (double)(2 * i) / c->head_dim);
        if (wavelen < orig / high) out[i] = 1.0f;
        else if (wavelen > orig / low) out[i] = (float)factor;
        else {
            double smooth = (orig / wavelen - low) / (high - low);
            out[i] = (float)(1.0 / ((1.0 - smooth) / factor + smooth));
        }
    }
}

static int divisors_match(const float *a, const float *b, int n) {
    for (int i = 0; i < n; i++)
        if (fabsf(a[i] - b[i]) > 1e-4f * fabsf(b[i])) return 0;
    return 1;
}

/* Least-squares fit of the blended band. Only orig/(high-low) and low/(high-low) are
 * determined by the divisors, so low_freq_factor is taken as 1 (as in every Llama 3). */
static int fit_llama3(const mt_config *c, const float *f, double factor, double *high, double *orig) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int n = 0;
    for (int i = 0; i < c->head_dim / 2; i++) {
        if (fabs(f[i] - 1.0) < 1e-6 || fabs(f[i] - factor) < 1e-6 * factor) continue;
        double x = 1.0 / (6.283185307179586 * pow(c->rope_theta, (double)(2 * i) / c->head_dim));
        double y = (1.0 / f[i] - 1.0 / factor) / (1.0 - 1.0 / factor); /* the blend weight */
        sx += x, sy += y, sxx += x * x, sxy += x * y, n++;
    }
    if (n < 2 || sxx * n - sx * sx <= 0) return 0;
    double a = (n * sxy - sx * sy) / (n * sxx - sx * sx), b = (sy - a * sx) / n;
    if (!(b < 0) || !(a > 0)) return 0;
    *orig = round(-a / b);
    *high = 1.0 + *orig / a;
    return 1;
}

static mt_status llama3_from_rope_freqs(const char *path, const mt_gguf *g, const mt_gguf_tensor *t, mt_config *c) {
    int half = c->head_dim / 2;
    float *f = malloc((size_t)half * 2 * sizeof(float));
    if (!f) return mt_error(MT_ERR_NOMEM, "out of memory");
    float *trial = f + half;
    mt_status s = t->n_elems == (uint64_t)half ? mt_gguf_read_f32(g, t, f, (size_t)half)
                                               : mt_error(MT_ERR_FORMAT, "%s: rope_freqs.weight has %llu values, "
                                                          "expected %d", path, (unsigned long long)t->n_elems, half);
    double factor = 1.0, high = 4.0, orig = 8192.0;
    for (int i = 0; i < half && !s; i++) factor = f[i] > factor ? f[i] : factor;
    if (!s && factor > 1.0) {
        /* Llama 3.1/3.2's published parameters first, else whatever the divisors imply. */
        llama3_rope_divisors(c, factor, 1.0, high, orig, trial);
        int ok = divisors_match(trial, f, half);
        if (!ok && fit_llama3(c, f, factor, &high, &orig)) {
            llama3_rope_divisors(c, factor, 1.0, high, orig, trial);
            ok = divisors_match(trial, f, half);
        }
        if (!ok) s = mt_error(MT_ERR_UNSUPPORTED, "%s: rope_freqs.weight does not follow Llama 3 RoPE scaling", path);
        c->rope_scaling = MT_ROPE_SCALING_LLAMA3;
        c->rope_factor = (float)factor;
        c->rope_low_freq_factor = 1.0f;
        c->rope_high_freq_factor = (float)high;
        c->rope_original_max_pos = (int)orig;
    }
    free(f);
    return s;
}

/* memtune's own keys carry the exact parameters; files from elsewhere only have the tensor. */
static mt_status read_rope_scaling(const char *path, const mt_gguf *g, const char *prefix, mt_config *c) {
    char *type = NULL, key[96];
    mt_status s = mt_gguf_get_string(g, "memtune.rope.scaling.type", &type, 0);
    if (!s && type) {
        double factor = 0, low = 0, high = 0;
        int64_t orig = 0;
        if (strcmp(type, "llama3") != 0) s = mt_error(MT_ERR_UNSUPPORTED, "%s: rope scaling %s", path, type);
        if (!s && !(s = mt_gguf_get_float(g, "memtune.rope.scaling.factor", &factor, 1)) &&
            !(s = mt_gguf_get_float(g, "memtune.rope.scaling.low_freq_factor", &low, 1)) &&
            !(s = mt_gguf_get_float(g, "memtune.rope.scaling.high_freq_factor", &high, 1)) &&
            !(s = mt_gguf_get_int(g, "memtune.rope.scaling.original_context_length", &orig, 1))) {
            c->rope_scaling = MT_ROPE_SCALING_LLAMA3;
            c->rope_factor = (float)factor;
            c->rope_low_freq_factor = (float)low;
            c->rope_high_freq_factor = (float)high;
            c->rope_original_max_pos = orig > 0 && orig <= INT_MAX ? (int)orig : -1;
        }
        free(type);
        return s;
    }
    /* llama.cpp applies <arch>.rope.scaling.type linear/yarn itself; memtune does not. */
    snprintf(key, sizeof key, "%s.rope.scaling.type", prefix);
    if (!s && !(s = mt_gguf_get_string(g, key, &type, 0)) && type && strcmp(type, "none") != 0)
        s = mt_error(MT_ERR_UNSUPPORTED, "%s: rope scaling type '%s' is not supported", path, type);
    free(type);
    const mt_gguf_tensor *t = mt_gguf_find_tensor(g, "rope_freqs.weight");
    if (!s && t) s = llama3_from_rope_freqs(path, g, t, c);
    return s;
}

/* ---- config ---- */

static mt_status get_size(const mt_gguf *g, const char *prefix, const char *key, int *out, int required) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", prefix, key);
    if (!required && !mt_gguf_find(g, full)) return MT_OK; /* keep the caller's default */
    int64_t v = 0;
    mt_status s = mt_gguf_get_int(g, full, &v, required);
    if (!s && (v <= 0 || v > INT_MAX))
        s = mt_error(MT_ERR_FORMAT, "%s: %s = %lld is out of range", g->file.path, full, (long long)v);
    if (!s) *out = (int)v;
    return s;
}

static mt_status get_real(const mt_gguf *g, const char *prefix, const char *key, float *out, int required) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", prefix, key);
    double v = *out;
    mt_status s = mt_gguf_get_float(g, full, &v, required);
    if (!s) *out = (float)v;
    return s;
}

/* A token id, or -1 when absent or outside the vocabulary (files use 0xffffffff for none). */
static int token_id(const mt_gguf *g, const char *key, int n_vocab) {
    int64_t v = -1;
    if (mt_gguf_get_int(g, key, &v, 0) != MT_OK) return -1;
    return v >= 0 && v < n_vocab ? (int)v : -1;
}

static mt_status read_sizes(const mt_gguf *g, const char *p, mt_config *c) {
    mt_status s;
    c->max_seq_len = 2048;
    c->rope_theta = 10000.0f;
    if ((s = get_size(g, p, "embedding_length", &c->dim, 1)) ||
        (s = get_size(g, p, "feed_forward_length", &c->hidden_dim, 1)) ||
        (s = get_size(g, p, "block_count", &c->n_layers, 1)) ||
        (s = get_size(g, p, "attention.head_count", &c->n_heads, 1)) ||
        (s = get_size(g, p, "context_length", &c->max_seq_len, 0)) ||
        (s = get_real(g, p, "attention.layer_norm_rms_epsilon", &c->norm_eps, 1)) ||
        (s = get_real(g, p, "rope.freq_base", &c->rope_theta, 0)))
        return s;
    /* Defaults as llama.cpp's: KV heads = heads, head size = dim / heads. */
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->dim / c->n_heads;
    if ((s = get_size(g, p, "attention.head_count_kv", &c->n_kv_heads, 0)) ||
        (s = get_size(g, p, "attention.key_length", &c->head_dim, 0)))
        return s;
    int value_length = c->head_dim, rope_dims = c->head_dim;
    if ((s = get_size(g, p, "attention.value_length", &value_length, 0)) ||
        (s = get_size(g, p, "rope.dimension_count", &rope_dims, 0)))
        return s;
    if (value_length != c->head_dim || rope_dims != c->head_dim)
        return mt_error(MT_ERR_UNSUPPORTED, "%s: key length %d, value length %d and RoPE dimensions %d differ; "
                        "memtune needs them equal", g->file.path, c->head_dim, value_length, rope_dims);
    return MT_OK;
}

/* The output head is tied when absent, or when it is a byte-for-byte copy of the embedding
 * (llama.cpp's llama2.c converter writes such a copy for tied models). */
static int output_is_tied(const mt_gguf *g) {
    const mt_gguf_tensor *out = mt_gguf_find_tensor(g, "output.weight");
    const mt_gguf_tensor *emb = mt_gguf_find_tensor(g, "token_embd.weight");
    if (!out) return 1;
    return emb && out->type == emb->type && out->nbytes && out->nbytes == emb->nbytes &&
           memcmp(out->data, emb->data, out->nbytes) == 0;
}

static mt_status read_config(const mt_gguf *g, mt_config *c) {
    const char *path = g->file.path;
    char *arch = NULL, *label = NULL;
    mt_status s = mt_gguf_get_string(g, "general.architecture", &arch, 1);
    if (s) return s;
    memset(c, 0, sizeof *c);
    if (strcmp(arch, "llama") != 0 && strcmp(arch, "qwen2") != 0)
        s = mt_error(MT_ERR_UNSUPPORTED, "%s: GGUF architecture '%s' is not supported (llama, qwen2)", path, arch);
    if (!s) s = read_sizes(g, arch, c);
    const mt_gguf_tensor *embd = mt_gguf_find_tensor(g, "token_embd.weight");
    if (!s && (!embd || embd->n_dims != 2 || embd->ne[1] > INT_MAX))
        s = mt_error(MT_ERR_FORMAT, "%s: missing or malformed tensor token_embd.weight", path);
    if (!s) c->vocab_size = (int)embd->ne[1];
    int declared_vocab = c->vocab_size;
    if (!s) s = get_size(g, arch, "vocab_size", &declared_vocab, 0);
    if (!s && declared_vocab != c->vocab_size)
        s = mt_error(MT_ERR_MISMATCH, "%s: %s.vocab_size %d but token_embd.weight has %d rows", path, arch,
                     declared_vocab, c->vocab_size);
    if (!s) s = read_rope_scaling(path, g, arch, c);
    if (!s) s = mt_gguf_get_string(g, "memtune.arch", &label, 0);
    if (!s) {
        snprintf(c->arch, sizeof c->arch, "%s", label && mt_arch_known(label) ? label : arch);
        c->rope_interleaved = strcmp(arch, "llama") == 0;
        c->attn_bias = strcmp(arch, "qwen2") == 0 || mt_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
        c->tied_embeddings = output_is_tied(g);
        c->bos_id = token_id(g, "tokenizer.ggml.bos_token_id", c->vocab_size);
        c->eos_id = token_id(g, "tokenizer.ggml.eos_token_id", c->vocab_size);
        c->pad_id = token_id(g, "tokenizer.ggml.padding_token_id", c->vocab_size);
        s = mt_config_validate(c, path);
    }
    free(label);
    free(arch);
    return s;
}

/* ---- weights ---- */

static mt_status check_shape(const char *path, const char *name, const mt_gguf_tensor *t, const mt_tensor_ref *r) {
    uint64_t want[MT_GGUF_MAX_DIMS] = {r->is_vector ? (uint64_t)r->rows : (uint64_t)r->cols,
                                       r->is_vector ? 1 : (uint64_t)r->rows, 1, 1};
    if (memcmp(want, t->ne, sizeof want) == 0) return MT_OK;
    return mt_error(MT_ERR_MISMATCH, "%s: tensor %s has shape [%llu, %llu, %llu, %llu] but the metadata implies "
                    "[%llu, %llu] (GGUF order, innermost first)", path, name, (unsigned long long)t->ne[0],
                    (unsigned long long)t->ne[1], (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                    (unsigned long long)want[0], (unsigned long long)want[1]);
}

/* The linear site (model/adapter.h) a tensor kind is, or -1. */
static int site_of_kind(int kind) {
    switch (kind) {
    case MT_T_WQ: return MT_SITE_Q;
    case MT_T_WK: return MT_SITE_K;
    case MT_T_WV: return MT_SITE_V;
    case MT_T_WO: return MT_SITE_O;
    case MT_T_GATE: return MT_SITE_GATE;
    case MT_T_UP: return MT_SITE_UP;
    case MT_T_DOWN: return MT_SITE_DOWN;
    default: return -1;
    }
}

static int is_block_type(uint32_t t) { return t != MT_QTYPE_F32 && t != MT_QTYPE_F16 && t != MT_QTYPE_BF16; }

/* once a kept tensor is copied its mapped pages go, so loading never holds it twice */
typedef struct {
    const mt_gguf *g;
    const mt_gguf_tensor **kept;
} release_ctx;

static void release_copied(void *ctx, size_t site) {
    release_ctx *rc = ctx;
    mt_file_release(&rc->g->file, rc->kept[site]->data, rc->kept[site]->nbytes);
}

/* keep: linear sites whose every tensor is a block type stay as the file's blocks
 * (mt_load_options.keep_quantized); every other tensor is dequantized into the f32 block. */
static mt_status read_weights(const mt_gguf *g, mt_model *m, int keep) {
    int n;
    mt_tensor_ref *refs = mt_model_tensor_list(m, &n);
    size_t n_sites = (size_t)m->cfg.n_layers * MT_N_SITES;
    uint32_t *types = calloc(n_sites + 1, sizeof *types);
    const uint8_t **bytes = calloc(n_sites + 1, sizeof *bytes);
    const mt_gguf_tensor **kept = calloc(n_sites + 1, sizeof *kept);
    mt_status s = refs && types && bytes && kept ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && !s && keep; i++) { /* keep only when every site can stay in blocks */
        char name[128];
        gguf_tensor_name(&refs[i], name, sizeof name);
        const mt_gguf_tensor *t = mt_gguf_find_tensor(g, name);
        int site = site_of_kind(refs[i].kind);
        if (site >= 0 && (!t || !is_block_type(t->type) || !mt_qtype_size_of(t->type).block)) keep = 0;
    }
    for (int i = 0; i < n && !s; i++) {
        char name[128];
        gguf_tensor_name(&refs[i], name, sizeof name);
        const mt_gguf_tensor *t = mt_gguf_find_tensor(g, name);
        int site = site_of_kind(refs[i].kind);
        if (!t) s = mt_error(MT_ERR_FORMAT, "%s: missing tensor %s", g->file.path, name);
        else if ((s = check_shape(g->file.path, name, t, &refs[i]))) break;
        else if (keep && site >= 0) {
            size_t k = (size_t)refs[i].layer * MT_N_SITES + site;
            types[k] = t->type, bytes[k] = t->data, kept[k] = t;
        } else s = mt_gguf_read_f32(g, t, refs[i].data, (size_t)refs[i].rows * refs[i].cols);
    }
    release_ctx rc = {g, kept};
    if (!s && keep) s = mt_model_adopt_typed_sites(m, types, bytes, release_copied, &rc);
    free(refs);
    free(types);
    free(bytes);
    free(kept);
    return s;
}

/* ---- tokenizer metadata ---- */

/* llama.cpp's names for memtune's pre-tokenizers. Others are written as "default" for
 * llama.cpp, with memtune.tokenizer.* keys carrying the exact regexes for memtune. */
static const char *pre_to_gguf(const char *name) {
    static const char *const names[][2] = {{"gpt2", "gpt-2"}, {"llama3", "llama-bpe"}, {"smollm", "smollm"},
                                           {"qwen2", "qwen2"}};
    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, names[i][0]) == 0) return names[i][1];
    return NULL;
}

typedef struct {
    char *model, *pre;
    char **tokens, **merges, **pre_regex;
    float *scores;
    int32_t *types;
    uint64_t n_tokens, n_merges, n_scores, n_types, n_pre_regex;
} gguf_vocab;

static void vocab_free(gguf_vocab *v) {
    free(v->model);
    free(v->pre);
    free(v->tokens);
    free(v->merges);
    free(v->pre_regex);
    free(v->scores);
    free(v->types);
}

static mt_status read_vocab_arrays(const mt_gguf *g, gguf_vocab *v, int bpe) {
    const char *path = g->file.path;
    mt_status s;
    if ((s = mt_gguf_get_strings(g, "tokenizer.ggml.tokens", &v->tokens, &v->n_tokens, 1)) ||
        (s = mt_gguf_get_floats(g, "tokenizer.ggml.scores", &v->scores, &v->n_scores, 0)) ||
        (s = mt_gguf_get_ints(g, "tokenizer.ggml.token_type", &v->types, &v->n_types, 0)) ||
        (s = mt_gguf_get_strings(g, "tokenizer.ggml.merges", &v->merges, &v->n_merges, bpe)) ||
        (s = mt_gguf_get_string(g, "memtune.tokenizer.pre", &v->pre, 0)) ||
        (!v->pre && (s = mt_gguf_get_string(g, "tokenizer.ggml.pre", &v->pre, 0))) ||
        (s = mt_gguf_get_strings(g, "memtune.tokenizer.pre_regex", &v->pre_regex, &v->n_pre_regex, 0)))
        return s;
    if (v->n_tokens == 0 || v->n_tokens > (1 << 22))
        return mt_error(MT_ERR_FORMAT, "%s: tokenizer has %llu tokens", path, (unsigned long long)v->n_tokens);
    if ((v->scores && v->n_scores != v->n_tokens) || (v->types && v->n_types != v->n_tokens))
        return mt_error(MT_ERR_FORMAT, "%s: tokenizer scores/token_type arrays do not match the %llu tokens", path,
                        (unsigned long long)v->n_tokens);
    if (v->n_merges > INT_MAX || v->n_pre_regex > 64)
        return mt_error(MT_ERR_FORMAT, "%s: too many merges or pre-tokenizer regexes", path);
    return MT_OK;
}

static mt_status fill_spec(const mt_gguf *g, gguf_vocab *v, int bpe, mt_vocab_spec *spec) {
    mt_status s = read_vocab_arrays(g, v, bpe);
    if (s) return s;
    memset(spec, 0, sizeof *spec);
    int n = (int)v->n_tokens;
    spec->kind = bpe ? MT_TOK_BPE : MT_TOK_SPM;
    spec->n_vocab = n;
    spec->tokens = (const char *const *)v->tokens;
    spec->scores = v->scores;
    spec->types = v->types;
    spec->n_merges = (int)v->n_merges;
    spec->merges = (const char *const *)v->merges;
    spec->bos_id = token_id(g, "tokenizer.ggml.bos_token_id", n);
    spec->eos_id = token_id(g, "tokenizer.ggml.eos_token_id", n);
    spec->unk_id = token_id(g, "tokenizer.ggml.unknown_token_id", n);
    spec->pad_id = token_id(g, "tokenizer.ggml.padding_token_id", n);
    spec->add_bos = !bpe; /* llama.cpp's defaults when the file does not say */
    spec->add_space_prefix = !bpe;
    spec->pre = v->pre; /* the tokenizer knows llama.cpp's names too */
    spec->n_pre_regex = (int)v->n_pre_regex;
    spec->pre_regex = (const char *const *)v->pre_regex;
    if ((s = mt_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &spec->add_bos, 0)) ||
        (s = mt_gguf_get_bool(g, "memtune.tokenizer.ignore_merges", &spec->ignore_merges, 0)) ||
        (s = mt_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &spec->add_eos, 0)) ||
        (s = mt_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &spec->add_space_prefix, 0)))
        return s;
    return MT_OK;
}

/* Builds the tokenizer described by the metadata; *tok stays NULL when there is none. */
static mt_status tokenizer_from_gguf(const mt_gguf *g, mt_tokenizer **tok, char **chat_template) {
    gguf_vocab v = {0};
    mt_vocab_spec spec;
    *tok = NULL;
    mt_status s = mt_gguf_get_string(g, "tokenizer.ggml.model", &v.model, 0);
    if (s || !v.model || strcmp(v.model, "no_vocab") == 0 || strcmp(v.model, "none") == 0) {
        vocab_free(&v);
        return s;
    }
    int bpe = strcmp(v.model, "gpt2") == 0;
    if (!bpe && strcmp(v.model, "llama") != 0)
        s = mt_error(MT_ERR_UNSUPPORTED, "%s: tokenizer model '%s' is not supported (llama, gpt2)", g->file.path, v.model);
    if (!s) s = fill_spec(g, &v, bpe, &spec);
    if (!s && (s = mt_tokenizer_from_spec(&spec, tok))) s = mt_error_prefix(s, "%s: tokenizer", g->file.path);
    if (!s && chat_template) s = mt_gguf_get_string(g, "tokenizer.chat_template", chat_template, 0);
    vocab_free(&v);
    return s;
}

mt_status mt_tokenizer_load_gguf(const char *path, mt_tokenizer **out) {
    *out = NULL;
    mt_gguf g;
    mt_status s = mt_gguf_open(path, &g);
    if (s) return s;
    s = tokenizer_from_gguf(&g, out, NULL);
    if (!s && !*out) s = mt_error(MT_ERR_FORMAT, "%s: no tokenizer in this GGUF", path);
    mt_gguf_close(&g);
    return s;
}

static mt_status attach_tokenizer(mt_model *m, const mt_gguf *g, const char *path, const mt_load_options *opts) {
    mt_status s;
    if (opts && opts->tokenizer_path)
        return mt_load_user_tokenizer(opts->tokenizer_path, path, m->cfg.vocab_size, 0, &m->tok, &m->chat_template);
    if ((s = tokenizer_from_gguf(g, &m->tok, &m->chat_template)) || !m->tok) return s;
    return mt_check_tokenizer_fits(m->tok, path, path, m->cfg.vocab_size, 0);
}

mt_status mt_gguf_load_model(const char *path, const mt_load_options *opts, mt_model **out) {
    *out = NULL;
    mt_gguf g;
    mt_status s = mt_gguf_open(path, &g);
    if (s) return s;
    mt_config cfg;
    mt_model *m = NULL;
    s = read_config(&g, &cfg);
    /* Q2_K, the smallest type memtune reads, takes 84 bytes per 256 values. */
    if (!s) s = mt_check_params_fit(path, &cfg, g.file.size - g.data_offset, 84.0 / 256.0);
    if (!s) s = mt_model_alloc(&cfg, &m);
    if (!s) s = read_weights(&g, m, opts && opts->keep_quantized);
    if (!s) s = attach_tokenizer(m, &g, path, opts);
    mt_gguf_close(&g);
    if (s) mt_model_free(m);
    else *out = m;
    return s;
}

/* ---- writer ---- */

/* llama.cpp's converter writes Qwen2ForCausalLM as architecture "qwen2" (keys qwen2.*, Q/K
 * rows in HF's rotate-half order, q/k/v biases); everything else memtune holds is "llama". */
static int writes_qwen2(const mt_config *c) {
    return strcmp(c->arch, "qwen2") == 0 && c->attn_bias && c->rope_scaling == MT_ROPE_SCALING_NONE &&
           c->head_dim * c->n_heads == c->dim;
}

static void add_config(mt_gguf_writer *w, const mt_config *c, const char *name, uint32_t file_type) {
    const char *a = writes_qwen2(c) ? "qwen2" : "llama";
    char key[96];
#define ARCH_KEY(k) (snprintf(key, sizeof key, "%s.%s", a, k), key)
    mt_gguf_add_string(w, "general.architecture", a);
    mt_gguf_add_string(w, "general.name", name);
    mt_gguf_add_u32(w, "general.file_type", file_type);
    if (file_type != 0) mt_gguf_add_u32(w, "general.quantization_version", 2); /* ggml's block formats */
    mt_gguf_add_u32(w, ARCH_KEY("context_length"), (uint32_t)c->max_seq_len);
    mt_gguf_add_u32(w, ARCH_KEY("embedding_length"), (uint32_t)c->dim);
    mt_gguf_add_u32(w, ARCH_KEY("feed_forward_length"), (uint32_t)c->hidden_dim);
    mt_gguf_add_u32(w, ARCH_KEY("block_count"), (uint32_t)c->n_layers);
    mt_gguf_add_u32(w, ARCH_KEY("attention.head_count"), (uint32_t)c->n_heads);
    mt_gguf_add_u32(w, ARCH_KEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads);
    mt_gguf_add_f32(w, ARCH_KEY("attention.layer_norm_rms_epsilon"), c->norm_eps);
    mt_gguf_add_f32(w, ARCH_KEY("rope.freq_base"), c->rope_theta);
    mt_gguf_add_u32(w, ARCH_KEY("rope.dimension_count"), (uint32_t)c->head_dim);
    mt_gguf_add_u32(w, ARCH_KEY("vocab_size"), (uint32_t)c->vocab_size);
    if (c->head_dim * c->n_heads != c->dim) {
        mt_gguf_add_u32(w, ARCH_KEY("attention.key_length"), (uint32_t)c->head_dim);
        mt_gguf_add_u32(w, ARCH_KEY("attention.value_length"), (uint32_t)c->head_dim);
    }
#undef ARCH_KEY
    if (strcmp(c->arch, a) != 0) mt_gguf_add_string(w, "memtune.arch", c->arch);
    if (c->rope_scaling == MT_ROPE_SCALING_LLAMA3) {
        /* Not llama.rope.scaling.*: llama.cpp would apply those as linear scaling. */
        mt_gguf_add_string(w, "memtune.rope.scaling.type", "llama3");
        mt_gguf_add_f32(w, "memtune.rope.scaling.factor", c->rope_factor);
        mt_gguf_add_f32(w, "memtune.rope.scaling.low_freq_factor", c->rope_low_freq_factor);
        mt_gguf_add_f32(w, "memtune.rope.scaling.high_freq_factor", c->rope_high_freq_factor);
        mt_gguf_add_u32(w, "memtune.rope.scaling.original_context_length", (uint32_t)c->rope_original_max_pos);
    }
}

static void add_token_id(mt_gguf_writer *w, const char *key, int id) {
    if (id >= 0) mt_gguf_add_u32(w, key, (uint32_t)id);
}

/* Byte-level BPE: llama.cpp's pre-tokenizer name, and for memtune the exact regexes when
 * llama.cpp has no name for them. */
static void add_pre_tokenizer(mt_gguf_writer *w, const mt_tokenizer *t) {
    const char *ours = mt_tokenizer_pre(t), *theirs = pre_to_gguf(ours);
    mt_gguf_add_string(w, "tokenizer.ggml.pre", theirs ? theirs : "default");
    mt_gguf_add_string(w, "memtune.tokenizer.pre", ours ? ours : "gpt2");
    if (!theirs) {
        int n = mt_tokenizer_n_pre_regex(t);
        const char *regex[64];
        for (int i = 0; i < n && i < 64; i++) regex[i] = mt_tokenizer_pre_regex(t, i);
        mt_gguf_add_strings(w, "memtune.tokenizer.pre_regex", regex, (uint64_t)(n < 64 ? n : 64));
    }
    if (mt_tokenizer_ignore_merges(t)) mt_gguf_add_bool(w, "memtune.tokenizer.ignore_merges", 1);
}

/* llama.cpp sizes the embedding by the token list, so a tokenizer smaller than the model's
 * vocabulary is padded with unused "[PADn]" tokens, as its own converter does. */
static mt_status add_token_arrays(mt_gguf_writer *w, const mt_tokenizer *t, int n, int spm) {
    int n_tok = mt_tokenizer_vocab_size(t), n_merges = mt_tokenizer_n_merges(t);
    const char **texts = calloc((size_t)n, sizeof *texts);
    char(*pads)[24] = calloc((size_t)(n - n_tok) + 1, sizeof *pads);
    float *scores = calloc((size_t)n, sizeof *scores);
    int32_t *types = calloc((size_t)n, sizeof *types);
    const char **merges = calloc((size_t)n_merges + 1, sizeof *merges);
    mt_status s = texts && pads && scores && types && merges ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && !s; i++) {
        if (i < n_tok) {
            texts[i] = mt_tokenizer_token_text(t, i);
            scores[i] = mt_tokenizer_score(t, i);
            types[i] = mt_tokenizer_type(t, i);
            /* llama.cpp's converter gives a byte-level BPE vocabulary no UNKNOWN token: its unk
             * (GPT-2's and SmolLM's <|endoftext|>) is a special added token, so CONTROL; an
             * UNKNOWN one makes llama.cpp warn and override it. SentencePiece keeps UNKNOWN. */
            if (!spm && types[i] == MT_TOKTYPE_UNKNOWN) types[i] = MT_TOKTYPE_CONTROL;
        } else {
            snprintf(pads[i - n_tok], sizeof pads[0], "[PAD%d]", i);
            texts[i] = pads[i - n_tok];
            scores[i] = -1000.0f;
            types[i] = MT_TOKTYPE_UNUSED;
        }
    }
    for (int i = 0; i < n_merges && !s; i++) merges[i] = mt_tokenizer_merge(t, i);
    if (!s) {
        mt_gguf_add_strings(w, "tokenizer.ggml.tokens", texts, (uint64_t)n);
        if (spm) mt_gguf_add_floats(w, "tokenizer.ggml.scores", scores, (uint64_t)n);
        mt_gguf_add_ints(w, "tokenizer.ggml.token_type", types, (uint64_t)n);
        if (!spm) mt_gguf_add_strings(w, "tokenizer.ggml.merges", merges, (uint64_t)n_merges);
    }
    free(texts);
    free(pads);
    free(scores);
    free(types);
    free(merges);
    return s;
}

static mt_status add_tokenizer(mt_gguf_writer *w, const mt_model *m) {
    const mt_tokenizer *t = m->tok;
    int spm = mt_tokenizer_kind_of(t) == MT_TOK_SPM;
    mt_gguf_add_string(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    if (!spm) add_pre_tokenizer(w, t);
    mt_status s = add_token_arrays(w, t, m->cfg.vocab_size, spm);
    add_token_id(w, "tokenizer.ggml.bos_token_id", mt_tokenizer_bos(t));
    add_token_id(w, "tokenizer.ggml.eos_token_id", mt_tokenizer_eos(t));
    add_token_id(w, "tokenizer.ggml.unknown_token_id", mt_tokenizer_unk(t));
    add_token_id(w, "tokenizer.ggml.padding_token_id", mt_tokenizer_pad(t) >= 0 ? mt_tokenizer_pad(t) : m->cfg.pad_id);
    mt_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", mt_tokenizer_add_bos(t));
    mt_gguf_add_bool(w, "tokenizer.ggml.add_eos_token", mt_tokenizer_add_eos(t));
    if (spm) mt_gguf_add_bool(w, "tokenizer.ggml.add_space_prefix", mt_tokenizer_add_space_prefix(t));
    return s;
}

/* ---- tensor types (convert --type) ---- */

/* What a file is written as: llama.cpp's general.file_type and the default block type of
 * its 2-D weights. f32/f16/bf16/q8_0 are what convert_hf_to_gguf.py --outtype writes; q4_0,
 * q4_k (llama-quantize's Q4_K_M mix) and q6_k what llama-quantize writes from such a file
 * without an importance matrix. */
typedef struct {
    const char *name;
    uint32_t file_type; /* llama_ftype */
    uint32_t type;      /* default ggml type of a 2-D weight */
    int k_mix;          /* Q4_K_M: attn_v and ffn_down of some layers in Q6_K */
} gguf_out_type;

static const gguf_out_type out_types[] = {
    {"f32", 0, MT_QTYPE_F32, 0},   {"f16", 1, MT_QTYPE_F16, 0},   {"bf16", 32, MT_QTYPE_BF16, 0},
    {"q8_0", 7, MT_QTYPE_Q8_0, 0}, {"q4_0", 2, MT_QTYPE_Q4_0, 0}, {"q4_k", 15, MT_QTYPE_Q4_K, 1},
    {"q4_k_m", 15, MT_QTYPE_Q4_K, 1}, {"q6_k", 18, MT_QTYPE_Q6_K, 0},
};

static const gguf_out_type *find_out_type(const char *name) {
    for (size_t i = 0; i < sizeof out_types / sizeof out_types[0]; i++)
        if (!strcmp(out_types[i].name, name)) return &out_types[i];
    return NULL;
}

/* llama-quantize's use_more_bits: the first and last eighth of the layers and every third
 * in between get more bits in Q4_K_M. */
static int use_more_bits(int layer, int n_layers) {
    return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

/* The ggml type of one tensor: llama.cpp's llama_tensor_get_type for the types above
 * (vectors stay F32; the head, or a tied embedding, takes Q6_K; rows that are not whole
 * blocks fall back Q4_K -> Q5_0, Q6_K -> Q8_0, Q8_0/Q4_0/Q5_0 -> F16). */
static uint32_t tensor_out_type(const mt_config *c, const mt_tensor_ref *r, const gguf_out_type *o) {
    if (r->is_vector) return MT_QTYPE_F32;
    uint32_t t = o->type;
    if (!is_block_type(t)) return t;
    int nx = r->cols;
    if (o->file_type != 7 && (r->kind == MT_T_OUTPUT || (c->tied_embeddings && r->kind == MT_T_EMBED))) {
        if (nx % (int)mt_qtype_size_of(t).block != 0) t = MT_QTYPE_Q8_0;
        else t = MT_QTYPE_Q6_K;
    } else if (o->k_mix && (r->kind == MT_T_WV || r->kind == MT_T_DOWN) && use_more_bits(r->layer, c->n_layers)) {
        t = MT_QTYPE_Q6_K;
    }
    if (nx % (int)mt_qtype_size_of(t).block != 0) {
        t = t == MT_QTYPE_Q4_K ? MT_QTYPE_Q5_0 : t == MT_QTYPE_Q6_K ? MT_QTYPE_Q8_0 : t;
        if (nx % (int)mt_qtype_size_of(t).block != 0) t = MT_QTYPE_F16;
    }
    return t;
}

static void declare_tensors(mt_gguf_writer *w, const mt_model *m, const mt_tensor_ref *refs, int n,
                            const gguf_out_type *o) {
    for (int i = 0; i < n; i++) {
        char name[128];
        gguf_tensor_name(&refs[i], name, sizeof name);
        uint64_t ne[2] = {refs[i].is_vector ? (uint64_t)refs[i].rows : (uint64_t)refs[i].cols, (uint64_t)refs[i].rows};
        mt_gguf_add_tensor_typed(w, name, refs[i].is_vector ? 1 : 2, ne, tensor_out_type(&m->cfg, &refs[i], o));
    }
    if (m->cfg.rope_scaling == MT_ROPE_SCALING_LLAMA3) {
        uint64_t half = (uint64_t)m->cfg.head_dim / 2;
        mt_gguf_add_tensor(w, "rope_freqs.weight", 1, &half);
    }
}

static mt_status put_tensor(mt_gguf_writer *w, const float *x, size_t rows, size_t cols, uint32_t type) {
    if (type == MT_QTYPE_F32) return mt_gguf_writer_put_f32(w, x, rows * cols);
    size_t row_bytes = mt_qtype_bytes(type, cols);
    uint8_t *q = malloc(rows * row_bytes + 1);
    if (!q) return mt_error(MT_ERR_NOMEM, "out of memory quantizing a %zu x %zu tensor", rows, cols);
    mt_quantize_rows(type, x, q, rows, cols);
    mt_status s = mt_gguf_writer_put(w, q, rows * row_bytes);
    free(q);
    return s;
}

static mt_status write_tensor_data(mt_gguf_writer *w, const mt_model *m, const mt_tensor_ref *refs, int n,
                                   const gguf_out_type *o) {
    const mt_config *c = &m->cfg;
    float *scratch = malloc((mt_qk_scratch_floats(c) + (size_t)c->head_dim) * sizeof(float));
    mt_status s = scratch ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    int interleaved = !writes_qwen2(c);
    for (int i = 0; i < n && !s; i++) {
        const float *x = mt_tensor_in_layout(m, &refs[i], interleaved, scratch);
        size_t rows = refs[i].is_vector ? 1 : (size_t)refs[i].rows, cols = (size_t)refs[i].rows * refs[i].cols / rows;
        s = put_tensor(w, x, rows, cols, tensor_out_type(c, &refs[i], o));
    }
    if (!s && c->rope_scaling == MT_ROPE_SCALING_LLAMA3) {
        llama3_rope_divisors(c, c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor,
                             c->rope_original_max_pos, scratch);
        s = mt_gguf_writer_put_f32(w, scratch, (size_t)c->head_dim / 2);
    }
    free(scratch);
    return s;
}

static mt_status build_metadata(mt_gguf_writer *w, const mt_model *m, const char *path, uint32_t file_type) {
    char *copy = strdup(path);
    if (!copy) return mt_error(MT_ERR_NOMEM, "out of memory");
    char *name = basename(copy), *dot = strrchr(name, '.');
    if (dot && dot != name) *dot = 0;
    add_config(w, &m->cfg, name, file_type);
    free(copy);
    mt_status s = MT_OK;
    if (m->tok) s = add_tokenizer(w, m);
    else {
        mt_gguf_add_string(w, "tokenizer.ggml.model", "no_vocab");
        add_token_id(w, "tokenizer.ggml.bos_token_id", m->cfg.bos_id);
        add_token_id(w, "tokenizer.ggml.eos_token_id", m->cfg.eos_id);
        add_token_id(w, "tokenizer.ggml.padding_token_id", m->cfg.pad_id);
    }
    if (!s && m->chat_template) mt_gguf_add_string(w, "tokenizer.chat_template", m->chat_template);
    return s;
}

mt_status mt_model_save_gguf(const mt_model *m, const char *path, const char *type) {
    const gguf_out_type *o = find_out_type(type ? type : "f32");
    if (!o)
        return mt_error(MT_ERR_ARG, "unknown GGUF tensor type '%s' (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)", type);
    int n;
    mt_tensor_ref *refs = mt_model_tensor_list(m, &n);
    if (!refs) return MT_ERR_NOMEM;
    mt_gguf_writer w;
    mt_gguf_writer_init(&w);
    mt_status s = build_metadata(&w, m, path, o->file_type);
    if (!s) {
        declare_tensors(&w, m, refs, n, o);
        s = mt_gguf_writer_begin(&w, path);
    }
    if (!s) s = write_tensor_data(&w, m, refs, n, o);
    if (!s) s = mt_gguf_writer_commit(&w);
    mt_gguf_writer_free(&w);
    free(refs);
    return s;
}

mt_status mt_gguf_save_model(const mt_model *m, const char *path) { return mt_model_save_gguf(m, path, "f32"); }
