/* The trainer's state (see trainer.c). Public entry points are mt_train/mt_train_run. */
#ifndef MT_TRAIN_TRAINER_H
#define MT_TRAIN_TRAINER_H
#include "memtune.h"
#include "model/train_model.h"
#include "dataset/batch.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/dist_train.h"

#define MT_MAX_TENSORS 8192

typedef struct {
    mt_model *m;
    mt_train_options o;
    mt_dataset data, eval;
    mt_chat_template *tpl;
    char *template_source;
    mt_seq_builder builder;
    mt_packed_data packed, packed_eval;
    mt_epoch_plan plan;
    int plan_epoch;
    int seq_len, pad_id;
    long rows_per_epoch, total_steps, eval_every;
    long step, rows_done, tokens;
    int data_epoch, data_row;   /* the data cursor: next row to train on */
    double last_eval;
    /* the metrics line's averaging window: losses summed since the last logged step; in the
     * checkpoint, so the line that spans a resume averages the same steps */
    double window_loss;
    int window_steps;
    mt_schedule_kind sched;
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

#endif
