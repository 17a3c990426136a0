/* GGUF v3 container reader and writer (see gguf.h). The reader walks the file once with a
 * bounds-checked cursor: every count is compared with the bytes that remain before anything
 * is allocated or looped over, nested arrays are depth-limited, and every tensor's data
 * range is checked against the data section. After mt_gguf_open succeeds, getters and
 * tensor reads only touch ranges that were validated. */
#include "formats/gguf.h"
#include "formats/dtype.h"
#include "core/error.h"
#include "kernels/quant.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KV 65536
#define MAX_TENSORS (1 << 20)
#define MAX_NAME 256
#define MAX_ARRAY_DEPTH 8

static const size_t scalar_size[MT_GGUF_N_TYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

/* ---- bounds-checked cursor ---- */

typedef struct {
    const uint8_t *base;
    size_t pos, size;
    const char *path;
} cursor;

static size_t remaining(const cursor *c) { return c->size - c->pos; }

static mt_status need(const cursor *c, uint64_t n, const char *what) {
    if (n <= remaining(c)) return MT_OK;
    return mt_error(MT_ERR_FORMAT, "%s: truncated: %s at byte %zu needs %llu bytes, %zu remain", c->path, what, c->pos,
                    (unsigned long long)n, remaining(c));
}

static mt_status read_u32(cursor *c, uint32_t *v, const char *what) {
    mt_status s = need(c, 4, what);
    if (!s) {
        *v = mt_load_u32(c->base + c->pos);
        c->pos += 4;
    }
    return s;
}

static mt_status read_u64(cursor *c, uint64_t *v, const char *what) {
    mt_status s = need(c, 8, what);
    if (!s) {
        *v = mt_load_u64(c->base + c->pos);
        c->pos += 8;
    }
    return s;
}

/* A string: u64 length, then that many bytes (no terminator). */
static mt_status read_string(cursor *c, const uint8_t **p, uint64_t *len, const char *what) {
    mt_status s = read_u64(c, len, what);
    if (s) return s;
    if (*len > remaining(c))
        return mt_error(MT_ERR_FORMAT, "%s: %s: string length %llu at byte %zu runs past the end of the file", c->path,
                        what, (unsigned long long)*len, c->pos - 8);
    *p = c->base + c->pos;
    c->pos += (size_t)*len;
    return MT_OK;
}

static char *copy_string(const uint8_t *p, uint64_t len) {
    char *s = malloc((size_t)len + 1);
    if (s) {
        memcpy(s, p, (size_t)len);
        s[len] = 0;
    }
    return s;
}

/* ---- metadata ---- */

static mt_status skip_value(cursor *c, uint32_t type, int depth, const char *key);

static mt_status skip_array(cursor *c, int depth, const char *key, uint32_t *elem_type, uint64_t *n) {
    mt_status s;
    if (depth >= MAX_ARRAY_DEPTH)
        return mt_error(MT_ERR_FORMAT, "%s: key %s: arrays nested deeper than %d", c->path, key, MAX_ARRAY_DEPTH);
    if ((s = read_u32(c, elem_type, key)) || (s = read_u64(c, n, key))) return s;
    if (*elem_type >= MT_GGUF_N_TYPES)
        return mt_error(MT_ERR_FORMAT, "%s: key %s: invalid array element type %u", c->path, key, *elem_type);
    /* Every element takes at least this many bytes, which bounds the loops below. */
    size_t min_size = *elem_type == MT_GGUF_STRING ? 8 : *elem_type == MT_GGUF_ARRAY ? 12 : scalar_size[*elem_type];
    if (*n > remaining(c) / min_size)
        return mt_error(MT_ERR_FORMAT, "%s: key %s: array of %llu elements runs past the end of the file", c->path,
                        key, (unsigned long long)*n);
    if (*elem_type != MT_GGUF_STRING && *elem_type != MT_GGUF_ARRAY) {
        c->pos += (size_t)(*n * min_size);
        return MT_OK;
    }
    for (uint64_t i = 0; i < *n; i++)
        if ((s = skip_value(c, *elem_type, depth + 1, key))) return s;
    return MT_OK;
}

static mt_status skip_value(cursor *c, uint32_t type, int depth, const char *key) {
    const uint8_t *p = NULL;
    uint64_t len, n;
    uint32_t elem;
    if (type == MT_GGUF_STRING) return read_string(c, &p, &len, key);
    if (type == MT_GGUF_ARRAY) return skip_array(c, depth, key, &elem, &n);
    if (type >= MT_GGUF_N_TYPES) return mt_error(MT_ERR_FORMAT, "%s: key %s: invalid value type %u", c->path, key, type);
    mt_status s = need(c, scalar_size[type], key);
    if (!s) c->pos += scalar_size[type];
    return s;
}

static mt_status read_kv(cursor *c, mt_gguf *g, mt_gguf_kv *kv) {
    const uint8_t *p = NULL;
    uint64_t len;
    mt_status s = read_string(c, &p, &len, "metadata key");
    if (s) return s;
    if (len > MAX_NAME) return mt_error(MT_ERR_FORMAT, "%s: metadata key of %llu bytes", c->path, (unsigned long long)len);
    if (!(kv->key = copy_string(p, len))) return mt_error(MT_ERR_NOMEM, "out of memory");
    if (mt_gguf_find(g, kv->key)) return mt_error(MT_ERR_FORMAT, "%s: duplicate metadata key %s", c->path, kv->key);
    if ((s = read_u32(c, &kv->type, kv->key))) return s;
    size_t start = c->pos;
    if (kv->type == MT_GGUF_ARRAY) {
        s = skip_array(c, 0, kv->key, &kv->elem_type, &kv->n);
        start += 12;
    } else {
        s = skip_value(c, kv->type, 0, kv->key);
    }
    kv->data = c->base + start;
    kv->size = c->pos - start;
    return s;
}

/* ---- tensor descriptors ---- */

typedef struct { uint32_t block, size; } type_size;

/* Block sizes of ggml types, so that even tensors memtune cannot read are bounds-checked. */
static type_size ggml_type_size(uint32_t type) {
    switch (type) {
    case 0: return (type_size){1, 4};    /* F32 */
    case 1: return (type_size){1, 2};    /* F16 */
    case 2: return (type_size){32, 18};  /* Q4_0 */
    case 3: return (type_size){32, 20};  /* Q4_1 */
    case 6: return (type_size){32, 22};  /* Q5_0 */
    case 7: return (type_size){32, 24};  /* Q5_1 */
    case 8: return (type_size){32, 34};  /* Q8_0 */
    case 9: return (type_size){32, 36};  /* Q8_1 */
    case 10: return (type_size){256, 84};  /* Q2_K */
    case 11: return (type_size){256, 110}; /* Q3_K */
    case 12: return (type_size){256, 144}; /* Q4_K */
    case 13: return (type_size){256, 176}; /* Q5_K */
    case 14: return (type_size){256, 210}; /* Q6_K */
    case 15: return (type_size){256, 292}; /* Q8_K */
    case 24: return (type_size){1, 1};   /* I8 */
    case 25: return (type_size){1, 2};   /* I16 */
    case 26: return (type_size){1, 4};   /* I32 */
    case 27: return (type_size){1, 8};   /* I64 */
    case 28: return (type_size){1, 8};   /* F64 */
    case 30: return (type_size){1, 2};   /* BF16 */
    default: return (type_size){0, 0};
    }
}

const char *mt_ggml_type_name(uint32_t type) {
    static const char *const names[] = {"F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
                                        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
                                        "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64",
                                        "F64", "IQ1_M", "BF16"};
    return type < sizeof names / sizeof names[0] ? names[type] : "unknown";
}

static mt_status read_tensor_info(cursor *c, mt_gguf_tensor *t, uint64_t *offset) {
    const uint8_t *p = NULL;
    uint64_t len;
    uint32_t n_dims;
    mt_status s = read_string(c, &p, &len, "tensor name");
    if (s) return s;
    if (len > MAX_NAME) return mt_error(MT_ERR_FORMAT, "%s: tensor name of %llu bytes", c->path, (unsigned long long)len);
    if (!(t->name = copy_string(p, len))) return mt_error(MT_ERR_NOMEM, "out of memory");
    if ((s = read_u32(c, &n_dims, t->name))) return s;
    if (n_dims < 1 || n_dims > MT_GGUF_MAX_DIMS)
        return mt_error(MT_ERR_FORMAT, "%s: tensor %s has %u dimensions (1 to 4 allowed)", c->path, t->name, n_dims);
    t->n_dims = (int)n_dims;
    t->n_elems = 1;
    for (int d = 0; d < MT_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (int d = 0; d < t->n_dims; d++) {
        if ((s = read_u64(c, &t->ne[d], t->name))) return s;
        if (t->ne[d] > (uint64_t)INT64_MAX || __builtin_mul_overflow(t->n_elems, t->ne[d], &t->n_elems))
            return mt_error(MT_ERR_FORMAT, "%s: tensor %s: invalid or overflowing shape", c->path, t->name);
    }
    if ((s = read_u32(c, &t->type, t->name)) || (s = read_u64(c, offset, t->name))) return s;
    return MT_OK;
}

/* Places a tensor inside the data section, checking alignment and bounds. */
static mt_status place_tensor(const mt_gguf *g, mt_gguf_tensor *t, uint64_t offset) {
    const char *path = g->file.path;
    uint64_t region = g->file.size - g->data_offset;
    if (offset % g->alignment != 0)
        return mt_error(MT_ERR_FORMAT, "%s: tensor %s: offset %llu is not a multiple of the alignment %u", path,
                        t->name, (unsigned long long)offset, g->alignment);
    type_size ts = ggml_type_size(t->type);
    uint64_t bytes = 0;
    if (ts.block) {
        if (t->ne[0] % ts.block != 0)
            return mt_error(MT_ERR_FORMAT, "%s: tensor %s: row of %llu elements is not a whole number of %s blocks",
                            path, t->name, (unsigned long long)t->ne[0], mt_ggml_type_name(t->type));
        if (__builtin_mul_overflow(t->n_elems / ts.block, (uint64_t)ts.size, &bytes))
            return mt_error(MT_ERR_FORMAT, "%s: tensor %s: size overflows", path, t->name);
    }
    if (offset > region || bytes > region - offset)
        return mt_error(MT_ERR_FORMAT, "%s: tensor %s: data at offset %llu (+%llu bytes) runs past the end of the "
                        "file", path, t->name, (unsigned long long)offset, (unsigned long long)bytes);
    t->data = g->file.data + g->data_offset + offset;
    t->nbytes = (size_t)bytes;
    return MT_OK;
}

static int compare_tensor_ptrs(const void *a, const void *b) {
    return strcmp((*(mt_gguf_tensor *const *)a)->name, (*(mt_gguf_tensor *const *)b)->name);
}

static mt_status index_tensors(mt_gguf *g) {
    g->by_name = malloc((g->n_tensors + 1) * sizeof *g->by_name);
    if (!g->by_name) return mt_error(MT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < g->n_tensors; i++) g->by_name[i] = &g->tensors[i];
    qsort(g->by_name, g->n_tensors, sizeof *g->by_name, compare_tensor_ptrs);
    for (size_t i = 1; i < g->n_tensors; i++)
        if (strcmp(g->by_name[i - 1]->name, g->by_name[i]->name) == 0)
            return mt_error(MT_ERR_FORMAT, "%s: duplicate tensor %s", g->file.path, g->by_name[i]->name);
    return MT_OK;
}

/* ---- open ---- */

static mt_status read_header(cursor *c, mt_gguf *g, uint64_t *n_tensors, uint64_t *n_kv) {
    if (c->size < 4 || memcmp(c->base, "GGUF", 4) != 0)
        return mt_error(MT_ERR_FORMAT, "%s: not a GGUF file (bad magic)", c->path);
    c->pos = 4;
    mt_status s = read_u32(c, &g->version, "version");
    if (s) return s;
    if (g->version != 3)
        return mt_error(MT_ERR_UNSUPPORTED, "%s: GGUF version %u is not supported (memtune reads version 3%s)", c->path,
                        g->version, (g->version & 0xffff) == 0 ? "; big-endian files are not supported" : "");
    if ((s = read_u64(c, n_tensors, "tensor count")) || (s = read_u64(c, n_kv, "metadata count"))) return s;
    /* The smallest key/value takes 13 bytes and the smallest tensor descriptor 32. */
    if (*n_kv > MAX_KV || *n_kv > remaining(c) / 13 || *n_tensors > MAX_TENSORS || *n_tensors > remaining(c) / 32)
        return mt_error(MT_ERR_FORMAT, "%s: implausible counts: %llu tensors, %llu metadata entries in %zu bytes",
                        c->path, (unsigned long long)*n_tensors, (unsigned long long)*n_kv, c->size);
    return MT_OK;
}

static mt_status read_alignment(mt_gguf *g) {
    g->alignment = MT_GGUF_DEFAULT_ALIGNMENT;
    const mt_gguf_kv *kv = mt_gguf_find(g, "general.alignment");
    if (!kv) return MT_OK;
    uint32_t a = kv->type == MT_GGUF_U32 ? mt_load_u32(kv->data) : 0;
    if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 20))
        return mt_error(MT_ERR_FORMAT, "%s: general.alignment must be a u32 power of two", g->file.path);
    g->alignment = a;
    return MT_OK;
}

static mt_status parse(mt_gguf *g) {
    cursor c = {g->file.data, 0, g->file.size, g->file.path};
    uint64_t n_tensors = 0, n_kv = 0;
    mt_status s = read_header(&c, g, &n_tensors, &n_kv);
    if (s) return s;
    g->kv = calloc((size_t)n_kv + 1, sizeof *g->kv);
    g->tensors = calloc((size_t)n_tensors + 1, sizeof *g->tensors);
    uint64_t *offsets = calloc((size_t)n_tensors + 1, sizeof *offsets);
    if (!g->kv || !g->tensors || !offsets) s = mt_error(MT_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < n_kv && !s; i++, g->n_kv++) s = read_kv(&c, g, &g->kv[i]);
    for (uint64_t i = 0; i < n_tensors && !s; i++, g->n_tensors++) s = read_tensor_info(&c, &g->tensors[i], &offsets[i]);
    if (!s) s = read_alignment(g);
    if (!s) {
        /* A file without tensors may end right after its header, without padding. */
        g->data_offset = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
        if (n_tensors && g->data_offset > c.size)
            s = mt_error(MT_ERR_FORMAT, "%s: truncated before the tensor data", g->file.path);
        if (g->data_offset > c.size) g->data_offset = c.size;
    }
    for (size_t i = 0; i < g->n_tensors && !s; i++) s = place_tensor(g, &g->tensors[i], offsets[i]);
    if (!s) s = index_tensors(g);
    free(offsets);
    return s;
}

mt_status mt_gguf_open(const char *path, mt_gguf *g) {
    memset(g, 0, sizeof *g);
    mt_status s = mt_file_map(path, &g->file);
    if (s) return s;
    s = parse(g);
    if (s) mt_gguf_close(g);
    return s;
}

void mt_gguf_close(mt_gguf *g) {
    /* n_kv / n_tensors also count an entry whose parse failed, so its name is freed too. */
    for (size_t i = 0; i < g->n_kv; i++) free(g->kv[i].key);
    for (size_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    free(g->by_name);
    mt_file_unmap(&g->file);
    memset(g, 0, sizeof *g);
}

/* ---- getters ---- */

const mt_gguf_kv *mt_gguf_find(const mt_gguf *g, const char *key) {
    for (size_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

static const char *value_type_name(uint32_t t) {
    static const char *const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
                                        "u64", "i64", "f64"};
    return t < MT_GGUF_N_TYPES ? names[t] : "invalid";
}

static int is_integer_type(uint32_t t) { return t <= MT_GGUF_I32 || t == MT_GGUF_U64 || t == MT_GGUF_I64; }

/* Decodes one numeric element; *ok = 0 for an u64 beyond int64. */
static double load_number(const uint8_t *p, uint32_t type, int64_t *as_int, int *ok) {
    int64_t i = 0;
    double d = 0;
    *ok = 1;
    switch (type) {
    case MT_GGUF_U8: case MT_GGUF_BOOL: i = p[0]; break;
    case MT_GGUF_I8: i = (int8_t)p[0]; break;
    case MT_GGUF_U16: i = mt_load_u16(p); break;
    case MT_GGUF_I16: i = (int16_t)mt_load_u16(p); break;
    case MT_GGUF_U32: i = mt_load_u32(p); break;
    case MT_GGUF_I32: i = (int32_t)mt_load_u32(p); break;
    case MT_GGUF_U64: { uint64_t u = mt_load_u64(p); *ok = u <= INT64_MAX; i = (int64_t)u; break; }
    case MT_GGUF_I64: i = (int64_t)mt_load_u64(p); break;
    case MT_GGUF_F32: d = mt_load_f32(p); *as_int = 0; return d;
    case MT_GGUF_F64: { uint64_t u = mt_load_u64(p); memcpy(&d, &u, 8); *as_int = 0; return d; }
    }
    *as_int = i;
    return (double)i;
}

static mt_status lookup(const mt_gguf *g, const char *key, int required, const mt_gguf_kv **kv) {
    *kv = mt_gguf_find(g, key);
    if (!*kv && required) return mt_error(MT_ERR_FORMAT, "%s: missing metadata key %s", g->file.path, key);
    return MT_OK;
}

static mt_status wrong_type(const mt_gguf *g, const mt_gguf_kv *kv, const char *expected) {
    return mt_error(MT_ERR_FORMAT, "%s: metadata key %s has type %s, expected %s", g->file.path, kv->key,
                    value_type_name(kv->type == MT_GGUF_ARRAY ? kv->elem_type : kv->type), expected);
}

mt_status mt_gguf_get_int(const mt_gguf *g, const char *key, int64_t *out, int required) {
    const mt_gguf_kv *kv;
    mt_status s = lookup(g, key, required, &kv);
    if (s || !kv) return s;
    int ok;
    if (!is_integer_type(kv->type)) return wrong_type(g, kv, "an integer");
    load_number(kv->data, kv->type, out, &ok);
    return ok ? MT_OK : mt_error(MT_ERR_FORMAT, "%s: metadata key %s is out of range", g->file.path, key);
}

mt_status mt_gguf_get_float(const mt_gguf *g, const char *key, double *out, int required) {
    const mt_gguf_kv *kv;
    mt_status s = lookup(g, key, required, &kv);
    if (s || !kv) return s;
    if (kv->type == MT_GGUF_ARRAY || kv->type == MT_GGUF_STRING || kv->type == MT_GGUF_BOOL)
        return wrong_type(g, kv, "a number");
    int64_t i;
    int ok;
    *out = load_number(kv->data, kv->type, &i, &ok);
    return MT_OK;
}

mt_status mt_gguf_get_bool(const mt_gguf *g, const char *key, int *out, int required) {
    const mt_gguf_kv *kv;
    mt_status s = lookup(g, key, required, &kv);
    if (s || !kv) return s;
    if (kv->type != MT_GGUF_BOOL && !is_integer_type(kv->type)) return wrong_type(g, kv, "a bool");
    int64_t i;
    int ok;
    load_number(kv->data, kv->type, &i, &ok);
    *out = i != 0;
    return MT_OK;
}

mt_status mt_gguf_get_string(const mt_gguf *g, const char *key, char **out, int required) {
    const mt_gguf_kv *kv;
    mt_status s = lookup(g, key, required, &kv);
    if (s || !kv) return s;
    if (kv->type != MT_GGUF_STRING) return wrong_type(g, kv, "a string");
    char *copy = copy_string(kv->data + 8, kv->size - 8);
    if (!copy) return mt_error(MT_ERR_NOMEM, "out of memory");
    *out = copy;
    return MT_OK;
}

static mt_status lookup_array(const mt_gguf *g, const char *key, int required, const mt_gguf_kv **kv) {
    mt_status s = lookup(g, key, required, kv);
    if (s || !*kv) return s;
    if ((*kv)->type != MT_GGUF_ARRAY)
        return mt_error(MT_ERR_FORMAT, "%s: metadata key %s has type %s, expected an array", g->file.path, key,
                        value_type_name((*kv)->type));
    return MT_OK;
}

mt_status mt_gguf_get_strings(const mt_gguf *g, const char *key, char ***out, uint64_t *n, int required) {
    const mt_gguf_kv *kv;
    mt_status s = lookup_array(g, key, required, &kv);
    if (s || !kv) return s;
    if (kv->elem_type != MT_GGUF_STRING) return wrong_type(g, kv, "an array of strings");
    /* Pointers, then each string's bytes plus a terminator: the 8-byte length prefixes in
     * kv->size more than pay for the terminators. */
    char **strs = malloc((size_t)kv->n * sizeof(char *) + kv->size + 1);
    if (!strs) return mt_error(MT_ERR_NOMEM, "out of memory reading %s", key);
    char *text = (char *)(strs + kv->n);
    const uint8_t *p = kv->data;
    for (uint64_t i = 0; i < kv->n; i++) {
        uint64_t len = mt_load_u64(p);
        memcpy(text, p + 8, (size_t)len);
        text[len] = 0;
        strs[i] = text;
        text += len + 1;
        p += 8 + len;
    }
    *out = strs;
    *n = kv->n;
    return MT_OK;
}

/* Numeric array elements, converted through double (exact for every int32 and float). */
static mt_status get_numbers(const mt_gguf *g, const char *key, void **out, uint64_t *n, int required, int as_float) {
    const mt_gguf_kv *kv;
    mt_status s = lookup_array(g, key, required, &kv);
    if (s || !kv) return s;
    uint32_t t = kv->elem_type;
    if (t == MT_GGUF_STRING || t == MT_GGUF_ARRAY || (!as_float && !is_integer_type(t) && t != MT_GGUF_BOOL))
        return wrong_type(g, kv, as_float ? "an array of numbers" : "an array of integers");
    void *vals = malloc((size_t)(kv->n ? kv->n : 1) * 4);
    if (!vals) return mt_error(MT_ERR_NOMEM, "out of memory reading %s", key);
    for (uint64_t i = 0; i < kv->n; i++) {
        int64_t iv;
        int ok;
        double d = load_number(kv->data + i * scalar_size[t], t, &iv, &ok);
        if (as_float) ((float *)vals)[i] = (float)d;
        else if (iv < INT32_MIN || iv > INT32_MAX || !ok) {
            free(vals);
            return mt_error(MT_ERR_FORMAT, "%s: metadata key %s: element %llu out of int32 range", g->file.path, key,
                            (unsigned long long)i);
        } else ((int32_t *)vals)[i] = (int32_t)iv;
    }
    *out = vals;
    *n = kv->n;
    return MT_OK;
}

mt_status mt_gguf_get_floats(const mt_gguf *g, const char *key, float **out, uint64_t *n, int required) {
    return get_numbers(g, key, (void **)out, n, required, 1);
}

mt_status mt_gguf_get_ints(const mt_gguf *g, const char *key, int32_t **out, uint64_t *n, int required) {
    return get_numbers(g, key, (void **)out, n, required, 0);
}

/* ---- tensors ---- */

const mt_gguf_tensor *mt_gguf_find_tensor(const mt_gguf *g, const char *name) {
    mt_gguf_tensor key = {.name = (char *)name}, *kp = &key;
    mt_gguf_tensor **hit = bsearch(&kp, g->by_name, g->n_tensors, sizeof *g->by_name, compare_tensor_ptrs);
    return hit ? *hit : NULL;
}

mt_status mt_gguf_read_f32(const mt_gguf *g, const mt_gguf_tensor *t, float *dst, size_t n) {
    if (n != t->n_elems)
        return mt_error(MT_ERR_ARG, "%s: tensor %s has %llu elements, caller expected %zu", g->file.path, t->name,
                        (unsigned long long)t->n_elems, n);
    if (!mt_qtype_size_of(t->type).block)
        return mt_error(MT_ERR_UNSUPPORTED,
                        "%s: tensor %s has type %s (%u), which memtune does not read (it reads F32, F16, BF16, Q4_0, "
                        "Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K)",
                        g->file.path, t->name, mt_ggml_type_name(t->type), t->type);
    /* place_tensor checked that the row is whole blocks and the bytes lie inside the file */
    mt_dequantize(t->type, t->data, dst, n);
    mt_file_release(&g->file, t->data, t->nbytes);
    return MT_OK;
}

/* ---- writer ---- */

static void buf_put(mt_gguf_buf *b, const void *data, size_t n) {
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *p = realloc(b->data, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void buf_u32(mt_gguf_buf *b, uint32_t v) { buf_put(b, &v, 4); }
static void buf_u64(mt_gguf_buf *b, uint64_t v) { buf_put(b, &v, 8); }
static void buf_str(mt_gguf_buf *b, const char *s) {
    size_t n = strlen(s);
    buf_u64(b, n);
    buf_put(b, s, n);
}

static void kv_head(mt_gguf_writer *w, const char *key, uint32_t type) {
    buf_str(&w->kv, key);
    buf_u32(&w->kv, type);
    w->n_kv++;
}

void mt_gguf_writer_init(mt_gguf_writer *w) { memset(w, 0, sizeof *w); }

void mt_gguf_add_string(mt_gguf_writer *w, const char *key, const char *value) {
    kv_head(w, key, MT_GGUF_STRING);
    buf_str(&w->kv, value);
}

void mt_gguf_add_u32(mt_gguf_writer *w, const char *key, uint32_t value) {
    kv_head(w, key, MT_GGUF_U32);
    buf_u32(&w->kv, value);
}

void mt_gguf_add_f32(mt_gguf_writer *w, const char *key, float value) {
    kv_head(w, key, MT_GGUF_F32);
    buf_put(&w->kv, &value, 4);
}

void mt_gguf_add_bool(mt_gguf_writer *w, const char *key, int value) {
    uint8_t b = value != 0;
    kv_head(w, key, MT_GGUF_BOOL);
    buf_put(&w->kv, &b, 1);
}

static void array_head(mt_gguf_writer *w, const char *key, uint32_t elem_type, uint64_t n) {
    kv_head(w, key, MT_GGUF_ARRAY);
    buf_u32(&w->kv, elem_type);
    buf_u64(&w->kv, n);
}

void mt_gguf_add_strings(mt_gguf_writer *w, const char *key, const char *const *values, uint64_t n) {
    array_head(w, key, MT_GGUF_STRING, n);
    for (uint64_t i = 0; i < n; i++) buf_str(&w->kv, values[i]);
}

void mt_gguf_add_floats(mt_gguf_writer *w, const char *key, const float *values, uint64_t n) {
    array_head(w, key, MT_GGUF_F32, n);
    buf_put(&w->kv, values, (size_t)n * 4);
}

void mt_gguf_add_ints(mt_gguf_writer *w, const char *key, const int32_t *values, uint64_t n) {
    array_head(w, key, MT_GGUF_I32, n);
    buf_put(&w->kv, values, (size_t)n * 4);
}

static uint64_t align_up(uint64_t x) {
    return (x + MT_GGUF_DEFAULT_ALIGNMENT - 1) / MT_GGUF_DEFAULT_ALIGNMENT * MT_GGUF_DEFAULT_ALIGNMENT;
}

void mt_gguf_add_tensor_typed(mt_gguf_writer *w, const char *name, int n_dims, const uint64_t *ne, uint32_t type) {
    uint64_t n = 1;
    buf_str(&w->info, name);
    buf_u32(&w->info, (uint32_t)n_dims);
    for (int d = 0; d < n_dims; d++) {
        buf_u64(&w->info, ne[d]);
        n *= ne[d];
    }
    buf_u32(&w->info, type);
    buf_u64(&w->info, w->data_size);
    type_size ts = ggml_type_size(type);
    w->data_size = align_up(w->data_size + (ts.block ? n / ts.block * ts.size : 0));
    w->n_tensors++;
}

void mt_gguf_add_tensor(mt_gguf_writer *w, const char *name, int n_dims, const uint64_t *ne) {
    mt_gguf_add_tensor_typed(w, name, n_dims, ne, MT_GGML_F32);
}

static mt_status write_padding(mt_gguf_writer *w, uint64_t pos) {
    static const uint8_t zeros[MT_GGUF_DEFAULT_ALIGNMENT];
    return mt_atomic_write(&w->file, zeros, (size_t)(align_up(pos) - pos));
}

mt_status mt_gguf_writer_begin(mt_gguf_writer *w, const char *path) {
    if (w->kv.oom || w->info.oom) return mt_error(MT_ERR_NOMEM, "%s: out of memory building the GGUF header", path);
    mt_gguf_buf head = {0};
    buf_put(&head, "GGUF", 4);
    buf_u32(&head, 3);
    buf_u64(&head, w->n_tensors);
    buf_u64(&head, w->n_kv);
    mt_status s = mt_atomic_open(&w->file, path);
    if (!s) s = mt_atomic_write(&w->file, head.data, head.len);
    if (!s) s = mt_atomic_write(&w->file, w->kv.data, w->kv.len);
    if (!s) s = mt_atomic_write(&w->file, w->info.data, w->info.len);
    if (!s) s = write_padding(w, head.len + w->kv.len + w->info.len);
    free(head.data);
    return s;
}

mt_status mt_gguf_writer_put(mt_gguf_writer *w, const void *data, size_t nbytes) {
    mt_status s = mt_atomic_write(&w->file, data, nbytes);
    if (!s) s = write_padding(w, w->written + nbytes);
    w->written = align_up(w->written + nbytes);
    return s;
}

mt_status mt_gguf_writer_put_f32(mt_gguf_writer *w, const float *data, size_t n) {
    return mt_gguf_writer_put(w, data, n * sizeof(float));
}

mt_status mt_gguf_writer_commit(mt_gguf_writer *w) {
    if (w->written != w->data_size)
        return mt_error(MT_ERR_ARG, "%s: wrote %llu tensor bytes, declared %llu", w->file.path,
                        (unsigned long long)w->written, (unsigned long long)w->data_size);
    return mt_atomic_commit(&w->file);
}

void mt_gguf_writer_free(mt_gguf_writer *w) {
    if (w->file.fp) mt_atomic_abort(&w->file);
    free(w->kv.data);
    free(w->info.data);
    memset(w, 0, sizeof *w);
}
