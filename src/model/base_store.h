/* A frozen base held in fewer bytes: the weights of the linear sites (q, k, v, o, gate, up,
 * down of every layer; model/adapter.h) stored as bf16 or as Q8_0 blocks, and dequantised
 * one matrix at a time into an f32 scratch buffer right before the GEMM that uses it.
 *
 * Compressing moves every other tensor (embeddings, norms, biases, head) into a smaller f32
 * allocation and sets the site pointers (L->wq, ...) to NULL, so the f32 copies are really
 * gone; m->n_params then counts only the f32 tensors, and mt_model_tensors lists only them.
 * Code that multiplies by a site weight asks mt_site_weight() for it. Q8_0 here is ggml's
 * block (an f16 scale d = max|x|/127 and 32 int8 values, x ≈ d·q) laid along each row; a row
 * whose length is not a multiple of 32 ends in a partial block. */
#ifndef MT_MODEL_BASE_STORE_H
#define MT_MODEL_BASE_STORE_H
#include <stddef.h>
#include <stdint.h>
#include "memtune.h"
#include "model/model.h"

/* MT_BASE_GGUF: each site in the block type its GGUF file gave it (site_type[i], ggml's
 * numbering, kernels/quant.h), kept as the file's bytes; made by the GGUF loader
 * (mt_load_options.keep_quantized), never by encoding f32. */
typedef enum { MT_BASE_F32 = 0, MT_BASE_BF16 = 1, MT_BASE_Q8_0 = 2, MT_BASE_GGUF = 3 } mt_base_dtype;

struct mt_base_store {
    mt_base_dtype dtype;
    uint32_t *site_type;   /* MT_BASE_GGUF: [n_layers * MT_N_SITES] ggml types; else NULL */
    uint8_t *data;         /* every encoded matrix, one allocation */
    uint8_t **site;        /* [n_layers * MT_N_SITES] into data: row-major [out, in] */
    size_t n_site_params;  /* the f32 elements they stand for */
    size_t bytes;          /* their encoded size */
};

/* "f32" | "bf16" | "q8_0". */
mt_status mt_base_dtype_parse(const char *name, mt_base_dtype *out);
const char *mt_base_dtype_name(mt_base_dtype d);
/* Bytes of a rows x cols matrix in dtype. */
size_t mt_base_encoded_bytes(mt_base_dtype d, size_t rows, size_t cols);
void mt_base_encode(mt_base_dtype d, const float *src, size_t rows, size_t cols, uint8_t *dst);
void mt_base_decode(mt_base_dtype d, const uint8_t *src, size_t rows, size_t cols, float *dst);

/* The f32 weight of (layer, site): the model's own array, or the stored matrix decoded into
 * scratch (mt_site_scratch_floats(cfg) floats). */
const float *mt_site_weight(const mt_model *m, int layer, int site, float *scratch);
size_t mt_site_scratch_floats(const mt_config *c);
/* Replaces the stored (layer, site) weight by w (re-encoded); *max_change (may be NULL) gets
 * max |decode(encode(w)) - w|, what storing it cost. */
mt_status mt_site_weight_store(mt_model *m, int layer, int site, const float *w, double *max_change);
/* Decoding (T = 1) with a GGUF-typed base: out[N] = W·x (+ bias) straight from the blocks;
 * returns 0 (nothing done) for any other base, which multiplies mt_site_weight's matrix. */
int mt_site_matvec(const mt_model *m, int layer, int site, float *out, const float *x, const float *bias);
/* Makes m's linear sites a GGUF-typed base holding copies of bytes[i] (type types[i], site i
 * = layer * MT_N_SITES + site, row-major [out, in]) and frees their f32 arrays, whose
 * contents are not read. copied (may be NULL) is told after each site's bytes are copied, so
 * a caller can drop the source pages at once (the GGUF loader releases its mapping's). */
mt_status mt_model_adopt_typed_sites(mt_model *m, const uint32_t *types, const uint8_t *const *bytes,
                                     void (*copied)(void *ctx, size_t site), void *ctx);
/* Every f32 parameter plus the stored sites' bytes. */
size_t mt_model_weight_bytes(const mt_model *m);

#endif
