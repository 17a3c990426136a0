/* LoRA adapters: make one (PEFT's initialisation), attach it, fuse it into the base, and
 * read and write the PEFT directory layout other tools load:
 *
 *   adapter_config.json         {"peft_type": "LORA", "r": 8, "lora_alpha": 16, ...}
 *   adapter_model.safetensors   base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight [r, in]
 *                               base_model.model.model.layers.N.self_attn.q_proj.lora_B.weight [out, r]
 *                               (mlp.gate_proj, mlp.up_proj, mlp.down_proj likewise)
 *
 * PEFT adapters live in Hugging Face's RoPE row order (rotate-half); a model loaded from
 * llama2.c or GGUF keeps Q/K rows interleaved, so the rows of lora_B at q_proj and k_proj are
 * permuted on the way in and out (A's columns are input features, which RoPE does not touch). */
#include "adapters/lora.h"
#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "formats/safetensors.h"
#include "model/forward.h"
#include "model/base_store.h"
#include "kernels/kernels.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const site_short[MT_N_SITES] = {"q", "k", "v", "o", "gate", "up", "down"};
static const char *const site_module[MT_N_SITES] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                    "gate_proj", "up_proj", "down_proj"};
#define ALL_SITES ((1u << MT_N_SITES) - 1)
#define MAX_RANK 65536

const char *mt_lora_site_module(int site) { return site_module[site]; }
static const char *site_parent(int site) { return site <= MT_SITE_O ? "self_attn" : "mlp"; }

mt_status mt_lora_parse_targets(const char *list, unsigned *mask) {
    *mask = 0;
    if (!list || !*list || !strcmp(list, "all") || !strcmp(list, "all-linear")) {
        *mask = ALL_SITES;
        return MT_OK;
    }
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        int found = -1;
        for (int s = 0; s < MT_N_SITES && found < 0; s++)
            if ((strlen(site_short[s]) == n && !strncmp(p, site_short[s], n)) ||
                (strlen(site_module[s]) == n && !strncmp(p, site_module[s], n)))
                found = s;
        if (found < 0)
            return mt_error(MT_ERR_ARG, "unknown LoRA target '%.*s' (known: q,k,v,o,gate,up,down or "
                            "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)", (int)n, p);
        *mask |= 1u << found;
        p += n;
        if (*p == ',') p++;
    }
    return *mask ? MT_OK : mt_error(MT_ERR_ARG, "empty LoRA target list");
}

mt_status mt_lora_parse_layers(const char *list, int n_layers, unsigned char *on) {
    int all = !list || !*list || !strcmp(list, "all");
    memset(on, all, (size_t)n_layers);
    if (all) return MT_OK;
    for (const char *p = list; *p;) {
        char *end;
        long lo = strtol(p, &end, 10), hi = lo;
        if (end == p || lo < 0) goto bad;
        if (*end == '-') {
            const char *q = end + 1;
            hi = strtol(q, &end, 10);
            if (end == q || hi < lo) goto bad;
        }
        if (*end && *end != ',') goto bad;
        if (hi >= n_layers)
            return mt_error(MT_ERR_ARG, "LoRA layer %ld is outside the model's %d layers (0-%d)", hi, n_layers, n_layers - 1);
        for (long i = lo; i <= hi; i++) on[i] = 1;
        p = *end ? end + 1 : end;
        continue;
    bad:
        return mt_error(MT_ERR_ARG, "bad LoRA layer list '%s' (expected e.g. 0-3,6)", list);
    }
    return MT_OK;
}

int mt_lora_layer_used(const mt_lora *l, int layer) {
    for (int s = 0; s < MT_N_SITES; s++)
        if (l->a_offset[(size_t)layer * MT_N_SITES + s] != MT_LORA_NONE) return 1;
    return 0;
}

const char *mt_lora_targets_text(unsigned mask) {
    static char buf[64];
    buf[0] = 0;
    for (int s = 0; s < MT_N_SITES; s++)
        if (mask & (1u << s)) {
            if (buf[0]) strcat(buf, ",");
            strcat(buf, site_short[s]);
        }
    return buf;
}

void mt_lora_options_default(mt_lora_options *o) {
    memset(o, 0, sizeof *o);
    o->rank = 8;
    o->alpha = 16;
    o->seed = 1;
}

void mt_lora_free(mt_lora *l) {
    if (!l) return;
    free(l->params);
    free(l->a_offset);
    free(l->b_offset);
    free(l);
}

size_t mt_lora_param_count(const mt_lora *l) { return l ? l->n_params : 0; }

mt_status mt_lora_alloc(const mt_config *cfg, int rank, float alpha, int rslora, unsigned targets,
                        const unsigned char *layers_on, mt_lora **out) {
    *out = NULL;
    if (!targets || (targets & ~ALL_SITES)) return mt_error(MT_ERR_ARG, "no LoRA targets");
    unsigned char *present = malloc((size_t)cfg->n_layers * MT_N_SITES);
    if (!present) return mt_error(MT_ERR_NOMEM, "out of memory");
    for (int layer = 0; layer < cfg->n_layers; layer++)
        for (int s = 0; s < MT_N_SITES; s++)
            present[(size_t)layer * MT_N_SITES + s] = (targets & (1u << s)) && (!layers_on || layers_on[layer]);
    mt_status st = mt_lora_alloc_sites(cfg, rank, alpha, rslora, present, out);
    free(present);
    return st;
}

mt_status mt_lora_alloc_sites(const mt_config *cfg, int rank, float alpha, int rslora, const unsigned char *present,
                              mt_lora **out) {
    *out = NULL;
    if (rank < 1 || rank > MAX_RANK) return mt_error(MT_ERR_ARG, "LoRA rank %d must be in [1, %d]", rank, MAX_RANK);
    if (!isfinite(alpha)) return mt_error(MT_ERR_ARG, "LoRA alpha must be finite");
    unsigned targets = 0;
    for (size_t i = 0; i < (size_t)cfg->n_layers * MT_N_SITES; i++)
        if (present[i]) targets |= 1u << (i % MT_N_SITES);
    if (!targets) return mt_error(MT_ERR_ARG, "no LoRA targets");
    mt_lora *l = calloc(1, sizeof *l);
    size_t n_sites = (size_t)cfg->n_layers * MT_N_SITES;
    if (l) {
        l->a_offset = malloc(n_sites * sizeof(size_t));
        l->b_offset = malloc(n_sites * sizeof(size_t));
    }
    if (!l || !l->a_offset || !l->b_offset) {
        mt_lora_free(l);
        return mt_error(MT_ERR_NOMEM, "out of memory for a LoRA adapter");
    }
    l->n_layers = cfg->n_layers;
    l->rank = rank;
    l->alpha = alpha;
    l->rslora = rslora != 0;
    l->scale = rslora ? alpha / sqrtf((float)rank) : alpha / (float)rank;
    l->targets = targets;
    size_t n = 0;
    for (int layer = 0; layer < cfg->n_layers; layer++)
        for (int s = 0; s < MT_N_SITES; s++) {
            size_t i = (size_t)layer * MT_N_SITES + s;
            l->a_offset[i] = l->b_offset[i] = MT_LORA_NONE;
            if (!present[i]) continue;
            int in, o;
            mt_linear_site_shape(cfg, s, &in, &o);
            l->a_offset[i] = n;
            n += (size_t)rank * in;
            l->b_offset[i] = n;
            n += (size_t)o * rank;
        }
    l->n_params = n;
    l->params = calloc(n ? n : 1, sizeof(float));
    if (!l->params) {
        mt_lora_free(l);
        return mt_error(MT_ERR_NOMEM, "out of memory for %zu LoRA parameters", n);
    }
    *out = l;
    return MT_OK;
}

mt_status mt_lora_create(const mt_model *m, const mt_lora_options *opts, mt_lora **out) {
    mt_lora_options o;
    if (opts) o = *opts;
    else mt_lora_options_default(&o);
    unsigned targets;
    unsigned char *on = malloc((size_t)m->cfg.n_layers);
    if (!on) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_status s = mt_lora_parse_targets(o.targets, &targets);
    if (s == MT_OK) s = mt_lora_parse_layers(o.layers, m->cfg.n_layers, on);
    if (s == MT_OK && !(o.dropout >= 0 && o.dropout < 1))
        s = mt_error(MT_ERR_ARG, "LoRA dropout %g must be in [0, 1)", (double)o.dropout);
    if (s == MT_OK) s = mt_lora_alloc(&m->cfg, o.rank, o.alpha, o.rslora, targets, on, out);
    free(on);
    if (s) return s;
    mt_lora *l = *out;
    l->dropout = o.dropout;
    mt_rng rng;
    mt_rng_seed(&rng, o.seed ? o.seed : 1);
    /* PEFT: nn.init.kaiming_uniform_(A, a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0 */
    for (int layer = 0; layer < l->n_layers; layer++)
        for (int site = 0; site < MT_N_SITES; site++) {
            size_t i = (size_t)layer * MT_N_SITES + site;
            if (l->a_offset[i] == MT_LORA_NONE) continue;
            int in, outf;
            mt_linear_site_shape(&m->cfg, site, &in, &outf);
            float bound = 1.0f / sqrtf((float)in), *a = l->params + l->a_offset[i];
            for (size_t j = 0; j < (size_t)l->rank * in; j++) a[j] = bound * (2.0f * mt_rng_uniform(&rng) - 1.0f);
        }
    return MT_OK;
}

mt_status mt_model_attach_lora(mt_model *m, mt_lora *l) { return mt_model_set_lora(m, l); }

mt_status mt_model_add_lora(mt_model *m, mt_lora *l, float weight) { return mt_model_push_lora(m, l, weight); }

mt_status mt_lora_merge(mt_model *m, mt_lora *l) { return mt_lora_merge_scaled(m, l, 1.0f); }

mt_status mt_lora_merge_scaled(mt_model *m, mt_lora *l, float weight) { return mt_lora_merge_report(m, l, weight, NULL); }

mt_status mt_lora_merge_report(mt_model *m, mt_lora *l, float weight, double *max_change) {
    if (max_change) *max_change = 0;
    if (l->n_layers != m->cfg.n_layers)
        return mt_error(MT_ERR_MISMATCH, "the adapter has %d layers, the model %d", l->n_layers, m->cfg.n_layers);
    if (!isfinite(weight)) return mt_error(MT_ERR_ARG, "adapter weight must be finite");
    mt_model_drop_lora(m, l);
    mt_infer_free(m);
    /* a bf16/Q8_0 base: merge in f32, then store (re-quantise) and note what that cost */
    float *scratch = m->base ? malloc(mt_site_scratch_floats(&m->cfg) * sizeof(float)) : NULL;
    if (m->base && !scratch) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_status s = MT_OK;
    for (int layer = 0; layer < l->n_layers && !s; layer++)
        for (int site = 0; site < MT_N_SITES && !s; site++) {
            const float *a, *b;
            if (!mt_lora_site(l, layer, site, &a, &b)) continue;
            int in, out;
            mt_linear_site_shape(&m->cfg, site, &in, &out);
            float *w = m->base ? (float *)mt_site_weight(m, layer, site, scratch) : mt_linear_site_weight(m, layer, site);
            mt_lora_merge_weight(w, a, b, (double)l->scale * weight, in, out, l->rank);
            double change = 0;
            if (m->base) s = mt_site_weight_store(m, layer, site, w, max_change ? &change : NULL);
            if (max_change && change > *max_change) *max_change = change;
        }
    free(scratch);
    return s;
}

/* ---- PEFT files ------------------------------------------------------------------------- */

static void tensor_name(char *buf, size_t n, int layer, int site, char which) {
    snprintf(buf, n, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer, site_parent(site),
             site_module[site], which);
}

/* q and k sites of a model in the interleaved RoPE layout need B's rows permuted */
static int qk_heads(const mt_model *m, int site) {
    if (!m->cfg.rope_interleaved) return 0;
    return site == MT_SITE_Q ? m->cfg.n_heads : site == MT_SITE_K ? m->cfg.n_kv_heads : 0;
}

static char *config_json(const mt_lora *l, const char *base_model) {
    json_t *targets = json_array(), *layers = json_array();
    for (int s = 0; s < MT_N_SITES; s++)
        if (l->targets & (1u << s)) json_array_append_new(targets, json_string(site_module[s]));
    for (int i = 0; i < l->n_layers; i++)
        if (mt_lora_layer_used(l, i)) json_array_append_new(layers, json_integer(i));
    if (json_array_size(layers) == (size_t)l->n_layers) { /* every layer: PEFT writes null */
        json_decref(layers);
        layers = json_null();
    }
    json_t *o = json_pack("{s:s, s:s, s:s?, s:i, s:f, s:f, s:o, s:b, s:s, s:b, s:b, s:n, s:o, s:n, s:b, s:n, s:b, s:{}, s:{}}",
                          "peft_type", "LORA", "task_type", "CAUSAL_LM", "base_model_name_or_path", base_model,
                          "r", l->rank, "lora_alpha", (double)l->alpha, "lora_dropout", (double)l->dropout,
                          "target_modules", targets, "use_rslora", l->rslora, "bias", "none",
                          "fan_in_fan_out", 0, "inference_mode", 1, "modules_to_save", "layers_to_transform", layers,
                          "layers_pattern", "use_dora", 0, "revision", "init_lora_weights", 1, "rank_pattern",
                          "alpha_pattern");
    char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    json_decref(o);
    return text;
}

mt_status mt_lora_save(const mt_lora *l, const mt_model *m, const char *dir, const char *base_model) {
    if (l->n_layers != m->cfg.n_layers)
        return mt_error(MT_ERR_MISMATCH, "the adapter has %d layers, the model %d", l->n_layers, m->cfg.n_layers);
    mt_status s = mt_mkdir_p(dir);
    if (s) return s;
    int n_sites = 0;
    for (size_t i = 0; i < (size_t)l->n_layers * MT_N_SITES; i++) n_sites += l->a_offset[i] != MT_LORA_NONE;
    mt_st_desc *descs = calloc((size_t)2 * n_sites + 1, sizeof *descs);
    char (*names)[128] = calloc((size_t)2 * n_sites + 1, sizeof *names);
    float *perm = NULL;
    char *path = mt_path_join(dir, "adapter_model.safetensors");
    if (!descs || !names || !path) {
        s = mt_error(MT_ERR_NOMEM, "out of memory");
        goto done;
    }
    int n = 0;
    for (int layer = 0; layer < l->n_layers; layer++)
        for (int site = 0; site < MT_N_SITES; site++) {
            const float *a, *b;
            if (!mt_lora_site(l, layer, site, &a, &b)) continue;
            int in, out;
            mt_linear_site_shape(&m->cfg, site, &in, &out);
            for (int k = 0; k < 2; k++) {
                tensor_name(names[n], sizeof names[n], layer, site, k ? 'B' : 'A');
                descs[n] = (mt_st_desc){.name = names[n], .dtype = "F32", .n_dims = 2};
                descs[n].shape[0] = k ? out : l->rank;
                descs[n].shape[1] = k ? l->rank : in;
                n++;
            }
        }
    const char *meta[] = {"format", "pt", NULL};
    mt_st_writer w;
    if ((s = mt_st_writer_open(&w, path, descs, n, meta))) goto done;
    for (int layer = 0; layer < l->n_layers && !s; layer++)
        for (int site = 0; site < MT_N_SITES && !s; site++) {
            const float *a, *b;
            if (!mt_lora_site(l, layer, site, &a, &b)) continue;
            int in, out, heads = qk_heads(m, site);
            mt_linear_site_shape(&m->cfg, site, &in, &out);
            s = mt_st_writer_put_f32(&w, a, (size_t)l->rank * in);
            if (!s && heads) {
                free(perm);
                if (!(perm = malloc((size_t)out * l->rank * sizeof(float)))) {
                    s = mt_error(MT_ERR_NOMEM, "out of memory");
                    break;
                }
                mt_permute_qk_rows(perm, b, heads, m->cfg.head_dim, l->rank, 0);
                b = perm;
            }
            if (!s) s = mt_st_writer_put_f32(&w, b, (size_t)out * l->rank);
        }
    if (!s) s = mt_st_writer_commit(&w);
    else mt_st_writer_abort(&w);
    if (!s) {
        char *json = config_json(l, base_model), *cpath = mt_path_join(dir, "adapter_config.json");
        s = json && cpath ? mt_write_file_atomic(cpath, json, strlen(json)) : mt_error(MT_ERR_NOMEM, "out of memory");
        free(json);
        free(cpath);
    }
    if (!s) s = mt_token_rows_fold_into_peft(dir);
done:
    free(descs);
    free(names);
    free(perm);
    free(path);
    return s;
}

/* layers_to_transform: null (every layer), one index or a list of indices, each < n_layers. */
static mt_status read_layers(json_t *v, const char *path, int n_layers, unsigned char *on) {
    memset(on, v == NULL || json_is_null(v), (size_t)n_layers);
    if (v == NULL || json_is_null(v)) return MT_OK;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_integer(e))
            return mt_error(MT_ERR_FORMAT, "%s: \"layers_to_transform\" must be null, an integer or a list of integers", path);
        json_int_t k = json_integer_value(e);
        if (k < 0 || k >= n_layers)
            return mt_error(MT_ERR_MISMATCH, "%s: layers_to_transform names layer %lld; the model has %d layers", path,
                            (long long)k, n_layers);
        on[k] = 1;
    }
    return MT_OK;
}

/* Reads adapter_config.json: rank, alpha, rslora, targets, layers, dropout; rejects what
 * memtune cannot apply. */
static mt_status read_config(const char *path, int n_layers, int *rank, float *alpha, int *rslora, unsigned *targets,
                             unsigned char *layers_on, float *dropout) {
    char *text;
    size_t len;
    mt_status s = mt_file_read_all(path, 1 << 20, &text, &len);
    if (s) return s;
    json_error_t e;
    json_t *o = json_loads(text, 0, &e);
    free(text);
    if (!json_is_object(o)) {
        json_decref(o);
        return mt_error(MT_ERR_FORMAT, "%s: not a JSON object (line %d: %s)", path, e.line, e.text);
    }
    const char *type = json_string_value(json_object_get(o, "peft_type"));
    json_t *r = json_object_get(o, "r"), *al = json_object_get(o, "lora_alpha"), *tm = json_object_get(o, "target_modules");
    json_t *rs = json_object_get(o, "use_rslora"), *fifo = json_object_get(o, "fan_in_fan_out");
    const char *bias = json_string_value(json_object_get(o, "bias"));
    json_t *pattern = json_object_get(o, "layers_pattern"), *drop = json_object_get(o, "lora_dropout");
    const char *pat = json_is_array(pattern) && json_array_size(pattern) == 1 ? json_string_value(json_array_get(pattern, 0))
                                                                              : json_string_value(pattern);
    s = MT_OK;
    if (type && strcmp(type, "LORA"))
        s = mt_error(MT_ERR_UNSUPPORTED, "%s: peft_type is \"%s\"; memtune reads LORA adapters", path, type);
    else if (!json_is_integer(r) || json_integer_value(r) < 1 || json_integer_value(r) > MAX_RANK)
        s = mt_error(MT_ERR_FORMAT, "%s: \"r\" must be an integer in [1, %d]", path, MAX_RANK);
    else if (al && !json_is_number(al))
        s = mt_error(MT_ERR_FORMAT, "%s: \"lora_alpha\" must be a number", path);
    else if (fifo && json_is_true(fifo))
        s = mt_error(MT_ERR_UNSUPPORTED, "%s: fan_in_fan_out adapters (GPT-2 Conv1D) do not fit a Llama model", path);
    else if (bias && strcmp(bias, "none"))
        s = mt_error(MT_ERR_UNSUPPORTED, "%s: bias \"%s\" is not supported (only \"none\")", path, bias);
    else if (json_is_true(json_object_get(o, "use_dora")))
        s = mt_error(MT_ERR_UNSUPPORTED, "%s: DoRA adapters are not supported", path);
    else if (json_object_size(json_object_get(o, "rank_pattern")) || json_object_size(json_object_get(o, "alpha_pattern")))
        s = mt_error(MT_ERR_UNSUPPORTED, "%s: per-module rank_pattern / alpha_pattern is not supported", path);
    else if (pattern && !json_is_null(pattern) && !(pat && !strcmp(pat, "layers")))
        s = mt_error(MT_ERR_UNSUPPORTED, "%s: layers_pattern other than \"layers\" does not fit a Llama model", path);
    else s = read_layers(json_object_get(o, "layers_to_transform"), path, n_layers, layers_on);
    if (s == MT_OK) {
        *rank = (int)json_integer_value(r);
        *alpha = al ? (float)json_number_value(al) : 8.0f; /* PEFT's default */
        *rslora = json_is_true(rs);
        *dropout = json_is_number(drop) && json_number_value(drop) >= 0 && json_number_value(drop) < 1
                       ? (float)json_number_value(drop) : 0.0f;
        *targets = 0;
        if (json_is_array(tm)) {
            size_t i;
            json_t *v;
            json_array_foreach(tm, i, v) {
                unsigned one;
                const char *name = json_string_value(v);
                if (!name) s = mt_error(MT_ERR_FORMAT, "%s: target_modules must be strings", path);
                else if ((s = mt_lora_parse_targets(name, &one))) s = mt_error_prefix(s, path);
                if (s) break;
                *targets |= one;
            }
        } else if (json_is_string(tm)) {
            s = mt_lora_parse_targets(json_string_value(tm), targets);
            if (s) s = mt_error_prefix(s, path);
        } else s = mt_error(MT_ERR_FORMAT, "%s: \"target_modules\" missing", path);
        if (s == MT_OK && !*targets) s = mt_error(MT_ERR_FORMAT, "%s: no target modules", path);
    }
    json_decref(o);
    return s;
}

/* Every tensor must be one this adapter expects: anything else means another architecture. */
static mt_status check_names(const mt_safetensors *st, const mt_lora *l, const char *path) {
    char name[128];
    for (int i = 0; i < st->n_tensors; i++) {
        int found = mt_token_rows_tensor_name(st->tensors[i].name); /* token_rows.c reads those */
        for (int layer = 0; layer < l->n_layers && !found; layer++)
            for (int site = 0; site < MT_N_SITES && !found; site++) {
                if (l->a_offset[(size_t)layer * MT_N_SITES + site] == MT_LORA_NONE) continue;
                for (int k = 0; k < 2 && !found; k++) {
                    tensor_name(name, sizeof name, layer, site, k ? 'B' : 'A');
                    found = !strcmp(name, st->tensors[i].name);
                }
            }
        if (!found)
            return mt_error(MT_ERR_MISMATCH, "%s: tensor %s does not belong to a LoRA adapter for this %d-layer "
                            "model with targets %s (another architecture?)", path, st->tensors[i].name,
                            l->n_layers, mt_lora_targets_text(l->targets));
    }
    return MT_OK;
}

static mt_status read_tensor(const mt_safetensors *st, const char *path, const char *name, int rows, int cols,
                             float *dst) {
    const mt_st_tensor *t = mt_safetensors_find(st, name);
    if (!t) return mt_error(MT_ERR_MISMATCH, "%s: tensor %s is missing", path, name);
    if (t->n_dims != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return mt_error(MT_ERR_MISMATCH, "%s: %s has shape [%lld, %lld], this model needs [%d, %d]", path, name,
                        (long long)t->shape[0], t->n_dims > 1 ? (long long)t->shape[1] : 1LL, rows, cols);
    mt_status s = mt_safetensors_read_f32(st, t, dst, (size_t)rows * cols);
    return s ? mt_error_prefix(s, path) : MT_OK;
}

static int is_directory(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

mt_status mt_lora_load(const mt_model *m, const char *dir, mt_lora **out) {
    *out = NULL;
    size_t len = strlen(dir);
    if (!is_directory(dir) && len > 5 && !strcmp(dir + len - 5, ".gguf")) return mt_lora_load_gguf(m, dir, out);
    char *cpath = mt_path_join(dir, "adapter_config.json"), *wpath = mt_path_join(dir, "adapter_model.safetensors");
    int rank = 0, rslora = 0;
    float alpha = 0, dropout = 0;
    unsigned targets = 0;
    unsigned char *on = malloc((size_t)m->cfg.n_layers);
    mt_safetensors st;
    int st_open = 0;
    float *tmp = NULL;
    mt_lora *l = NULL;
    mt_status s = cpath && wpath && on ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s) s = read_config(cpath, m->cfg.n_layers, &rank, &alpha, &rslora, &targets, on, &dropout);
    if (!s) s = mt_lora_alloc(&m->cfg, rank, alpha, rslora, targets, on, &l);
    if (!s) l->dropout = dropout;
    if (!s && !(s = mt_safetensors_open(wpath, &st))) st_open = 1;
    if (!s) s = check_names(&st, l, wpath);
    char name[128];
    for (int layer = 0; !s && layer < l->n_layers; layer++)
        for (int site = 0; !s && site < MT_N_SITES; site++) {
            size_t i = (size_t)layer * MT_N_SITES + site;
            if (l->a_offset[i] == MT_LORA_NONE) continue;
            int in, o, heads = qk_heads(m, site);
            mt_linear_site_shape(&m->cfg, site, &in, &o);
            tensor_name(name, sizeof name, layer, site, 'A');
            s = read_tensor(&st, wpath, name, rank, in, l->params + l->a_offset[i]);
            tensor_name(name, sizeof name, layer, site, 'B');
            float *b = l->params + l->b_offset[i];
            if (!s && heads) {
                free(tmp);
                if (!(tmp = malloc((size_t)o * rank * sizeof(float)))) s = mt_error(MT_ERR_NOMEM, "out of memory");
                if (!s) s = read_tensor(&st, wpath, name, o, rank, tmp);
                if (!s) mt_permute_qk_rows(b, tmp, heads, m->cfg.head_dim, rank, 1);
            } else if (!s) s = read_tensor(&st, wpath, name, o, rank, b);
        }
    for (size_t j = 0; !s && j < l->n_params; j++)
        if (!isfinite(l->params[j])) s = mt_error(MT_ERR_FORMAT, "%s: non-finite adapter weight", wpath);
    if (st_open) mt_safetensors_close(&st);
    free(on);
    free(tmp);
    free(cpath);
    free(wpath);
    if (s) mt_lora_free(l);
    else *out = l;
    return s;
}
