/* Everything a run writes to DIR/adapter, loaded and attached in one call: a LoRA adapter
 * (adapter_config.json), trainable token rows (trainable_tokens.json) and memory experts
 * (mome_config.json), whichever are there. generate, eval and the C API use it so a
 * tuned adapter directory applies as a whole. */
#include "memtune.h"
#include "core/error.h"
#include "core/file.h"
#include "model/model.h"
#include <stdlib.h>

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

static int has_file(const char *dir, const char *name) {
    char *p = mt_path_join(dir, name);
    int yes = p && mt_file_exists(p);
    free(p);
    return yes;
}

mt_status mt_adapter_set_load(mt_model *m, const char *dir, mt_adapter_set **out) {
    *out = NULL;
    mt_adapter_set *a = calloc(1, sizeof *a);
    if (!a) return mt_error(MT_ERR_NOMEM, "out of memory");
    int lora = has_file(dir, "adapter_config.json"), rows = mt_token_rows_present(dir), mome = mt_mome_present(dir);
    mt_status s = lora || rows || mome ? MT_OK
        : mt_error(MT_ERR_IO, "%s: no adapter here (adapter_config.json, trainable_tokens.json)", dir);
    if (!s && lora && !(s = mt_lora_load(m, dir, &a->lora))) s = mt_model_attach_lora(m, a->lora);
    if (!s && rows && !(s = mt_token_rows_load(m, dir, &a->rows))) s = mt_model_attach_token_rows(m, a->rows);
    if (!s && mome && !(s = mt_mome_load(m, dir, &a->mome))) s = mt_model_attach_mome(m, a->mome);
    if (s) {
        if (a->lora && m->lora == a->lora) mt_model_attach_lora(m, NULL);
        if (a->mome && m->mome == a->mome) mt_model_attach_mome(m, NULL);
        mt_adapter_set_free(a);
        return s;
    }
    *out = a;
    return MT_OK;
}
