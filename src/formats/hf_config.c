/* Hugging Face config.json: reading the fields of LlamaForCausalLM, MistralForCausalLM and
 * Qwen2ForCausalLM configs into an mt_config (with transformers' defaults where a field is
 * absent), and writing config.json + generation_config.json back. Anything that would change
 * the computation and that memtune does not implement (other RoPE scalings, MLP biases,
 * other activations) is refused rather than ignored. */
#include "core/json.h"
#include "formats/formats.h"
#include "core/error.h"
#include "core/file.h"
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mt_arch_known(const char *arch) {
    return strcmp(arch, "llama") == 0 || strcmp(arch, "mistral") == 0 || strcmp(arch, "qwen2") == 0;
}

/* An integer value (JSON integers, or reals with an integral value as some exporters write
 * them) in [lo, hi]. The message says which of the two it is not. */
static mt_status int_value(const char *path, const char *key, const json_t *v, long long lo, long long hi, int *out) {
    double d = json_is_number(v) ? json_number_value(v) : NAN;
    if (!json_is_number(v)) return mt_error(MT_ERR_FORMAT, "%s: %s must be a number", path, key);
    if (d != floor(d) || !isfinite(d)) return mt_error(MT_ERR_FORMAT, "%s: %s %g must be an integer", path, key, d);
    if (!(d >= (double)lo && d <= (double)hi))
        return mt_error(MT_ERR_FORMAT, "%s: %s %.0f: must be an integer in [%lld, %lld]", path, key, d, lo, hi);
    *out = (int)d;
    return MT_OK;
}

/* Absent or null: MT_OK with *out untouched, unless required. */
static mt_status get_int(const char *path, const json_t *obj, const char *key, int *out, int required, long long lo,
                         long long hi) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return required ? mt_error(MT_ERR_FORMAT, "%s: missing %s", path, key) : MT_OK;
    return int_value(path, key, v, lo, hi, out);
}

/* A finite number in [lo, hi]: rms_norm_eps -1 is an error, not silently the default. */
static mt_status get_float(const char *path, const json_t *obj, const char *key, float *out, double lo, double hi) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return MT_OK;
    if (!json_is_number(v)) return mt_error(MT_ERR_FORMAT, "%s: %s must be a number", path, key);
    double d = json_number_value(v);
    if (!(isfinite(d) && d >= lo && d <= hi))
        return mt_error(MT_ERR_FORMAT, "%s: %s %g: must be a finite number in [%g, %g]", path, key, d, lo, hi);
    *out = (float)d;
    return MT_OK;
}

static mt_status get_bool(const char *path, const json_t *obj, const char *key, int *out) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return MT_OK;
    if (!json_is_boolean(v)) return mt_error(MT_ERR_FORMAT, "%s: %s must be true or false", path, key);
    *out = json_is_true(v);
    return MT_OK;
}

/* eos_token_id may be a list (Llama 3 instruct): the first entry is the model's EOS. */
static mt_status get_token_id(const char *path, const json_t *obj, const char *key, int *out) {
    const json_t *v = json_object_get(obj, key);
    if (json_is_array(v)) v = json_array_get(v, 0);
    return !v || json_is_null(v) ? MT_OK : int_value(path, key, v, INT_MIN, INT_MAX, out); /* bad ids are dropped */
}

static mt_status parse_arch(const char *path, const json_t *root, mt_config *c) {
    static const char *const names[][2] = {
        {"LlamaForCausalLM", "llama"}, {"MistralForCausalLM", "mistral"}, {"Qwen2ForCausalLM", "qwen2"}};
    const json_t *archs = json_object_get(root, "architectures");
    const char *cls = json_string_value(json_array_get(archs, 0));
    const char *model_type = json_string_value(json_object_get(root, "model_type"));
    for (int i = 0; i < 3; i++)
        if ((cls && strcmp(cls, names[i][0]) == 0) || (!cls && model_type && strcmp(model_type, names[i][1]) == 0)) {
            snprintf(c->arch, sizeof c->arch, "%s", names[i][1]);
            return MT_OK;
        }
    return mt_error(MT_ERR_UNSUPPORTED, "%s: architecture %s is not supported (memtune loads LlamaForCausalLM, "
                    "MistralForCausalLM and Qwen2ForCausalLM)", path, cls ? cls : model_type ? model_type : "(none)");
}

/* rope_scaling (or transformers 5's rope_parameters): only Llama 3's scheme is implemented. */
static mt_status parse_rope_scaling(const char *path, const json_t *rs, mt_config *c) {
    if (!rs || json_is_null(rs)) return MT_OK;
    if (!json_is_object(rs)) return mt_error(MT_ERR_FORMAT, "%s: rope_scaling must be an object", path);
    mt_status s = get_float(path, rs, "rope_theta", &c->rope_theta, 1, 1e12);
    if (s) return s;
    const json_t *type = json_object_get(rs, "rope_type");
    if (!type) type = json_object_get(rs, "type");
    const char *t = json_string_value(type);
    if (!t || strcmp(t, "default") == 0) return MT_OK;
    if (strcmp(t, "llama3") != 0)
        return mt_error(MT_ERR_UNSUPPORTED, "%s: rope scaling type '%s' is not supported (only llama3)", path, t);
    c->rope_scaling = MT_ROPE_SCALING_LLAMA3;
    if ((s = get_float(path, rs, "factor", &c->rope_factor, 1e-3, 1e4)) ||
        (s = get_float(path, rs, "low_freq_factor", &c->rope_low_freq_factor, 0, 1e4)) ||
        (s = get_float(path, rs, "high_freq_factor", &c->rope_high_freq_factor, 0, 1e4)) ||
        (s = get_int(path, rs, "original_max_position_embeddings", &c->rope_original_max_pos, 1, 1, MT_MAX_CONTEXT)))
        return s;
    return MT_OK;
}

/* Fields that would change the computation in ways memtune does not implement. */
static mt_status refuse_unsupported(const char *path, const json_t *root) {
    const char *act = json_string_value(json_object_get(root, "hidden_act"));
    if (act && strcmp(act, "silu") != 0)
        return mt_error(MT_ERR_UNSUPPORTED, "%s: hidden_act '%s' is not supported (only silu)", path, act);
    if (json_is_true(json_object_get(root, "mlp_bias")))
        return mt_error(MT_ERR_UNSUPPORTED, "%s: mlp_bias is not supported", path);
    return MT_OK;
}

void mt_config_drop_bad_token_ids(mt_config *c) {
    if (c->bos_id >= c->vocab_size || c->bos_id < -1) c->bos_id = -1;
    if (c->eos_id >= c->vocab_size || c->eos_id < -1) c->eos_id = -1;
    if (c->pad_id >= c->vocab_size || c->pad_id < -1) c->pad_id = -1;
}

static mt_status parse_config(const char *path, const json_t *root, mt_config *c) {
    memset(c, 0, sizeof *c);
    c->bos_id = c->eos_id = c->pad_id = -1;
    c->norm_eps = 1e-6f; /* transformers' default for all three classes */
    mt_status s;
    if (!json_is_object(root)) return mt_error(MT_ERR_FORMAT, "%s: not a JSON object", path);
    if ((s = parse_arch(path, root, c)) || (s = refuse_unsupported(path, root)) ||
        (s = get_int(path, root, "hidden_size", &c->dim, 1, 1, 1 << 16)) ||
        (s = get_int(path, root, "intermediate_size", &c->hidden_dim, 1, 1, 1 << 18)) ||
        (s = get_int(path, root, "num_hidden_layers", &c->n_layers, 1, 1, 1024)) ||
        (s = get_int(path, root, "num_attention_heads", &c->n_heads, 1, 1, 1024)) ||
        (s = get_int(path, root, "num_key_value_heads", &c->n_kv_heads, 0, 1, 1024)) ||
        (s = get_int(path, root, "head_dim", &c->head_dim, 0, 2, 1024)) ||
        (s = get_int(path, root, "vocab_size", &c->vocab_size, 1, 1, 1 << 22)) ||
        (s = get_int(path, root, "max_position_embeddings", &c->max_seq_len, 0, 1, MT_MAX_CONTEXT)) ||
        (s = get_float(path, root, "rms_norm_eps", &c->norm_eps, 1e-12, 1)) ||
        (s = get_float(path, root, "rope_theta", &c->rope_theta, 1, 1e12)) ||
        (s = get_bool(path, root, "tie_word_embeddings", &c->tied_embeddings)) ||
        (s = get_bool(path, root, "attention_bias", &c->attn_bias)) ||
        (s = get_token_id(path, root, "bos_token_id", &c->bos_id)) ||
        (s = get_token_id(path, root, "eos_token_id", &c->eos_id)) ||
        (s = get_token_id(path, root, "pad_token_id", &c->pad_id)))
        return s;
    const json_t *rope = json_object_get(root, "rope_scaling");
    if (!rope || json_is_null(rope)) rope = json_object_get(root, "rope_parameters");
    if ((s = parse_rope_scaling(path, rope, c))) return s;
    if (strcmp(c->arch, "qwen2") == 0) c->attn_bias = 1; /* Qwen2 always has q/k/v biases */
    c->rope_interleaved = 0;                             /* HF checkpoints rotate halves */
    if (c->n_kv_heads <= 0) c->n_kv_heads = c->n_heads;
    mt_config_defaults(c);
    mt_config_drop_bad_token_ids(c);
    return mt_config_validate(c, path);
}

mt_status mt_config_load_json(const char *path, mt_config *out) {
    json_t *root;
    mt_status s = mt_json_load_file(path, (size_t)16 << 20, 0, &root);
    if (s) return s;
    s = parse_config(path, root, out);
    json_decref(root);
    return s;
}

/* ---- writer ---- */

const char *mt_hf_architecture(const mt_config *c, int *zero_o_bias) {
    *zero_o_bias = 0;
    if (strcmp(c->arch, "qwen2") == 0 && c->attn_bias) return "Qwen2ForCausalLM";
    if (strcmp(c->arch, "mistral") == 0 && !c->attn_bias) return "MistralForCausalLM";
    *zero_o_bias = c->attn_bias;
    return "LlamaForCausalLM";
}

/* The shortest decimal that reads back as the same float, so config.json shows 1e-05 rather
 * than 9.999999747378752e-06 and still round-trips exactly. */
static json_t *json_float(float f) {
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static json_t *token_id_json(int id) { return id >= 0 ? json_integer(id) : json_null(); }

static json_t *rope_scaling_json(const mt_config *c) {
    if (c->rope_scaling != MT_ROPE_SCALING_LLAMA3) return json_null();
    return json_pack("{s:s, s:o, s:o, s:o, s:i}", "rope_type", "llama3", "factor", json_float(c->rope_factor),
                     "low_freq_factor", json_float(c->rope_low_freq_factor), "high_freq_factor",
                     json_float(c->rope_high_freq_factor), "original_max_position_embeddings",
                     c->rope_original_max_pos);
}

static json_t *config_json(const mt_config *c) {
    int zero_o_bias;
    const char *cls = mt_hf_architecture(c, &zero_o_bias);
    const char *model_type = cls[0] == 'Q' ? "qwen2" : cls[0] == 'M' ? "mistral" : "llama";
    json_t *root = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:o, s:o, s:o, s:b, s:s}",
                             "architectures", cls, "model_type", model_type, "hidden_size", c->dim,
                             "intermediate_size", c->hidden_dim, "num_hidden_layers", c->n_layers,
                             "num_attention_heads", c->n_heads, "num_key_value_heads", c->n_kv_heads,
                             "head_dim", c->head_dim, "vocab_size", c->vocab_size, "max_position_embeddings",
                             c->max_seq_len, "rms_norm_eps", json_float(c->norm_eps), "rope_theta",
                             json_float(c->rope_theta), "rope_scaling", rope_scaling_json(c),
                             "tie_word_embeddings", c->tied_embeddings, "hidden_act", "silu");
    if (!root) return NULL;
    if (model_type[0] == 'l') {
        json_object_set_new(root, "attention_bias", json_boolean(c->attn_bias));
        json_object_set_new(root, "mlp_bias", json_false());
    }
    json_object_set_new(root, "bos_token_id", token_id_json(c->bos_id));
    json_object_set_new(root, "eos_token_id", token_id_json(c->eos_id));
    if (c->pad_id >= 0) json_object_set_new(root, "pad_token_id", json_integer(c->pad_id));
    json_object_set_new(root, "torch_dtype", json_string("float32"));
    return root;
}

static mt_status write_json(const char *dir, const char *name, json_t *root) {
    char *path = mt_path_join(dir, name);
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
    mt_status s = path && text ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory writing %s", name);
    if (!s) s = mt_write_file_atomic(path, text, strlen(text));
    free(text);
    free(path);
    json_decref(root);
    return s;
}

mt_status mt_config_save_json(const mt_config *c, const char *dir) {
    mt_status s = write_json(dir, "config.json", config_json(c));
    if (s) return s;
    json_t *gen = json_object();
    if (gen && c->bos_id >= 0) json_object_set_new(gen, "bos_token_id", json_integer(c->bos_id));
    if (gen && c->eos_id >= 0) json_object_set_new(gen, "eos_token_id", json_integer(c->eos_id));
    if (gen && c->pad_id >= 0) json_object_set_new(gen, "pad_token_id", json_integer(c->pad_id));
    return write_json(dir, "generation_config.json", gen);
}

mt_status mt_generation_config_apply(const char *path, mt_config *c) {
    json_t *root;
    mt_status s = mt_json_load_file(path, (size_t)1 << 20, 0, &root);
    if (s) return s;
    if (!json_is_object(root)) {
        json_decref(root);
        return mt_error(MT_ERR_FORMAT, "%s: not a JSON object", path);
    }
    int bos = -1, eos = -1, pad = -1;
    if (!(s = get_token_id(path, root, "bos_token_id", &bos)) && !(s = get_token_id(path, root, "eos_token_id", &eos)))
        s = get_token_id(path, root, "pad_token_id", &pad);
    json_decref(root);
    if (c->bos_id < 0) c->bos_id = bos;
    if (c->eos_id < 0) c->eos_id = eos;
    if (c->pad_id < 0) c->pad_id = pad;
    mt_config_drop_bad_token_ids(c);
    return s;
}
