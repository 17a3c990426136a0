/* safetensors: an 8-byte little-endian header length, a JSON header mapping tensor names to
 * {dtype, shape, data_offsets}, then the raw tensor bytes. The reader memory-maps the file,
 * validates the whole header up front (so later reads cannot go out of bounds) and converts
 * F32/F16/BF16 tensors to f32. The writer streams tensors in a declared order into an
 * atomic file (header padded with spaces to a multiple of 8 so tensor data is aligned). */
#ifndef MT_FORMATS_SAFETENSORS_H
#define MT_FORMATS_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>
#include "memtune.h"
#include "core/file.h"

#define MT_ST_MAX_DIMS 8
#define MT_ST_MAX_HEADER ((uint64_t)100 << 20)

typedef struct {
    char *name;
    char dtype[16];          /* as written in the file ("F32", "BF16", "I64", ...) */
    int n_dims;
    int64_t shape[MT_ST_MAX_DIMS];
    uint64_t n_elems;
    const uint8_t *data;     /* inside the mapping */
    size_t nbytes;
} mt_st_tensor;

typedef struct {
    mt_mapped_file file;
    mt_st_tensor *tensors;   /* sorted by name */
    int n_tensors;
    char **metadata;         /* "__metadata__" string pairs: key0, value0, key1, ... */
    int n_metadata;
} mt_safetensors;

mt_status mt_safetensors_open(const char *path, mt_safetensors *st);
void mt_safetensors_close(mt_safetensors *st);
const mt_st_tensor *mt_safetensors_find(const mt_safetensors *st, const char *name);
/* Value of a "__metadata__" entry, or NULL. */
const char *mt_safetensors_metadata(const mt_safetensors *st, const char *key);
/* Converts a tensor to f32. n must equal the tensor's element count. Unsupported dtypes
 * give MT_ERR_UNSUPPORTED naming the tensor and the dtype. */
mt_status mt_safetensors_read_f32(const mt_safetensors *st, const mt_st_tensor *t, float *dst, size_t n);

/* ---- writer ---- */

typedef struct {
    const char *name;
    const char *dtype;       /* "F32", "F16" or "BF16" for mt_st_writer_put_f32; any known dtype for raw puts */
    int n_dims;
    int64_t shape[MT_ST_MAX_DIMS];
} mt_st_desc;

typedef struct {
    mt_atomic_file file;
    const mt_st_desc *descs;
    int n_descs, next;       /* index of the tensor the next put belongs to */
    uint64_t remaining;      /* bytes still owed to tensor `next` */
} mt_st_writer;

/* Writes the header for `descs` (in file order) and leaves the writer expecting their data.
 * metadata: NULL or {key, value, ..., NULL} strings for "__metadata__". descs must stay
 * valid until commit. */
mt_status mt_st_writer_open(mt_st_writer *w, const char *path, const mt_st_desc *descs, int n,
                            const char *const *metadata);
/* Appends data for the current tensor; a tensor may be fed in several pieces. */
mt_status mt_st_writer_put(mt_st_writer *w, const void *bytes, size_t nbytes);
/* Appends n f32 values converted to the current tensor's dtype (F32, F16 or BF16). */
mt_status mt_st_writer_put_f32(mt_st_writer *w, const float *src, size_t n);
/* Checks every tensor received all its bytes, then renames the file into place. */
mt_status mt_st_writer_commit(mt_st_writer *w);
void mt_st_writer_abort(mt_st_writer *w);

/* Bytes per element of a safetensors dtype name, 0 when unknown. */
size_t mt_st_dtype_size(const char *dtype);

#endif
