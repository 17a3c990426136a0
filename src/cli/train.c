/* memtune train: fine-tune a model on JSONL data. */
#include "cli/cli.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAX_DATA_FILES 64

int cmd_train(int argc, char **argv) {
    mt_train_options o;
    mt_train_options_default(&o);
    const char *model = NULL, *tokenizer = NULL, *data[MAX_DATA_FILES] = {0};
    int n_data = 0, experts = (int)o.experts, no_memory_lora = 0;
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
        {"--experts", NULL, OPT_INT, &experts, "memory: experts per site, N (default -1: from the facts and the model; 0 = none)"},
        {"--expert-k", NULL, OPT_INT, &o.expert_k, "memory: experts chosen per head per token (default 8)"},
        {"--expert-heads", NULL, OPT_INT, &o.expert_heads, "memory: routing heads (default 4)"},
        {"--expert-sites", NULL, OPT_STRING, &o.expert_sites, "memory: layers whose MLP output gets experts (default: all, at most 8 spread)"},
        {"--freeze-router", NULL, OPT_FLAG, &o.freeze_router, "memory: keep the router at its initialisation"},
        {"--expert-context", NULL, OPT_INT, &o.expert_context, "memory: routing context values per decay (default 32; 0 = route on the hidden state alone)"},
        {"--no-memory-lora", NULL, OPT_FLAG, &no_memory_lora, "memory: no LoRA adapter beside the experts (default: LoRA --rank, --alpha, --targets)"},
        {"--tau", NULL, OPT_FLOAT, &o.tau, "memory: also a max answer-token NLL for a memorised fact (default 0 = off)"},
        {"--margin", NULL, OPT_FLOAT, &o.margin, "memory: memorised = the stored token leads by this many logits at every answer position (default 2)"},
        {"--general", NULL, OPT_STRING, &o.general, "memory: general text for the perplexity guard (default: sampled from the base)"},
        {"--general-limit", NULL, OPT_FLOAT, &o.general_limit, "memory: allowed perplexity ratio to the base (default 1.05)"},
        {"--general-weight", NULL, OPT_FLOAT, &o.general_weight,
         "memory: weight of general text distilled from the base, relative to the facts (default 1; 0 = off)"},
        {"--check-every", NULL, OPT_INT, &o.check_every, "memory: steps between checks of all facts (default: one pass)"},
        {"--rehearsal-weight", NULL, OPT_FLOAT, &o.rehearsal_weight, "memory: loss weight of memorised facts (default 0.25)"},
        {"--rank", NULL, OPT_INT, &o.lora_rank, "lora: adapter rank r (default 8)"},
        {"--alpha", NULL, OPT_FLOAT, &o.lora_alpha, "lora: scale numerator; scale = alpha/r (default 16)"},
        {"--targets", NULL, OPT_STRING, &o.lora_targets, "lora: projections to adapt (default q,k,v,o,gate,up,down)"},
        {"--rslora", NULL, OPT_FLAG, &o.lora_rslora, "lora: scale = alpha/sqrt(r)"},
        {"--layers", NULL, OPT_STRING, &o.lora_layers, "lora: layers to adapt, e.g. 0-3,6 (default all)"},
        {"--base-dtype", NULL, OPT_STRING, &o.base_dtype, "lora: hold the frozen base as f32 (default) | bf16 | q8_0"},
        {"--dropout", NULL, OPT_FLOAT, &o.lora_dropout, "lora: dropout on the adapter input in training (default 0)"},
        {"--trainable-tokens", NULL, OPT_STRING, &o.trainable_tokens,
         "lora, memory: embedding/head rows that train: auto (EOS + template specials, default) | none | ids 2,5"},
        {"--epochs", NULL, OPT_INT, &o.epochs, "passes over the data (default 3)"},
        {"--steps", NULL, OPT_INT, &o.steps, "optimizer steps (overrides --epochs)"},
        {"--lr", NULL, OPT_FLOAT, &o.lr, "peak learning rate (default 1e-4; memory 3e-3)"},
        {"--batch", NULL, OPT_INT, &o.batch, "rows per micro-batch (default 4)"},
        {"--grad-accum", NULL, OPT_INT, &o.grad_accum, "micro-batches per step (default 1)"},
        {"--seq-len", NULL, OPT_INT, &o.seq_len, "tokens per row (default min(512, context))"},
        {"--warmup", NULL, OPT_INT, &o.warmup, "linear warmup steps (default 0)"},
        {"--schedule", NULL, OPT_STRING, &o.schedule, "cosine | linear | constant (default: cosine; memory: constant)"},
        {"--weight-decay", NULL, OPT_FLOAT, &o.weight_decay, "AdamW weight decay on matrices (default 0)"},
        {"--clip", NULL, OPT_FLOAT, &o.clip, "max gradient norm, 0 = off (default 1.0)"},
        {"--eval", NULL, OPT_STRING, &o.eval_data, "held-out JSONL for eval loss"},
        {"--eval-every", NULL, OPT_INT, &o.eval_every, "steps between evals (default: 10 per run)"},
        {"--save-every", NULL, OPT_INT, &o.save_every, "steps between checkpoints (default 100)"},
        {"--log-every", NULL, OPT_INT, &o.log_every, "steps between metrics lines (default 10)"},
        {"--keep-checkpoints", NULL, OPT_INT, &o.keep_checkpoints, "checkpoints kept (default 2)"},
        {"--seed", NULL, OPT_U64, &o.seed, "data-order seed (default 1)"},
        {"--threads", NULL, OPT_INT, &o.threads, "threads (default: all cores)"},
        {"--recompute", NULL, OPT_FLAG, &o.recompute, "recompute activations in the backward (less memory)"},
        {"--dry-run", NULL, OPT_FLAG, &o.dry_run, "print token counts and the memory plan, then exit"},
        {"--resume", NULL, OPT_FLAG, &o.resume, "continue from the newest valid checkpoint in --out"},
        {"--skip-bad-lines", NULL, OPT_FLAG, &o.skip_bad_lines, "skip and count bad JSONL lines"},
        {"--quiet", "-q", OPT_FLAG, &o.quiet, "no progress output"},
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
    mt_model *m;
    if (cli_load_model(cli_model_path(model, argv[0]), tokenizer, &m)) return 1;
    mt_train_result r;
    mt_status s = mt_train_run(m, data[0], &o, &r);
    mt_model_free(m);
    if (s) return cli_fail("train");
    if (r.interrupted) return 130;
    if (!o.dry_run && !isnan(r.perplexity_ratio)) return r.completed ? 0 : 3; /* memory: 3 = partially completed */
    if (!o.dry_run && !o.quiet) {
        fprintf(stderr, "memtune: %ld steps, %ld tokens in %.1f s (%.0f tokens/s), last loss %.4f",
                r.steps, r.tokens, r.seconds, r.seconds > 0 ? r.tokens / r.seconds : 0.0, r.train_loss);
        if (!isnan(r.eval_loss)) fprintf(stderr, ", eval loss %.4f", r.eval_loss);
        fprintf(stderr, "\n");
    }
    return r.interrupted ? 130 : 0;
}
