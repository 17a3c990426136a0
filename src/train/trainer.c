/* Supervised fine-tuning (methods full and LoRA) over the training loop (loop.c): data ->
 * packed rows -> forward/backward over micro-batches each step, with the metrics log, evals,
 * atomic checkpoints and the end's save. What trains, its gradients, its optimizer update and
 * what the end writes come from the method: full.c (the whole model) or lora.c (an adapter
 * and token rows). It reports through the progress callback (train/progress.h) and never
 * prints. */
#include "core/atomic_dir.h"
#include "core/check.h"
#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "adapters/lora.h"
#include "kernels/kernels.h"
#include "model/forward.h"
#include "model/base_store.h"
#include "model/train_model.h"
#include "tokenizer/tokenizer.h"
#include "dataset/batch.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/train_log.h"
#include "train/trainer.h"
#include "train/loop.h"
#include "train/progress.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void trainer_free(mt_trainer *t) {
    mt_dataset_free(&t->data);
    mt_dataset_free(&t->eval);
    mt_packed_data_free(&t->packed);
    mt_packed_data_free(&t->packed_eval);
    mt_epoch_plan_free(&t->plan);
    if (t->tpl) mt_chat_template_free(t->tpl);
    if (t->state) mt_train_free(t->state);
    mt_adamw_free(&t->opt);
    free(t->inputs);
    free(t->targets);
    free(t->pos);
    free(t->doc);
    free(t->ckpt_dir);
    free(t->template_source);
    if (t->lora && t->m->lora == t->lora && t->own_lora) mt_model_set_lora(t->m, NULL);
    if (t->own_lora) mt_lora_free(t->lora);
    mt_adamw_free(&t->rows_opt);
    if (t->own_rows) mt_token_rows_free(t->rows); /* detaches: the base rows come back */
    mt_dist_grad_map_free(&t->gmap); /* dist */
}

static mt_status load_datasets(mt_trainer *t, const char *data_path) {
    const mt_train_options *o = &t->o;
    mt_status s = data_path ? mt_dataset_load_jsonl(&t->data, data_path, o->skip_bad_lines) : MT_OK;
    if (s == MT_OK && o->data_text) s = mt_dataset_load_jsonl_text(&t->data, "examples", o->data_text, strlen(o->data_text), o->skip_bad_lines);
    for (int i = 0; s == MT_OK && i < o->n_data; i++) s = mt_dataset_load_jsonl(&t->data, o->data[i], o->skip_bad_lines);
    if (s == MT_OK && o->eval_data) s = mt_dataset_load_jsonl(&t->eval, o->eval_data, o->skip_bad_lines);
    if (s == MT_OK && t->data.n_skipped + t->eval.n_skipped > 0 && !o->quiet)
        mt_progress_message(MT_PROGRESS_INFO, "skipped %d bad lines", t->data.n_skipped + t->eval.n_skipped);
    return s;
}

/* The model's own chat template, or the documented default for base models. The one used
 * is stored with the trained model so inference renders prompts the same way. */
static mt_status setup_template(mt_trainer *t) {
    const char *src = t->m->chat_template ? t->m->chat_template : mt_chat_template_default();
    mt_status s = mt_chat_template_compile(src, &t->tpl);
    if (s) return mt_error_prefix(s, "chat template");
    t->template_source = strdup(src);
    if (!t->template_source) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_tokenizer *tok = t->m->tok;
    t->builder.tok = tok;
    t->builder.tpl = t->tpl;
    t->builder.eos_id = mt_tokenizer_eos(tok) >= 0 ? mt_tokenizer_eos(tok) : t->m->cfg.eos_id;
    t->builder.bos_id = mt_tokenizer_bos(tok);
    return MT_OK;
}

/* Padding never reaches the loss (its targets are masked by position, not by id), but a pad
 * equal to EOS is the classic way EOS gets masked out elsewhere: use another id. */
static int choose_pad(const mt_trainer *t) {
    int eos = t->builder.eos_id, pad = mt_tokenizer_pad(t->m->tok);
    if (pad >= 0 && pad != eos) return pad;
    int unk = mt_tokenizer_unk(t->m->tok);
    if (unk >= 0 && unk != eos) return unk;
    return eos == 0 ? 1 : 0;
}

static long count_learned_stops(const mt_trainer *t) {
    long n = 0;
    for (int i = 0; i < t->packed.n_seqs; i++) {
        const mt_token_seq *s = &t->packed.seqs[i];
        for (int k = 1; k < s->n; k++)
            n += s->learn[k] && s->ids[k] == t->builder.eos_id;
    }
    return n;
}

static mt_status prepare_data(mt_trainer *t) {
    mt_status s = mt_packed_data_build(&t->builder, &t->data, t->seq_len, &t->packed);
    if (s == MT_OK && t->eval.n > 0) s = mt_packed_data_build(&t->builder, &t->eval, t->seq_len, &t->packed_eval);
    if (s) return s;
    if (t->packed.targets_total == 0) return mt_error(MT_ERR_ARG, "the training data has no tokens to learn");
    if (count_learned_stops(t) == 0)
        return mt_error(MT_ERR_ARG, "EOS (id %d) is never a trained target: a tuned model would not learn to "
                        "stop (does the tokenizer define EOS?)", t->builder.eos_id);
    if (t->packed.n_truncated && !t->o.quiet)
        mt_progress_message(MT_PROGRESS_WARNING, "%ld of %d examples are longer than --seq-len %d and were cut",
                t->packed.n_truncated, t->packed.n_seqs, t->seq_len);
    t->pad_id = choose_pad(t);
    s = mt_epoch_plan_build(&t->packed, t->o.seed, 0, t->o.shuffle, &t->plan);
    t->plan_epoch = 0;
    t->rows_per_epoch = t->plan.n_rows;
    return s;
}

static void plan_steps(mt_trainer *t) {
    long rows_per_step = (long)t->o.batch * t->o.grad_accum * mt_dist_size(t->o.dist); /* dist: the global batch */
    if (t->o.steps > 0) t->loop.total_steps = t->o.steps;
    else t->loop.total_steps = (t->rows_per_epoch * t->o.epochs + rows_per_step - 1) / rows_per_step;
    if (t->loop.total_steps < 1) t->loop.total_steps = 1;
    t->loop.tokens_per_step = rows_per_step * t->seq_len;
    t->loop.peak_lr = t->o.lr;
    t->loop.warmup = t->o.warmup;
    t->loop.clip = t->o.clip;
    t->loop.save_every = t->o.save_every;
    t->loop.dist = t->o.dist;
    t->eval_every = t->o.eval_every >= 0 ? t->o.eval_every : (t->loop.total_steps >= 10 ? t->loop.total_steps / 10 : 1);
}

/* the parameters the optimizer updates */
size_t mt_finetune_trainable_count(const mt_trainer *t) { return t->lora ? t->lora->n_params : t->m->n_params; }

static int state_flags(const mt_trainer *t) { return t->o.recompute ? MT_TRAIN_RECOMPUTE : 0; }

static size_t memory_plan(const mt_trainer *t, size_t *acts) {
    const mt_config *c = &t->m->cfg;
    size_t adapter = t->lora ? t->lora->n_params * sizeof(float) : 0;
    /* an adapter adds its weights, gradients and [B*T, rank] scratch to the state, and a
     * frozen base has no parameter gradients */
    *acts = mt_train_state_bytes_flags(c, t->o.batch, t->seq_len, state_flags(t)) + adapter +
            (t->lora ? 2 * (size_t)t->o.batch * t->seq_len * t->lora->rank * sizeof(float) + adapter : 0);
    if (t->lora) *acts -= mt_config_param_count(c) * sizeof(float);
    size_t params = mt_model_weight_bytes(t->m), trained = mt_finetune_trainable_count(t) * sizeof(float);
    /* weights + activations/grads state + two AdamW moments + batch buffers */
    return params + *acts + 2 * trained + (size_t)4 * t->o.grad_accum * t->o.batch * t->seq_len * sizeof(int);
}

static void print_dry_run(const mt_trainer *t) {
    size_t acts, total = memory_plan(t, &acts), params = mt_model_weight_bytes(t->m);
    size_t trained = mt_finetune_trainable_count(t);
    /* dist: the memory plan is per rank; what a step exchanges */
    char dist[512] = "";
    int K = mt_dist_size(t->o.dist);
    if (K > 1) {
        size_t grad = (mt_finetune_trainable_count(t) + (t->rows ? (size_t)(1 + t->rows->untied) * t->rows->n * t->rows->dim : 0)) * sizeof(float);
        snprintf(dist, sizeof dist, ",\n \"dist\": {\"ranks\": %d, \"rows_per_step\": %ld, \"memory_per_rank\": %zu, "
                 "\"gradient_bytes_per_step\": %zu, \"sent_bytes_per_rank_per_step\": %.0f}", K,
                 (long)K * t->o.batch * t->o.grad_accum, total, grad, 2.0 * (K - 1) / K * (double)grad);
    }
    mt_progress_message(MT_PROGRESS_DRY_RUN, "{\"examples\": %d, \"eval_examples\": %d, \"skipped_lines\": %d, \"tokens\": %ld, "
           "\"target_tokens\": %ld, \"truncated_examples\": %ld, \"seq_len\": %d, \"rows_per_epoch\": %ld, "
           "\"steps\": %ld, \"parameters\": %zu, \"trainable_parameters\": %zu,\n"
           " \"memory\": {\"weights\": %zu, \"gradients_and_activations\": %zu, \"optimizer\": %zu, "
           "\"total\": %zu}%s}",
           t->data.n, t->eval.n, t->data.n_skipped + t->eval.n_skipped, t->packed.tokens_total,
           t->packed.targets_total, t->packed.n_truncated, t->seq_len, t->rows_per_epoch, t->loop.total_steps,
           mt_model_param_count(t->m), trained, params, acts, 2 * trained * sizeof(float), total, dist);
}

/* ---- batches ---------------------------------------------------------------------------- */

/* The plan of the data cursor's epoch (each epoch's shuffle packs into its own rows). */
static mt_status use_epoch_plan(mt_trainer *t, int epoch) {
    if (epoch == t->plan_epoch) return MT_OK;
    mt_epoch_plan_free(&t->plan);
    mt_status s = mt_epoch_plan_build(&t->packed, t->o.seed, epoch, t->o.shuffle, &t->plan);
    t->plan_epoch = s ? -1 : epoch;
    return s;
}

/* Fills n_rows rows from the data cursor (epoch, row) and advances it. */
static mt_status fill_rows(mt_trainer *t, int n_rows, int *inputs, int *targets, int *pos, int *doc, long *n_targets) {
    *n_targets = 0;
    for (int r = 0; r < n_rows; r++) {
        mt_status s = use_epoch_plan(t, t->data_epoch);
        if (s) return s;
        size_t off = (size_t)r * t->seq_len;
        *n_targets += mt_fill_row(&t->packed, &t->plan, t->data_row, t->pad_id, inputs + off, targets + off, pos + off, doc + off);
        if (++t->data_row >= t->plan.n_rows) {
            t->data_epoch++;
            t->data_row = 0;
        }
    }
    return MT_OK;
}

/* dist: moves the data cursor over n rows (other ranks' share of a global micro-batch). */
static mt_status skip_rows(mt_trainer *t, long n) {
    for (long r = 0; r < n; r++) {
        mt_status s = use_epoch_plan(t, t->data_epoch);
        if (s) return s;
        if (++t->data_row >= t->plan.n_rows) {
            t->data_epoch++;
            t->data_row = 0;
        }
    }
    return MT_OK;
}

/* Mean loss over the learned targets of the eval set, with the current weights. */
static mt_status eval_loss(mt_trainer *t, double *out) {
    mt_epoch_plan plan;
    mt_status s = mt_epoch_plan_build(&t->packed_eval, 0, 0, 0, &plan);
    double nll_total = 0;
    long count = 0;
    int B = t->o.batch, T = t->seq_len;
    t->state->lora_dropout = 0; /* evaluation sees the whole adapter */
    for (int r0 = 0; s == MT_OK && r0 < plan.n_rows; r0 += B) {
        for (int r = 0; r < B; r++) {
            size_t off = (size_t)r * T;
            if (r0 + r < plan.n_rows)
                mt_fill_row(&t->packed_eval, &plan, r0 + r, t->pad_id, t->inputs + off, t->targets + off, t->pos + off, t->doc + off);
            else
                for (int k = 0; k < T; k++) t->inputs[off + k] = t->pad_id, t->targets[off + k] = -1, t->pos[off + k] = k, t->doc[off + k] = 0;
        }
        double nll;
        long n;
        s = mt_train_forward(t->state, t->inputs, t->targets, t->pos, t->doc, 1.0, &nll, &n);
        nll_total += nll;
        count += n;
    }
    mt_epoch_plan_free(&plan);
    *out = count ? nll_total / count : NAN;
    return s;
}

/* A step's gradients over grad_accum micro-batches, the loss normalised by the target
 * tokens of all of them, so accumulation equals one larger batch. */
static mt_status compute_gradients(void *self, mt_loop *l, double *loss) {
    mt_trainer *t = self;
    int B = t->o.batch, T = t->seq_len, G = t->o.grad_accum;
    mt_dist *d = t->o.dist;
    long total_targets = 0, before, after;
    /* dist: this rank's B rows of each global micro-batch of K*B rows (the data cursor is global) */
    mt_dist_shard(d, B, &before, &after);
    for (int g = 0; g < G; g++) {
        long n;
        size_t off = (size_t)g * B * T;
        mt_status s = skip_rows(t, before);
        if (s == MT_OK) s = fill_rows(t, B, t->inputs + off, t->targets + off, t->pos + off, t->doc + off, &n);
        if (s == MT_OK) s = skip_rows(t, after);
        if (s) return s;
        total_targets += n;
    }
    mt_dist_sum_long(d, &total_targets, 1); /* dist: the loss is normalised over the global batch */
    mt_train_zero_grads(t->state);
    double scale = total_targets ? 1.0 / total_targets : 0.0, nll_sum = 0;
    for (int g = 0; g < G; g++) {
        size_t off = (size_t)g * B * T;
        double nll;
        /* LoRA dropout: a fresh mask per micro-batch, a function of (seed, step, g) so a
         * resumed run draws the same masks */
        t->state->lora_dropout = t->lora ? t->lora->dropout : 0;
        t->state->dropout_key = t->o.seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)l->step << 20) ^ (uint64_t)g ^
                                ((uint64_t)mt_dist_rank(d) << 48); /* dist: each rank its own masks */
        /* dist: the last micro-batch's backward starts the all-reduce of what it finishes */
        int hook = mt_dist_is_multi(d) && g == G - 1;
        t->state->grads_ready = hook ? mt_dist_grads_ready : NULL;
        t->state->grads_ready_user = hook ? &t->gmap : NULL;
        mt_status s = mt_train_forward(t->state, t->inputs + off, t->targets + off, t->pos + off, t->doc + off, scale, &nll, NULL);
        if (s == MT_OK) s = mt_train_backward(t->state);
        t->state->grads_ready = NULL;
        if (s) return s;
        nll_sum += nll;
    }
    /* dist: every rank's gradients (and token-row gradients) and losses summed; this is the end
     * of compute_gradients, i.e. just before the loop's mt_loop_gradients_complete */
    if (mt_dist_is_multi(d)) {
        mt_status s = mt_dist_exchange_finish(d, t->rows ? t->state->row_grads : NULL, t->rows ? t->rows_opt.n : 0);
        if (s == MT_OK) s = mt_dist_sum_double(d, &nll_sum, 1);
        if (s) return s;
    }
    t->rows_done += (long)G * B * mt_dist_size(d); /* dist: global rows */
    *loss = total_targets ? nll_sum / total_targets : 0.0;
    if (!isfinite(*loss)) mt_dist_error_shared(d, mt_dist_rank(d) == 0); /* dist: every rank sees the global loss */
    return MT_OK;
}

/* ---- checkpoints ------------------------------------------------------------------------ */

static char *state_json(const mt_trainer *t) {
    /* a double's %.17g text (jansson's) reads back to the same bits */
    json_t *o = json_pack("{s:s, s:I, s:I, s:i, s:i, s:I, s:I, s:i, s:i, s:i, s:I, s:f, s:i, s:i}", "method", t->o.method,
                          "step", (json_int_t)t->loop.step, "rows_done", (json_int_t)t->rows_done,
                          "data_epoch", t->data_epoch, "data_row", t->data_row,
                          "adam_step", (json_int_t)t->opt.step, "seed", (json_int_t)t->o.seed,
                          "batch", t->o.batch, "grad_accum", t->o.grad_accum, "seq_len", t->seq_len,
                          "n_params", (json_int_t)mt_model_param_count(t->m),
                          "log_window_loss", t->window_loss, "log_window_steps", t->window_steps,
                          "ranks", mt_dist_size(t->o.dist));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

#define MAX_BLOBS 8

/* What a checkpoint holds: the trained parameters and their AdamW moments. Returns the count. */
static int checkpoint_blobs(mt_trainer *t, mt_ckpt_blob b[MAX_BLOBS]) {
    size_t bytes = mt_finetune_trainable_count(t) * sizeof(float);
    if (t->lora) b[0] = (mt_ckpt_blob){"lora", t->lora->params, bytes};
    else b[0] = (mt_ckpt_blob){"params", t->m->params, bytes};
    b[1] = (mt_ckpt_blob){"adam_m", t->opt.m, bytes};
    b[2] = (mt_ckpt_blob){"adam_v", t->opt.v, bytes};
    int n = 3;
    if (t->rows) {
        size_t rb = t->rows_opt.n * sizeof(float);
        b[n++] = (mt_ckpt_blob){"token_rows", t->rows->values, rb};
        b[n++] = (mt_ckpt_blob){"token_rows_adam_m", t->rows_opt.m, rb};
        b[n++] = (mt_ckpt_blob){"token_rows_adam_v", t->rows_opt.v, rb};
    }
    return n;
}

static mt_status save_checkpoint(mt_trainer *t) {
    /* the loss guard runs before each update; this one sees the last update too */
    mt_status s = mt_check_finite_weights(t->lora ? t->lora->params : t->m->params, mt_finetune_trainable_count(t), t->loop.step);
    if (s == MT_OK && t->rows) s = mt_check_finite_weights(t->rows->values, t->rows_opt.n, t->loop.step);
    if (s) {
        mt_dist_error_shared(t->o.dist, mt_dist_rank(t->o.dist) == 0); /* the same weights on every rank */
        return s;
    }
    if (mt_dist_rank(t->o.dist) != 0) return mt_dist_agree(t->o.dist, MT_OK); /* dist: rank 0 writes */
    s = mt_mkdir_p(t->ckpt_dir);
    if (s) return mt_dist_agree(t->o.dist, s);
    char *json = state_json(t), *path = mt_checkpoint_path(t->ckpt_dir, t->loop.step);
    mt_ckpt_blob b[MAX_BLOBS];
    int nb = checkpoint_blobs(t, b);
    s = json && path ? mt_checkpoint_write(path, json, b, nb) : mt_error(MT_ERR_NOMEM, "out of memory");
    if (s == MT_OK) mt_checkpoint_prune(t->ckpt_dir, t->o.keep_checkpoints > 0 ? t->o.keep_checkpoints : 1);
    free(json);
    free(path);
    return mt_dist_agree(t->o.dist, s);
}

static long json_long(json_t *o, const char *key) { return (long)json_integer_value(json_object_get(o, key)); }

static mt_status check_resume_settings(const mt_trainer *t, json_t *st, const char *path) {
    /* dist: a run may resume on another number of ranks when a step still takes the same
     * global rows (ranks x --batch x --grad-accum); checkpoints from before have no "ranks" */
    long ranks = json_long(st, "ranks") > 0 ? json_long(st, "ranks") : 1, K = mt_dist_size(t->o.dist);
    int same_rows = json_long(st, "batch") * json_long(st, "grad_accum") * ranks == (long)t->o.batch * t->o.grad_accum * K;
    if ((K == 1 && ranks == 1 && (json_long(st, "batch") != t->o.batch || json_long(st, "grad_accum") != t->o.grad_accum)) ||
        !same_rows || json_long(st, "seq_len") != t->seq_len || (uint64_t)json_long(st, "seed") != t->o.seed)
        return mt_error(MT_ERR_MISMATCH, "%s: was written with --batch %ld --grad-accum %ld --seq-len %ld --seed %ld "
                        "on %ld rank%s; resume with the same settings (or as many rows per step: ranks x --batch x "
                        "--grad-accum = %ld)", path, json_long(st, "batch"), json_long(st, "grad_accum"),
                        json_long(st, "seq_len"), json_long(st, "seed"), ranks, ranks > 1 ? "s" : "",
                        json_long(st, "batch") * json_long(st, "grad_accum") * ranks);
    return MT_OK;
}

/* dist: rank 0 reads the checkpoint and sends it to the others (no rank but 0 needs the
 * output directory: hosts without a shared filesystem resume too). */
static mt_status dist_read_checkpoint(mt_trainer *t, char **path, char **json, mt_ckpt_blob *b, int nb) {
    mt_dist *d = t->o.dist;
    mt_status s = MT_OK;
    if (mt_dist_rank(d) == 0) {
        s = mt_checkpoint_find_latest(t->ckpt_dir, path);
        if (s == MT_OK) s = mt_checkpoint_read(*path, json, b, nb);
    }
    if ((s = mt_dist_agree(d, s)) || !mt_dist_is_multi(d)) return s;
    long len[2] = {mt_dist_rank(d) == 0 ? (long)strlen(*json) : 0, mt_dist_rank(d) == 0 ? (long)strlen(*path) : 0};
    mt_dist_bcast(d, len, sizeof len, 0);
    if (mt_dist_rank(d) != 0) {
        *json = calloc((size_t)len[0] + 1, 1);
        *path = calloc((size_t)len[1] + 1, 1);
    }
    s = mt_dist_agree(d, *json && *path ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory"));
    if (s) return s;
    mt_dist_bcast(d, *json, (size_t)len[0], 0);
    mt_dist_bcast(d, *path, (size_t)len[1], 0);
    for (int i = 0; i < nb; i++) mt_dist_bcast(d, b[i].data, b[i].bytes, 0);
    return MT_OK;
}

static mt_status resume_from_checkpoint(mt_trainer *t) {
    char *path = NULL, *json = NULL;
    mt_ckpt_blob b[MAX_BLOBS];
    int nb = checkpoint_blobs(t, b);
    mt_status s = dist_read_checkpoint(t, &path, &json, b, nb);
    if (s) return s;
    json_error_t e;
    json_t *st = s == MT_OK ? json_loads(json, 0, &e) : NULL;
    if (s == MT_OK) s = check_resume_settings(t, st, path);
    if (s == MT_OK) {
        t->loop.step = json_long(st, "step");
        t->rows_done = json_long(st, "rows_done");
        t->data_epoch = (int)json_long(st, "data_epoch");
        t->data_row = (int)json_long(st, "data_row");
        /* checkpoints from before the window was saved have none: the window starts empty */
        json_t *wl = json_object_get(st, "log_window_loss");
        long ws = json_long(st, "log_window_steps");
        t->window_loss = json_is_number(wl) ? json_number_value(wl) : 0;
        t->window_steps = json_is_number(wl) && ws > 0 && ws <= t->loop.step ? (int)ws : 0;
        if (!isfinite(t->window_loss)) t->window_loss = 0, t->window_steps = 0;
        s = t->data_epoch < 0 || t->data_row < 0 ? MT_ERR_FORMAT : use_epoch_plan(t, t->data_epoch);
        if (s == MT_OK && t->data_row >= t->plan.n_rows) s = MT_ERR_MISMATCH;
        if (s) s = mt_error(s, "%s: data position (epoch %d, row %d) does not fit this data: was it changed?",
                            path, t->data_epoch, t->data_row);
    }
    if (s == MT_OK) {
        t->opt.step = json_long(st, "adam_step");
        t->rows_opt.step = t->opt.step;
        mt_token_rows_sync(t->rows);
        if (!t->o.quiet) mt_progress_message(MT_PROGRESS_INFO, "resumed from %s (step %ld)", path, t->loop.step);
    }
    if (s) mt_dist_error_shared(t->o.dist, mt_dist_rank(t->o.dist) == 0); /* dist: the same checkpoint everywhere */
    json_decref(st);
    free(json);
    free(path);
    return s;
}

/* ---- the run ---------------------------------------------------------------------------- */

static mt_status setup(mt_trainer *t, const char *data_path) {
    mt_config *c = &t->m->cfg;
    if (!t->m->tok) return mt_error(MT_ERR_ARG, "the model has no tokenizer (give one with --tokenizer)");
    t->what = !strcmp(t->o.method, "full") ? &mt_finetune_full : !strcmp(t->o.method, "lora") ? &mt_finetune_lora : NULL;
    if (!t->what)
        return mt_error(MT_ERR_UNSUPPORTED, "unknown --method '%s' (this build trains: full, lora, memory)", t->o.method);
    mt_status s = t->what->check ? t->what->check(t) : MT_OK;
    if (s) return s;
    t->seq_len = t->o.seq_len > 0 ? t->o.seq_len : (c->max_seq_len < 512 ? c->max_seq_len : 512);
    if (t->seq_len > c->max_seq_len && !t->o.quiet)
        mt_progress_message(MT_PROGRESS_WARNING, "--seq-len %d exceeds the model's context length %d", t->seq_len, c->max_seq_len);
    s = mt_schedule_parse(t->o.schedule ? t->o.schedule : "cosine", &t->loop.sched);
    if (s == MT_OK) s = load_datasets(t, data_path);
    if (s == MT_OK) s = setup_template(t);
    if (s == MT_OK) s = prepare_data(t);
    if (s) return s;
    plan_steps(t);
    if ((s = t->what->setup(t))) return s;
    t->ckpt_dir = mt_path_join(t->o.out_dir, "checkpoints");
    return t->ckpt_dir ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
}

static mt_status allocate(mt_trainer *t) {
    size_t n = (size_t)t->o.grad_accum * t->o.batch * t->seq_len;
    t->inputs = malloc(n * sizeof(int));
    t->targets = malloc(n * sizeof(int));
    t->pos = malloc(n * sizeof(int));
    t->doc = malloc(n * sizeof(int));
    if (!t->inputs || !t->targets || !t->pos || !t->doc) return mt_error(MT_ERR_NOMEM, "out of memory for batches");
    mt_status s = mt_train_create_flags(t->m, t->o.batch, t->seq_len, state_flags(t), &t->state);
    if (s == MT_OK && t->lora) s = mt_train_set_trainable(t->state, NULL, 0); /* frozen base */
    if (s == MT_OK) s = mt_adamw_init(&t->opt, mt_finetune_trainable_count(t), t->o.lr, 0.9f, 0.999f, 1e-8f, t->o.weight_decay);
    if (s == MT_OK && t->rows)
        s = mt_adamw_init(&t->rows_opt, (size_t)(1 + t->rows->untied) * t->rows->n * t->rows->dim, t->o.lr, 0.9f,
                          0.999f, 1e-8f, 0.0f);
    return s;
}

static mt_status maybe_eval(mt_trainer *t, mt_train_log *log, int force) {
    if (t->eval.n == 0 || (!force && (t->eval_every <= 0 || t->loop.step % t->eval_every != 0))) return MT_OK;
    mt_status s = eval_loss(t, &t->last_eval);
    if (s == MT_OK) mt_train_log_eval(log, t->loop.step, t->last_eval);
    return s;
}

/* After a step: the metrics window (a line every log_every steps), the progress event, evals. */
static mt_status after_step(void *self, mt_loop *l, double grad_norm, float lr) {
    mt_trainer *t = self;
    mt_train_log *log = t->log;
    t->window_loss += l->loss;
    t->window_steps++;
    t->window_tokens += l->tokens_per_step;
    double now = mt_now_seconds(), tps = t->window_tokens / fmax(now - t->window_start, 1e-9);
    int log_now = l->step % (t->o.log_every > 0 ? t->o.log_every : 1) == 0 || l->step == l->total_steps;
    mt_progress p = {.kind = MT_PROGRESS_STEP, .step = l->step, .total_steps = l->total_steps, .loss = l->loss,
                     .lr = lr, .tokens_per_s = tps, .elapsed_s = now - log->start_time, .logged = log_now};
    if (log_now) {
        t->res->train_loss = t->window_loss / t->window_steps;
        mt_train_log_step(log, l->step, t->res->train_loss, lr, grad_norm, tps, 1);
        t->window_loss = 0, t->window_steps = 0, t->window_tokens = 0, t->window_start = now;
        p.window_loss = t->res->train_loss, p.grad_norm = grad_norm;
    }
    mt_progress_emit(&p);
    return maybe_eval(t, log, 0);
}

static mt_status checkpoint(void *self, mt_loop *l) {
    (void)l;
    return save_checkpoint(self);
}

static mt_status finish(mt_trainer *t, mt_train_log *log) {
    mt_status s = MT_OK;
    if (t->eval.n > 0 && t->loop.step % (t->eval_every > 0 ? t->eval_every : 1) != 0) s = maybe_eval(t, log, 1);
    if (s == MT_OK) s = save_checkpoint(t);
    /* DIR/adapter or DIR/model appears whole (or keeps its previous state) even if the disk
     * fills or the process dies mid-save: written beside it, then renamed into place */
    if (s || mt_dist_rank(t->o.dist) != 0) return s ? s : mt_dist_agree(t->o.dist, MT_OK); /* dist: rank 0 writes */
    char *dir = mt_path_join(t->o.out_dir, t->what->out_name);
    mt_atomic_dir out = {0};
    if (s == MT_OK) s = dir ? mt_atomic_dir_open(&out, dir) : mt_error(MT_ERR_NOMEM, "out of memory");
    if (s == MT_OK) s = t->what->save(t, out.tmp_path);
    if (out.tmp_path) {
        if (s == MT_OK) s = mt_atomic_dir_commit(&out);
        else mt_atomic_dir_abort(&out);
    }
    if (s == MT_OK && !t->o.quiet) mt_progress_message(MT_PROGRESS_INFO, "saved %s", dir);
    free(dir);
    return mt_dist_agree(t->o.dist, s);
}

static mt_status run(mt_trainer *t, const char *data_path, mt_train_result *res) {
    mt_dist *d = t->o.dist;
    int root = mt_dist_rank(d) == 0;
    mt_status s = setup(t, data_path);
    /* dist: every rank set up, with the same options, data and model as rank 0 */
    s = mt_dist_agree(d, s);
    if (s == MT_OK) s = mt_dist_check_run(d, &t->o, t->seq_len, &t->packed, &t->packed_eval, t->m, t->lora, t->rows);
    if (s) return s;
    if (t->o.dry_run) {
        print_dry_run(t);
        return MT_OK;
    }
    s = root ? mt_mkdir_p(t->o.out_dir) : MT_OK; /* dist: rank 0 alone writes */
    if (s == MT_OK) s = allocate(t);
    if (s == MT_OK && mt_dist_is_multi(d))
        s = mt_dist_grad_map_init(&t->gmap, d, t->m, t->lora, t->lora ? &t->state->lora_grads : &t->state->grads);
    if ((s = mt_dist_agree(d, s))) return s;
    t->o.resume = root ? mt_checkpoint_start(t->ckpt_dir, t->o.resume) : 0;
    t->o.resume = mt_dist_max_int(d, t->o.resume);
    if (t->o.resume && (s = resume_from_checkpoint(t))) return s;
    mt_infer_free(t->m); /* weights change: any KV cache is stale */
    mt_train_log log;
    if (root) s = mt_train_log_open(&log, t->o.out_dir, t->loop.total_steps, t->o.quiet, t->o.resume, t->loop.step);
    else memset(&log, 0, sizeof log), log.start_time = mt_now_seconds(), log.total_steps = t->loop.total_steps;
    if ((s = mt_dist_agree(d, s))) {
        if (root) mt_train_log_close(&log, NULL);
        return s;
    }
    if (!t->o.quiet)
        mt_progress_message(MT_PROGRESS_INFO, "%d examples, %ld target tokens, %ld rows of %d per epoch, %ld steps from step %ld",
                t->data.n, t->packed.targets_total, t->rows_per_epoch, t->seq_len, t->loop.total_steps, t->loop.step);
    if (!t->o.resume) s = maybe_eval(t, &log, 1);
    double t0 = mt_now_seconds();
    t->log = &log;
    t->res = res;
    t->window_start = t0;
    /* the loop over this file's step and reports, with what trains from full.c or lora.c */
    mt_train_method method = {.name = t->what->name, .compute_gradients = compute_gradients, .gradients = t->what->gradients,
                              .update = t->what->update, .after_step = after_step, .save_checkpoint = checkpoint};
    if (s == MT_OK) s = mt_loop_run(&t->loop, &method, t);
    res->interrupted = t->loop.interrupted;
    res->seconds = mt_now_seconds() - t0;
    if (s == MT_OK && !res->interrupted) s = finish(t, &log);
    mt_status s2 = mt_train_log_close(&log, root ? t->o.out_dir : NULL);
    return s ? s : s2;
}

mt_status mt_finetune_train(mt_model *m, const char *data_path, const mt_train_options *opts, mt_train_result *res) {
    mt_trainer t = {.m = m, .o = *opts, .last_eval = NAN};
    mt_status s = run(&t, data_path, res);
    res->steps = t.loop.step;
    res->tokens = t.loop.tokens;
    res->eval_loss = t.last_eval;
    trainer_free(&t);
    return s;
}
