/* The frozen base in bf16 or Q8_0: encoding, decoding, and moving a model's linear-site
 * weights in and out of that store (see base_store.h). */
#include "model/base_store.h"
#include "model/adapter.h"
#include "model/forward.h"
#include "core/error.h"
#include "core/file.h"
#include "kernels/kernels.h"
#include "formats/dtype.h"
#include "kernels/quant.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

mt_status mt_base_dtype_parse(const char *name, mt_base_dtype *out) {
    if (!name || !strcmp(name, "f32")) *out = MT_BASE_F32;
    else if (!strcmp(name, "bf16")) *out = MT_BASE_BF16;
    else if (!strcmp(name, "q8_0")) *out = MT_BASE_Q8_0;
    else return mt_error(MT_ERR_ARG, "unknown base dtype '%s' (f32, bf16 or q8_0)", name);
    return MT_OK;
}

const char *mt_base_dtype_name(mt_base_dtype d) {
    return d == MT_BASE_BF16 ? "bf16" : d == MT_BASE_Q8_0 ? "q8_0" : d == MT_BASE_GGUF ? "gguf" : "f32";
}

size_t mt_base_encoded_bytes(mt_base_dtype d, size_t rows, size_t cols) {
    if (d == MT_BASE_BF16) return rows * cols * 2;
    if (d == MT_BASE_Q8_0) return rows * mt_q8_0_row_bytes(cols);
    return rows * cols * 4;
}

void mt_base_encode(mt_base_dtype d, const float *src, size_t rows, size_t cols, uint8_t *dst) {
    if (d == MT_BASE_BF16) mt_bf16_encode(src, rows * cols, dst);
    else if (d == MT_BASE_Q8_0) mt_q8_0_encode_rows(src, rows, cols, dst);
    else memcpy(dst, src, rows * cols * 4);
}

void mt_base_decode(mt_base_dtype d, const uint8_t *src, size_t rows, size_t cols, float *dst) {
    if (d == MT_BASE_BF16) mt_bf16_decode(src, rows * cols, dst);
    else if (d == MT_BASE_Q8_0) mt_q8_0_decode_rows(src, rows, cols, dst);
    else memcpy(dst, src, rows * cols * 4);
}

size_t mt_site_scratch_floats(const mt_config *c) {
    size_t most = 0;
    for (int s = 0; s < MT_N_SITES; s++) {
        int in, out;
        mt_linear_site_shape(c, s, &in, &out);
        if ((size_t)in * out > most) most = (size_t)in * out;
    }
    return most;
}

const float *mt_site_weight(const mt_model *m, int layer, int site, float *scratch) {
    if (!m->base) return mt_linear_site_weight(m, layer, site);
    int in, out;
    size_t i = (size_t)layer * MT_N_SITES + site;
    mt_linear_site_shape(&m->cfg, site, &in, &out);
    if (m->base->dtype == MT_BASE_GGUF) mt_dequantize(m->base->site_type[i], m->base->site[i], scratch, (size_t)in * out);
    else mt_base_decode(m->base->dtype, m->base->site[i], (size_t)out, (size_t)in, scratch);
    return scratch;
}

int mt_site_matvec(const mt_model *m, int layer, int site, float *out, const float *x, const float *bias) {
    if (!m->base || m->base->dtype != MT_BASE_GGUF) return 0;
    int in, o;
    size_t i = (size_t)layer * MT_N_SITES + site;
    mt_linear_site_shape(&m->cfg, site, &in, &o);
    mt_quant_matvec(m->base->site_type[i], out, x, m->base->site[i], in, o);
    if (bias)
        for (int n = 0; n < o; n++) out[n] += bias[n];
    return 1;
}

mt_status mt_site_weight_store(mt_model *m, int layer, int site, const float *w, double *max_change) {
    int in, out;
    mt_linear_site_shape(&m->cfg, site, &in, &out);
    size_t n = (size_t)in * out;
    if (max_change) *max_change = 0;
    if (!m->base) {
        memcpy(mt_linear_site_weight(m, layer, site), w, n * sizeof(float));
        return MT_OK;
    }
    size_t i = (size_t)layer * MT_N_SITES + site;
    uint8_t *dst = m->base->site[i];
    uint32_t type = m->base->site_type ? m->base->site_type[i] : 0;
    if (m->base->dtype == MT_BASE_GGUF && !mt_qtype_can_quantize(type))
        return mt_error(MT_ERR_UNSUPPORTED, "layer %d site %d is held as the file's %s blocks, which memtune does not "
                        "re-quantize (it writes Q8_0, Q4_0, Q5_0, Q4_K, Q6_K, F16, BF16)", layer, site,
                        type == MT_QTYPE_Q4_1 ? "Q4_1" : type == MT_QTYPE_Q5_1 ? "Q5_1" : type == MT_QTYPE_Q2_K ? "Q2_K"
                        : type == MT_QTYPE_Q3_K ? "Q3_K" : type == MT_QTYPE_Q5_K ? "Q5_K" : "other");
    if (m->base->dtype == MT_BASE_GGUF) mt_quantize_rows(type, w, dst, (size_t)out, (size_t)in);
    else mt_base_encode(m->base->dtype, w, (size_t)out, (size_t)in, dst);
    if (!max_change) return MT_OK;
    float *back = malloc(n * sizeof(float));
    if (!back) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_site_weight(m, layer, site, back);
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)back[i] - w[i]));
    *max_change = worst;
    free(back);
    return MT_OK;
}

size_t mt_model_weight_bytes(const mt_model *m) {
    return m->n_params * sizeof(float) + (m->base ? m->base->bytes : 0);
}

/* ---- compress / decompress ---- */

static int is_site_kind(int kind) {
    return kind == MT_T_WQ || kind == MT_T_WK || kind == MT_T_WV || kind == MT_T_WO || kind == MT_T_GATE ||
           kind == MT_T_UP || kind == MT_T_DOWN;
}

static void store_free(struct mt_base_store *b) {
    if (!b) return;
    free(b->site_type);
    free(b->data);
    free(b->site);
    free(b);
}

void mt_model_free_base(mt_model *m) {
    store_free(m->base);
    m->base = NULL;
}

/* An empty store for m's sites in dtype d: every matrix's bytes in one allocation. */
static size_t site_bytes(mt_base_dtype d, const uint32_t *types, size_t i, int in, int o) {
    return d == MT_BASE_GGUF ? mt_qtype_bytes(types[i], (size_t)in * o) : mt_base_encoded_bytes(d, (size_t)o, (size_t)in);
}

/* types: MT_BASE_GGUF's per-site ggml types (copied), else NULL */
static mt_status store_alloc(const mt_model *m, mt_base_dtype d, const uint32_t *types, struct mt_base_store **out) {
    size_t n_sites = (size_t)m->cfg.n_layers * MT_N_SITES, total = 0;
    struct mt_base_store *b = calloc(1, sizeof *b);
    if (b) b->site = calloc(n_sites, sizeof *b->site);
    if (b && types && (b->site_type = malloc(n_sites * sizeof *types))) memcpy(b->site_type, types, n_sites * sizeof *types);
    for (size_t i = 0; b && i < n_sites; i++) {
        int in, o;
        mt_linear_site_shape(&m->cfg, (int)(i % MT_N_SITES), &in, &o);
        total += site_bytes(d, types, i, in, o);
        b->n_site_params += (size_t)in * o;
    }
    if (b && b->site) b->data = malloc(total ? total : 1);
    if (!b || !b->site || !b->data || (types && !b->site_type)) {
        store_free(b);
        return mt_error(MT_ERR_NOMEM, "out of memory for a %s base", mt_base_dtype_name(d));
    }
    uint8_t *p = b->data;
    for (size_t i = 0; i < n_sites; i++) {
        int in, o;
        mt_linear_site_shape(&m->cfg, (int)(i % MT_N_SITES), &in, &o);
        b->site[i] = p;
        p += site_bytes(d, types, i, in, o);
    }
    b->bytes = total;
    b->dtype = d;
    *out = b;
    return MT_OK;
}

/* Encodes every site of m into b, dropping each f32 matrix's pages once encoded (the f32
 * block is freed right after by compact_f32, so the weights are never held twice). */
static void encode_sites(mt_model *m, struct mt_base_store *b) {
    for (size_t i = 0; i < (size_t)m->cfg.n_layers * MT_N_SITES; i++) {
        int in, o, layer = (int)(i / MT_N_SITES), site = (int)(i % MT_N_SITES);
        mt_linear_site_shape(&m->cfg, site, &in, &o);
        float *w = mt_linear_site_weight(m, layer, site);
        mt_base_encode(b->dtype, w, (size_t)o, (size_t)in, b->site[i]);
        mt_memory_discard(w, (size_t)in * o * sizeof(float));
    }
}

/* Moves the tensors of refs[] that keep f32 into p (sized by compact_count) and points m at
 * it; the site pointers become NULL and the old block is freed. */
static size_t compact_count(const mt_tensor_ref *refs, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (!is_site_kind(refs[i].kind)) total += (size_t)refs[i].rows * refs[i].cols;
    return total;
}

static void compact_f32(mt_model *m, const mt_tensor_ref *refs, int n, float *p) {
    float *q = p;
    int tied = m->output == m->tok_embd;
    for (int i = 0; i < n; i++) {
        float **slot = mt_model_tensor_slot(m, refs[i].kind, refs[i].layer);
        if (is_site_kind(refs[i].kind)) {
            *slot = NULL;
            continue;
        }
        size_t len = (size_t)refs[i].rows * refs[i].cols;
        memcpy(q, refs[i].data, len * sizeof(float));
        *slot = q;
        q += len;
    }
    if (tied) m->output = m->tok_embd;
    free(m->params);
    m->params = p;
    m->n_params = compact_count(refs, n);
}

/* Back to one f32 allocation in mt_model_alloc's layout, sites decoded. */
static mt_status expand_f32(mt_model *m) {
    mt_model *full = NULL;
    mt_status s = mt_model_alloc(&m->cfg, &full);
    if (s) return s;
    int n = mt_model_tensors(full, NULL, 0);
    mt_tensor_ref *refs = malloc((size_t)n * sizeof *refs);
    if (!refs) {
        mt_model_free(full);
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    mt_model_tensors(full, refs, n);
    for (int i = 0; i < n; i++) {
        size_t len = (size_t)refs[i].rows * refs[i].cols;
        if (is_site_kind(refs[i].kind)) {
            int site = refs[i].kind == MT_T_WQ ? MT_SITE_Q : refs[i].kind == MT_T_WK ? MT_SITE_K
                     : refs[i].kind == MT_T_WV ? MT_SITE_V : refs[i].kind == MT_T_WO ? MT_SITE_O
                     : refs[i].kind == MT_T_GATE ? MT_SITE_GATE : refs[i].kind == MT_T_UP ? MT_SITE_UP : MT_SITE_DOWN;
            mt_site_weight(m, refs[i].layer, site, refs[i].data);
        } else {
            memcpy(refs[i].data, *mt_model_tensor_slot(m, refs[i].kind, refs[i].layer), len * sizeof(float));
        }
    }
    free(refs);
    /* take full's arrays */
    free(m->params);
    free(m->layers);
    m->params = full->params;
    m->layers = full->layers;
    m->n_params = full->n_params;
    m->tok_embd = full->tok_embd;
    m->norm_final = full->norm_final;
    m->output = full->output;
    full->params = NULL;
    full->layers = NULL;
    mt_model_free(full);
    mt_model_free_base(m);
    return MT_OK;
}

mt_status mt_model_set_base_dtype(mt_model *m, const char *dtype) {
    mt_base_dtype d;
    mt_status s = mt_base_dtype_parse(dtype, &d);
    if (s) return s;
    if ((m->base ? m->base->dtype : MT_BASE_F32) == d) return MT_OK;
    mt_infer_free(m);
    if (m->base && (s = expand_f32(m))) return s;
    if (d == MT_BASE_F32) return MT_OK;
    /* everything that can fail is allocated first: once encoding starts the f32 sites go */
    struct mt_base_store *b = NULL;
    int n = mt_model_tensors(m, NULL, 0);
    mt_tensor_ref *refs = malloc((size_t)n * sizeof *refs);
    if (refs) mt_model_tensors(m, refs, n);
    float *compact = refs ? malloc((compact_count(refs, n) + 1) * sizeof(float)) : NULL;
    if (!compact || (s = store_alloc(m, d, NULL, &b))) {
        free(refs);
        free(compact);
        return s ? s : mt_error(MT_ERR_NOMEM, "out of memory");
    }
    encode_sites(m, b);
    compact_f32(m, refs, n, compact);
    free(refs);
    m->base = b;
    return MT_OK;
}

mt_status mt_model_adopt_typed_sites(mt_model *m, const uint32_t *types, const uint8_t *const *bytes,
                                     void (*copied)(void *ctx, size_t site), void *ctx) {
    mt_infer_free(m);
    mt_status s = m->base ? expand_f32(m) : MT_OK;
    if (s) return s;
    struct mt_base_store *b = NULL;
    int n = mt_model_tensors(m, NULL, 0);
    mt_tensor_ref *refs = malloc((size_t)n * sizeof *refs);
    if (refs) mt_model_tensors(m, refs, n);
    float *compact = refs ? malloc((compact_count(refs, n) + 1) * sizeof(float)) : NULL;
    if (!compact || (s = store_alloc(m, MT_BASE_GGUF, types, &b))) {
        free(refs);
        free(compact);
        return s ? s : mt_error(MT_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < (size_t)m->cfg.n_layers * MT_N_SITES; i++) {
        int in, o;
        mt_linear_site_shape(&m->cfg, (int)(i % MT_N_SITES), &in, &o);
        memcpy(b->site[i], bytes[i], site_bytes(MT_BASE_GGUF, types, i, in, o));
        if (copied) copied(ctx, i);
    }
    compact_f32(m, refs, n, compact);
    free(refs);
    m->base = b;
    return MT_OK;
}

const char *mt_model_base_dtype(const mt_model *m) { return mt_base_dtype_name(m->base ? m->base->dtype : MT_BASE_F32); }
