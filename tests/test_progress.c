/* The training API without side effects (issue 18 item 3): a run reports every step, eval
 * and message through the progress callback and writes nothing to stdout or stderr (memory
 * tuning also its checks' margins and the final recall's progress); the
 * callback's return value and the stop flag each stop a run with a checkpoint
 * (result.interrupted); examples given in memory train exactly as the same file does; the
 * thread count set for a run is given back; options set by name reach the run and bad names
 * or values are refused with the option named. */
#include "test.h"
#include "memtune.h"
#include "kernels/kernels.h"
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXAMPLES "{\"prompt\": \"Tom had a red ball.\", \"completion\": \" He liked it.\"}\n" \
                 "{\"prompt\": \"Sue saw a big dog.\", \"completion\": \" It ran away.\"}\n"

typedef struct {
    int steps, logged, evals, infos, step_ends, stopped, dry_runs;
    long last_step, stop_at;
    volatile int *flag; /* set at stop_at instead of returning non-zero */
    char method[16];
} seen;

static int on_progress(const mt_progress *p, void *user) {
    seen *s = user;
    snprintf(s->method, sizeof s->method, "%s", p->method);
    switch (p->kind) {
    case MT_PROGRESS_STEP:
        s->steps++;
        s->logged += p->logged;
        CHECK(p->step == s->last_step + 1 && p->total_steps > 0 && isfinite(p->loss) && p->lr > 0);
        CHECK(!p->logged || (isfinite(p->window_loss) && p->grad_norm > 0));
        s->last_step = p->step;
        if (p->step == s->stop_at) {
            if (s->flag) *s->flag = 1;
            else return 1;
        }
        break;
    case MT_PROGRESS_EVAL: s->evals++; CHECK(isfinite(p->eval_loss)); break;
    case MT_PROGRESS_INFO: s->infos++; CHECK(p->message && strlen(p->message) > 0 && !strchr(p->message, '\n')); break;
    case MT_PROGRESS_STEP_END: s->step_ends++; break;
    case MT_PROGRESS_STOPPED: s->stopped++; break;
    case MT_PROGRESS_DRY_RUN: s->dry_runs++; CHECK(p->message && p->message[0] == '{'); break;
    default: break;
    }
    return 0;
}

static mt_model *load(void) {
    mt_model *m = NULL;
    if (mt_model_load(test_asset("models/stories260K/stories260K.bin"), NULL, &m) != MT_OK) return NULL;
    return m;
}

static void options(mt_train_options *o, const char *out, seen *s) {
    mt_train_options_default(o);
    o->method = "full";
    o->out_dir = out;
    o->steps = 6;
    o->batch = 2;
    o->seq_len = 32;
    o->log_every = 2;
    o->save_every = 0;
    o->threads = 1;
    o->progress = on_progress;
    o->progress_user = s;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

TEST(events_reach_the_callback_and_nothing_is_printed) {
    mt_model *m = load();
    if (!m) { fprintf(stderr, "SKIP: no stories260K\n"); return; }
    const char *dir = test_tmpdir("progress_a");
    char data[600], out[600], eval[600], capture[600];
    snprintf(data, sizeof data, "%s/d.jsonl", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(capture, sizeof capture, "%s/stdio.txt", dir);
    FILE *f = fopen(data, "w");
    fputs(EXAMPLES, f);
    fclose(f);
    snprintf(eval, sizeof eval, "%s", data);
    seen s = {0};
    mt_train_options o;
    options(&o, out, &s);
    o.eval_data = eval;
    o.eval_every = 3;
    /* stdout and stderr go to a file for the run: the library must write nothing there */
    fflush(stdout), fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2), fd = open(capture, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1), dup2(fd, 2);
    mt_train_result r;
    mt_status st = mt_train_run(m, data, &o, &r);
    fflush(stdout), fflush(stderr);
    dup2(saved_out, 1), dup2(saved_err, 2);
    close(fd), close(saved_out), close(saved_err);
    CHECK_OK(st);
    const char *printed = read_text(capture);
    CHECK_MSG(printed && printed[0] == 0, "the library printed: %s", printed ? printed : "(unreadable)");
    CHECK_INT_EQ(s.steps, 6);
    CHECK_INT_EQ(s.step_ends, 6);
    CHECK_INT_EQ(s.logged, 3);        /* steps 2, 4, 6 */
    CHECK_INT_EQ(s.evals, 3);         /* before the run, steps 3 and 6 */
    CHECK(s.infos >= 2);              /* the run's plan, "saved ..." */
    CHECK_INT_EQ(s.stopped, 0);
    CHECK_STR_EQ(s.method, "full");
    CHECK(!r.interrupted && r.steps == 6);
    mt_model_free(m);
}

static void stop_run(int by_flag) {
    mt_model *m = load();
    if (!m) { fprintf(stderr, "SKIP: no stories260K\n"); return; }
    const char *dir = test_tmpdir(by_flag ? "progress_flag" : "progress_return");
    char out[600], ckpt[700];
    snprintf(out, sizeof out, "%s/out", dir);
    volatile int flag = 0;
    seen s = {.stop_at = 3, .flag = by_flag ? &flag : NULL};
    mt_train_options o;
    options(&o, out, &s);
    o.data_text = EXAMPLES;
    o.stop = &flag;
    mt_train_result r;
    CHECK_OK(mt_train_run(m, NULL, &o, &r));
    CHECK(r.interrupted);
    CHECK_INT_EQ(r.steps, 3);
    CHECK_INT_EQ(s.stopped, 1);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoints/step-00000003.ckpt", out);
    CHECK_MSG(access(ckpt, R_OK) == 0, "no checkpoint %s", ckpt);
    mt_model_free(m);
}

TEST(callback_return_stops_with_a_checkpoint) { stop_run(0); }
TEST(stop_flag_stops_with_a_checkpoint) { stop_run(1); }

/* The same examples from memory and from a file: the same weights. */
TEST(examples_in_memory_train_as_the_file_does) {
    mt_model *a = load(), *b = load();
    if (!a || !b) { fprintf(stderr, "SKIP: no stories260K\n"); mt_model_free(a); mt_model_free(b); return; }
    const char *dir = test_tmpdir("progress_mem");
    char data[600], out_a[600], out_b[600];
    snprintf(data, sizeof data, "%s/d.jsonl", dir);
    snprintf(out_a, sizeof out_a, "%s/a", dir);
    snprintf(out_b, sizeof out_b, "%s/b", dir);
    FILE *f = fopen(data, "w");
    fputs(EXAMPLES, f);
    fclose(f);
    seen sa = {0}, sb = {0};
    mt_train_options o;
    options(&o, out_a, &sa);
    CHECK_OK(mt_train_run(a, data, &o, NULL));
    options(&o, out_b, &sb);
    o.data_text = EXAMPLES;
    CHECK_OK(mt_train_run(b, NULL, &o, NULL));
    int n = 5, ids[5] = {1, 20, 30, 40, 50};
    int vocab = mt_model_config(a)->vocab_size;
    float *la = malloc(sizeof(float) * n * vocab), *lb = malloc(sizeof(float) * n * vocab);
    CHECK_OK(mt_model_logits(a, ids, n, la));
    CHECK_OK(mt_model_logits(b, ids, n, lb));
    CHECK(memcmp(la, lb, sizeof(float) * n * vocab) == 0);
    free(la), free(lb);
    o.data_text = "{\"prompt\": 1}\n";
    CHECK_ERR(mt_train_run(b, NULL, &o, NULL), MT_ERR_FORMAT, "examples:1");
    CHECK_ERR(mt_train_run(b, NULL, NULL, NULL), MT_ERR_ARG, "no training data");
    mt_model_free(a), mt_model_free(b);
}

TEST(threads_are_given_back_after_a_run) {
    mt_model *m = load();
    if (!m) { fprintf(stderr, "SKIP: no stories260K\n"); return; }
    const char *dir = test_tmpdir("progress_threads");
    char out[600];
    snprintf(out, sizeof out, "%s/out", dir);
    mt_set_threads(2);
    seen s = {0};
    mt_train_options o;
    options(&o, out, &s);
    o.data_text = EXAMPLES;
    o.threads = 1;
    o.steps = 1;
    CHECK_OK(mt_train_run(m, NULL, &o, NULL));
    CHECK_INT_EQ(mt_kernels_threads(), 2);
    mt_model_free(m);
}

/* Memory tuning reports what the CLI's hooks need without the library reading the
 * environment (issue 18 item 2): each check's CHECK event carries every fact's smallest
 * margin (MEMTUNE_MARGIN_LOG), and the final recall sends RECALL before each fact, in order;
 * a stop asked in reply to one ends the recall there (MEMTUNE_TEST_INT_IN_RECALL): the run is
 * interrupted and facts.jsonl is not written. The strict --trainable-tokens list is memory
 * tuning's too. */
typedef struct {
    int checks, margins_ok, recalls, in_order, stop_at_answered;
} memory_seen;

static int on_memory_progress(const mt_progress *p, void *user) {
    memory_seen *s = user;
    if (p->kind == MT_PROGRESS_CHECK) {
        s->checks++;
        int ok = p->fact_margins != NULL && p->facts == 2;
        for (int i = 0; ok && i < p->facts; i++) ok = isfinite(p->fact_margins[i]);
        s->margins_ok += ok;
    }
    if (p->kind == MT_PROGRESS_RECALL) {
        s->in_order += p->facts_answered == s->recalls && p->facts == 2;
        s->recalls++;
        return p->facts_answered == s->stop_at_answered;
    }
    return 0;
}

TEST(memory_tuning_reports_margins_and_recall_progress) {
    mt_model *m = load();
    if (!m) { fprintf(stderr, "SKIP: no stories260K\n"); return; }
    const char *dir = test_tmpdir("progress_memory");
    char out[600], facts[700];
    memory_seen s = {.stop_at_answered = -1};
    mt_train_options o;
    mt_train_options_default(&o);
    o.method = "memory";
    o.out_dir = out;
    o.data_text = "{\"input\": \"Code 1?\", \"output\": \"x7\"}\n{\"input\": \"Code 2?\", \"output\": \"q3\"}\n";
    o.experts = 256, o.steps = 10, o.save_every = 0, o.seq_len = 32, o.threads = 1;
    o.progress = on_memory_progress;
    o.progress_user = &s;
    mt_train_result r;
    for (int stop = 0; stop < 2; stop++) {
        snprintf(out, sizeof out, "%s/%s", dir, stop ? "stopped" : "whole");
        snprintf(facts, sizeof facts, "%s/facts.jsonl", out);
        s = (memory_seen){.stop_at_answered = stop ? 1 : -1};
        CHECK_OK(mt_train_run(m, NULL, &o, &r));
        CHECK_INT_EQ(s.checks, 2); /* before the run and at step 10 (checks are at least 10 steps apart) */
        CHECK_INT_EQ(s.margins_ok, 2);
        CHECK_INT_EQ(s.recalls, 2); /* before facts 0 and 1 (stopping: in reply to the second) */
        CHECK_INT_EQ(s.in_order, s.recalls);
        CHECK_INT_EQ(r.interrupted, stop);
        CHECK_INT_EQ(access(facts, R_OK) == 0, !stop);
    }
    o.trainable_tokens = "5,-1";
    CHECK_ERR(mt_train_run(m, NULL, &o, &r), MT_ERR_ARG, "--trainable-tokens: expected auto, none or a comma list");
    o.trainable_tokens = "5,x";
    CHECK_ERR(mt_train_run(m, NULL, &o, &r), MT_ERR_ARG, "--trainable-tokens");
    mt_model_free(m);
}

TEST(options_by_name) {
    mt_train_options *o = mt_train_options_new();
    CHECK_OK(mt_train_options_set(o, "seq-len", "64"));
    CHECK_OK(mt_train_options_set(o, "lr", "0.002"));
    CHECK_OK(mt_train_options_set(o, "no-memory-lora", "1"));
    CHECK_OK(mt_train_options_set(o, "seed", "7"));
    CHECK_OK(mt_train_options_set(o, "method", "lora"));
    CHECK_OK(mt_train_options_set(o, "experts", "4096"));
    CHECK(o->seq_len == 64 && fabsf(o->lr - 0.002f) < 1e-9f && o->memory_lora == 0 && o->seed == 7 &&
          !strcmp(o->method, "lora") && o->experts == 4096);
    CHECK_ERR(mt_train_options_set(o, "seq_len", "64"), MT_ERR_ARG, "unknown train option 'seq_len'");
    CHECK_ERR(mt_train_options_set(o, "lr", "nan"), MT_ERR_ARG, "lr: 'nan' is not a finite number");
    CHECK_ERR(mt_train_options_set(o, "steps", "9999999999"), MT_ERR_ARG, "steps: '9999999999'");
    CHECK_ERR(mt_train_options_set(o, "seed", "-1"), MT_ERR_ARG, "seed");
    CHECK_ERR(mt_train_options_set(o, "resume", "yes"), MT_ERR_ARG, "expected 0 or 1");
    mt_train_options_free(o);
}

int main(void) {
    RUN(events_reach_the_callback_and_nothing_is_printed);
    RUN(callback_return_stops_with_a_checkpoint);
    RUN(stop_flag_stops_with_a_checkpoint);
    RUN(examples_in_memory_train_as_the_file_does);
    RUN(threads_are_given_back_after_a_run);
    RUN(options_by_name);
    RUN(memory_tuning_reports_margins_and_recall_progress);
    TEST_MAIN_END();
}
