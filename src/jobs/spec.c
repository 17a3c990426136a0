/* Job requests (see spec.h). The hyperparameters become `memtune train` options by name;
 * the ones that name paths or belong to the server (out, data, eval, general, threads,
 * resume, ...) are not accepted from a request. */
#include "jobs/spec.h"
#include "core/check.h"
#include "memtune.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD(param, ...) mt_serve_fail(err, 400, "invalid_request_error", param, "invalid_value", __VA_ARGS__)

/* memtune's options a request may set (flag names without the dashes); "memory_lora"
 * (a boolean) is handled apart */
static const char *const allowed[] = {
    "epochs", "steps", "lr", "batch", "grad-accum", "seq-len", "warmup", "schedule", "weight-decay", "clip",
    "eval-every", "save-every", "log-every", "keep-checkpoints", "recompute", "rank", "alpha", "rslora", "targets",
    "layers", "dropout", "base-dtype", "trainable-tokens", "experts", "expert-k", "expert-heads", "expert-sites",
    "freeze-router", "expert-context", "tau", "margin", "general-limit", "general-weight", "check-every",
    "rehearsal-weight", "no-memory-lora",
};

static const char *allowed_name(const char *key) {
    char name[40];
    size_t n = strlen(key);
    if (n == 0 || n >= sizeof name) return NULL;
    for (size_t i = 0; i <= n; i++) name[i] = key[i] == '_' ? '-' : key[i];
    for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++)
        if (!strcmp(allowed[i], name)) return allowed[i];
    return NULL;
}

/* A JSON string without NUL bytes, copied; NULL if v is not one (or out of memory). */
static char *string_of(json_t *v) {
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) return NULL;
    return strdup(json_string_value(v));
}

/* key: a string literal (it becomes the error's param, read after the body is freed) */
static int get_string(json_t *o, const char *key, int required, size_t max, char **out, mt_serve_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return required ? BAD(key, "'%s' is required", key) : 0;
    if (!json_is_string(v) || !json_string_length(v) || json_string_length(v) > max)
        return BAD(key, "'%s' must be a string of 1 to %zu characters", key, max);
    if (!(*out = string_of(v))) return BAD(key, "'%s' must be a string without NUL characters", key);
    return 0;
}

static int add_arg(mt_job_spec *sp, const char *name, const char *value, mt_serve_error *err) {
    for (int i = 0; i < sp->n_args; i++)
        if (!strcmp(sp->args[i][0], name)) return BAD("hyperparameters", "hyperparameter '%s' is given twice", name);
    if (sp->n_args == MT_JOB_MAX_ARGS) return BAD("hyperparameters", "too many hyperparameters");
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return mt_serve_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    sp->args[sp->n_args][0] = n;
    sp->args[sp->n_args][1] = v;
    sp->n_args++;
    return 0;
}

/* A hyperparameter's value as the option's text: integers, finite reals, booleans (0/1) and
 * strings without NULs. 1 when it is "auto" (keep the default). */
static int value_text(json_t *v, const char *key, char *buf, size_t size, mt_serve_error *err) {
    if (json_is_integer(v)) snprintf(buf, size, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v)) {
        if (!isfinite(json_real_value(v))) return BAD("hyperparameters", "hyperparameter '%s' must be finite", key);
        snprintf(buf, size, "%.9g", json_real_value(v));
    } else if (json_is_boolean(v)) snprintf(buf, size, "%d", json_is_true(v));
    else if (json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v) && json_string_length(v) < size) {
        if (!strcmp(json_string_value(v), "auto")) return 1;
        snprintf(buf, size, "%s", json_string_value(v));
    } else return BAD("hyperparameters", "hyperparameter '%s' must be a number, a boolean or a short string", key);
    return 0;
}

static int parse_hyperparameters(mt_job_spec *sp, json_t *h, mt_serve_error *err) {
    if (!json_is_object(h)) return BAD("hyperparameters", "'hyperparameters' must be an object");
    const char *key;
    json_t *v;
    double lr_multiplier = 0;
    int has_multiplier = 0;
    json_object_foreach(h, key, v) {
        char text[256];
        int rc = value_text(v, key, text, sizeof text, err);
        if (rc < 0) return -1;
        if (rc == 1) continue; /* "auto" */
        const char *name;
        if (!strcmp(key, "n_epochs")) name = "epochs";
        else if (!strcmp(key, "batch_size")) name = "batch";
        else if (!strcmp(key, "learning_rate_multiplier")) {
            if (!json_is_number(v)) return BAD("hyperparameters", "'learning_rate_multiplier' must be a number or \"auto\"");
            lr_multiplier = json_number_value(v);
            if (mt_check_real("learning_rate_multiplier", lr_multiplier, 1e-6, 1000))
                return BAD("hyperparameters", "%s", mt_last_error());
            has_multiplier = 1;
            continue;
        } else if (!strcmp(key, "memory_lora") || !strcmp(key, "memory-lora")) {
            if (!json_is_boolean(v)) return BAD("hyperparameters", "'memory_lora' must be true or false");
            if (json_is_false(v) && add_arg(sp, "no-memory-lora", "1", err)) return -1;
            continue;
        } else if (!(name = allowed_name(key)))
            return BAD("hyperparameters", "unknown hyperparameter '%s' (OpenAI's n_epochs, batch_size, learning_rate_multiplier, or a "
                            "`memtune train` option such as steps, lr, rank, tau, experts)", key);
        if (add_arg(sp, name, text, err)) return -1;
    }
    if (has_multiplier) {
        for (int i = 0; i < sp->n_args; i++)
            if (!strcmp(sp->args[i][0], "lr"))
                return BAD("learning_rate_multiplier", "give 'lr' or 'learning_rate_multiplier', not both");
        /* the multiplier scales the method's default learning rate (mt_train_options.lr) */
        double base = sp->method && !strcmp(sp->method, "memory") ? 3e-3 : 1e-4;
        char text[64];
        snprintf(text, sizeof text, "%.9g", base * lr_multiplier);
        if (add_arg(sp, "lr", text, err)) return -1;
    }
    return 0;
}

/* The options the request set, applied to defaults and checked as `memtune train` checks them. */
static int check_options(const mt_job_spec *sp, mt_serve_error *err) {
    mt_train_options o;
    mt_train_options_default(&o);
    if (sp->method && mt_train_options_set(&o, "method", sp->method)) return BAD("method", "%s", mt_last_error());
    for (int i = 0; i < sp->n_args; i++)
        if (mt_train_options_set(&o, sp->args[i][0], sp->args[i][1]))
            return BAD("hyperparameters", "%s", mt_last_error());
    if (mt_train_options_validate(NULL, &o)) return BAD("hyperparameters", "%s", mt_last_error());
    return 0;
}

int mt_job_spec_parse(const char *body, size_t len, mt_job_spec *sp, mt_serve_error *err) {
    memset(sp, 0, sizeof *sp);
    json_error_t je;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) return mt_serve_fail(err, 400, "invalid_request_error", NULL, "invalid_json", "the body is not valid JSON: %s", je.text);
    int rc = -1;
    if (!json_is_object(o)) {
        BAD(NULL, "the body must be a JSON object");
        goto done;
    }
    if (get_string(o, "model", 1, 128, &sp->model, err) || get_string(o, "training_file", 1, 64, &sp->training_file, err) ||
        get_string(o, "validation_file", 0, 64, &sp->validation_file, err) || get_string(o, "suffix", 0, 40, &sp->suffix, err))
        goto done;
    if (sp->suffix)
        for (const char *p = sp->suffix; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("._-", *p))) {
                BAD("suffix", "'suffix' may hold only letters, digits and ._-");
                goto done;
            }
    json_t *seed = json_object_get(o, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed) || json_integer_value(seed) < 0) {
            BAD("seed", "'seed' must be a non-negative integer");
            goto done;
        }
        sp->has_seed = 1;
        sp->seed = (uint64_t)json_integer_value(seed);
    }
    json_t *meta = json_object_get(o, "metadata");
    if (meta && !json_is_null(meta)) {
        if (!json_is_object(meta) || json_object_size(meta) > 16) {
            BAD("metadata", "'metadata' must be an object of at most 16 keys");
            goto done;
        }
        sp->metadata = json_incref(meta);
    }
    json_t *method = json_object_get(o, "method"), *hyper = NULL;
    if (method && !json_is_null(method)) {
        json_t *type = json_object_get(method, "type");
        if (!json_is_object(method) || !json_is_string(type)) {
            BAD("method", "'method' must be {\"type\": \"supervised\"|\"lora\"|\"memory\", ...}");
            goto done;
        }
        const char *t = json_string_value(type);
        if (!strcmp(t, "supervised")) sp->type = "supervised", sp->method = "full";
        else if (!strcmp(t, "lora")) sp->type = "lora", sp->method = "lora";
        else if (!strcmp(t, "memory")) sp->type = "memory", sp->method = "memory";
        else {
            BAD("method.type", "method type '%.40s' is not one memtune runs: supervised (full fine-tune), lora or memory", t);
            goto done;
        }
        json_t *inner = json_object_get(method, sp->type);
        if (inner && !json_is_null(inner)) {
            if (!json_is_object(inner)) {
                BAD("method", "'method.%s' must be an object", sp->type);
                goto done;
            }
            hyper = json_object_get(inner, "hyperparameters");
        }
    }
    json_t *legacy = json_object_get(o, "hyperparameters"); /* OpenAI's older place for them */
    if (legacy && !json_is_null(legacy)) {
        if (hyper && !json_is_null(hyper)) {
            BAD("hyperparameters", "give hyperparameters in 'method' or at the top level, not both");
            goto done;
        }
        hyper = legacy;
    }
    if (hyper && !json_is_null(hyper)) {
        if (parse_hyperparameters(sp, hyper, err)) goto done;
        sp->hyperparameters = json_deep_copy(hyper);
    } else sp->hyperparameters = json_object();
    if (sp->has_seed) {
        char text[32];
        snprintf(text, sizeof text, "%llu", (unsigned long long)sp->seed);
        if (add_arg(sp, "seed", text, err)) goto done;
    }
    if (!sp->hyperparameters) {
        mt_serve_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    rc = check_options(sp, err);
done:
    json_decref(o);
    if (rc) mt_job_spec_free(sp);
    return rc;
}

void mt_job_spec_free(mt_job_spec *sp) {
    free(sp->model);
    free(sp->training_file);
    free(sp->validation_file);
    free(sp->suffix);
    for (int i = 0; i < sp->n_args; i++) free(sp->args[i][0]), free(sp->args[i][1]);
    json_decref(sp->hyperparameters);
    json_decref(sp->metadata);
    memset(sp, 0, sizeof *sp);
}

json_t *mt_job_spec_args_json(const mt_job_spec *sp) {
    json_t *a = json_array();
    if (sp->method) json_array_append_new(a, json_pack("[s, s]", "method", sp->method));
    for (int i = 0; i < sp->n_args; i++) json_array_append_new(a, json_pack("[s, s]", sp->args[i][0], sp->args[i][1]));
    return a;
}
