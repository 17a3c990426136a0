/* Supervised fine-tuning over the training loop (trainer.c), with what trains from a method:
 * full.c (the whole model) or lora.c (an adapter and token rows). mt_train_run (train.c) calls
 * mt_finetune_train for methods "full" and "lora". */
#ifndef MT_TRAIN_TRAINER_H
#define MT_TRAIN_TRAINER_H
#include "memtune.h"
#include "model/train_model.h"
#include "dataset/batch.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/dist_train.h"
#include "train/loop.h"
#include "train/train_log.h"

#define MT_MAX_TENSORS 8192

typedef struct mt_finetune_method mt_finetune_method;

typedef struct {
    mt_model *m;
    const mt_finetune_method *what; /* full or lora */
    mt_train_options o;
    mt_dataset data, eval;
    mt_chat_template *tpl;
    char *template_source;
    mt_seq_builder builder;
    mt_packed_data packed, packed_eval;
    mt_epoch_plan plan;
    int plan_epoch;
    int seq_len, pad_id;
    long rows_per_epoch, eval_every;
    mt_loop loop;               /* step, total steps, tokens, schedule, clip */
    long rows_done;
    int data_epoch, data_row;   /* the data cursor: next row to train on */
    double last_eval;
    /* the metrics line's averaging window: losses summed since the last logged step; in the
     * checkpoint, so the line that spans a resume averages the same steps */
    double window_loss;
    int window_steps;
    long window_tokens;         /* tokens and start time of the window (this process) */
    double window_start;
    mt_train_log *log;          /* the run's metrics log */
    mt_train_result *res;
    mt_train_state *state;
    mt_adamw opt;
    int *inputs, *targets, *pos, *doc; /* [grad_accum * batch * seq_len] */
    char *ckpt_dir;
    mt_lora *lora;              /* method lora: the adapter being trained (attached to m) */
    int own_lora;               /* the trainer made it: save it to out_dir/adapter, then free */
    mt_token_rows *rows;        /* lora/memory: trainable token rows (attached to m) or NULL */
    int own_rows;
    mt_adamw rows_opt;          /* their AdamW moments */
    /* dist (data-parallel training, o.dist): where the backward's finished gradients start */
    mt_dist_grad_map gmap;
} mt_trainer;

/* What trains in supervised fine-tuning; trainer.c does the rest. */
struct mt_finetune_method {
    const char *name;      /* the method: "full" or "lora" */
    const char *out_name;  /* what the end writes under out_dir: "model" or "adapter" */
    /* before the data loads: refuses what the method cannot train (may be NULL) */
    mt_status (*check)(mt_trainer *t);
    /* after the data is ready: the base's dtype, and what trains made and attached */
    mt_status (*setup)(mt_trainer *t);
    /* the loop's gradients and optimizer update (loop.h) */
    int (*gradients)(void *self, mt_grad_span *g, int cap);
    mt_status (*update)(void *self, mt_loop *l, float lr);
    /* writes what trained into the (staged) directory dir */
    mt_status (*save)(mt_trainer *t, const char *dir);
};
extern const mt_finetune_method mt_finetune_full, mt_finetune_lora;

/* The parameters the optimizer updates: the model's, or the adapter's. */
size_t mt_finetune_trainable_count(const mt_trainer *t);

/* opts: resolved (method "full" or "lora", lr set); res is filled as mt_train_run documents. */
mt_status mt_finetune_train(mt_model *m, const char *data_path, const mt_train_options *opts, mt_train_result *res);

#endif
