/* memtune train: fine-tune a model on JSONL data. The library reports through a progress
 * callback; this file prints it (a progress bar on a terminal, periodic lines otherwise),
 * turns SIGINT/SIGTERM into the run's stop flag, and drives the fault-injection hooks the
 * CLI tests use (MEMTUNE_TEST_KILL_AFTER_STEP, MEMTUNE_TEST_KILL_RANK, MEMTUNE_TEST_FORGET_AFTER_STEP,
 * MEMTUNE_TEST_CKPT_DELAY_MS, MEMTUNE_TEST_INT_IN_RECALL; MEMTUNE_TEST_EXACT_LOSS=1 prints every
 * step's loss in full precision on stderr, "exact_loss STEP LOSS") and the measurement hook
 * MEMTUNE_MARGIN_LOG.
 *
 * Under mpirun or srun (the launcher's variables in the environment) it trains data-parallel:
 * it calls mt_dist_init before loading the model and mt_dist_finalize at the end, rank 0
 * alone prints, and a failure of one rank that the others cannot know of ends the job
 * (mt_dist_abort) instead of leaving them waiting. */
#include "cli/cli.h"
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_DATA_FILES 64

static volatile sig_atomic_t stop_requested = 0;
static void on_stop_signal(int sig) { (void)sig; stop_requested = 1; }

typedef struct {
    int quiet, tty;
    long kill_after_step; /* test hook: die by SIGKILL after this step, as a crash would */
    int rank, kill_rank;  /* this process's MPI rank; the rank the hook kills (default 0) */
    int exact_loss;       /* test hook: every step's loss as %.17g */
    long int_in_recall;   /* test hook: SIGINT once the final recall has answered this many facts (-1: off) */
    const char *margin_log; /* measurement hook: a line per check with every fact's smallest margin */
} progress_printer;

/* MEMTUNE_MARGIN_LOG=FILE (bench/memory_margin.sh): a line per check with every fact's smallest
 * answer margin, from which the completion margin was chosen. */
static void log_margins(const char *path, const mt_progress *p) {
    FILE *f = path && p->fact_margins ? fopen(path, "a") : NULL;
    if (!f) return;
    fprintf(f, "{\"step\": %ld, \"margin\": [", p->step);
    for (int i = 0; i < p->facts; i++) fprintf(f, "%s%.4f", i ? ", " : "", p->fact_margins[i]);
    fprintf(f, "]}\n");
    fclose(f);
}

static void format_duration(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) snprintf(buf, n, "?");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

static void print_bar(const mt_progress *p) {
    char eta[32];
    format_duration(eta, sizeof eta, p->step > 0 ? p->elapsed_s / p->step * (p->total_steps - p->step) : -1);
    int width = 30, filled = p->total_steps ? (int)(width * p->step / p->total_steps) : 0;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '=' : i == filled ? '>' : ' ';
    bar[width] = 0;
    fprintf(stderr, "\r[%s] step %ld/%ld loss %.4f %.0f tok/s ETA %s   ", bar, p->step, p->total_steps, p->loss,
            p->tokens_per_s, eta);
    if (p->step == p->total_steps) fputc('\n', stderr);
}

static void print_step(const progress_printer *pp, const mt_progress *p) {
    if (!strcmp(p->method, "memory")) {
        if (p->logged) fprintf(stderr, "\rmemtune: step %ld loss %.5f   ", p->step, p->loss);
    } else if (pp->tty) {
        print_bar(p);
    } else if (p->logged) {
        fprintf(stderr, "step %ld/%ld loss %.4f lr %.3g grad_norm %.3g %.0f tok/s\n", p->step, p->total_steps,
                p->window_loss, p->lr, p->grad_norm, p->tokens_per_s);
    }
}

static int on_progress(const mt_progress *p, void *user) {
    progress_printer *pp = user;
    if (p->kind == MT_PROGRESS_STEP_END && p->step == pp->kill_after_step && pp->rank == pp->kill_rank) {
        if (pp->exact_loss) { /* the MPI test times from here to the end of the job */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            fprintf(stderr, "killing rank %d at %.3f\n", pp->rank, ts.tv_sec + ts.tv_nsec / 1e9);
        }
        raise(SIGKILL);
    }
    if (p->kind == MT_PROGRESS_RECALL && p->facts_answered == pp->int_in_recall) raise(SIGINT);
    if (pp->rank != 0) return 0; /* rank 0 alone prints */
    if (p->kind == MT_PROGRESS_CHECK) log_margins(pp->margin_log, p);
    if (p->kind == MT_PROGRESS_STEP && pp->exact_loss) fprintf(stderr, "exact_loss %ld %.17g\n", p->step, p->loss);
    if (p->kind == MT_PROGRESS_DRY_RUN) {
        printf("%s\n", p->message);
        return 0;
    }
    /* the library sends messages only when not --quiet, except those that always show */
    if (p->kind == MT_PROGRESS_INFO) fprintf(stderr, "memtune: %s\n", p->message);
    if (p->kind == MT_PROGRESS_WARNING) fprintf(stderr, "memtune: warning: %s\n", p->message);
    if (pp->quiet) return 0;
    switch (p->kind) {
    case MT_PROGRESS_STEP: print_step(pp, p); break;
    case MT_PROGRESS_EVAL: fprintf(stderr, "%sstep %ld eval loss %.4f\n", pp->tty ? "\n" : "", p->step, p->eval_loss); break;
    case MT_PROGRESS_CHECK:
        fprintf(stderr, "\rmemtune: step %ld: %d/%d facts memorised (%d exact), general perplexity %.4g (base %.4g), %.0f s\n",
                p->step, p->facts_memorised, p->facts, p->facts_exact, p->general_perplexity, p->base_perplexity, p->elapsed_s);
        break;
    case MT_PROGRESS_GUARD:
        fprintf(stderr, "\rmemtune: general perplexity %.4g is %.3fx the base (limit %.3g): general text weighs %g from now "
                "on\n", p->general_perplexity, p->general_ratio, p->general_limit, p->general_weight);
        break;
    case MT_PROGRESS_STOPPED:
        fprintf(stderr, "\nmemtune: stopped at step %ld; checkpoint saved, continue with --resume\n", p->step);
        break;
    default: break;
    }
    return 0;
}

static long env_long(const char *name) {
    const char *v = getenv(name);
    return v ? atol(v) : 0;
}

/* The process count when started by an MPI launcher (mpirun: OMPI_COMM_WORLD_SIZE; srun and
 * other PMI launchers: PMI_SIZE / PMIX_RANK), else 0. */
static long launched_size(void) {
    if (getenv("OMPI_COMM_WORLD_SIZE")) return env_long("OMPI_COMM_WORLD_SIZE");
    if (getenv("PMI_SIZE")) return env_long("PMI_SIZE");
    if (getenv("PMIX_RANK") || getenv("PMI_RANK")) return 1; /* size unknown until init */
    return 0;
}

/* Ends an MPI run: a rank whose failure the others share (or that succeeded) finalizes; one
 * that failed alone ends the job so no rank waits for it forever. */
static int dist_end(mt_dist *d, int code, int failed) {
    if (d && failed && mt_dist_size(d) > 1 && !mt_dist_error_agreed(d)) mt_dist_abort(d, code);
    mt_dist_finalize(d);
    return code;
}

static void print_dist_stats(const mt_dist *d) {
    mt_dist_stats st;
    mt_dist_get_stats(d, &st);
    if (st.steps == 0 || st.step_s <= 0) return;
    fprintf(stderr, "memtune: MPI: %d ranks, %.2f MB of gradients summed per step (%.2f MB sent per rank in a ring), "
            "%.1f ms per step, %.1f%% of it in communication, %.1f%% waiting for the exchange after the backward "
            "(the overlapping all-reduce ran %.1f%% of it)\n",
            mt_dist_size(d), st.grad_bytes_per_step / 1e6, st.sent_bytes_per_step / 1e6, 1e3 * st.step_s / st.steps,
            100.0 * st.comm_s / st.step_s, 100.0 * st.wait_s / st.step_s, 100.0 * st.background_s / st.step_s);
}

int cmd_train(int argc, char **argv) {
    mt_train_options o;
    mt_train_options_default(&o);
    const char *model = NULL, *tokenizer = NULL, *data[MAX_DATA_FILES] = {0};
    int n_data = 0, experts = (int)o.experts, no_memory_lora = 0, bucket_kb = 4096, no_overlap = 0;
    /* --data may repeat: collect every occurrence before the table parser sees argv */
    char *rest[512];
    int n_rest = 0;
    for (int i = 0; i < argc && n_rest < 512; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc) {
            if (n_data == MAX_DATA_FILES) {
                fprintf(stderr, "memtune: at most %d --data files\n", MAX_DATA_FILES);
                return 2;
            }
            data[n_data++] = argv[++i];
        } else rest[n_rest++] = argv[i];
    }
    const cli_opt opts[] = {
        {"--model", "-m", OPT_STRING, &model, "model to fine-tune (default: bundled stories260K)"},
        {"--tokenizer", "-z", OPT_STRING, &tokenizer, "tokenizer file"},
        {"--out", "-o", OPT_STRING, &o.out_dir, "output directory (default memtune-out)"},
        {"--method", NULL, OPT_STRING, &o.method,
         "memory (default for {\"input\",\"output\"} data) | full (default otherwise) | lora (frozen base; writes OUT/adapter)"},
        {"--experts", NULL, OPT_INT, &experts, "memory: experts per site, N (default -1: from the facts and the model; 0 = none)", CLI_LIBRARY_RANGE},
        {"--expert-k", NULL, OPT_INT, &o.expert_k, "memory: experts chosen per head per token (default 4)", CLI_LIBRARY_RANGE},
        {"--expert-heads", NULL, OPT_INT, &o.expert_heads, "memory: routing heads (default 2)", CLI_LIBRARY_RANGE},
        {"--expert-sites", NULL, OPT_STRING, &o.expert_sites, "memory: layers whose MLP output gets experts (default: all, at most 8 spread)"},
        {"--freeze-router", NULL, OPT_FLAG, &o.freeze_router, "memory: keep the router at its initialisation"},
        {"--expert-context", NULL, OPT_INT, &o.expert_context, "memory: routing context values per decay (default 32; 0 = route on the hidden state alone)", CLI_LIBRARY_RANGE},
        {"--expert-match", NULL, OPT_FLOAT, &o.expert_match, "memory: an expert answers only where the routing context matches the one it learnt at, cosine >= N (default 0.99; 0 = off)", CLI_LIBRARY_RANGE},
        {"--no-memory-lora", NULL, OPT_FLAG, &no_memory_lora, "memory: no LoRA adapter beside the experts (default: LoRA --rank, --alpha, --targets)"},
        {"--tau", NULL, OPT_FLOAT, &o.tau, "memory: also a max answer-token NLL for a memorised fact (default 0 = off)", CLI_LIBRARY_RANGE},
        {"--margin", NULL, OPT_FLOAT, &o.margin, "memory: memorised = the stored token leads by this many logits at every answer position (default 2)", CLI_LIBRARY_RANGE},
        {"--general", NULL, OPT_STRING, &o.general, "memory: general text for the perplexity guard (default: sampled from the base)"},
        {"--general-limit", NULL, OPT_FLOAT, &o.general_limit, "memory: allowed perplexity ratio to the base (default 1.05)", CLI_LIBRARY_RANGE},
        {"--general-weight", NULL, OPT_FLOAT, &o.general_weight,
         "memory: weight of general text distilled from the base, relative to the facts (default 1; 0 = off)", CLI_LIBRARY_RANGE},
        {"--check-every", NULL, OPT_INT, &o.check_every, "memory: steps between checks of all facts (default: one pass)", CLI_LIBRARY_RANGE},
        {"--rehearsal-weight", NULL, OPT_FLOAT, &o.rehearsal_weight, "memory: loss weight of memorised facts (default 0.25)", CLI_LIBRARY_RANGE},
        {"--rank", NULL, OPT_INT, &o.lora_rank, "lora: adapter rank r (default 8)", CLI_LIBRARY_RANGE},
        {"--alpha", NULL, OPT_FLOAT, &o.lora_alpha, "lora: scale numerator; scale = alpha/r (default 16)", CLI_LIBRARY_RANGE},
        {"--targets", NULL, OPT_STRING, &o.lora_targets, "lora: projections to adapt (default q,k,v,o,gate,up,down)"},
        {"--rslora", NULL, OPT_FLAG, &o.lora_rslora, "lora: scale = alpha/sqrt(r)"},
        {"--layers", NULL, OPT_STRING, &o.lora_layers, "lora: layers to adapt, e.g. 0-3,6 (default all)"},
        {"--base-dtype", NULL, OPT_STRING, &o.base_dtype, "lora: hold the frozen base as f32 (default) | bf16 | q8_0"},
        {"--dropout", NULL, OPT_FLOAT, &o.lora_dropout, "lora: dropout on the adapter input in training (default 0)", CLI_LIBRARY_RANGE},
        {"--trainable-tokens", NULL, OPT_STRING, &o.trainable_tokens,
         "lora, memory: embedding/head rows that train: auto (EOS + template specials, default) | none | ids 2,5"},
        {"--epochs", NULL, OPT_INT, &o.epochs, "passes over the data (default 3)", CLI_LIBRARY_RANGE},
        {"--steps", NULL, OPT_INT, &o.steps, "optimizer steps (overrides --epochs)", CLI_LIBRARY_RANGE},
        {"--lr", NULL, OPT_FLOAT, &o.lr, "peak learning rate (default 1e-4; memory 3e-3)", CLI_LIBRARY_RANGE},
        {"--batch", NULL, OPT_INT, &o.batch, "rows per micro-batch (default 4)", CLI_LIBRARY_RANGE},
        {"--grad-accum", NULL, OPT_INT, &o.grad_accum, "micro-batches per step (default 1)", CLI_LIBRARY_RANGE},
        {"--seq-len", NULL, OPT_INT, &o.seq_len, "tokens per row (default min(512, context))", CLI_LIBRARY_RANGE},
        {"--warmup", NULL, OPT_INT, &o.warmup, "linear warmup steps (default 0)", CLI_LIBRARY_RANGE},
        {"--schedule", NULL, OPT_STRING, &o.schedule, "cosine | linear | constant (default: cosine; memory: constant)"},
        {"--weight-decay", NULL, OPT_FLOAT, &o.weight_decay, "AdamW weight decay on matrices (default 0)", CLI_LIBRARY_RANGE},
        {"--clip", NULL, OPT_FLOAT, &o.clip, "max gradient norm, 0 = off (default 1.0)", CLI_LIBRARY_RANGE},
        {"--eval", NULL, OPT_STRING, &o.eval_data, "held-out JSONL for eval loss"},
        {"--eval-every", NULL, OPT_INT, &o.eval_every, "steps between evals (default: 10 per run)", CLI_LIBRARY_RANGE},
        {"--save-every", NULL, OPT_INT, &o.save_every, "steps between checkpoints (default 100)", CLI_LIBRARY_RANGE},
        {"--log-every", NULL, OPT_INT, &o.log_every, "steps between metrics lines (default 10)", CLI_LIBRARY_RANGE},
        {"--keep-checkpoints", NULL, OPT_INT, &o.keep_checkpoints, "checkpoints kept (default 2)", CLI_LIBRARY_RANGE},
        {"--seed", NULL, OPT_U64, &o.seed, "data-order seed (default 1)", CLI_ANY_SEED},
        {"--threads", NULL, OPT_INT, &o.threads, "threads (default: all cores)", CLI_LIBRARY_RANGE},
        {"--recompute", NULL, OPT_FLAG, &o.recompute, "recompute activations in the backward (less memory)"},
        {"--dry-run", NULL, OPT_FLAG, &o.dry_run, "print token counts and the memory plan, then exit"},
        {"--resume", NULL, OPT_FLAG, &o.resume, "continue from the newest valid checkpoint in --out"},
        {"--skip-bad-lines", NULL, OPT_FLAG, &o.skip_bad_lines, "skip and count bad JSONL lines"},
        {"--quiet", "-q", OPT_FLAG, &o.quiet, "no progress output"},
        {"--dist-bucket-kb", NULL, OPT_INT, &bucket_kb, "under mpirun: gradient KiB per all-reduce (default 4096)", 1, 1 << 20},
        {"--dist-no-overlap", NULL, OPT_FLAG, &no_overlap, "under mpirun: all-reduce after the whole backward, not layer by layer"},
        {"--data", NULL, OPT_STRING, &data[0], "training JSONL (repeatable; required)"},
        {NULL, NULL, 0, NULL, NULL},
    };
    int code;
    if (cli_parse(n_rest, rest, opts, "usage: memtune train --model PATH --data FILE [--data FILE2 ...] --out DIR [options]", &code)) return code;
    if (n_data == 0) {
        fprintf(stderr, "memtune: train needs --data FILE\n");
        return 2;
    }
    o.experts = experts;
    if (no_memory_lora) o.memory_lora = 0;
    o.data = data + 1;
    o.n_data = n_data - 1;
    if (mt_train_options_validate(NULL, &o)) return cli_bad_option(); /* before loading the model */
    mt_dist *dist = NULL;
    long launched = launched_size();
    if (launched && !mt_dist_built() && launched != 1) {
        fprintf(stderr, "memtune: started by an MPI launcher with %ld processes, but this memtune was built without MPI "
                "(install libopenmpi-dev and rebuild): refusing to run %ld separate trainings into one --out\n", launched, launched);
        return 2;
    }
    if (launched && mt_dist_built()) {
        mt_dist_options dopts;
        mt_dist_options_default(&dopts);
        dopts.overlap = !no_overlap;
        dopts.bucket_bytes = (size_t)bucket_kb << 10;
        if (mt_dist_init(NULL, NULL, &dopts, &dist)) return cli_fail("MPI");
    }
    int rank = mt_dist_rank(dist);
    mt_model *m;
    if (cli_load_model(cli_model_path(model, argv[0]), tokenizer, &m)) return dist_end(dist, 1, 1);
    progress_printer pp = {.quiet = o.quiet, .tty = isatty(2), .kill_after_step = env_long("MEMTUNE_TEST_KILL_AFTER_STEP"),
                           .rank = rank, .kill_rank = (int)env_long("MEMTUNE_TEST_KILL_RANK"),
                           .exact_loss = env_long("MEMTUNE_TEST_EXACT_LOSS") != 0,
                           .int_in_recall = getenv("MEMTUNE_TEST_INT_IN_RECALL") ? env_long("MEMTUNE_TEST_INT_IN_RECALL") : -1,
                           .margin_log = getenv("MEMTUNE_MARGIN_LOG")};
    o.dist = dist;
    o.progress = on_progress;
    o.progress_user = &pp;
    o.stop = &stop_requested;
    o.test_forget_after_step = env_long("MEMTUNE_TEST_FORGET_AFTER_STEP");
    o.test_checkpoint_delay_ms = (int)env_long("MEMTUNE_TEST_CKPT_DELAY_MS");
    struct sigaction sa = {.sa_handler = on_stop_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    mt_train_result r;
    mt_status s = mt_train_run(m, data[0], &o, &r);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    mt_model_free(m);
    if (s) {
        if (!mt_dist_error_is_echo(dist)) {
            if (rank != 0) fprintf(stderr, "memtune: rank %d: train: %s\n", rank, mt_last_error());
            else cli_fail("train");
        }
        return dist_end(dist, 1, 1);
    }
    if (r.interrupted) return dist_end(dist, 130, 0); /* every rank stopped at the same step */
    if (!o.dry_run && !isnan(r.perplexity_ratio)) return dist_end(dist, r.completed ? 0 : 3, 0); /* memory: 3 = partially completed */
    if (rank != 0) return dist_end(dist, 0, 0);
    if (!o.dry_run && !o.quiet && mt_dist_size(dist) > 1) print_dist_stats(dist);
    if (!o.dry_run && !o.quiet) {
        fprintf(stderr, "memtune: %ld steps, %ld tokens in %.1f s (%.0f tokens/s), last loss %.4f",
                r.steps, r.tokens, r.seconds, r.seconds > 0 ? r.tokens / r.seconds : 0.0, r.train_loss);
        if (!isnan(r.eval_loss)) fprintf(stderr, ", eval loss %.4f", r.eval_loss);
        fprintf(stderr, "\n");
    }
    return dist_end(dist, 0, 0);
}
