/* GGUF v3 container (llama.cpp's format): header, typed metadata key/values, tensor
 * descriptors, then aligned tensor data. The reader memory-maps the file and validates the
 * whole structure up front (every length, count and offset checked against the bytes that
 * remain); typed getters then read metadata without further checks. The writer builds the
 * header in memory and streams f32 tensor data into an atomic file.
 *
 * Model mapping (llama / qwen2 tensors and keys, tokenizer metadata) lives in gguf_model.c. */
#ifndef MT_FORMATS_GGUF_H
#define MT_FORMATS_GGUF_H
#include <stddef.h>
#include <stdint.h>
#include "memtune.h"
#include "core/file.h"

/* Metadata value types. */
enum {
    MT_GGUF_U8 = 0, MT_GGUF_I8 = 1, MT_GGUF_U16 = 2, MT_GGUF_I16 = 3, MT_GGUF_U32 = 4, MT_GGUF_I32 = 5,
    MT_GGUF_F32 = 6, MT_GGUF_BOOL = 7, MT_GGUF_STRING = 8, MT_GGUF_ARRAY = 9, MT_GGUF_U64 = 10,
    MT_GGUF_I64 = 11, MT_GGUF_F64 = 12, MT_GGUF_N_TYPES = 13
};

/* Tensor data types memtune reads (ggml's numbering). */
enum { MT_GGML_F32 = 0, MT_GGML_F16 = 1, MT_GGML_Q8_0 = 8, MT_GGML_BF16 = 30 };

#define MT_GGUF_MAX_DIMS 4
#define MT_GGUF_DEFAULT_ALIGNMENT 32

typedef struct {
    char *key;
    uint32_t type;
    uint32_t elem_type;   /* arrays: element type */
    uint64_t n;           /* arrays: element count */
    const uint8_t *data;  /* value bytes inside the mapping (arrays: the first element) */
    size_t size;          /* bytes of the value (arrays: of all elements) */
} mt_gguf_kv;

typedef struct {
    char *name;
    int n_dims;
    uint64_t ne[MT_GGUF_MAX_DIMS]; /* ne[0] is the innermost (contiguous) dimension */
    uint32_t type;
    uint64_t n_elems;
    const uint8_t *data;
    size_t nbytes;                 /* 0 when memtune does not know the type's size */
} mt_gguf_tensor;

typedef struct {
    mt_mapped_file file;
    uint32_t version;
    mt_gguf_kv *kv;
    size_t n_kv;
    mt_gguf_tensor *tensors;       /* file order */
    mt_gguf_tensor **by_name;      /* sorted, for lookup */
    size_t n_tensors;
    uint32_t alignment;
    size_t data_offset;
} mt_gguf;

mt_status mt_gguf_open(const char *path, mt_gguf *g);
void mt_gguf_close(mt_gguf *g);

const mt_gguf_kv *mt_gguf_find(const mt_gguf *g, const char *key);
/* Typed getters. A missing key is an error only when required; otherwise *out is left as
 * the caller's default. A present key of the wrong type is always an error. */
mt_status mt_gguf_get_int(const mt_gguf *g, const char *key, int64_t *out, int required);
mt_status mt_gguf_get_float(const mt_gguf *g, const char *key, double *out, int required);
mt_status mt_gguf_get_bool(const mt_gguf *g, const char *key, int *out, int required);
mt_status mt_gguf_get_string(const mt_gguf *g, const char *key, char **out, int required); /* malloc'd */
/* String array: one malloc'd block (free(*out)) of *n pointers followed by the text. */
mt_status mt_gguf_get_strings(const mt_gguf *g, const char *key, char ***out, uint64_t *n, int required);
/* Numeric arrays converted to float / int32 (malloc'd). */
mt_status mt_gguf_get_floats(const mt_gguf *g, const char *key, float **out, uint64_t *n, int required);
mt_status mt_gguf_get_ints(const mt_gguf *g, const char *key, int32_t **out, uint64_t *n, int required);

const mt_gguf_tensor *mt_gguf_find_tensor(const mt_gguf *g, const char *name);
/* Dequantises F32/F16/BF16 and the block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K
 * (kernels/quant.h) into dst (n must equal the element count); other types (IQ*, TQ*, ...)
 * give MT_ERR_UNSUPPORTED naming the tensor and the type. */
mt_status mt_gguf_read_f32(const mt_gguf *g, const mt_gguf_tensor *t, float *dst, size_t n);
const char *mt_ggml_type_name(uint32_t type);

/* ---- writer ---- */

typedef struct {
    uint8_t *data;
    size_t len, cap;
    int oom;
} mt_gguf_buf;

typedef struct {
    mt_gguf_buf kv, info;  /* encoded metadata and tensor descriptors */
    uint64_t n_kv, n_tensors;
    uint64_t data_size;    /* aligned size of the data section declared so far */
    uint64_t written;      /* data bytes written so far */
    mt_atomic_file file;
} mt_gguf_writer;

void mt_gguf_writer_init(mt_gguf_writer *w);
void mt_gguf_add_string(mt_gguf_writer *w, const char *key, const char *value);
void mt_gguf_add_u32(mt_gguf_writer *w, const char *key, uint32_t value);
void mt_gguf_add_f32(mt_gguf_writer *w, const char *key, float value);
void mt_gguf_add_bool(mt_gguf_writer *w, const char *key, int value);
void mt_gguf_add_strings(mt_gguf_writer *w, const char *key, const char *const *values, uint64_t n);
void mt_gguf_add_floats(mt_gguf_writer *w, const char *key, const float *values, uint64_t n);
void mt_gguf_add_ints(mt_gguf_writer *w, const char *key, const int32_t *values, uint64_t n);
/* Declares an f32 tensor; data follows in declaration order via mt_gguf_writer_put_f32. */
void mt_gguf_add_tensor(mt_gguf_writer *w, const char *name, int n_dims, const uint64_t *ne);
/* Any ggml type whose block size gguf.c knows; its data goes in with mt_gguf_writer_put. */
void mt_gguf_add_tensor_typed(mt_gguf_writer *w, const char *name, int n_dims, const uint64_t *ne, uint32_t type);
/* Writes header, metadata and tensor descriptors to an atomic file at path. */
mt_status mt_gguf_writer_begin(mt_gguf_writer *w, const char *path);
/* Appends one whole tensor's data (then pads to the alignment). */
mt_status mt_gguf_writer_put_f32(mt_gguf_writer *w, const float *data, size_t n);
mt_status mt_gguf_writer_put(mt_gguf_writer *w, const void *data, size_t nbytes);
mt_status mt_gguf_writer_commit(mt_gguf_writer *w);
/* Frees the writer; removes the temporary file if begin succeeded without a commit. */
void mt_gguf_writer_free(mt_gguf_writer *w);

/* Vocabulary-only (or full) GGUF as a tokenizer, from its tokenizer.ggml.* metadata. */
mt_status mt_tokenizer_load_gguf(const char *path, mt_tokenizer **out);

#endif
