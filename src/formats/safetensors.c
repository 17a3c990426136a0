/* safetensors reader and writer (see safetensors.h). The header is untrusted JSON: every
 * entry is checked (dtype, shape, offsets inside the data region, byte size equal to the
 * element count times the dtype size, no integer overflow) before any tensor byte is read,
 * so that a later read can trust the entry it is given. */
#include "formats/safetensors.h"
#include "formats/dtype.h"
#include "core/error.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

size_t mt_st_dtype_size(const char *dtype) {
    static const struct { const char *name; size_t size; } sizes[] = {
        {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
        {"I8", 1}, {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1}, {"BOOL", 1},
        {"F8_E4M3", 1}, {"F8_E5M2", 1},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (strcmp(dtype, sizes[i].name) == 0) return sizes[i].size;
    return 0;
}

static int compare_tensor_names(const void *a, const void *b) {
    return strcmp(((const mt_st_tensor *)a)->name, ((const mt_st_tensor *)b)->name);
}

/* Reads a JSON integer in [0, INT64_MAX]; 0 on success. */
static int json_nonneg(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static mt_status parse_shape(const char *path, const char *name, const json_t *shape, mt_st_tensor *t) {
    if (!json_is_array(shape) || json_array_size(shape) > MT_ST_MAX_DIMS)
        return mt_error(MT_ERR_FORMAT, "%s: tensor %s: shape must be an array of at most %d sizes",
                        path, name, MT_ST_MAX_DIMS);
    t->n_dims = (int)json_array_size(shape);
    t->n_elems = 1;
    for (int d = 0; d < t->n_dims; d++) {
        uint64_t dim;
        if (json_nonneg(json_array_get(shape, (size_t)d), &dim) ||
            __builtin_mul_overflow(t->n_elems, dim, &t->n_elems))
            return mt_error(MT_ERR_FORMAT, "%s: tensor %s: invalid or overflowing shape", path, name);
        t->shape[d] = (int64_t)dim;
    }
    return MT_OK;
}

static mt_status parse_entry(const char *path, const char *name, const json_t *v, const uint8_t *base,
                             uint64_t region, mt_st_tensor *t) {
    const json_t *dtype = json_object_get(v, "dtype"), *offs = json_object_get(v, "data_offsets");
    if (!json_is_object(v) || !json_is_string(dtype) || json_string_length(dtype) >= sizeof t->dtype)
        return mt_error(MT_ERR_FORMAT, "%s: tensor %s: missing or invalid dtype", path, name);
    memcpy(t->dtype, json_string_value(dtype), json_string_length(dtype) + 1);
    mt_status s = parse_shape(path, name, json_object_get(v, "shape"), t);
    if (s) return s;
    uint64_t begin, end;
    if (!json_is_array(offs) || json_array_size(offs) != 2 || json_nonneg(json_array_get(offs, 0), &begin) ||
        json_nonneg(json_array_get(offs, 1), &end))
        return mt_error(MT_ERR_FORMAT, "%s: tensor %s: data_offsets must be two non-negative integers", path, name);
    if (begin > end || end > region)
        return mt_error(MT_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu] outside the %llu-byte data "
                        "region", path, name, (unsigned long long)begin, (unsigned long long)end,
                        (unsigned long long)region);
    uint64_t esize = mt_st_dtype_size(t->dtype), want;
    /* An unknown dtype cannot be size-checked; it is refused if anyone reads it. */
    if (esize && (__builtin_mul_overflow(t->n_elems, esize, &want) || want != end - begin))
        return mt_error(MT_ERR_FORMAT, "%s: tensor %s: %llu bytes for %llu elements of %s", path, name,
                        (unsigned long long)(end - begin), (unsigned long long)t->n_elems, t->dtype);
    t->data = base + begin;
    t->nbytes = (size_t)(end - begin);
    t->name = strdup(name);
    return t->name ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
}

static mt_status parse_metadata(const char *path, const json_t *meta, mt_safetensors *st) {
    if (!json_is_object(meta))
        return mt_error(MT_ERR_FORMAT, "%s: __metadata__ must be an object of strings", path);
    st->metadata = calloc(2 * json_object_size(meta) + 1, sizeof(char *));
    if (!st->metadata) return mt_error(MT_ERR_NOMEM, "out of memory");
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)meta, key, val) {
        if (!json_is_string(val))
            return mt_error(MT_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string", path, key);
        char *k = strdup(key), *v = strdup(json_string_value(val));
        st->metadata[2 * st->n_metadata] = k;
        st->metadata[2 * st->n_metadata + 1] = v;
        st->n_metadata++;
        if (!k || !v) return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    return MT_OK;
}

static mt_status parse_header(const char *path, const json_t *root, const uint8_t *base, uint64_t region,
                              mt_safetensors *st) {
    if (!json_is_object(root)) return mt_error(MT_ERR_FORMAT, "%s: header is not a JSON object", path);
    st->tensors = calloc(json_object_size(root) + 1, sizeof *st->tensors);
    if (!st->tensors) return mt_error(MT_ERR_NOMEM, "out of memory");
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)root, key, val) {
        mt_status s = strcmp(key, "__metadata__") == 0
                          ? parse_metadata(path, val, st)
                          : parse_entry(path, key, val, base, region, &st->tensors[st->n_tensors]);
        if (s) return s;
        if (strcmp(key, "__metadata__") != 0) st->n_tensors++;
    }
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, compare_tensor_names);
    return MT_OK;
}

mt_status mt_safetensors_open(const char *path, mt_safetensors *st) {
    memset(st, 0, sizeof *st);
    mt_status s = mt_file_map(path, &st->file);
    if (s) return s;
    size_t size = st->file.size;
    if (size < 8) {
        mt_safetensors_close(st);
        return mt_error(MT_ERR_FORMAT, "%s: %zu bytes is too small for a safetensors file", path, size);
    }
    uint64_t hlen = mt_load_u64(st->file.data);
    if (hlen > size - 8 || hlen > MT_ST_MAX_HEADER) {
        mt_safetensors_close(st);
        return mt_error(MT_ERR_FORMAT, "%s: header length %llu exceeds the file (%zu bytes) or the 100 MB "
                        "limit", path, (unsigned long long)hlen, size);
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)st->file.data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        mt_safetensors_close(st);
        return mt_error(MT_ERR_FORMAT, "%s: header is not valid JSON: %s (byte %d)", path, jerr.text,
                        jerr.position);
    }
    s = parse_header(path, root, st->file.data + 8 + hlen, size - 8 - hlen, st);
    json_decref(root);
    if (s) mt_safetensors_close(st);
    return s;
}

void mt_safetensors_close(mt_safetensors *st) {
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < 2 * st->n_metadata; i++) free(st->metadata[i]);
    free(st->metadata);
    mt_file_unmap(&st->file);
    memset(st, 0, sizeof *st);
}

const mt_st_tensor *mt_safetensors_find(const mt_safetensors *st, const char *name) {
    mt_st_tensor key = {.name = (char *)name};
    return bsearch(&key, st->tensors, (size_t)st->n_tensors, sizeof key, compare_tensor_names);
}

const char *mt_safetensors_metadata(const mt_safetensors *st, const char *key) {
    for (int i = 0; i < st->n_metadata; i++)
        if (strcmp(st->metadata[2 * i], key) == 0) return st->metadata[2 * i + 1];
    return NULL;
}

mt_status mt_safetensors_read_f32(const mt_safetensors *st, const mt_st_tensor *t, float *dst, size_t n) {
    if (n != t->n_elems)
        return mt_error(MT_ERR_ARG, "%s: tensor %s has %llu elements, caller expected %zu", st->file.path,
                        t->name, (unsigned long long)t->n_elems, n);
    if (strcmp(t->dtype, "F32") == 0) {
        if (n) memcpy(dst, t->data, n * sizeof(float));
    } else if (strcmp(t->dtype, "F16") == 0) {
        for (size_t i = 0; i < n; i++) dst[i] = mt_f16_to_f32(mt_load_u16(t->data + 2 * i));
    } else if (strcmp(t->dtype, "BF16") == 0) {
        for (size_t i = 0; i < n; i++) dst[i] = mt_bf16_to_f32(mt_load_u16(t->data + 2 * i));
    } else {
        return mt_error(MT_ERR_UNSUPPORTED, "%s: tensor %s has dtype %s; memtune reads F32, F16 and BF16",
                        st->file.path, t->name, t->dtype);
    }
    mt_file_release(&st->file, t->data, n * mt_st_dtype_size(t->dtype)); /* copied: peak RSS = weights */
    return MT_OK;
}

/* ---- writer ---- */

static uint64_t desc_bytes(const mt_st_desc *d) {
    uint64_t n = mt_st_dtype_size(d->dtype);
    for (int i = 0; i < d->n_dims; i++) n *= (uint64_t)d->shape[i];
    return n;
}

static json_t *desc_json(const mt_st_desc *d, uint64_t begin, uint64_t end) {
    json_t *shape = json_array();
    for (int i = 0; i < d->n_dims; i++) json_array_append_new(shape, json_integer(d->shape[i]));
    return json_pack("{s:s, s:o, s:[I, I]}", "dtype", d->dtype, "shape", shape, "data_offsets",
                     (json_int_t)begin, (json_int_t)end);
}

static mt_status check_desc(const char *path, const mt_st_desc *d, json_t *root) {
    if (!d->name || !d->dtype || !mt_st_dtype_size(d->dtype) || d->n_dims < 0 || d->n_dims > MT_ST_MAX_DIMS)
        return mt_error(MT_ERR_ARG, "%s: invalid tensor description %s", path, d->name ? d->name : "(null)");
    if (json_object_get(root, d->name) || strcmp(d->name, "__metadata__") == 0)
        return mt_error(MT_ERR_ARG, "%s: duplicate tensor name %s", path, d->name);
    for (int i = 0; i < d->n_dims; i++)
        if (d->shape[i] < 0 || d->shape[i] > ((int64_t)1 << 40))
            return mt_error(MT_ERR_ARG, "%s: tensor %s has an invalid shape", path, d->name);
    return MT_OK;
}

/* Builds the header JSON (metadata first, then tensors in file order). */
static mt_status build_header(const char *path, const mt_st_desc *descs, int n, const char *const *metadata,
                              char **out) {
    json_t *root = json_object();
    mt_status s = root ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s && metadata) {
        json_t *meta = json_object();
        for (int i = 0; metadata[i] && metadata[i + 1]; i += 2)
            json_object_set_new(meta, metadata[i], json_string(metadata[i + 1]));
        json_object_set_new(root, "__metadata__", meta);
    }
    uint64_t offset = 0;
    for (int i = 0; i < n && !s; i++) {
        if ((s = check_desc(path, &descs[i], root))) break;
        uint64_t bytes = desc_bytes(&descs[i]);
        if (json_object_set_new(root, descs[i].name, desc_json(&descs[i], offset, offset + bytes)))
            s = mt_error(MT_ERR_NOMEM, "out of memory");
        offset += bytes;
    }
    *out = s ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s && !*out) s = mt_error(MT_ERR_NOMEM, "out of memory");
    json_decref(root);
    return s;
}

/* Moves to the next tensor that still wants bytes (skipping empty ones). */
static void writer_advance(mt_st_writer *w) {
    while (w->remaining == 0 && w->next < w->n_descs) {
        w->next++;
        if (w->next < w->n_descs) w->remaining = desc_bytes(&w->descs[w->next]);
    }
}

mt_status mt_st_writer_open(mt_st_writer *w, const char *path, const mt_st_desc *descs, int n,
                            const char *const *metadata) {
    memset(w, 0, sizeof *w);
    char *header;
    mt_status s = build_header(path, descs, n, metadata, &header);
    if (s) return s;
    /* Pad with spaces so the data region starts 8-byte aligned, as the format recommends. */
    size_t len = strlen(header), padded = (len + 7) & ~(size_t)7;
    uint8_t len_bytes[8];
    uint64_t len64 = padded;
    memcpy(len_bytes, &len64, 8);
    if (!(s = mt_atomic_open(&w->file, path))) {
        s = mt_atomic_write(&w->file, len_bytes, 8);
        if (!s) s = mt_atomic_write(&w->file, header, len);
        if (!s) s = mt_atomic_write(&w->file, "       ", padded - len);
        if (s) mt_atomic_abort(&w->file);
    }
    free(header);
    if (s) return s;
    w->descs = descs;
    w->n_descs = n;
    w->next = -1;
    writer_advance(w);
    return MT_OK;
}

mt_status mt_st_writer_put(mt_st_writer *w, const void *bytes, size_t nbytes) {
    const uint8_t *p = bytes;
    while (nbytes > 0) {
        if (w->next >= w->n_descs)
            return mt_error(MT_ERR_ARG, "%s: more tensor data than the header declares", w->file.path);
        size_t take = nbytes < w->remaining ? nbytes : (size_t)w->remaining;
        mt_status s = mt_atomic_write(&w->file, p, take);
        if (s) return s;
        p += take;
        nbytes -= take;
        w->remaining -= take;
        writer_advance(w);
    }
    return MT_OK;
}

mt_status mt_st_writer_put_f32(mt_st_writer *w, const float *src, size_t n) {
    if (w->next >= w->n_descs)
        return mt_error(MT_ERR_ARG, "%s: more tensor data than the header declares", w->file.path);
    const char *dtype = w->descs[w->next].dtype;
    if (n > w->remaining / mt_st_dtype_size(dtype))
        return mt_error(MT_ERR_ARG, "%s: %zu values overrun tensor %s", w->file.path, n, w->descs[w->next].name);
    if (strcmp(dtype, "F32") == 0) return mt_st_writer_put(w, src, n * sizeof(float));
    int bf16 = strcmp(dtype, "BF16") == 0;
    if (!bf16 && strcmp(dtype, "F16") != 0)
        return mt_error(MT_ERR_ARG, "%s: cannot convert f32 to %s", w->file.path, dtype);
    uint16_t buf[4096];
    for (size_t i = 0; i < n; i += 4096) {
        size_t k = n - i < 4096 ? n - i : 4096;
        for (size_t j = 0; j < k; j++) buf[j] = bf16 ? mt_f32_to_bf16(src[i + j]) : mt_f32_to_f16(src[i + j]);
        mt_status s = mt_st_writer_put(w, buf, k * sizeof(uint16_t));
        if (s) return s;
    }
    return MT_OK;
}

mt_status mt_st_writer_commit(mt_st_writer *w) {
    if (w->next < w->n_descs) {
        mt_status s = mt_error(MT_ERR_ARG, "%s: tensor %s is missing %llu bytes", w->file.path,
                               w->descs[w->next].name, (unsigned long long)w->remaining);
        mt_st_writer_abort(w);
        return s;
    }
    mt_status s = mt_atomic_commit(&w->file);
    memset(w, 0, sizeof *w);
    return s;
}

void mt_st_writer_abort(mt_st_writer *w) {
    mt_atomic_abort(&w->file);
    memset(w, 0, sizeof *w);
}
