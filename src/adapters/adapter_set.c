/* Everything a run writes to DIR/adapter, loaded and attached in one call: a LoRA adapter
 * (adapter_config.json, or a llama.cpp LoRA .gguf file), trainable token rows
 * (trainable_tokens.json) and memory experts (mome_config.json), whichever are there.
 * generate, eval, merge and the C API use it so a tuned adapter directory applies as a whole;
 * several sets can be attached at once, each LoRA with its weight (token rows and memory
 * experts: from one set only). */
#include "memtune.h"
#include "core/error.h"
#include "core/file.h"
#include "model/model.h"
#include "model/adapter.h"
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct mt_adapter_set {
    mt_lora *lora;
    mt_token_rows *rows;
    mt_mome *mome;
};

void mt_adapter_set_free(mt_adapter_set *a) {
    if (!a) return;
    mt_token_rows_free(a->rows);
    mt_lora_free(a->lora);
    mt_mome_free(a->mome);
    free(a);
}

mt_lora *mt_adapter_set_lora(const mt_adapter_set *a) { return a ? a->lora : NULL; }

static int has_file(const char *dir, const char *name) {
    char *p = mt_path_join(dir, name);
    int yes = p && mt_file_exists(p);
    free(p);
    return yes;
}

static int is_gguf_file(const char *path) {
    struct stat st;
    size_t n = strlen(path);
    return n > 5 && !strcmp(path + n - 5, ".gguf") && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

mt_status mt_adapter_set_load(mt_model *m, const char *dir, mt_adapter_set **out) {
    return mt_adapter_set_load_scaled(m, dir, 1.0f, out);
}

/* Which kinds of adapter a directory (or .gguf file) holds; an error when none. */
static mt_status adapter_kinds(const char *dir, int *lora, int *rows, int *mome) {
    int gguf = is_gguf_file(dir);
    *lora = gguf || has_file(dir, "adapter_config.json");
    *rows = !gguf && mt_token_rows_present(dir);
    *mome = !gguf && mt_mome_present(dir);
    return *lora || *rows || *mome ? MT_OK
        : mt_error(MT_ERR_IO, "%s: no adapter here (adapter_config.json, trainable_tokens.json, mome_config.json, "
                   "or a .gguf file)", dir);
}

mt_status mt_adapter_set_load_scaled(mt_model *m, const char *dir, float weight, mt_adapter_set **out) {
    *out = NULL;
    int lora, rows, mome;
    mt_status s = adapter_kinds(dir, &lora, &rows, &mome);
    if (!s && rows && m->token_rows)
        s = mt_error(MT_ERR_ARG, "%s: trainable token rows from a second adapter (one set of rows at a time)", dir);
    if (!s && mome && m->mome)
        s = mt_error(MT_ERR_ARG, "%s: memory experts from a second adapter (one memory layer at a time)", dir);
    mt_adapter_set *a = NULL;
    if (!s) s = mt_adapter_set_open(m, dir, &a);
    if (s) return s;
    if (a->lora) s = mt_model_add_lora(m, a->lora, weight);
    if (!s && a->rows) s = mt_model_attach_token_rows(m, a->rows);
    if (!s && a->mome) s = mt_model_attach_mome(m, a->mome);
    if (s) {
        if (a->lora) mt_model_drop_lora(m, a->lora);
        if (a->mome && m->mome == a->mome) mt_model_attach_mome(m, NULL);
        mt_adapter_set_free(a);
        return s;
    }
    *out = a;
    return MT_OK;
}

mt_status mt_adapter_set_open(const mt_model *m, const char *dir, mt_adapter_set **out) {
    *out = NULL;
    int lora, rows, mome;
    mt_status s = adapter_kinds(dir, &lora, &rows, &mome);
    if (s) return s;
    mt_adapter_set *a = calloc(1, sizeof *a);
    if (!a) return mt_error(MT_ERR_NOMEM, "out of memory");
    if (lora) s = mt_lora_load(m, dir, &a->lora);
    if (!s && rows) s = mt_token_rows_load(m, dir, &a->rows);
    if (!s && mome) s = mt_mome_load(m, dir, &a->mome);
    if (s) {
        mt_adapter_set_free(a);
        return s;
    }
    *out = a;
    return MT_OK;
}

mt_status mt_context_use_adapter_set(mt_context *c, const mt_adapter_set *a, float weight) {
    mt_status s = MT_OK;
    if (a->lora) s = mt_context_add_lora(c, a->lora, weight);
    if (!s && a->rows) s = mt_context_set_token_rows(c, a->rows);
    if (!s && a->mome) s = mt_context_set_mome(c, a->mome);
    return s;
}
