/* The trainer: data -> packed rows -> forward/backward over micro-batches -> clipped AdamW
 * step on a schedule, with metrics, evals and atomic checkpoints, and a clean stop on the
 * options' stop flag (or the progress callback's word) that saves first. It reports through
 * the progress callback (train/progress.h) and never prints. It is independent of which
 * parameters train: the method decides the trainable tensors, the loop only follows the
 * flags. */
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
#include "train/memory.h"
#include "train/progress.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mt_train_options_default(mt_train_options *o) {
    memset(o, 0, sizeof *o);
    o->method = "auto";
    o->out_dir = "memtune-out";
    o->epochs = 3;
    o->lr = 0; /* the method's default */
    o->batch = 4;
    o->grad_accum = 1;
    o->schedule = NULL; /* the method's: cosine, constant for memory tuning */
    o->clip = 1.0f;
    o->save_every = 100;
    o->log_every = 10;
    o->keep_checkpoints = 2;
    o->seed = 1;
    o->shuffle = 1;
    o->eval_every = -1; /* -1: choose (10 evals per run) */
    o->lora_rank = 8;
    o->lora_alpha = 16;
    o->experts = -1; /* memory: sized from the facts and the model */
    o->expert_k = 8;
    o->expert_heads = 4;
    o->expert_context = 32;
    o->tau = 0; /* memory: the NLL bound is off; the margin decides */
    o->margin = 2.0f;
    o->general_limit = 1.05f;
    o->general_weight = 1.0f;
    o->rehearsal_weight = 0.25f;
    o->memory_lora = 1;
}

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
    if (t->o.steps > 0) t->total_steps = t->o.steps;
    else t->total_steps = (t->rows_per_epoch * t->o.epochs + rows_per_step - 1) / rows_per_step;
    if (t->total_steps < 1) t->total_steps = 1;
    t->eval_every = t->o.eval_every >= 0 ? t->o.eval_every : (t->total_steps >= 10 ? t->total_steps / 10 : 1);
}

static int is_lora(const mt_trainer *t) { return !strcmp(t->o.method, "lora"); }

/* the parameters the optimizer updates */
static size_t trainable_count(const mt_trainer *t) { return t->lora ? t->lora->n_params : t->m->n_params; }

static int state_flags(const mt_trainer *t) { return t->o.recompute ? MT_TRAIN_RECOMPUTE : 0; }

static size_t memory_plan(const mt_trainer *t, size_t *acts) {
    const mt_config *c = &t->m->cfg;
    size_t adapter = t->lora ? t->lora->n_params * sizeof(float) : 0;
    /* an adapter adds its weights, gradients and [B*T, rank] scratch to the state, and a
     * frozen base has no parameter gradients */
    *acts = mt_train_state_bytes_flags(c, t->o.batch, t->seq_len, state_flags(t)) + adapter +
            (t->lora ? 2 * (size_t)t->o.batch * t->seq_len * t->lora->rank * sizeof(float) + adapter : 0);
    if (t->lora) *acts -= mt_config_param_count(c) * sizeof(float);
    size_t params = mt_model_weight_bytes(t->m), trained = trainable_count(t) * sizeof(float);
    /* weights + activations/grads state + two AdamW moments + batch buffers */
    return params + *acts + 2 * trained + (size_t)4 * t->o.grad_accum * t->o.batch * t->seq_len * sizeof(int);
}

static void print_dry_run(const mt_trainer *t) {
    size_t acts, total = memory_plan(t, &acts), params = mt_model_weight_bytes(t->m);
    size_t trained = trainable_count(t);
    /* dist: the memory plan is per rank; what a step exchanges */
    char dist[512] = "";
    int K = mt_dist_size(t->o.dist);
    if (K > 1) {
        size_t grad = (trainable_count(t) + (t->rows ? (size_t)(1 + t->rows->untied) * t->rows->n * t->rows->dim : 0)) * sizeof(float);
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
           t->packed.targets_total, t->packed.n_truncated, t->seq_len, t->rows_per_epoch, t->total_steps,
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

/* AdamW on the trainable tensors; weight decay on matrices only (not norms or biases). */
static void optimizer_step(mt_trainer *t) {
    if (t->rows) {
        mt_adamw_begin_step(&t->rows_opt);
        t->rows_opt.lr = t->opt.lr;
        mt_adamw_update(&t->rows_opt, t->rows->values, t->state->row_grads, 0, t->rows_opt.n, 0.0f);
        mt_token_rows_sync(t->rows);
    }
    if (t->lora) { /* only the adapter trains; every adapter tensor is a matrix */
        mt_adamw_begin_step(&t->opt);
        mt_adamw_update(&t->opt, t->lora->params, t->state->lora_grads, 0, t->lora->n_params, t->o.weight_decay);
        return;
    }
    mt_tensor_ref refs[MT_MAX_TENSORS];
    int n = mt_model_tensors(t->m, refs, MT_MAX_TENSORS);
    mt_adamw_begin_step(&t->opt);
    for (int i = 0; i < n && i < MT_MAX_TENSORS; i++) {
        if (!t->state->trainable[i]) continue;
        size_t begin = (size_t)(refs[i].data - t->m->params), len = (size_t)refs[i].rows * refs[i].cols;
        float wd = refs[i].is_vector ? 0.0f : t->o.weight_decay;
        mt_adamw_update(&t->opt, t->m->params, t->state->grads, begin, begin + len, wd);
    }
}

/* The global norm over every trained gradient (adapter or model, token rows), clipped to
 * --clip; returns the norm before clipping. */
static double clip_gradients(mt_trainer *t) {
    float *g[2] = {t->lora ? t->state->lora_grads : t->state->grads, t->rows ? t->state->row_grads : NULL};
    size_t n[2] = {trainable_count(t), t->rows ? t->rows_opt.n : 0};
    double sq = 0;
    for (int k = 0; k < 2; k++) {
        double norm = g[k] ? mt_grad_norm(g[k], n[k]) : 0;
        sq += norm * norm;
    }
    double norm = sqrt(sq);
    if (t->o.clip > 0 && norm > t->o.clip) {
        float f = (float)(t->o.clip / (norm + 1e-6));
        for (int k = 0; k < 2; k++)
            for (size_t i = 0; g[k] && i < n[k]; i++) g[k][i] *= f;
    }
    return norm;
}

/* One optimizer step over grad_accum micro-batches, the loss normalised by the target
 * tokens of all of them, so accumulation equals one larger batch. */
static mt_status train_step(mt_trainer *t, double *loss, double *grad_norm, float *lr) {
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
        t->state->dropout_key = t->o.seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)t->step << 20) ^ (uint64_t)g ^
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
    /* dist: every rank's gradients (and token-row gradients) and losses summed */
    if (mt_dist_is_multi(d)) {
        mt_status s = mt_dist_exchange_finish(d, t->rows ? t->state->row_grads : NULL, t->rows ? t->rows_opt.n : 0);
        if (s == MT_OK) s = mt_dist_sum_double(d, &nll_sum, 1);
        if (s) return s;
    }
    *grad_norm = clip_gradients(t);
    *lr = mt_schedule_lr(t->sched, t->o.lr, t->step, t->o.warmup, t->total_steps);
    t->opt.lr = *lr;
    optimizer_step(t);
    t->rows_done += (long)G * B * mt_dist_size(d); /* dist: global rows and tokens */
    t->step++;
    t->tokens += (long)G * B * T * mt_dist_size(d);
    *loss = total_targets ? nll_sum / total_targets : 0.0;
    if (!isfinite(*loss)) mt_dist_error_shared(d, mt_dist_rank(d) == 0); /* dist: every rank sees the global loss */
    if (!isfinite(*loss)) return mt_error(MT_ERR_ARG, "loss became %f at step %ld: lower --lr", *loss, t->step);
    return MT_OK;
}

/* ---- checkpoints ------------------------------------------------------------------------ */

static char *state_json(const mt_trainer *t) {
    /* a double's %.17g text (jansson's) reads back to the same bits */
    json_t *o = json_pack("{s:s, s:I, s:I, s:i, s:i, s:I, s:I, s:i, s:i, s:i, s:I, s:f, s:i, s:i}", "method", t->o.method,
                          "step", (json_int_t)t->step, "rows_done", (json_int_t)t->rows_done,
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
    size_t bytes = trainable_count(t) * sizeof(float);
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
    mt_status s = mt_check_finite_weights(t->lora ? t->lora->params : t->m->params, trainable_count(t), t->step);
    if (s == MT_OK && t->rows) s = mt_check_finite_weights(t->rows->values, t->rows_opt.n, t->step);
    if (s) {
        mt_dist_error_shared(t->o.dist, mt_dist_rank(t->o.dist) == 0); /* the same weights on every rank */
        return s;
    }
    if (mt_dist_rank(t->o.dist) != 0) return mt_dist_agree(t->o.dist, MT_OK); /* dist: rank 0 writes */
    s = mt_mkdir_p(t->ckpt_dir);
    if (s) return mt_dist_agree(t->o.dist, s);
    char *json = state_json(t), *path = mt_checkpoint_path(t->ckpt_dir, t->step);
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
        t->step = json_long(st, "step");
        t->rows_done = json_long(st, "rows_done");
        t->data_epoch = (int)json_long(st, "data_epoch");
        t->data_row = (int)json_long(st, "data_row");
        /* checkpoints from before the window was saved have none: the window starts empty */
        json_t *wl = json_object_get(st, "log_window_loss");
        long ws = json_long(st, "log_window_steps");
        t->window_loss = json_is_number(wl) ? json_number_value(wl) : 0;
        t->window_steps = json_is_number(wl) && ws > 0 && ws <= t->step ? (int)ws : 0;
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
        if (!t->o.quiet) mt_progress_message(MT_PROGRESS_INFO, "resumed from %s (step %ld)", path, t->step);
    }
    if (s) mt_dist_error_shared(t->o.dist, mt_dist_rank(t->o.dist) == 0); /* dist: the same checkpoint everywhere */
    json_decref(st);
    free(json);
    free(path);
    return s;
}

/* ---- the run ---------------------------------------------------------------------------- */

/* ---- trainable token rows ---------------------------------------------------------------- */

static int add_id(int *ids, int n, int id) {
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return n;
    ids[n] = id;
    return n + 1;
}

/* "auto": EOS and every control/user-defined token in the rendered data except BOS (which
 * starts every text, so changing it would change the model everywhere). */
static int auto_token_ids(const mt_trainer *t, int *ids, int cap) {
    int n = 0, bos = t->builder.bos_id;
    if (t->builder.eos_id >= 0) n = add_id(ids, n, t->builder.eos_id);
    for (int i = 0; i < t->packed.n_seqs && n < cap; i++) {
        const mt_token_seq *q = &t->packed.seqs[i];
        for (int k = 0; k < q->n && n < cap; k++) {
            int type = mt_tokenizer_type(t->m->tok, q->ids[k]);
            if (q->ids[k] != bos && (type == MT_TOKTYPE_CONTROL || type == MT_TOKTYPE_USER_DEFINED))
                n = add_id(ids, n, q->ids[k]);
        }
    }
    return n;
}

static mt_status parse_token_ids(const char *list, int *ids, int cap, int *n) {
    *n = 0;
    for (const char *p = list; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < 0 || v > INT32_MAX)
            return mt_error(MT_ERR_ARG, "--trainable-tokens: expected auto, none or a comma list of token ids, got \"%s\"", list);
        if (*n == cap) return mt_error(MT_ERR_ARG, "--trainable-tokens: more than %d ids", cap);
        *n = add_id(ids, *n, (int)v);
        p = *end ? end + 1 : end;
    }
    return MT_OK;
}

#define MAX_AUTO_ROWS 256

static mt_status setup_token_rows(mt_trainer *t) {
    const char *spec = t->o.trainable_tokens ? t->o.trainable_tokens : "auto";
    if (!strcmp(spec, "none")) return MT_OK;
    int ids[MAX_AUTO_ROWS], n;
    mt_status s = MT_OK;
    if (!strcmp(spec, "auto")) n = auto_token_ids(t, ids, MAX_AUTO_ROWS);
    else s = parse_token_ids(spec, ids, MAX_AUTO_ROWS, &n);
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

static mt_status setup(mt_trainer *t, const char *data_path) {
    mt_config *c = &t->m->cfg;
    if (!t->m->tok) return mt_error(MT_ERR_ARG, "the model has no tokenizer (give one with --tokenizer)");
    if (strcmp(t->o.method, "full") && !is_lora(t))
        return mt_error(MT_ERR_UNSUPPORTED, "unknown --method '%s' (this build trains: full, lora, memory)", t->o.method);
    if (!is_lora(t) && t->m->lora)
        return mt_error(MT_ERR_ARG, "--method full with an adapter attached: merge it first (mt_lora_merge)");
    t->seq_len = t->o.seq_len > 0 ? t->o.seq_len : (c->max_seq_len < 512 ? c->max_seq_len : 512);
    if (t->seq_len > c->max_seq_len && !t->o.quiet)
        mt_progress_message(MT_PROGRESS_WARNING, "--seq-len %d exceeds the model's context length %d", t->seq_len, c->max_seq_len);
    mt_status s = mt_schedule_parse(t->o.schedule ? t->o.schedule : "cosine", &t->sched);
    if (s == MT_OK) s = load_datasets(t, data_path);
    if (s == MT_OK) s = setup_template(t);
    if (s == MT_OK) s = prepare_data(t);
    if (s) return s;
    plan_steps(t);
    const char *bd = t->o.base_dtype ? t->o.base_dtype : "f32";
    if (!is_lora(t) && strcmp(bd, "f32"))
        return mt_error(MT_ERR_ARG, "--base-dtype %s needs --method lora (full fine-tuning trains the base in f32)", bd);
    if (is_lora(t) && (s = mt_model_set_base_dtype(t->m, bd))) return s;
    if (!is_lora(t) && (s = mt_model_set_base_dtype(t->m, "f32"))) return s; /* a kept GGUF base trains as f32 */
    if (is_lora(t) && ((s = setup_token_rows(t)) || (s = setup_lora(t)))) return s;
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
    if (s == MT_OK) s = mt_adamw_init(&t->opt, trainable_count(t), t->o.lr, 0.9f, 0.999f, 1e-8f, t->o.weight_decay);
    if (s == MT_OK && t->rows)
        s = mt_adamw_init(&t->rows_opt, (size_t)(1 + t->rows->untied) * t->rows->n * t->rows->dim, t->o.lr, 0.9f,
                          0.999f, 1e-8f, 0.0f);
    return s;
}

static mt_status maybe_eval(mt_trainer *t, mt_train_log *log, int force) {
    if (t->eval.n == 0 || (!force && (t->eval_every <= 0 || t->step % t->eval_every != 0))) return MT_OK;
    mt_status s = eval_loss(t, &t->last_eval);
    if (s == MT_OK) mt_train_log_eval(log, t->step, t->last_eval);
    return s;
}

/* The step is done, its checkpoint written: a safe point (the CLI's crash test kills here). */
static void step_end(const mt_trainer *t) {
    mt_progress p = {.kind = MT_PROGRESS_STEP_END, .step = t->step, .total_steps = t->total_steps};
    mt_progress_emit(&p);
}

static mt_status train_loop(mt_trainer *t, mt_train_log *log, mt_train_result *res) {
    double t_window = mt_now_seconds();
    long window_tokens = 0;
    mt_status s = MT_OK;
    while (s == MT_OK && t->step < t->total_steps) {
        double loss, gnorm;
        float lr;
        long tokens_before = t->tokens;
        double t_step = mt_now_seconds();
        s = train_step(t, &loss, &gnorm, &lr);
        if (s) break;
        mt_dist_count_step(t->o.dist, mt_now_seconds() - t_step); /* dist: the share spent communicating */
        t->window_loss += loss;
        t->window_steps++;
        window_tokens += t->tokens - tokens_before;
        double now = mt_now_seconds(), tps = window_tokens / fmax(now - t_window, 1e-9);
        int log_now = t->step % (t->o.log_every > 0 ? t->o.log_every : 1) == 0 || t->step == t->total_steps;
        mt_progress p = {.kind = MT_PROGRESS_STEP, .step = t->step, .total_steps = t->total_steps, .loss = loss,
                         .lr = lr, .tokens_per_s = tps, .elapsed_s = now - log->start_time, .logged = log_now};
        if (log_now) {
            res->train_loss = t->window_loss / t->window_steps;
            mt_train_log_step(log, t->step, res->train_loss, lr, gnorm, tps, 1);
            t->window_loss = 0, t->window_steps = 0, window_tokens = 0, t_window = now;
            p.window_loss = res->train_loss, p.grad_norm = gnorm;
        }
        mt_progress_emit(&p);
        s = maybe_eval(t, log, 0);
        int stop = mt_dist_max_int(t->o.dist, mt_progress_stop_requested()); /* dist: one rank's stop stops all */
        if (s == MT_OK && (stop || (t->o.save_every > 0 && t->step % t->o.save_every == 0)))
            s = save_checkpoint(t);
        if (s == MT_OK && stop) {
            res->interrupted = 1;
            mt_progress emitted = {.kind = MT_PROGRESS_STOPPED, .step = t->step, .total_steps = t->total_steps};
            mt_progress_emit(&emitted);
            break;
        }
        step_end(t);
    }
    return s;
}

static mt_status finish(mt_trainer *t, mt_train_log *log) {
    mt_status s = MT_OK;
    if (t->eval.n > 0 && t->step % (t->eval_every > 0 ? t->eval_every : 1) != 0) s = maybe_eval(t, log, 1);
    if (s == MT_OK) s = save_checkpoint(t);
    /* the template used in training travels with the model */
    if (s == MT_OK && !t->lora && !t->m->chat_template && !(t->m->chat_template = strdup(t->template_source)))
        s = mt_error(MT_ERR_NOMEM, "out of memory");
    /* DIR/adapter or DIR/model appears whole (or keeps its previous state) even if the disk
     * fills or the process dies mid-save: written beside it, then renamed into place */
    if (s || mt_dist_rank(t->o.dist) != 0) return s ? s : mt_dist_agree(t->o.dist, MT_OK); /* dist: rank 0 writes */
    char *dir = s ? NULL : mt_path_join(t->o.out_dir, t->lora ? "adapter" : "model");
    mt_atomic_dir out = {0};
    if (s == MT_OK) s = dir ? mt_atomic_dir_open(&out, dir) : mt_error(MT_ERR_NOMEM, "out of memory");
    if (s == MT_OK && t->lora) {
        s = mt_lora_save(t->lora, t->m, out.tmp_path, NULL);
        if (s == MT_OK && t->rows) s = mt_token_rows_save(t->rows, out.tmp_path);
    } else if (s == MT_OK) {
        s = mt_model_save(t->m, out.tmp_path, MT_FORMAT_HF);
    }
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
    if (root) s = mt_train_log_open(&log, t->o.out_dir, t->total_steps, t->o.quiet, t->o.resume, t->step);
    else memset(&log, 0, sizeof log), log.start_time = mt_now_seconds(), log.total_steps = t->total_steps;
    if ((s = mt_dist_agree(d, s))) {
        if (root) mt_train_log_close(&log, NULL);
        return s;
    }
    if (!t->o.quiet)
        mt_progress_message(MT_PROGRESS_INFO, "%d examples, %ld target tokens, %ld rows of %d per epoch, %ld steps from step %ld",
                t->data.n, t->packed.targets_total, t->rows_per_epoch, t->seq_len, t->total_steps, t->step);
    if (!t->o.resume) s = maybe_eval(t, &log, 1);
    double t0 = mt_now_seconds();
    if (s == MT_OK) s = train_loop(t, &log, res);
    res->seconds = mt_now_seconds() - t0;
    if (s == MT_OK && !res->interrupted) s = finish(t, &log);
    mt_status s2 = mt_train_log_close(&log, root ? t->o.out_dir : NULL);
    return s ? s : s2;
}

/* "auto": memory tuning when every example is a {"input","output"} fact, else full. */
static mt_status resolve_method(mt_train_options *o, const char *data_path) {
    if (o->method && strcmp(o->method, "auto")) return MT_OK;
    mt_dataset ds = {0};
    mt_status s = data_path ? mt_dataset_load_jsonl(&ds, data_path, o->skip_bad_lines) : MT_OK;
    if (!s && o->data_text) s = mt_dataset_load_jsonl_text(&ds, "examples", o->data_text, strlen(o->data_text), o->skip_bad_lines);
    for (int i = 0; !s && i < o->n_data; i++) s = mt_dataset_load_jsonl(&ds, o->data[i], o->skip_bad_lines);
    int facts = !s && ds.n > 0;
    for (int i = 0; facts && i < ds.n; i++) facts = ds.items[i].is_fact;
    mt_dataset_free(&ds);
    o->method = facts ? "memory" : "full";
    return s;
}

mt_status mt_train_run(mt_model *m, const char *data_path, const mt_train_options *opts, mt_train_result *res) {
    mt_train_result local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    res->eval_loss = NAN;
    res->perplexity_ratio = NAN;
    mt_trainer t = {.m = m, .last_eval = NAN};
    if (opts) t.o = *opts;
    else mt_train_options_default(&t.o);
    mt_dist_error_reset(t.o.dist);
    if (!data_path && !t.o.data_text) return mt_error(MT_ERR_ARG, "no training data: give a JSONL file or examples in memory");
    mt_status rs = mt_train_options_validate(m, &t.o);
    if (rs) mt_dist_error_shared(t.o.dist, mt_dist_rank(t.o.dist) == 0); /* dist: the same options on every rank */
    if (rs == MT_OK) rs = resolve_method(&t.o, data_path);
    if (rs) return rs;
    int memory = !strcmp(t.o.method, "memory");
    if (memory && mt_dist_is_multi(t.o.dist)) { /* dist: not yet */
        mt_dist_error_shared(t.o.dist, mt_dist_rank(t.o.dist) == 0);
        return mt_error(MT_ERR_UNSUPPORTED, "--method memory does not run on several ranks yet (data-parallel "
                        "training covers --method full and lora): run it as one process");
    }
    if (!memory && t.o.lr == 0) t.o.lr = 1e-4f;
    int threads_before = mt_kernels_threads();
    if (t.o.threads) mt_set_threads(t.o.threads);
    mt_progress_begin(&t.o);
    mt_status s = memory ? mt_memory_train(m, data_path, &t.o, res, mt_progress_stop_flag()) : run(&t, data_path, res);
    mt_progress_end();
    if (t.o.threads) mt_set_threads(threads_before);
    if (!memory) {
        res->steps = t.step;
        res->tokens = t.tokens;
        res->eval_loss = t.last_eval;
    }
    trainer_free(&t);
    return s;
}

mt_status mt_train(mt_model *m, const char *data_path, const mt_train_options *opts) {
    return mt_train_run(m, data_path, opts, NULL);
}
