/* Trainable token rows (adapters layer): make a set for chosen token ids, attach it, and read
 * and write it beside an adapter:
 *
 *   trainable_tokens.json          {"trainable_token_indices": [2, ...], "tied": true}
 *   trainable_tokens.safetensors   base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta [n, dim]
 *                                  base_model.model.lm_head.token_adapter.trainable_tokens_delta [n, dim] (untied)
 *
 * The tensor names and the "delta" meaning (trained row minus the base row) are PEFT's for
 * trainable_token_indices. The struct and how the rows reach the forward are in
 * model/adapter.h. */
#include "memtune.h"
#include "model/adapter.h"
#include "model/model.h"
#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "formats/safetensors.h"
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

mt_status mt_token_rows_save(const mt_token_rows *r, const char *dir) {
    mt_status s = mt_mkdir_p(dir);
    if (s) return s;
    size_t count = (size_t)(1 + r->untied) * r->n * r->dim;
    float *delta = malloc(count * sizeof(float));
    char *wpath = mt_path_join(dir, "trainable_tokens.safetensors"), *cpath = mt_path_join(dir, "trainable_tokens.json");
    json_t *ids = json_array();
    for (int i = 0; i < r->n; i++) json_array_append_new(ids, json_integer(r->ids[i]));
    json_t *o = json_pack("{s:o, s:b}", "trainable_token_indices", ids, "tied", !r->untied);
    char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    json_decref(o);
    if (!delta || !wpath || !cpath || !text) s = mt_error(MT_ERR_NOMEM, "out of memory");
    mt_st_desc d[2];
    for (int k = 0; k < 2; k++) d[k] = (mt_st_desc){.name = delta_name[k], .dtype = "F32", .n_dims = 2, .shape = {r->n, r->dim}};
    mt_st_writer w;
    if (!s) {
        for (size_t i = 0; i < count; i++) delta[i] = r->values[i] - r->base[i];
        const char *meta[] = {"format", "pt", NULL};
        s = mt_st_writer_open(&w, wpath, d, 1 + r->untied, meta);
        for (int k = 0; !s && k < 1 + r->untied; k++)
            s = mt_st_writer_put_f32(&w, delta + (size_t)k * r->n * r->dim, (size_t)r->n * r->dim);
        if (!s) s = mt_st_writer_commit(&w);
        else mt_st_writer_abort(&w);
    }
    if (!s) s = mt_write_file_atomic(cpath, text, strlen(text));
    free(delta);
    free(wpath);
    free(cpath);
    free(text);
    return s;
}

int mt_token_rows_present(const char *dir) {
    char *p = mt_path_join(dir, "trainable_tokens.json");
    int yes = p && mt_file_exists(p);
    free(p);
    return yes;
}

static mt_status read_ids(const char *path, int **ids, int *n) {
    json_t *o;
    mt_status s = mt_json_load_file(path, 1 << 20, 0, &o);
    if (s) return s;
    json_t *a = json_object_get(o, "trainable_token_indices");
    size_t len = json_is_array(a) ? json_array_size(a) : 0;
    if (len < 1 || len > MAX_ROWS) s = mt_error(MT_ERR_FORMAT, "%s: \"trainable_token_indices\" must be a list of 1 to %d ids", path, MAX_ROWS);
    *ids = s ? NULL : malloc(len * sizeof(int));
    if (!s && !*ids) s = mt_error(MT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !s && i < len; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            s = mt_error(MT_ERR_FORMAT, "%s: trainable token index %zu is not a non-negative integer", path, i);
        else (*ids)[i] = (int)json_integer_value(v);
    }
    json_decref(o);
    if (s) {
        free(*ids);
        *ids = NULL;
    }
    *n = (int)len;
    return s;
}

mt_status mt_token_rows_load(const mt_model *m, const char *dir, mt_token_rows **out) {
    *out = NULL;
    char *cpath = mt_path_join(dir, "trainable_tokens.json"), *wpath = mt_path_join(dir, "trainable_tokens.safetensors");
    int *ids = NULL, n = 0, st_open = 0;
    mt_token_rows *r = NULL;
    mt_safetensors st;
    mt_status s = cpath && wpath ? read_ids(cpath, &ids, &n) : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s && (s = mt_token_rows_create(m, ids, n, &r))) s = mt_error_prefix(s, cpath);
    if (!s && !(s = mt_safetensors_open(wpath, &st))) st_open = 1;
    size_t per = r ? (size_t)r->n * r->dim : 0;
    float *delta = r ? malloc(per * sizeof(float)) : NULL;
    if (!s && !delta) s = mt_error(MT_ERR_NOMEM, "out of memory");
    for (int k = 0; !s && k < 1 + r->untied; k++) {
        const mt_st_tensor *t = mt_safetensors_find(&st, delta_name[k]);
        if (!t) s = mt_error(MT_ERR_MISMATCH, "%s: tensor %s is missing", wpath, delta_name[k]);
        else if (t->n_dims != 2 || t->shape[0] != r->n || t->shape[1] != r->dim)
            s = mt_error(MT_ERR_MISMATCH, "%s: %s must have shape [%d, %d] for this model", wpath, delta_name[k], r->n, r->dim);
        else if ((s = mt_safetensors_read_f32(&st, t, delta, per))) s = mt_error_prefix(s, wpath);
        for (size_t i = 0; !s && i < per; i++) {
            if (!isfinite(delta[i])) s = mt_error(MT_ERR_FORMAT, "%s: non-finite value in %s", wpath, delta_name[k]);
            else r->values[k * per + i] += delta[i];
        }
    }
    if (st_open) mt_safetensors_close(&st);
    free(delta);
    free(ids);
    free(cpath);
    free(wpath);
    if (s) mt_token_rows_free(r);
    else *out = r;
    return s;
}
