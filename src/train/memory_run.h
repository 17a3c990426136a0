/* The state of a memory-tuning run (memory.c), shared with its checkpoints (memory_ckpt.c). */
#ifndef MT_TRAIN_MEMORY_RUN_H
#define MT_TRAIN_MEMORY_RUN_H
#include "memtune.h"
#include <stdio.h>
#include "core/rng.h"
#include "model/adapter.h"
#include "model/mome.h"
#include "model/train_model.h"
#include "dataset/batch.h"
#include "template/chat_template.h"
#include "dataset/data.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/sparse_adam.h"
#include "train/loop.h"

typedef struct {
    mt_model *m;
    mt_train_options o;
    mt_dataset data;
    mt_chat_template *tpl;
    mt_seq_builder b;
    mt_token_seq *facts;       /* one rendered sequence per fact */
    int n_facts, T, B;
    unsigned char *memorised;  /* at the last check */
    double *fact_nll, *fact_max_nll;
    double *fact_margin;       /* the smallest logit margin over its answer positions (< 0: not exact) */
    int *order, cursor;        /* seeded shuffle of the facts, the next to visit */
    mt_rng rng;
    mt_train_state *state;
    int *inputs, *targets, *pos, *doc;
    float *weight;
    /* what trains */
    mt_token_rows *rows;
    mt_mome *mome;
    mt_lora *lora;
    mt_adamw rows_opt, router_opt, lora_opt;
    mt_sparse_adam bank_opt;
    mt_sparse_rows gathered;
    long *slot_ids;
    /* general text */
    int *general_ids, n_general;      /* scored: the guard's perplexity */
    int *distill_ids, n_distill_rows; /* disjoint text distilled on: rows of T tokens */
    int distill_owned;                /* sampled apart (else: in general_ids' array) */
    int *base_ids;                    /* the base's top-k next-token distribution at every */
    float *base_p;                    /* position of those rows [rows, T, DISTILL_K] */
    int *soft_ids;                    /* a step's soft targets [B, T, DISTILL_K] */
    float *soft_p;
    mt_soft_targets soft;
    int distill_cursor, guard_trips;
    float distill_weight;
    double ppl_base, ppl_last;
    /* progress */
    mt_loop loop;             /* step, tokens, the schedule (lr over steps, decays to 0 at --steps) */
    int check_every;          /* steps between checks of all facts */
    int all_ok_checks, n_ok;  /* consecutive checks with every fact memorised; at the last check */
    int n_exact;              /* facts whose greedy answer was exact at the last check */
    char *ckpt_dir;           /* DIR/checkpoints */
    FILE *metrics;            /* DIR/metrics.jsonl: a line per check (appended on resume) */
    double t0, last_loss;     /* when this process started the run; the last step's loss */
    double seconds_before;    /* spent before a resume */
    mt_mome_options mome_opts; /* what made r->mome (recreates its initial bank) */
    char auto_sites[128];      /* the default sites' list (mome_opts.sites may point here) */
    /* The best check so far with general perplexity within the limit: most facts exact, then
     * most memorised (the later check wins a tie: then the last check is often the best, stored once). Its trained values: the dense parts (router,
     * token rows, LoRA) whole, the bank's rows that had changed by then. */
    struct {
        int have, exact, memorised;
        long step, n_rows;
        double ppl;
        float *dense;         /* [mt_memory_dense_size] */
        long *row_ids;        /* [n_rows] bank row ids site·N + e */
        float *rows;          /* [n_rows, 2C] */
        long cap;             /* rows allocated */
    } best;
} memory_run;

/* A fact's prompt and its answer. */
static inline const char *fact_input(const mt_example *e) { return e->messages[e->n_messages - 2].content; }
static inline const char *fact_output(const mt_example *e) { return e->messages[e->n_messages - 1].content; }

/* The completion rule (README: Memory tuning): a fact is memorised, recalled robustly, when at
 * every answer position its token leads the runner-up by at least --margin logits (greedy
 * decoding then returns it, and keeps returning it under changes to the logits smaller than
 * the margin: more training, rounding, the KV-cache path), and, with --tau > 0, every
 * answer-token NLL is at most tau. */
static inline int robust(const memory_run *r, double min_margin, double max_nll) {
    return min_margin > 0 && min_margin >= r->o.margin && (r->o.tau <= 0 || max_nll <= r->o.tau);
}

/* Answers every fact by real greedy decoding; writes DIR/facts.jsonl; returns the recall. A stop
 * request ends it between two facts (*stopped = 1): facts.jsonl is then left as it was. */
mt_status mt_memory_final_answers(memory_run *r, double *recall, double *mean_nll, double *max_nll, int *stopped);
/* DIR/report.json; restored_step: the best check's step the adapter keeps, else -1. */
mt_status mt_memory_write_report(memory_run *r, const char *status, double recall, double mean_nll, double max_nll,
                                 double seconds, long restored_step);
/* DIR/adapter: token rows, memory experts, LoRA (whole or absent, core/atomic_dir.h). */
mt_status mt_memory_save_adapter(memory_run *r);

/* Floats of the dense trained parts: router, token rows, LoRA. */
size_t mt_memory_dense_size(const memory_run *r);
/* After a check: keeps the state as the best when it is (see above). */
mt_status mt_memory_best_consider(memory_run *r);
/* Keeps the current state and last check as the best (a checkpoint whose best check is its
 * own step stores it once: the resume takes it from the restored state). */
mt_status mt_memory_best_snapshot(memory_run *r);
/* At the end: when the best check beats the last one on recall, puts its values back (rows
 * changed after it return to their initial values) and its general perplexity; *restored = 1.
 * The caller then re-checks the facts (per-fact figures, exact and memorised counts). */
mt_status mt_memory_best_restore(memory_run *r, int *restored);
void mt_memory_best_free(memory_run *r);
/* Test hook: negates the trained bank and token rows (the checks after it fall). */
void mt_memory_test_forget(memory_run *r);

/* Writes DIR/checkpoints/step-N.ckpt (atomic) with everything the next step depends on:
 * the trained parameters and their optimizer state (the bank's rows that have state, not the
 * whole bank: the rest is still its seeded initial value), the schedule's position and the
 * last check's verdicts; prunes to --keep-checkpoints. seconds: the run's time so far. */
mt_status mt_memory_checkpoint_save(memory_run *r, double seconds);
/* Restores the newest valid checkpoint into a run set up with the same data and settings
 * (else MT_ERR_MISMATCH naming what differs); r->seconds_before gets its time. */
mt_status mt_memory_checkpoint_resume(memory_run *r);

#endif
