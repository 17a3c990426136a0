/* Memory experts (adapters layer): make a layer (initialisation), attach it, and read and
 * write it in an adapter directory:
 *
 *   mome_config.json     {"type": "memtune-mome", "experts": N, "n1": .., "n2": .., "heads": H,
 *                         "k": K, "query_dim": dk, "layers": [...], "dim": C, "n_layers": L,
 *                         "context": {"dim": D, "decays": [...]} (absent: no context), ...}
 *   mome.safetensors     model.layers.N.mome.query [H*dk, C], .keys1 [H*n1, dk/2],
 *                        .keys2 [H*n2, dk/2], .experts [N, 2C] (row e = [a_e | b_e]),
 *                        .context_query [H*dk, D*decays] (with a context)
 *
 * The math is kernels/mome.c; what the model reads is model/mome.h. */
#include "memtune.h"
#include "model/mome.h"
#include "model/model.h"
#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/rng.h"
#include "formats/dtype.h"
#include "formats/safetensors.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EXPERTS (1L << 26)

void mt_mome_options_default(mt_mome_options *o) {
    memset(o, 0, sizeof *o);
    o->experts = 1L << 16;
    o->k = 8;
    o->heads = 4;
    o->query_dim = 0; /* min(dim, 128) rounded to even */
    o->sites = NULL;  /* every layer */
    o->context_dim = 32;
    o->seed = 1;
}

void mt_mome_free(mt_mome *mm) {
    if (!mm) return;
    free(mm->layers);
    free(mm->site_of_layer);
    free(mm->router);
    free(mm->keys);
    if (mm->bank_file.data) mt_file_unmap(&mm->bank_file);
    else free(mm->bank);
    free(mm);
}

long mt_mome_experts(const mt_mome *mm) { return mm ? mm->n_experts : 0; }
size_t mt_mome_param_count(const mt_mome *mm) {
    return mm ? mm->n_sites * (mm->router_size + mm->bank_size) : 0;
}
mt_status mt_model_attach_mome(mt_model *m, mt_mome *mm) { return mt_model_set_mome(m, mm); }

int mt_mome_claim(mt_mome *mm, int site, long e, const float *ctx, int claim) {
    if (!mm->keys) return 1;
    int Cx = mm->shape.Cx;
    float *key = mm->keys + ((size_t)site * mm->n_experts + (size_t)e) * Cx;
    int unset = 1;
    for (int c = 0; c < Cx && unset; c++) unset = key[c] == 0;
    if (!unset) return mt_mome_key_matches(key, ctx, Cx, mm->shape.match);
    for (int c = 0; claim && c < Cx; c++) key[c] = mt_bf16_to_f32(mt_f32_to_bf16(ctx[c])); /* bf16: stored exactly */
    return claim;
}

/* "all", "last", or a comma list of layer indices; NULL = every layer */
static mt_status parse_sites(const char *list, int n_layers, unsigned char *on) {
    memset(on, 0, (size_t)n_layers);
    if (!list || !*list || !strcmp(list, "all")) {
        memset(on, 1, (size_t)n_layers);
        return MT_OK;
    }
    for (const char *p = list; *p;) {
        char *end;
        long v = !strncmp(p, "last", 4) ? (end = (char *)p + 4, n_layers - 1) : strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < 0 || v >= n_layers)
            return mt_error(MT_ERR_ARG, "--expert-sites: \"%s\" is not a list of layers in [0, %d), \"last\" or \"all\"",
                            list, n_layers);
        on[v] = 1;
        p = *end ? end + 1 : end;
    }
    return MT_OK;
}

/* n2 = the largest divisor of N not above √N (n1 = N / n2): both tables near √N */
static int split_experts(long n) {
    long n2 = (long)floor(sqrt((double)n));
    while (n2 > 1 && n % n2) n2--;
    return (int)n2;
}

static mt_status check_shape(long n_experts, int n2, int k, int heads, int dk) {
    if (n_experts < 4 || n_experts > MAX_EXPERTS)
        return mt_error(MT_ERR_ARG, "--experts %ld must be in [4, %ld]", n_experts, MAX_EXPERTS);
    if (k < 1 || k > 64) return mt_error(MT_ERR_ARG, "--expert-k %d must be in [1, 64]", k);
    if (heads < 1 || heads > 64) return mt_error(MT_ERR_ARG, "--expert-heads %d must be in [1, 64]", heads);
    if (dk < 2 || dk % 2 || dk > 4096) return mt_error(MT_ERR_ARG, "expert query dim %d must be even, in [2, 4096]", dk);
    if (n2 < k)
        return mt_error(MT_ERR_ARG, "--experts %ld factors as %ld x %d, and each factor must be at least --expert-k %d "
                        "(use a power of two or a square)", n_experts, n_experts / n2, n2, k);
    return MT_OK;
}

/* the context every new layer gets: dim values for each of two decays (~2 and ~10 tokens) */
static mt_mome_context_spec default_context(int dim) {
    return (mt_mome_context_spec){.dim = dim, .n_decays = dim ? 2 : 0, .decays = {0.5f, 0.9f}};
}

/* Allocates a layer with zeroed parameters (the context spec is already checked). */
static mt_status mome_alloc(const mt_config *cfg, long n_experts, int k, int heads, int dk,
                            const mt_mome_context_spec *cs, float match, const unsigned char *on, mt_mome **out) {
    *out = NULL;
    int n2 = split_experts(n_experts);
    mt_status s = check_shape(n_experts, n2, k, heads, dk);
    if (s) return s;
    mt_mome *mm = calloc(1, sizeof *mm);
    if (!mm) return mt_error(MT_ERR_NOMEM, "out of memory");
    mm->context = *cs;
    mm->shape = (mt_mome_shape){.C = cfg->dim, .n1 = (int)(n_experts / n2), .n2 = n2, .H = heads, .K = k, .dk = dk,
                                .Cx = mt_mome_context_width(&mm->context), .match = match};
    mm->n_experts = n_experts;
    mm->n_layers = cfg->n_layers;
    mm->layers = malloc((size_t)cfg->n_layers * sizeof(int));
    mm->site_of_layer = malloc((size_t)cfg->n_layers * sizeof(int));
    if (!mm->layers || !mm->site_of_layer) {
        mt_mome_free(mm);
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    for (int l = 0; l < cfg->n_layers; l++) {
        mm->site_of_layer[l] = on[l] ? mm->n_sites : -1;
        if (on[l]) mm->layers[mm->n_sites++] = l;
    }
    mm->router_size = mt_mome_router_size(&mm->shape);
    mm->bank_size = 2 * (size_t)n_experts * cfg->dim;
    mm->router = calloc(mm->n_sites * mm->router_size, sizeof(float));
    mm->bank = calloc(mm->n_sites * mm->bank_size, sizeof(float));
    if (match > 0) mm->keys = calloc(mm->n_sites * (size_t)n_experts * mm->shape.Cx + 1, sizeof(float));
    if (!mm->router || !mm->bank || (match > 0 && !mm->keys)) {
        size_t bytes = mm->n_sites * (mm->router_size + mm->bank_size) * sizeof(float);
        mt_mome_free(mm);
        return mt_error(MT_ERR_NOMEM, "out of memory for %ld memory experts (%zu bytes)", n_experts, bytes);
    }
    *out = mm;
    return MT_OK;
}

static void fill_normal(mt_rng *rng, float *p, size_t n, double std) {
    for (size_t i = 0; i < n; i++) p[i] = (float)(std * mt_rng_normal(rng));
}

mt_status mt_mome_create(const mt_model *m, const mt_mome_options *opts, mt_mome **out) {
    mt_mome_options o;
    if (opts) o = *opts;
    else mt_mome_options_default(&o);
    const mt_config *c = &m->cfg;
    int dk = o.query_dim > 0 ? o.query_dim : (c->dim < 128 ? c->dim : 128) & ~1;
    unsigned char *on = malloc((size_t)c->n_layers);
    if (!on) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_status s = parse_sites(o.sites, c->n_layers, on);
    if (!s && (o.context_dim < 0 || o.context_dim > 1024))
        s = mt_error(MT_ERR_ARG, "--expert-context %d must be in [0, 1024]", o.context_dim);
    if (!s && !(o.match >= 0 && o.match <= 1))
        s = mt_error(MT_ERR_ARG, "--expert-match %g must be in [0, 1]", (double)o.match);
    if (!s && o.match > 0 && o.context_dim == 0)
        s = mt_error(MT_ERR_ARG, "--expert-match needs a routing context (--expert-context > 0)");
    mt_mome_context_spec cs = default_context(o.context_dim);
    if (!s) s = mome_alloc(c, o.experts, o.k, o.heads, dk, &cs, o.match, on, out);
    free(on);
    if (s) return s;
    mt_mome *mm = *out;
    mm->freeze_router = o.freeze_router != 0;
    mt_rng rng;
    mt_rng_seed(&rng, o.seed ? o.seed : 1);
    /* query ~ N(0, 1/C), context projection ~ N(0, 1/Cx) and keys ~ N(0, 2/dk): routing
     * scores of order 1 for an RMS-normed input and context, the two of equal say; a ~ N(0, 1/C)
     * so a·x is of order 1; b = 0, so the layer starts as a no-op */
    const mt_mome_shape *sh = &mm->shape;
    for (int site = 0; site < mm->n_sites; site++) {
        float *r = mm->router + site * mm->router_size, *bank = mm->bank + site * mm->bank_size;
        size_t nq = (size_t)sh->H * sh->dk * sh->C, nx = mt_mome_context_offset(sh);
        fill_normal(&rng, r, nq, 1.0 / sqrt(sh->C));
        fill_normal(&rng, r + nq, nx - nq, sqrt(2.0 / sh->dk));
        for (long e = 0; e < mm->n_experts; e++) fill_normal(&rng, bank + (size_t)e * 2 * sh->C, (size_t)sh->C, 1.0 / sqrt(sh->C));
        if (sh->Cx) fill_normal(&rng, r + nx, mm->router_size - nx, 1.0 / sqrt(sh->Cx));
    }
    return MT_OK;
}

/* ---- files ---- */

int mt_mome_present(const char *dir) {
    char *p = mt_path_join(dir, "mome_config.json");
    int yes = p && mt_file_exists(p);
    free(p);
    return yes;
}

#define MAX_PARTS 5
static const char *const part_name[MAX_PARTS] = {"query", "keys1", "keys2", "experts", "context_query"};

/* tensors per site: the context projection only with a context */
static int n_parts(const mt_mome *mm) { return mm->shape.Cx ? 5 : 4; }

/* rows, cols and offset (within the site's router or bank) of part k */
static void part_layout(const mt_mome *mm, int k, long *rows, int *cols, size_t *off, int *in_bank) {
    const mt_mome_shape *sh = &mm->shape;
    int half = sh->dk / 2;
    size_t nq = (size_t)sh->H * sh->dk * sh->C, n1 = (size_t)sh->H * sh->n1 * half;
    long r[MAX_PARTS] = {(long)sh->H * sh->dk, (long)sh->H * sh->n1, (long)sh->H * sh->n2, mm->n_experts,
                         (long)sh->H * sh->dk};
    int c[MAX_PARTS] = {sh->C, half, half, 2 * sh->C, sh->Cx};
    size_t o[MAX_PARTS] = {0, nq, nq + n1, 0, mt_mome_context_offset(sh)};
    *rows = r[k], *cols = c[k], *off = o[k], *in_bank = k == 3;
}

/* The i-th tensor of the file: every site's router parts first, then the sites' expert banks
 * back to back, so the loader can map the banks as the one [n_sites * bank_size] array. */
static void file_order(const mt_mome *mm, int i, int *site, int *part) {
    static const int router_parts[MAX_PARTS - 1] = {0, 1, 2, 4};
    int nr = n_parts(mm) - 1;
    if (i < mm->n_sites * nr) *site = i / nr, *part = router_parts[i % nr];
    else *site = i - mm->n_sites * nr, *part = 3;
}

static float *part_data(const mt_mome *mm, int site, int k, long *rows, int *cols) {
    size_t off;
    int in_bank;
    part_layout(mm, k, rows, cols, &off, &in_bank);
    return (in_bank ? mm->bank + site * mm->bank_size : mm->router + site * mm->router_size) + off;
}

/* Whether row e of a site's bank can change the output: b_e != 0 (an expert with b = 0 adds
 * exactly zero, whatever a_e is, so such rows are implicit in files). */
static int row_used(const float *row, int C) {
    for (int c = 0; c < C; c++)
        if (row[C + c] != 0) return 1;
    return 0;
}

static void round_bf16(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = mt_bf16_to_f32(mt_f32_to_bf16(p[i]));
}

void mt_mome_round_stored(mt_mome *mm) {
    int C = mm->shape.C, Cx = mm->shape.Cx;
    if (!mm->keys) return; /* unkeyed layers store f32 */
    for (int site = 0; site < mm->n_sites; site++)
        for (long e = 0; e < mm->n_experts; e++) {
            float *row = mm->bank + site * mm->bank_size + (size_t)e * 2 * C;
            if (!row_used(row, C)) continue;
            round_bf16(row, 2 * (size_t)C);
            if (mm->keys) round_bf16(mm->keys + ((size_t)site * mm->n_experts + e) * Cx, (size_t)Cx);
        }
}

/* The rows of each site that can change the output: ids [Σ counts] ascending per site. */
static int32_t *used_rows(const mt_mome *mm, long *count) {
    int C = mm->shape.C;
    long total = 0;
    for (int site = 0; site < mm->n_sites; site++) {
        count[site] = 0;
        for (long e = 0; e < mm->n_experts; e++)
            count[site] += row_used(mm->bank + site * mm->bank_size + (size_t)e * 2 * C, C);
        total += count[site];
    }
    int32_t *ids = malloc((size_t)total * sizeof(int32_t) + 1);
    for (int site = 0, at = 0; ids && site < mm->n_sites; site++)
        for (long e = 0; e < mm->n_experts; e++)
            if (row_used(mm->bank + site * mm->bank_size + (size_t)e * 2 * C, C)) ids[at++] = (int32_t)e;
    return ids;
}

/* The sparse layout: every site's router parts, then per site .expert_ids [n] (I32, ascending)
 * and .expert_rows [n, 2C] of the rows used; the rest of the bank is implicit (b = 0). */
static mt_status save_sparse(const mt_mome *mm, const char *wpath, const long *count, const int32_t *ids) {
    int keyed = mm->keys != NULL, per = 2 + keyed; /* expert_ids, expert_rows (, expert_keys) */
    int nr = n_parts(mm) - 1, n = mm->n_sites * (nr + per), C = mm->shape.C, Cx = mm->shape.Cx;
    static const int router_parts[MAX_PARTS - 1] = {0, 1, 2, 4};
    mt_st_desc *d = calloc((size_t)n, sizeof *d);
    char (*names)[96] = calloc((size_t)n, sizeof *names);
    float *row = malloc(2 * (size_t)C * sizeof(float));
    mt_status s = d && names && row ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    for (int i = 0; !s && i < n; i++) {
        long rows;
        int cols;
        if (i < mm->n_sites * nr) {
            int site = i / nr, part = router_parts[i % nr];
            part_data(mm, site, part, &rows, &cols);
            snprintf(names[i], sizeof names[i], "model.layers.%d.mome.%s", mm->layers[site], part_name[part]);
            d[i] = (mt_st_desc){.name = names[i], .dtype = "F32", .n_dims = 2, .shape = {rows, cols}};
        } else {
            int j = i - mm->n_sites * nr, site = j / per, kind = j % per;
            static const char *const what[3] = {"expert_ids", "expert_rows", "expert_keys"};
            snprintf(names[i], sizeof names[i], "model.layers.%d.mome.%s", mm->layers[site], what[kind]);
            d[i] = kind == 0 ? (mt_st_desc){.name = names[i], .dtype = "I32", .n_dims = 1, .shape = {count[site]}}
                             : (mt_st_desc){.name = names[i], .dtype = keyed ? "BF16" : "F32", .n_dims = 2,
                                            .shape = {count[site], kind == 1 ? 2 * C : Cx}};
        }
    }
    mt_st_writer w;
    const char *meta[] = {"format", "memtune-mome", NULL};
    if (!s && !(s = mt_st_writer_open(&w, wpath, d, n, meta))) {
        for (int i = 0; !s && i < mm->n_sites * nr; i++) {
            long rows;
            int cols;
            const float *p = part_data(mm, i / nr, router_parts[i % nr], &rows, &cols);
            s = mt_st_writer_put_f32(&w, p, (size_t)rows * cols);
        }
        const int32_t *site_ids = ids;
        for (int site = 0; !s && site < mm->n_sites; site++) {
            s = mt_st_writer_put(&w, site_ids, (size_t)count[site] * sizeof(int32_t));
            for (long k = 0; !s && k < count[site]; k++)
                s = mt_st_writer_put_f32(&w, mm->bank + site * mm->bank_size + (size_t)site_ids[k] * 2 * C, 2 * (size_t)C);
            for (long k = 0; keyed && !s && k < count[site]; k++)
                s = mt_st_writer_put_f32(&w, mm->keys + ((size_t)site * mm->n_experts + site_ids[k]) * Cx, (size_t)Cx);
            site_ids += count[site];
        }
        if (!s) s = mt_st_writer_commit(&w);
        else mt_st_writer_abort(&w);
    }
    free(d), free(names), free(row);
    return s;
}

mt_status mt_mome_save(const mt_mome *mm, const char *dir) {
    mt_status s = mt_mkdir_p(dir);
    if (s) return s;
    /* sparse when smaller: only rows with b != 0 (ids + rows), else the whole banks (mapped on load) */
    long *count = calloc((size_t)mm->n_sites, sizeof(long)), total = 0;
    int32_t *ids = count ? used_rows(mm, count) : NULL;
    if (!ids) {
        free(count);
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    for (int site = 0; site < mm->n_sites; site++) total += count[site];
    /* keyed experts: always sparse (their keys travel with their rows) */
    int sparse = mm->keys || (size_t)total * (2 * mm->shape.C + 1) < (size_t)mm->n_sites * mm->n_experts * 2 * mm->shape.C;
    int np = n_parts(mm), n = mm->n_sites * np;
    mt_st_desc *d = calloc((size_t)n, sizeof *d);
    char (*names)[96] = calloc((size_t)n, sizeof *names);
    char *wpath = mt_path_join(dir, "mome.safetensors"), *cpath = mt_path_join(dir, "mome_config.json");
    json_t *layers = json_array();
    for (int i = 0; i < mm->n_sites; i++) json_array_append_new(layers, json_integer(mm->layers[i]));
    const mt_mome_shape *sh = &mm->shape;
    json_t *o = json_pack("{s:s, s:I, s:i, s:i, s:i, s:i, s:i, s:o, s:i, s:i, s:s, s:s, s:b, s:s, s:I}", "type",
                          "memtune-mome", "experts", (json_int_t)mm->n_experts, "n1", sh->n1, "n2", sh->n2, "heads", sh->H,
                          "k", sh->K, "query_dim", sh->dk, "layers", layers, "dim", sh->C, "n_layers", mm->n_layers,
                          "site", "mlp_output", "activation", "silu", "router_frozen", mm->freeze_router,
                          "bank", sparse ? "sparse" : "dense", "rows_stored", (json_int_t)(sparse ? total : mm->n_sites * mm->n_experts));
    if (o && mm->keys) json_object_set_new(o, "match", json_real(mm->shape.match));
    if (o && mm->shape.Cx) {
        json_t *decays = json_array();
        for (int i = 0; i < mm->context.n_decays; i++) json_array_append_new(decays, json_real(mm->context.decays[i]));
        json_object_set_new(o, "context", json_pack("{s:i, s:o}", "dim", mm->context.dim, "decays", decays));
    }
    char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    json_decref(o);
    if (!d || !names || !wpath || !cpath || !text) s = mt_error(MT_ERR_NOMEM, "out of memory");
    for (int i = 0, site, part; !s && i < n; i++) {
        long rows;
        int cols;
        file_order(mm, i, &site, &part);
        part_data(mm, site, part, &rows, &cols);
        snprintf(names[i], sizeof names[i], "model.layers.%d.mome.%s", mm->layers[site], part_name[part]);
        d[i] = (mt_st_desc){.name = names[i], .dtype = "F32", .n_dims = 2, .shape = {rows, cols}};
    }
    mt_st_writer w;
    const char *meta[] = {"format", "memtune-mome", NULL};
    if (!s && sparse) s = save_sparse(mm, wpath, count, ids);
    else if (!s && !(s = mt_st_writer_open(&w, wpath, d, n, meta))) {
        for (int i = 0, site, part; !s && i < n; i++) {
            long rows;
            int cols;
            file_order(mm, i, &site, &part);
            const float *p = part_data(mm, site, part, &rows, &cols);
            s = mt_st_writer_put_f32(&w, p, (size_t)rows * cols);
        }
        if (!s) s = mt_st_writer_commit(&w);
        else mt_st_writer_abort(&w);
    }
    if (!s) s = mt_write_file_atomic(cpath, text, strlen(text));
    free(d), free(names), free(wpath), free(cpath), free(text), free(count), free(ids);
    return s;
}

static int get_int(json_t *o, const char *key, long *v) {
    json_t *x = json_object_get(o, key);
    if (!json_is_integer(x)) return 0;
    *v = (long)json_integer_value(x);
    return 1;
}

/* "context": {"dim": D, "decays": [..]}; absent or null: none (files from before it) */
static mt_status read_context(json_t *o, const char *path, mt_mome_context_spec *cs) {
    json_t *c = json_object_get(o, "context"), *decays = json_object_get(c, "decays");
    memset(cs, 0, sizeof *cs);
    if (!c || json_is_null(c)) return MT_OK;
    long dim = 0;
    size_t n = json_array_size(decays);
    if (!json_is_object(c) || !get_int(c, "dim", &dim) || dim < 1 || dim > 1024 || n < 1 || n > MT_MOME_MAX_DECAYS)
        return mt_error(MT_ERR_FORMAT, "%s: \"context\" needs a \"dim\" in [1, 1024] and 1 to %d \"decays\"", path,
                        MT_MOME_MAX_DECAYS);
    cs->dim = (int)dim, cs->n_decays = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(decays, i);
        cs->decays[i] = json_is_number(d) ? (float)json_number_value(d) : -1;
        if (!(cs->decays[i] >= 0 && cs->decays[i] < 1))
            return mt_error(MT_ERR_FORMAT, "%s: context decay %zu must be a number in [0, 1)", path, i);
    }
    return MT_OK;
}

/* Reads mome_config.json and allocates a layer of that shape for m. */
static mt_status read_config(const mt_model *m, const char *path, mt_mome **out) {
    json_t *o;
    mt_status s = mt_json_load_file(path, 1 << 20, 0, &o);
    if (s) return s;
    long experts = 0, n2 = 0, k = 0, heads = 0, dk = 0, dim = 0, n_layers = 0;
    json_t *layers = json_object_get(o, "layers");
    const char *type = json_string_value(json_object_get(o, "type"));
    if (!type || strcmp(type, "memtune-mome"))
        s = mt_error(MT_ERR_FORMAT, "%s: \"type\" must be \"memtune-mome\"", path);
    else if (!get_int(o, "experts", &experts) || !get_int(o, "n2", &n2) || !get_int(o, "k", &k) ||
             !get_int(o, "heads", &heads) || !get_int(o, "query_dim", &dk) || !get_int(o, "dim", &dim) ||
             !get_int(o, "n_layers", &n_layers) || !json_is_array(layers) || json_array_size(layers) == 0)
        s = mt_error(MT_ERR_FORMAT, "%s: needs integer experts, n2, k, heads, query_dim, dim, n_layers and a list of layers", path);
    else if (dim != m->cfg.dim || n_layers != m->cfg.n_layers)
        s = mt_error(MT_ERR_MISMATCH, "%s: made for %ld layers of width %ld; this model has %d of %d", path, n_layers, dim,
                     m->cfg.n_layers, m->cfg.dim);
    else if (experts < 4 || experts > MAX_EXPERTS || n2 != split_experts(experts))
        s = mt_error(MT_ERR_FORMAT, "%s: experts %ld with n2 %ld is not a layout memtune writes", path, experts, n2);
    unsigned char *on = s ? NULL : calloc((size_t)m->cfg.n_layers, 1);
    if (!s && !on) s = mt_error(MT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !s && i < json_array_size(layers); i++) {
        json_t *v = json_array_get(layers, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= m->cfg.n_layers)
            s = mt_error(MT_ERR_FORMAT, "%s: layer entry %zu is not a layer of this model", path, i);
        else on[json_integer_value(v)] = 1;
    }
    mt_mome_context_spec cs = {0};
    if (!s) s = read_context(o, path, &cs);
    json_t *jm = json_object_get(o, "match"); /* absent: unkeyed experts (files from before) */
    double match = json_is_number(jm) ? json_number_value(jm) : 0;
    if (!s && (jm && (!json_is_number(jm) || !(match >= 0 && match <= 1) || (match > 0 && !cs.dim))))
        s = mt_error(MT_ERR_FORMAT, "%s: \"match\" must be a number in [0, 1], above 0 only with a \"context\"", path);
    if (!s && (s = mome_alloc(&m->cfg, experts, (int)k, (int)heads, (int)dk, &cs, (float)match, on, out)))
        s = mt_error_prefix(s, path);
    if (!s) (*out)->freeze_router = json_is_true(json_object_get(o, "router_frozen"));
    free(on);
    json_decref(o);
    return s;
}

static mt_status check_finite(const float *p, size_t n, const char *path, const char *name) {
    for (size_t j = 0; j < n; j++)
        if (!isfinite(p[j])) return mt_error(MT_ERR_FORMAT, "%s: non-finite value in %s", path, name);
    return MT_OK;
}

/* Maps the banks instead of reading them when the file holds them as F32 back to back in site
 * order (files mt_mome_save writes): the bank then costs no heap, and only the rows a token
 * routes to are read from disk (the pages stay the kernel's to evict). *mapped = 0 when the
 * layout does not allow it (the caller reads them). Every value is checked finite once. */
static mt_status map_banks(mt_mome *mm, const mt_safetensors *st, const char *path, int *mapped) {
    *mapped = 0;
    char name[96];
    const uint8_t *first = NULL;
    size_t bytes = mm->bank_size * sizeof(float);
    for (int site = 0; site < mm->n_sites; site++) {
        snprintf(name, sizeof name, "model.layers.%d.mome.%s", mm->layers[site], part_name[3]);
        const mt_st_tensor *t = mt_safetensors_find(st, name);
        if (!t || strcmp(t->dtype, "F32") || t->n_dims != 2 || t->shape[0] != mm->n_experts ||
            t->shape[1] != 2 * mm->shape.C || t->nbytes != bytes || (site ? t->data != first + site * bytes :
            ((uintptr_t)t->data % sizeof(float)) != 0))
            return MT_OK;
        if (!site) first = t->data;
    }
    mt_mapped_file f;
    mt_status s = mt_file_map_cow(path, &f);
    if (s) return s;
    if (f.size != st->file.size) { /* the file changed between the two opens */
        mt_file_unmap(&f);
        return MT_OK;
    }
    float *bank = (float *)(f.data + (first - st->file.data));
    enum { CHUNK = 1 << 22 }; /* floats checked, then released: resident memory stays at one chunk */
    for (int site = 0; !s && site < mm->n_sites; site++) {
        snprintf(name, sizeof name, "model.layers.%d.mome.%s", mm->layers[site], part_name[3]);
        for (size_t at = 0; !s && at < mm->bank_size; at += CHUNK) {
            size_t n = mm->bank_size - at < CHUNK ? mm->bank_size - at : CHUNK;
            s = check_finite(bank + site * mm->bank_size + at, n, path, name);
            mt_file_release(&f, bank + site * mm->bank_size + at, n * sizeof(float));
        }
    }
    if (s) {
        mt_file_unmap(&f);
        return s;
    }
    mt_file_advise_random(&f, bank, mm->n_sites * bytes);
    free(mm->bank);
    mm->bank = bank, mm->bank_file = f, *mapped = 1;
    return MT_OK;
}

/* The sparse layout (see save_sparse): the bank stays zero (calloc: untouched pages cost no
 * memory) but for the rows stored, which are checked (ids ascending, in range, values finite)
 * and put in place. *sparse = 0 when the file has the dense layout. */
static mt_status read_sparse_banks(mt_mome *mm, const mt_safetensors *st, const char *path, int *sparse) {
    char name[96];
    int C = mm->shape.C;
    snprintf(name, sizeof name, "model.layers.%d.mome.expert_ids", mm->layers[0]);
    *sparse = mt_safetensors_find(st, name) != NULL;
    mt_status s = MT_OK;
    for (int site = 0; *sparse && !s && site < mm->n_sites; site++) {
        snprintf(name, sizeof name, "model.layers.%d.mome.expert_ids", mm->layers[site]);
        const mt_st_tensor *ti = mt_safetensors_find(st, name);
        snprintf(name, sizeof name, "model.layers.%d.mome.expert_rows", mm->layers[site]);
        const mt_st_tensor *tr = mt_safetensors_find(st, name);
        if (!ti || !tr)
            return mt_error(MT_ERR_MISMATCH, "%s: layer %d lacks expert_ids or expert_rows", path, mm->layers[site]);
        long n = ti->n_dims == 1 ? (long)ti->shape[0] : -1;
        if (strcmp(ti->dtype, "I32") || n < 0 || n > mm->n_experts || tr->n_dims != 2 || tr->shape[0] != n ||
            tr->shape[1] != 2 * C)
            return mt_error(MT_ERR_FORMAT, "%s: layer %d: expert_ids must be I32 [n <= %ld] and expert_rows [n, %d]", path,
                            mm->layers[site], mm->n_experts, 2 * C);
        int Cx = mm->shape.Cx;
        const mt_st_tensor *tk = NULL;
        if (mm->keys) {
            snprintf(name, sizeof name, "model.layers.%d.mome.expert_keys", mm->layers[site]);
            tk = mt_safetensors_find(st, name);
            if (!tk || tk->n_dims != 2 || tk->shape[0] != n || tk->shape[1] != Cx)
                return mt_error(MT_ERR_FORMAT, "%s: layer %d: keyed experts need expert_keys [%ld, %d]", path,
                                mm->layers[site], n, Cx);
            float *keys = mm->keys + (size_t)site * mm->n_experts * Cx, *got = malloc((size_t)n * Cx * sizeof(float) + 1);
            if (!got) return mt_error(MT_ERR_NOMEM, "out of memory");
            if (!(s = mt_safetensors_read_f32(st, tk, got, (size_t)n * Cx))) s = check_finite(got, (size_t)n * Cx, path, name);
            for (long k = 0; !s && k < n; k++) {
                int32_t e;
                memcpy(&e, ti->data + (size_t)k * sizeof e, sizeof e);
                if (e >= 0 && e < mm->n_experts) memcpy(keys + (size_t)e * Cx, got + (size_t)k * Cx, (size_t)Cx * sizeof(float));
            }
            free(got);
            if (s) return s;
            snprintf(name, sizeof name, "model.layers.%d.mome.expert_rows", mm->layers[site]);
        }
        float *rows = malloc((size_t)n * 2 * C * sizeof(float) + 1);
        if (!rows) return mt_error(MT_ERR_NOMEM, "out of memory");
        if (!(s = mt_safetensors_read_f32(st, tr, rows, (size_t)n * 2 * C))) s = check_finite(rows, (size_t)n * 2 * C, path, name);
        for (long k = 0, prev = -1; !s && k < n; k++) {
            int32_t e;
            memcpy(&e, ti->data + (size_t)k * sizeof e, sizeof e);
            if (e <= prev || e >= mm->n_experts)
                s = mt_error(MT_ERR_FORMAT, "%s: layer %d: expert id %d out of order or range [0, %ld)", path,
                             mm->layers[site], (int)e, mm->n_experts);
            else memcpy(mm->bank + site * mm->bank_size + (size_t)e * 2 * C, rows + (size_t)k * 2 * C, 2 * C * sizeof(float));
            prev = e;
        }
        free(rows);
    }
    return s;
}

mt_status mt_mome_load(const mt_model *m, const char *dir, mt_mome **out) {
    *out = NULL;
    char *cpath = mt_path_join(dir, "mome_config.json"), *wpath = mt_path_join(dir, "mome.safetensors");
    mt_mome *mm = NULL;
    mt_safetensors st;
    int open = 0;
    mt_status s = cpath && wpath ? read_config(m, cpath, &mm) : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s && !(s = mt_safetensors_open(wpath, &st))) open = 1;
    char name[96];
    int np = s ? 0 : n_parts(mm), mapped = 0;
    if (!s) s = read_sparse_banks(mm, &st, wpath, &mapped); /* in place: "mapped" skips the dense read */
    if (!s && mm->keys && !mapped) s = mt_error(MT_ERR_FORMAT, "%s: keyed experts are stored sparse (expert_ids, expert_rows, expert_keys)", wpath);
    if (!s && !mapped) s = map_banks(mm, &st, wpath, &mapped);
    for (int i = 0; !s && i < mm->n_sites * np; i++) {
        long rows;
        int cols;
        if (mapped && i % np == 3) continue;
        float *p = part_data(mm, i / np, i % np, &rows, &cols);
        snprintf(name, sizeof name, "model.layers.%d.mome.%s", mm->layers[i / np], part_name[i % np]);
        const mt_st_tensor *t = mt_safetensors_find(&st, name);
        if (!t) s = mt_error(MT_ERR_MISMATCH, "%s: tensor %s is missing", wpath, name);
        else if (t->n_dims != 2 || t->shape[0] != rows || t->shape[1] != cols)
            s = mt_error(MT_ERR_MISMATCH, "%s: %s must have shape [%ld, %d]", wpath, name, rows, cols);
        else if ((s = mt_safetensors_read_f32(&st, t, p, (size_t)rows * cols))) s = mt_error_prefix(s, wpath);
        if (!s) s = check_finite(p, (size_t)rows * cols, wpath, name);
    }
    if (!s && !mm->shape.Cx) { /* a context the config does not name would be dropped silently */
        snprintf(name, sizeof name, "model.layers.%d.mome.%s", mm->layers[0], part_name[4]);
        if (mt_safetensors_find(&st, name))
            s = mt_error(MT_ERR_MISMATCH, "%s: holds %s but %s names no \"context\"", wpath, name, cpath);
    }
    if (open) mt_safetensors_close(&st);
    free(cpath), free(wpath);
    if (s) mt_mome_free(mm);
    else *out = mm;
    return s;
}
