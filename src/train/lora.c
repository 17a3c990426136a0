/* Method "lora": the base stays frozen; a LoRA adapter (the caller's, or one made from the
 * options) and trainable token rows (--trainable-tokens) train (supervised fine-tuning in
 * trainer.c, over the loop in loop.c). The end writes DIR/adapter: the adapter in PEFT's
 * layout and the token rows. */
#include "core/error.h"
#include "adapters/lora.h"
#include "model/base_store.h"
#include "tokenizer/tokenizer.h"
#include "train/progress.h"
#include "train/trainer.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

/* "auto": EOS and every control/user-defined token in the rendered data except BOS (which
 * starts every text, so changing it would change the model everywhere). */
static int auto_token_ids(const mt_trainer *t, int *ids, int cap) {
    int n = 0, bos = t->builder.bos_id;
    if (t->builder.eos_id >= 0) n = mt_token_ids_add(ids, n, t->builder.eos_id);
    for (int i = 0; i < t->packed.n_seqs && n < cap; i++) {
        const mt_token_seq *q = &t->packed.seqs[i];
        for (int k = 0; k < q->n && n < cap; k++) {
            int type = mt_tokenizer_type(t->m->tok, q->ids[k]);
            if (q->ids[k] != bos && (type == MT_TOKTYPE_CONTROL || type == MT_TOKTYPE_USER_DEFINED))
                n = mt_token_ids_add(ids, n, q->ids[k]);
        }
    }
    return n;
}

#define MAX_AUTO_ROWS MT_MAX_TOKEN_ROW_IDS

static mt_status setup_token_rows(mt_trainer *t) {
    const char *spec = t->o.trainable_tokens ? t->o.trainable_tokens : "auto";
    if (!strcmp(spec, "none")) return MT_OK;
    int ids[MAX_AUTO_ROWS], n;
    mt_status s = MT_OK;
    if (!strcmp(spec, "auto")) n = auto_token_ids(t, ids, MAX_AUTO_ROWS);
    else s = mt_parse_token_ids(spec, ids, MAX_AUTO_ROWS, &n);
    if (s || n == 0) return s;
    if ((s = mt_token_rows_create(t->m, ids, n, &t->rows))) return s;
    t->own_rows = 1;
    if ((s = mt_model_attach_token_rows(t->m, t->rows))) return s;
    if (!t->o.quiet) {
        char list[MAX_AUTO_ROWS * 12] = "";
        for (int i = 0, len = 0; i < n; i++) len += snprintf(list + len, sizeof list - (size_t)len, " %d", ids[i]);
        mt_progress_message(MT_PROGRESS_INFO, "trainable token rows:%s (%d parameters)", list,
                            (1 + t->rows->untied) * n * t->m->cfg.dim);
    }
    return MT_OK;
}

static int rows_train_stop_token(const mt_trainer *t) {
    for (int i = 0; t->rows && i < t->rows->n; i++)
        if (t->rows->ids[i] == t->builder.eos_id) return 1;
    return 0;
}

/* The answer-stopping token's output row is (to 1e-3 of its size) the row of another token:
 * it was never trained (stories260K's EOS, see README), and with the base frozen and the
 * head tied to the embedding, an adapter cannot make it likelier than that twin. */
static int stop_token_untrained(const mt_trainer *t, int *twin) {
    const mt_config *c = &t->m->cfg;
    int eos = t->builder.eos_id;
    if (eos < 0 || eos >= c->vocab_size) return 0;
    const float *row = t->m->output + (size_t)eos * c->dim;
    float size = 0;
    for (int j = 0; j < c->dim; j++) size = fmaxf(size, fabsf(row[j]));
    for (int i = 0; i < c->vocab_size; i++) {
        const float *other = t->m->output + (size_t)i * c->dim;
        float d = 0;
        for (int j = 0; j < c->dim && i != eos; j++) d = fmaxf(d, fabsf(row[j] - other[j]));
        if (i != eos && d <= 1e-3f * size) {
            *twin = i;
            return 1;
        }
    }
    return 0;
}

static mt_status setup_lora(mt_trainer *t) {
    if (t->m->lora) {
        t->lora = t->m->lora; /* the caller's adapter: trained in place, left attached */
    } else {
        mt_lora_options lo;
        mt_lora_options_default(&lo);
        lo.rank = t->o.lora_rank;
        lo.alpha = t->o.lora_alpha;
        lo.rslora = t->o.lora_rslora;
        lo.targets = t->o.lora_targets;
        lo.layers = t->o.lora_layers;
        lo.dropout = t->o.lora_dropout;
        lo.seed = t->o.seed;
        mt_status s = mt_lora_create(t->m, &lo, &t->lora);
        if (s) return s;
        t->own_lora = 1;
        if ((s = mt_model_set_lora(t->m, t->lora))) return s;
    }
    if (!t->o.quiet) {
        mt_progress_message(MT_PROGRESS_INFO, "LoRA r=%d alpha=%g%s dropout %g on %s%s%s: %zu trainable parameters (%.3f%% of %zu)",
                t->lora->rank, t->lora->alpha, t->lora->rslora ? " (rslora)" : "", t->lora->dropout,
                mt_lora_targets_text(t->lora->targets), t->o.lora_layers && t->own_lora ? " of layers " : "",
                t->o.lora_layers && t->own_lora ? t->o.lora_layers : "",
                t->lora->n_params, 100.0 * t->lora->n_params / (double)mt_model_param_count(t->m), mt_model_param_count(t->m));
        if (t->m->base)
            mt_progress_message(MT_PROGRESS_INFO, "frozen base linear layers held as %s: weights take %.1f MB (f32: %.1f MB)",
                    mt_model_base_dtype(t->m), mt_model_weight_bytes(t->m) / 1e6, mt_model_param_count(t->m) * 4 / 1e6);
        int twin;
        if (!rows_train_stop_token(t) && stop_token_untrained(t, &twin))
            mt_progress_message(MT_PROGRESS_WARNING, "the stop token (id %d) was never trained: its output row equals that of "
                    "id %d. The base (and its head) stay frozen with LoRA, so the adapter cannot make the model stop "
                    "after an answer; expect answers that run on. Fine-tune with --method full, or use a chat template "
                    "that ends answers with a token the model already emits (README: LoRA and the stop token).", t->builder.eos_id, twin);
    }
    return MT_OK;
}

static mt_status lora_setup(mt_trainer *t) {
    const char *bd = t->o.base_dtype ? t->o.base_dtype : "f32";
    mt_status s = mt_model_set_base_dtype(t->m, bd);
    if (s == MT_OK) s = setup_token_rows(t);
    if (s == MT_OK) s = setup_lora(t);
    return s;
}

/* The adapter's gradient, then the token rows', in the order their norms add up. */
static int lora_gradients(void *self, mt_grad_span *g, int cap) {
    mt_trainer *t = self;
    (void)cap;
    g[0] = (mt_grad_span){t->state->lora_grads, t->lora->n_params};
    g[1] = (mt_grad_span){t->rows ? t->state->row_grads : NULL, t->rows ? t->rows_opt.n : 0};
    return 2;
}

/* AdamW on the token rows (no decay) and on the adapter (every adapter tensor is a matrix). */
static mt_status lora_update(void *self, mt_loop *l, float lr) {
    mt_trainer *t = self;
    (void)l;
    t->opt.lr = lr;
    if (t->rows) {
        mt_adamw_begin_step(&t->rows_opt);
        t->rows_opt.lr = t->opt.lr;
        mt_adamw_update(&t->rows_opt, t->rows->values, t->state->row_grads, 0, t->rows_opt.n, 0.0f);
        mt_token_rows_sync(t->rows);
    }
    mt_adamw_begin_step(&t->opt);
    mt_adamw_update(&t->opt, t->lora->params, t->state->lora_grads, 0, t->lora->n_params, t->o.weight_decay);
    return MT_OK;
}

static mt_status lora_save(mt_trainer *t, const char *dir) {
    mt_status s = mt_lora_save(t->lora, t->m, dir, NULL);
    if (s == MT_OK && t->rows) s = mt_token_rows_save(t->rows, dir);
    return s;
}

const mt_finetune_method mt_finetune_lora = {
    .name = "lora",
    .out_name = "adapter",
    .setup = lora_setup,
    .gradients = lora_gradients,
    .update = lora_update,
    .save = lora_save,
};
