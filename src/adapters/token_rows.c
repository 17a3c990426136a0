/* Trainable token rows (adapters layer): make a set for chosen token ids, attach it, and read
 * and write it the way PEFT does for LoraConfig(trainable_token_indices=...):
 *
 *   adapter_config.json        "trainable_token_indices": [2, ...]                  (tied head)
 *                              "trainable_token_indices": {"embed_tokens": [2, ...],
 *                                                          "lm_head": [2, ...]}     (untied head)
 *   adapter_model.safetensors  base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta [n, dim]
 *                              base_model.model.lm_head.token_adapter.trainable_tokens_delta [n, dim] (untied)
 *
 * Despite the name, PEFT's "delta" tensors hold the full replacement rows (PEFT initialises
 * them as a copy of the original rows and its forward puts them in place of those rows); a
 * tied head is not stored (PEFT keeps it in sync with the embedding). The rows are added to
 * the LoRA adapter's two files; an adapter without LoRA (memory tuning with experts only)
 * keeps them in files of their own with the same tensor names and meaning:
 *
 *   trainable_tokens.json          {"trainable_token_indices": [...], "tied": true, "rows": "replacement"}
 *   trainable_tokens.safetensors   the tensors above
 *
 * and mt_lora_save copies such rows into the PEFT pair when it writes one into the same
 * folder (memory tuning with LoRA saves the rows first); the loader prefers the PEFT copy. Adapters from memtune before 2026-12 have trainable_tokens.* without "rows": their
 * tensors are differences (trained minus base row) and are read as such.
 *
 * The struct and how the rows reach the forward are in model/adapter.h. */
#include "memtune.h"
#include "model/adapter.h"
#include "model/model.h"
#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "formats/safetensors.h"
#include "adapters/lora.h"
#include <stdio.h>
#include <unistd.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ROWS 65536
static const char *const delta_name[2] = {
    "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta",
    "base_model.model.lm_head.token_adapter.trainable_tokens_delta",
};

void mt_token_rows_free(mt_token_rows *r) {
    if (!r) return;
    if (r->attached && r->attached->token_rows == r) mt_model_set_token_rows(r->attached, NULL);
    free(r->ids);
    free(r->values);
    free(r->base);
    free(r);
}

int mt_token_rows_count(const mt_token_rows *r) { return r ? r->n : 0; }
const int *mt_token_rows_ids(const mt_token_rows *r) { return r ? r->ids : NULL; }

mt_status mt_token_rows_create(const mt_model *m, const int *ids, int n, mt_token_rows **out) {
    *out = NULL;
    if (n < 1 || n > MAX_ROWS) return mt_error(MT_ERR_ARG, "trainable token rows: %d ids (need 1 to %d)", n, MAX_ROWS);
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return mt_error(MT_ERR_ARG, "trainable token id %d is outside the vocabulary of %d", ids[i], m->cfg.vocab_size);
        for (int j = 0; j < i; j++)
            if (ids[j] == ids[i]) return mt_error(MT_ERR_ARG, "trainable token id %d is listed twice", ids[i]);
    }
    mt_token_rows *r = calloc(1, sizeof *r);
    int untied = !m->cfg.tied_embeddings;
    size_t count = (size_t)(1 + untied) * n * m->cfg.dim;
    if (r) {
        r->ids = malloc((size_t)n * sizeof(int));
        r->values = malloc(count * sizeof(float));
        r->base = malloc(count * sizeof(float));
    }
    if (!r || !r->ids || !r->values || !r->base) {
        mt_token_rows_free(r);
        return mt_error(MT_ERR_NOMEM, "out of memory for trainable token rows");
    }
    r->n = n;
    r->dim = m->cfg.dim;
    r->untied = untied;
    memcpy(r->ids, ids, (size_t)n * sizeof(int));
    for (int i = 0; i < (1 + untied) * n; i++) {
        const float *src = (i >= n ? m->output : m->tok_embd) + (size_t)ids[i % n] * r->dim;
        memcpy(r->values + (size_t)i * r->dim, src, (size_t)r->dim * sizeof(float));
    }
    memcpy(r->base, r->values, count * sizeof(float));
    *out = r;
    return MT_OK;
}

mt_status mt_model_attach_token_rows(mt_model *m, mt_token_rows *r) { return mt_model_set_token_rows(m, r); }


/* ---- PEFT's adapter_config.json + adapter_model.safetensors ---- */

int mt_token_rows_tensor_name(const char *name) {
    return !strcmp(name, delta_name[0]) || !strcmp(name, delta_name[1]);
}

static json_t *ids_json(const int *ids, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* Rows (ids, values [(1 + untied) * n, dim]) into dir's PEFT pair: the config gains
 * trainable_token_indices, the safetensors file is rewritten with the LoRA tensors as they
 * were plus the row tensors. */
static mt_status peft_add_rows(const char *dir, const int *ids, int n, int dim, int untied, const float *values) {
    char *cpath = mt_path_join(dir, "adapter_config.json"), *wpath = mt_path_join(dir, "adapter_model.safetensors");
    json_t *cfg = NULL;
    mt_safetensors st;
    int st_open = 0;
    mt_st_desc *d = NULL;
    char *text = NULL;
    mt_status s = cpath && wpath ? mt_json_load_file(cpath, 1 << 20, 0, &cfg) : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s && !json_is_object(cfg)) s = mt_error(MT_ERR_FORMAT, "%s: not a JSON object", cpath);
    if (!s && !(s = mt_safetensors_open(wpath, &st))) st_open = 1;
    if (!s && !(d = calloc((size_t)st.n_tensors + 2, sizeof *d))) s = mt_error(MT_ERR_NOMEM, "out of memory");
    int nd = 0;
    for (int i = 0; !s && i < st.n_tensors; i++) {
        const mt_st_tensor *t = &st.tensors[i];
        if (mt_token_rows_tensor_name(t->name)) continue;
        d[nd] = (mt_st_desc){.name = t->name, .dtype = t->dtype, .n_dims = t->n_dims};
        memcpy(d[nd++].shape, t->shape, sizeof t->shape);
    }
    for (int k = 0; !s && k < 1 + untied; k++)
        d[nd++] = (mt_st_desc){.name = delta_name[k], .dtype = "F32", .n_dims = 2, .shape = {n, dim}};
    mt_st_writer w;
    if (!s) {
        const char *meta[] = {"format", "pt", NULL};
        s = mt_st_writer_open(&w, wpath, d, nd, meta);
        for (int i = 0; !s && i < st.n_tensors; i++)
            if (!mt_token_rows_tensor_name(st.tensors[i].name)) s = mt_st_writer_put(&w, st.tensors[i].data, st.tensors[i].nbytes);
        for (int k = 0; !s && k < 1 + untied; k++)
            s = mt_st_writer_put_f32(&w, values + (size_t)k * n * dim, (size_t)n * dim);
        if (!s) s = mt_st_writer_commit(&w);
        else mt_st_writer_abort(&w);
    }
    if (!s) {
        json_t *idx = untied ? json_pack("{s:o, s:o}", "embed_tokens", ids_json(ids, n), "lm_head", ids_json(ids, n))
                             : ids_json(ids, n);
        json_object_set_new(cfg, "trainable_token_indices", idx);
        text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        s = text ? mt_write_file_atomic(cpath, text, strlen(text)) : mt_error(MT_ERR_NOMEM, "out of memory");
    }
    if (st_open) mt_safetensors_close(&st);
    json_decref(cfg);
    free(d);
    free(text);
    free(cpath);
    free(wpath);
    return s;
}

/* trainable_token_indices from a PEFT config: a list (the input embedding, and a tied head
 * with it), or {"embed_tokens": [...], "lm_head": [...]}. *head: 1 when the head's rows are
 * stored too (their ids must equal the embedding's). */
static mt_status parse_peft_ids(json_t *v, const char *path, json_t **embed, int *head) {
    *embed = NULL;
    *head = 0;
    if (json_is_array(v)) {
        *embed = v;
        return MT_OK;
    }
    if (!json_is_object(v))
        return mt_error(MT_ERR_FORMAT, "%s: \"trainable_token_indices\" must be a list or an object of lists", path);
    const char *key;
    json_t *ids, *lm = NULL;
    json_object_foreach(v, key, ids) {
        size_t len = strlen(key);
        if (len >= 12 && !strcmp(key + len - 12, "embed_tokens")) *embed = ids;
        else if (len >= 7 && !strcmp(key + len - 7, "lm_head")) lm = ids;
        else
            return mt_error(MT_ERR_UNSUPPORTED, "%s: trainable_token_indices for module \"%s\": memtune trains rows of "
                            "embed_tokens and lm_head only", path, key);
    }
    if (!*embed)
        return mt_error(MT_ERR_UNSUPPORTED, "%s: trainable_token_indices without embed_tokens rows", path);
    if (lm && !json_equal(lm, *embed))
        return mt_error(MT_ERR_UNSUPPORTED, "%s: trainable_token_indices lists other ids for lm_head than for "
                        "embed_tokens; memtune trains the same ids in both", path);
    *head = lm != NULL;
    return MT_OK;
}

/* The trainable_token_indices of dir/adapter_config.json, or NULL (a new reference). */
static json_t *peft_indices(const char *dir) {
    char *cpath = mt_path_join(dir, "adapter_config.json");
    json_t *cfg = NULL, *v = NULL;
    if (cpath && mt_file_exists(cpath) && mt_json_load_file(cpath, 1 << 20, 0, &cfg) == MT_OK) {
        v = json_object_get(cfg, "trainable_token_indices");
        v = v && !json_is_null(v) ? json_incref(v) : NULL;
    }
    json_decref(cfg);
    free(cpath);
    return v;
}

/* ---- save ---- */

static mt_status save_own_files(const mt_token_rows *r, const char *dir) {
    mt_status s = mt_mkdir_p(dir);
    if (s) return s;
    char *wpath = mt_path_join(dir, "trainable_tokens.safetensors"), *cpath = mt_path_join(dir, "trainable_tokens.json");
    json_t *o = json_pack("{s:o, s:b, s:s}", "trainable_token_indices", ids_json(r->ids, r->n), "tied", !r->untied,
                          "rows", "replacement");
    char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!wpath || !cpath || !text) s = mt_error(MT_ERR_NOMEM, "out of memory");
    mt_st_desc d[2];
    for (int k = 0; k < 2; k++)
        d[k] = (mt_st_desc){.name = delta_name[k], .dtype = "F32", .n_dims = 2, .shape = {r->n, r->dim}};
    mt_st_writer w;
    if (!s) {
        const char *meta[] = {"format", "pt", NULL};
        s = mt_st_writer_open(&w, wpath, d, 1 + r->untied, meta);
        for (int k = 0; !s && k < 1 + r->untied; k++)
            s = mt_st_writer_put_f32(&w, r->values + (size_t)k * r->n * r->dim, (size_t)r->n * r->dim);
        if (!s) s = mt_st_writer_commit(&w);
        else mt_st_writer_abort(&w);
    }
    if (!s) s = mt_write_file_atomic(cpath, text, strlen(text));
    free(wpath);
    free(cpath);
    free(text);
    return s;
}

static void remove_own_files(const char *dir) {
    char *a = mt_path_join(dir, "trainable_tokens.json"), *b = mt_path_join(dir, "trainable_tokens.safetensors");
    if (a) unlink(a);
    if (b) unlink(b);
    free(a);
    free(b);
}

mt_status mt_token_rows_save(const mt_token_rows *r, const char *dir) {
    char *cpath = mt_path_join(dir, "adapter_config.json");
    int peft = cpath && mt_file_exists(cpath);
    free(cpath);
    if (!peft) return save_own_files(r, dir);
    mt_status s = peft_add_rows(dir, r->ids, r->n, r->dim, r->untied, r->values);
    if (!s) remove_own_files(dir);
    return s;
}

/* ---- load ---- */

static mt_status read_ids(const char *path, json_t *a, int **ids, int *n) {
    size_t len = json_is_array(a) ? json_array_size(a) : 0;
    mt_status s = MT_OK;
    if (len < 1 || len > MAX_ROWS) s = mt_error(MT_ERR_FORMAT, "%s: \"trainable_token_indices\" must be a list of 1 to %d ids", path, MAX_ROWS);
    *ids = s ? NULL : malloc(len * sizeof(int));
    if (!s && !*ids) s = mt_error(MT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !s && i < len; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            s = mt_error(MT_ERR_FORMAT, "%s: trainable token index %zu is not a non-negative integer", path, i);
        else (*ids)[i] = (int)json_integer_value(v);
    }
    if (s) {
        free(*ids);
        *ids = NULL;
    }
    *n = (int)len;
    return s;
}

/* Reads tensor k (0 embedding, 1 head) of r from st into r->values: replacement rows, or
 * differences added to the base rows (memtune's files before 2026-12). */
static mt_status read_rows(mt_token_rows *r, const mt_safetensors *st, const char *wpath, int k, int delta,
                           float *tmp) {
    size_t per = (size_t)r->n * r->dim;
    const mt_st_tensor *t = mt_safetensors_find(st, delta_name[k]);
    mt_status s = MT_OK;
    if (!t) return mt_error(MT_ERR_MISMATCH, "%s: tensor %s is missing", wpath, delta_name[k]);
    if (t->n_dims != 2 || t->shape[0] != r->n || t->shape[1] != r->dim)
        return mt_error(MT_ERR_MISMATCH, "%s: %s must have shape [%d, %d] for this model", wpath, delta_name[k], r->n, r->dim);
    if ((s = mt_safetensors_read_f32(st, t, tmp, per))) return mt_error_prefix(s, wpath);
    for (size_t i = 0; i < per; i++) {
        if (!isfinite(tmp[i])) return mt_error(MT_ERR_FORMAT, "%s: non-finite value in %s", wpath, delta_name[k]);
        r->values[k * per + i] = delta ? r->values[k * per + i] + tmp[i] : tmp[i];
    }
    return MT_OK;
}

mt_status mt_token_rows_load(const mt_model *m, const char *dir, mt_token_rows **out) {
    *out = NULL;
    json_t *peft = peft_indices(dir), *own = NULL, *embed = NULL;
    char *cpath = mt_path_join(dir, peft ? "adapter_config.json" : "trainable_tokens.json");
    char *wpath = mt_path_join(dir, peft ? "adapter_model.safetensors" : "trainable_tokens.safetensors");
    int *ids = NULL, n = 0, st_open = 0, head = 0, delta = 0;
    mt_token_rows *r = NULL;
    mt_safetensors st;
    mt_status s = cpath && wpath ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s && peft) s = parse_peft_ids(peft, cpath, &embed, &head);
    if (!s && !peft && !(s = mt_json_load_file(cpath, 1 << 20, 0, &own))) {
        embed = json_object_get(own, "trainable_token_indices");
        const char *rows = json_string_value(json_object_get(own, "rows"));
        delta = rows == NULL; /* memtune's files before the PEFT layout held differences */
        head = !json_is_true(json_object_get(own, "tied"));
        if (rows && strcmp(rows, "replacement"))
            s = mt_error(MT_ERR_FORMAT, "%s: \"rows\" must be \"replacement\"", cpath);
    }
    if (!s) s = read_ids(cpath, embed, &ids, &n);
    if (!s && (s = mt_token_rows_create(m, ids, n, &r))) s = mt_error_prefix(s, cpath);
    if (!s && !(s = mt_safetensors_open(wpath, &st))) st_open = 1;
    float *tmp = r ? malloc((size_t)r->n * r->dim * sizeof(float)) : NULL;
    if (!s && !tmp) s = mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s) s = read_rows(r, &st, wpath, 0, delta, tmp);
    /* a head stored for a model whose head is tied to the embedding is the same rows */
    if (!s && head && r->untied) s = read_rows(r, &st, wpath, 1, delta, tmp);
    if (st_open) mt_safetensors_close(&st);
    json_decref(peft);
    json_decref(own);
    free(tmp);
    free(ids);
    free(cpath);
    free(wpath);
    if (s) mt_token_rows_free(r);
    else *out = r;
    return s;
}

int mt_token_rows_present(const char *dir) {
    char *p = mt_path_join(dir, "trainable_tokens.json");
    int yes = p && mt_file_exists(p);
    free(p);
    json_t *v = yes ? NULL : peft_indices(dir);
    yes = yes || v;
    json_decref(v);
    return yes;
}

/* Rows in memtune's own files beside a LoRA adapter just written there are copied into its
 * PEFT pair (memory tuning saves the rows before the LoRA adapter). */
mt_status mt_token_rows_fold_into_peft(const char *dir) {
    char *cpath = mt_path_join(dir, "trainable_tokens.json"), *wpath = mt_path_join(dir, "trainable_tokens.safetensors");
    json_t *own = NULL;
    mt_safetensors st;
    int st_open = 0, *ids = NULL, n = 0;
    float *values = NULL;
    mt_status s = cpath && wpath ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s && !mt_file_exists(cpath)) goto done; /* nothing to fold */
    if (!s) s = mt_json_load_file(cpath, 1 << 20, 0, &own);
    const char *rows = s ? NULL : json_string_value(json_object_get(own, "rows"));
    if (!s && (!rows || strcmp(rows, "replacement"))) goto done; /* older files: leave them as they are */
    if (!s) s = read_ids(cpath, json_object_get(own, "trainable_token_indices"), &ids, &n);
    if (!s && !(s = mt_safetensors_open(wpath, &st))) st_open = 1;
    int untied = !json_is_true(json_object_get(own, "tied"));
    const mt_st_tensor *t = s ? NULL : mt_safetensors_find(&st, delta_name[0]);
    if (!s && (!t || t->n_dims != 2 || t->shape[0] != n || t->shape[1] < 1 || t->shape[1] > (1 << 20)))
        s = mt_error(MT_ERR_FORMAT, "%s: %s missing or not [%d, dim]", wpath, delta_name[0], n);
    int dim = s ? 0 : (int)t->shape[1];
    size_t per = (size_t)n * dim;
    if (!s && !(values = malloc((1 + untied) * per * sizeof(float)))) s = mt_error(MT_ERR_NOMEM, "out of memory");
    for (int k = 0; !s && k < 1 + untied; k++) {
        const mt_st_tensor *tk = mt_safetensors_find(&st, delta_name[k]);
        if (!tk || tk->n_dims != 2 || tk->shape[0] != n || tk->shape[1] != dim)
            s = mt_error(MT_ERR_FORMAT, "%s: %s missing or not [%d, %d]", wpath, delta_name[k], n, dim);
        else if ((s = mt_safetensors_read_f32(&st, tk, values + k * per, per))) s = mt_error_prefix(s, wpath);
    }
    if (!s) s = peft_add_rows(dir, ids, n, dim, untied, values);
    if (st_open) mt_safetensors_close(&st);
    /* memtune's own files stay (memory tuning's resume and reports read them); loading
     * prefers the PEFT copy, which holds the same rows */
done:
    json_decref(own);
    free(ids);
    free(values);
    free(cpath);
    free(wpath);
    return s;
}
