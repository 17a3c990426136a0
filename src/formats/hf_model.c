/* Hugging Face checkpoint directories: config.json (+ generation_config.json), weights in
 * model.safetensors or in shards listed by model.safetensors.index.json, and the tokenizer
 * (tokenizer.json + tokenizer_config.json). Every tensor the config implies must be present
 * with exactly the implied shape; Q/K rows are in the rotate-half RoPE layout. The writer
 * produces the same layout (F32), permuting Q/K rows of interleaved models. */
#include "core/json.h"
#include "formats/formats.h"
#include "formats/safetensors.h"
#include "core/error.h"
#include "core/file.h"
#include "tokenizer/tokenizer.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The checkpoint's weight files: one, or the shards an index names (each mapped once). */
typedef struct {
    const char *dir;
    mt_safetensors *shards;
    int n_shards;
    json_t *index;            /* parsed model.safetensors.index.json, NULL when unsharded */
    const json_t *weight_map; /* tensor name -> shard file name */
    json_t *shard_ids;        /* shard file name -> position in shards[] */
} hf_weights;

static void weights_close(hf_weights *w) {
    for (int i = 0; i < w->n_shards; i++) mt_safetensors_close(&w->shards[i]);
    free(w->shards);
    json_decref(w->index);
    json_decref(w->shard_ids);
    memset(w, 0, sizeof *w);
}

static mt_status open_shard(hf_weights *w, const char *file) {
    char *path = mt_path_join(w->dir, file);
    mt_status s = path ? mt_safetensors_open(path, &w->shards[w->n_shards]) : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s) w->n_shards++;
    free(path);
    return s;
}

/* Shard names must be plain file names in the checkpoint directory. */
static int plain_file_name(const char *name) {
    return name[0] && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static mt_status open_index(hf_weights *w, const char *index_path) {
    mt_status s = mt_json_load_file(index_path, (size_t)64 << 20, 0, &w->index);
    if (s) return s;
    w->weight_map = json_object_get(w->index, "weight_map");
    if (!json_is_object(w->weight_map))
        return mt_error(MT_ERR_FORMAT, "%s: missing weight_map object", index_path);
    w->shard_ids = json_object();
    w->shards = calloc(json_object_size(w->weight_map) + 1, sizeof *w->shards);
    if (!w->shard_ids || !w->shards) return mt_error(MT_ERR_NOMEM, "out of memory");
    const char *name;
    const json_t *file;
    json_object_foreach((json_t *)w->weight_map, name, file) {
        const char *f = json_string_value(file);
        if (!f || !plain_file_name(f))
            return mt_error(MT_ERR_FORMAT, "%s: tensor %s maps to an invalid shard name", index_path, name);
        if (json_object_get(w->shard_ids, f)) continue;
        json_object_set_new(w->shard_ids, f, json_integer(w->n_shards));
        if ((s = open_shard(w, f))) return s;
    }
    return MT_OK;
}

static mt_status weights_open(hf_weights *w, const char *dir) {
    memset(w, 0, sizeof *w);
    w->dir = dir;
    char *index_path = mt_path_join(dir, "model.safetensors.index.json");
    mt_status s;
    if (!index_path) s = mt_error(MT_ERR_NOMEM, "out of memory");
    else if (mt_file_exists(index_path)) s = open_index(w, index_path);
    else if (!(w->shards = calloc(1, sizeof *w->shards))) s = mt_error(MT_ERR_NOMEM, "out of memory");
    else s = open_shard(w, "model.safetensors");
    free(index_path);
    if (s) weights_close(w);
    return s;
}

/* Finds a tensor; *shard receives the file it lives in. NULL when absent. */
static const mt_st_tensor *weights_find(const hf_weights *w, const char *name, const mt_safetensors **shard) {
    int id = 0;
    if (w->weight_map) {
        const char *file = json_string_value(json_object_get(w->weight_map, name));
        if (!file) return NULL;
        id = (int)json_integer_value(json_object_get(w->shard_ids, file));
    }
    *shard = &w->shards[id];
    return mt_safetensors_find(*shard, name);
}

static void describe_shape(char *buf, size_t cap, const mt_st_tensor *t) {
    int n = snprintf(buf, cap, "[");
    for (int d = 0; d < t->n_dims && n > 0 && (size_t)n < cap; d++)
        n += snprintf(buf + n, cap - (size_t)n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (n > 0 && (size_t)n < cap) snprintf(buf + n, cap - (size_t)n, "]");
}

static mt_status check_shape(const char *dir, const mt_tensor_ref *r, const mt_st_tensor *t, const mt_config *c) {
    int ok = r->is_vector ? t->n_dims == 1 && t->shape[0] == r->rows
                          : t->n_dims == 2 && t->shape[0] == r->rows && t->shape[1] == r->cols;
    if (ok) return MT_OK;
    char got[128], want[64];
    describe_shape(got, sizeof got, t);
    if (r->is_vector) snprintf(want, sizeof want, "[%d]", r->rows);
    else snprintf(want, sizeof want, "[%d, %d]", r->rows, r->cols);
    return mt_error(MT_ERR_MISMATCH, "%s: tensor %s has shape %s but config.json (hidden_size %d, intermediate_size "
                    "%d, %d heads, %d kv heads, head_dim %d, vocab_size %d) implies %s", dir, r->name, got,
                    c->dim, c->hidden_dim, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, want);
}

static mt_status read_tensor(const char *dir, const hf_weights *w, const mt_tensor_ref *r, const mt_config *c) {
    const mt_safetensors *shard;
    const mt_st_tensor *t = weights_find(w, r->name, &shard);
    if (!t) return mt_error(MT_ERR_FORMAT, "%s: missing tensor %s", dir, r->name);
    mt_status s = check_shape(dir, r, t, c);
    return s ? s : mt_safetensors_read_f32(shard, t, r->data, (size_t)r->rows * r->cols);
}

/* transformers' Llama with attention_bias also biases o_proj, which memtune's model does not
 * have: accept the tensor only when it is zero (as memtune's own writer stores it). */
static mt_status check_o_bias_zero(const char *dir, const hf_weights *w, const mt_config *c) {
    float *buf = malloc((size_t)c->dim * sizeof(float));
    mt_status s = buf ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    for (int l = 0; l < c->n_layers && !s; l++) {
        char name[96];
        snprintf(name, sizeof name, "model.layers.%d.self_attn.o_proj.bias", l);
        const mt_safetensors *shard;
        const mt_st_tensor *t = weights_find(w, name, &shard);
        if (!t) continue;
        if (t->n_elems != (uint64_t)c->dim)
            s = mt_error(MT_ERR_MISMATCH, "%s: tensor %s has %llu elements, expected %d", dir, name,
                         (unsigned long long)t->n_elems, c->dim);
        else s = mt_safetensors_read_f32(shard, t, buf, (size_t)c->dim);
        for (int i = 0; i < c->dim && !s; i++)
            if (buf[i] != 0.0f)
                s = mt_error(MT_ERR_UNSUPPORTED, "%s: %s is not zero; memtune models have no o_proj bias", dir, name);
    }
    free(buf);
    return s;
}

static mt_status read_weights(const char *dir, const hf_weights *w, mt_model *m) {
    int n;
    mt_tensor_ref *refs = mt_model_tensor_list(m, &n);
    mt_status s = refs ? MT_OK : MT_ERR_NOMEM;
    for (int i = 0; i < n && !s; i++) s = read_tensor(dir, w, &refs[i], &m->cfg);
    if (!s && m->cfg.attn_bias) s = check_o_bias_zero(dir, w, &m->cfg);
    free(refs);
    return s;
}

/* F16/BF16, the smallest dtypes memtune reads, take two bytes per value. */
static mt_status check_fits(const char *dir, const hf_weights *w, const mt_config *cfg) {
    uint64_t bytes = 0;
    for (int i = 0; i < w->n_shards; i++) bytes += w->shards[i].file.size;
    return mt_check_params_fit(dir, cfg, bytes, 2.0);
}

static mt_status read_config(const char *dir, mt_config *cfg) {
    char *path = mt_path_join(dir, "config.json");
    char *gen = mt_path_join(dir, "generation_config.json");
    mt_status s = MT_OK;
    if (!path || !gen) s = mt_error(MT_ERR_NOMEM, "out of memory");
    else if (!mt_file_exists(path)) s = mt_error(MT_ERR_FORMAT, "%s: not a model directory: no config.json", dir);
    else s = mt_config_load_json(path, cfg);
    if (!s && mt_file_exists(gen)) s = mt_generation_config_apply(gen, cfg);
    free(path);
    free(gen);
    return s;
}

static mt_status attach_tokenizer(mt_model *m, const char *dir, const mt_load_options *opts) {
    char *own = mt_path_join(dir, "tokenizer.json");
    if (!own) return mt_error(MT_ERR_NOMEM, "out of memory");
    const char *tok_path = opts && opts->tokenizer_path ? opts->tokenizer_path : mt_file_exists(own) ? own : NULL;
    mt_status s = MT_OK;
    if (tok_path) s = mt_load_user_tokenizer(tok_path, dir, m->cfg.vocab_size, 0, &m->tok, &m->chat_template);
    free(own);
    /* config.json's ids win; the tokenizer's fill what it leaves unknown */
    if (!s && m->tok && m->cfg.bos_id < 0) m->cfg.bos_id = mt_tokenizer_bos(m->tok);
    if (!s && m->tok && m->cfg.eos_id < 0) m->cfg.eos_id = mt_tokenizer_eos(m->tok);
    return s;
}

mt_status mt_hf_load(const char *dir, const mt_load_options *opts, mt_model **out) {
    *out = NULL;
    mt_config cfg;
    hf_weights w = {0};
    mt_model *m = NULL;
    mt_status s = read_config(dir, &cfg);
    if (!s) s = weights_open(&w, dir);
    if (!s) s = check_fits(dir, &w, &cfg);
    if (!s) s = mt_model_alloc(&cfg, &m);
    if (!s) s = read_weights(dir, &w, m);
    weights_close(&w);
    if (!s) s = attach_tokenizer(m, dir, opts);
    if (s) mt_model_free(m);
    else *out = m;
    return s;
}

/* ---- writer ---- */

/* Tensor descriptions in file order: the model's tensors, then zero o_proj biases when the
 * config is written as a Llama with attention_bias (see mt_hf_architecture). */
static mt_st_desc *describe_tensors(const mt_model *m, const mt_tensor_ref *refs, int n, int *n_out,
                                    char (**o_names)[96]) {
    int zero_o_bias;
    mt_hf_architecture(&m->cfg, &zero_o_bias);
    int extra = zero_o_bias ? m->cfg.n_layers : 0;
    mt_st_desc *d = calloc((size_t)(n + extra), sizeof *d);
    *o_names = calloc((size_t)extra + 1, sizeof **o_names);
    if (!d || !*o_names) {
        free(d);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        d[i] = (mt_st_desc){.name = refs[i].name, .dtype = "F32", .n_dims = refs[i].is_vector ? 1 : 2,
                            .shape = {refs[i].rows, refs[i].cols}};
    }
    for (int l = 0; l < extra; l++) {
        snprintf((*o_names)[l], sizeof (*o_names)[l], "model.layers.%d.self_attn.o_proj.bias", l);
        d[n + l] = (mt_st_desc){.name = (*o_names)[l], .dtype = "F32", .n_dims = 1, .shape = {m->cfg.dim}};
    }
    *n_out = n + extra;
    return d;
}

static mt_status write_tensors(mt_st_writer *w, const mt_model *m, const mt_tensor_ref *refs, int n, int n_desc) {
    float *scratch = malloc(mt_qk_scratch_floats(&m->cfg) * sizeof(float));
    float *zeros = calloc((size_t)m->cfg.dim, sizeof(float));
    mt_status s = scratch && zeros ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && !s; i++)
        s = mt_st_writer_put_f32(w, mt_tensor_in_layout(m, &refs[i], 0, scratch), (size_t)refs[i].rows * refs[i].cols);
    for (int i = n; i < n_desc && !s; i++) s = mt_st_writer_put_f32(w, zeros, (size_t)m->cfg.dim);
    free(scratch);
    free(zeros);
    return s;
}

static mt_status write_weights(const mt_model *m, const char *dir) {
    static const char *const metadata[] = {"format", "pt", NULL};
    int n, n_desc = 0;
    char(*o_names)[96] = NULL;
    mt_tensor_ref *refs = mt_model_tensor_list(m, &n);
    mt_st_desc *descs = refs ? describe_tensors(m, refs, n, &n_desc, &o_names) : NULL;
    char *path = mt_path_join(dir, "model.safetensors");
    mt_status s = descs && path ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory writing %s", dir);
    mt_st_writer w;
    if (!s && !(s = mt_st_writer_open(&w, path, descs, n_desc, metadata))) {
        s = write_tensors(&w, m, refs, n, n_desc);
        if (!s) s = mt_st_writer_commit(&w);
        else mt_st_writer_abort(&w);
    }
    free(path);
    free(descs);
    free(o_names);
    free(refs);
    return s;
}

mt_status mt_hf_save(const mt_model *m, const char *dir) {
    mt_status s = mt_mkdir_p(dir);
    if (s) return s;
    /* A stale shard index from an earlier checkpoint would take precedence over the new file. */
    char *index = mt_path_join(dir, "model.safetensors.index.json");
    if (index) unlink(index);
    free(index);
    if ((s = write_weights(m, dir))) return s;
    if ((s = mt_config_save_json(&m->cfg, dir))) return s;
    if (m->tok) s = mt_tokenizer_save_hf(m->tok, dir, m->chat_template);
    return s;
}
