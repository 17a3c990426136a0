/* Method "full": the whole model trains (supervised fine-tuning in trainer.c, over the loop in
 * loop.c). Every f32 tensor marked trainable gets AdamW with weight decay on matrices only
 * (not norms or biases); the end writes DIR/model, an HF directory with the chat template the
 * training used. */
#include "core/error.h"
#include "train/trainer.h"
#include <stdlib.h>
#include <string.h>

static mt_status full_check(mt_trainer *t) {
    if (t->m->lora) return mt_error(MT_ERR_ARG, "--method full with an adapter attached: merge it first (mt_lora_merge)");
    return MT_OK;
}

static mt_status full_setup(mt_trainer *t) {
    const char *bd = t->o.base_dtype ? t->o.base_dtype : "f32";
    if (strcmp(bd, "f32"))
        return mt_error(MT_ERR_ARG, "--base-dtype %s needs --method lora (full fine-tuning trains the base in f32)", bd);
    return mt_model_set_base_dtype(t->m, "f32"); /* a kept GGUF base trains as f32 */
}

static int full_gradients(void *self, mt_grad_span *g, int cap) {
    mt_trainer *t = self;
    (void)cap;
    g[0] = (mt_grad_span){t->state->grads, t->m->n_params};
    return 1;
}

/* AdamW on the trainable tensors; weight decay on matrices only (not norms or biases). */
static mt_status full_update(void *self, mt_loop *l, float lr) {
    mt_trainer *t = self;
    (void)l;
    t->opt.lr = lr;
    mt_tensor_ref refs[MT_MAX_TENSORS];
    int n = mt_model_tensors(t->m, refs, MT_MAX_TENSORS);
    mt_adamw_begin_step(&t->opt);
    for (int i = 0; i < n && i < MT_MAX_TENSORS; i++) {
        if (!t->state->trainable[i]) continue;
        size_t begin = (size_t)(refs[i].data - t->m->params), len = (size_t)refs[i].rows * refs[i].cols;
        float wd = refs[i].is_vector ? 0.0f : t->o.weight_decay;
        mt_adamw_update(&t->opt, t->m->params, t->state->grads, begin, begin + len, wd);
    }
    return MT_OK;
}

static mt_status full_save(mt_trainer *t, const char *dir) {
    /* the template used in training travels with the model */
    if (!t->m->chat_template && !(t->m->chat_template = strdup(t->template_source)))
        return mt_error(MT_ERR_NOMEM, "out of memory");
    return mt_model_save(t->m, dir, MT_FORMAT_HF);
}

const mt_finetune_method mt_finetune_full = {
    .name = "full",
    .out_name = "model",
    .check = full_check,
    .setup = full_setup,
    .gradients = full_gradients,
    .update = full_update,
    .save = full_save,
};
