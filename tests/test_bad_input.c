/* Bad input through the C API (issue 26; docs/bad-input.md has the whole table): NaN and inf
 * never reach the sampler (options, weights, logits, mt_exp_approx), every numeric option is
 * range-checked with a message naming it, a run never saves non-finite weights, the SQL
 * sandbox bounds single long function calls, HF configs say what is wrong with a field, and
 * evaluations check their sizes up front and report progress. Each test failed (or, under
 * ASan/UBSan, crashed) on the code before the fix. */
#include "test.h"
#include "core/check.h"
#include "kernels/simd.h"
#include "model/model.h"
#include "model/sampler.h"
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); exit(2); }
    fputs(text, f);
    fclose(f);
}

static mt_model *load_stories(void) {
    mt_model *m = NULL;
    CHECK_OK(mt_model_load(test_asset("models/stories260K/stories260K.bin"), NULL, &m));
    if (!m) exit(1);
    return m;
}

static void make_weights_nan(mt_model *m) {
    for (size_t i = 0; i < m->n_params; i++) m->params[i] = NAN;
}

/* ---- item 1: NaN and inf never reach the sampler --------------------------------------- */

TEST(exp_approx_keeps_nan_without_undefined_behaviour) {
    /* the NaN used to become INT_MIN and was shifted left (UBSan: "left shift of negative") */
    volatile float nan_in = NAN;
    CHECK(isnan(mt_exp_approx(nan_in)));
    CHECK(mt_exp_approx(-INFINITY) >= 0 && mt_exp_approx(-INFINITY) < 1e-37f);
    CHECK(isfinite(mt_exp_approx(INFINITY)));
    CHECK_NEAR(mt_exp_approx(1.0f), 2.718281828, 1e-6);
}

TEST(sampler_refuses_non_finite_logits_and_tiny_top_p_stays_in_bounds) {
    enum { V = 64 };
    float logits[V];
    mt_sampler s;
    CHECK(mt_sampler_init(&s, V, 1.0f, 0, 0.9f, 7));
    for (int i = 0; i < V; i++) logits[i] = 0.01f * i;
    logits[5] = NAN;
    CHECK_INT_EQ(mt_sampler_sample(&s, logits), -1);
    for (int i = 0; i < V; i++) logits[i] = 0.01f * i;
    logits[9] = INFINITY;
    CHECK_INT_EQ(mt_sampler_sample(&s, logits), -1);
    mt_sampler_free(&s);
    /* a uniform distribution with top_p 1e-9: no token reaches the cutoff (1 - p) / (n - 1),
     * and the old code returned candidates[-1] */
    CHECK(mt_sampler_init(&s, V, 1.0f, 0, 1e-9f, 7));
    for (int i = 0; i < V; i++) logits[i] = 0;
    int id = mt_sampler_sample(&s, logits);
    CHECK(id >= 0 && id < V);
    /* a temperature so small that logits / T overflow: the most likely token */
    s.temperature = 1e-40f;
    for (int i = 0; i < V; i++) logits[i] = (i == 17 ? 3.0f : 1.0f);
    CHECK_INT_EQ(mt_sampler_sample(&s, logits), 17);
    mt_sampler_free(&s);
}

static int count_text(const char *text, size_t len, void *user) {
    (void)text;
    *(size_t *)user += len;
    return 0;
}

TEST(generate_and_eval_refuse_a_model_whose_logits_are_nan) {
    mt_model *m = load_stories();
    make_weights_nan(m);
    mt_generate_options o;
    mt_generate_options_default(&o);
    o.seed = 3;
    o.max_new_tokens = 5;
    size_t printed = 0;
    CHECK_ERR(mt_generate(m, "Once", &o, count_text, &printed, NULL), MT_ERR_FORMAT, "NaN or infinite");
    o.temperature = 0; /* greedy too: argmax of NaNs is no answer */
    CHECK_ERR(mt_generate(m, "Once", &o, count_text, &printed, NULL), MT_ERR_FORMAT, "NaN or infinite");
    mt_text_score sc;
    const char *text = "Once upon a time there was a cat.";
    CHECK_ERR(mt_eval_text(m, text, strlen(text), &sc), MT_ERR_FORMAT, "NaN or infinite");
    mt_model_free(m);
}

/* ---- item 10: every numeric option is range-checked, one message per option ------------ */

#define EXPECT_GEN(field, value, needle) do { mt_generate_options o_; mt_generate_options_default(&o_); \
    o_.field = value; CHECK_ERR(mt_generate_options_validate(&o_), MT_ERR_ARG, needle); } while (0)

TEST(generate_options_out_of_range_are_refused_by_name) {
    mt_generate_options o;
    mt_generate_options_default(&o);
    CHECK_OK(mt_generate_options_validate(&o));
    EXPECT_GEN(temperature, NAN, "--temperature nan: must be a finite number in [0, 1000]");
    EXPECT_GEN(temperature, INFINITY, "--temperature inf");
    EXPECT_GEN(temperature, -1, "--temperature -1");
    EXPECT_GEN(top_p, NAN, "--top-p nan: must be a finite number in [0, 1]");
    EXPECT_GEN(top_p, 1.5f, "--top-p 1.5");
    EXPECT_GEN(top_k, -1, "--top-k -1: must be an integer in [0, ");
    EXPECT_GEN(max_new_tokens, -5, "--max-new-tokens -5: must be an integer in [0, ");
    /* and mt_generate itself checks them before it samples anything */
    mt_model *m = load_stories();
    o.temperature = NAN;
    CHECK_ERR(mt_generate(m, "Once", &o, NULL, NULL, NULL), MT_ERR_ARG, "--temperature nan");
    mt_model_free(m);
}

#define EXPECT_TRAIN(field, value, needle) do { mt_train_options o_; mt_train_options_default(&o_); \
    o_.field = value; CHECK_ERR(mt_train_options_validate(NULL, &o_), MT_ERR_ARG, needle); } while (0)

TEST(train_options_out_of_range_are_refused_by_name) {
    mt_train_options o;
    mt_train_options_default(&o);
    CHECK_OK(mt_train_options_validate(NULL, &o));
    EXPECT_TRAIN(lr, INFINITY, "--lr inf: must be a finite number in [0, 10]");
    EXPECT_TRAIN(lr, NAN, "--lr nan");
    EXPECT_TRAIN(weight_decay, NAN, "--weight-decay nan");
    EXPECT_TRAIN(clip, NAN, "--clip nan");
    EXPECT_TRAIN(save_every, -1, "--save-every -1: must be an integer in [0, ");
    EXPECT_TRAIN(experts, -2, "--experts -2");
    EXPECT_TRAIN(threads, -1, "--threads -1: must be an integer in [0, 1024]");
    EXPECT_TRAIN(threads, 10000, "--threads 10000");
    EXPECT_TRAIN(batch, 0, "--batch 0: must be an integer in [1, ");
    EXPECT_TRAIN(grad_accum, 0, "--grad-accum 0");
    EXPECT_TRAIN(epochs, -1, "--epochs -1");
    EXPECT_TRAIN(steps, -1, "--steps -1");
    EXPECT_TRAIN(warmup, -1, "--warmup -1");
    EXPECT_TRAIN(seq_len, -1, "--seq-len -1");
    EXPECT_TRAIN(seq_len, 1000000000, "--seq-len 1000000000");
    EXPECT_TRAIN(lora_rank, 0, "--rank 0");
    EXPECT_TRAIN(lora_alpha, NAN, "--alpha nan");
    EXPECT_TRAIN(lora_dropout, 1.0f, "--dropout 1");
    EXPECT_TRAIN(expert_k, 0, "--expert-k 0");
    EXPECT_TRAIN(tau, NAN, "--tau nan");
    EXPECT_TRAIN(general_limit, 0.5f, "--general-limit 0.5");
    EXPECT_TRAIN(rehearsal_weight, -1, "--rehearsal-weight -1");
    EXPECT_TRAIN(keep_checkpoints, -1, "--keep-checkpoints -1");
}

/* ---- items 2 and 9: nothing allocated for a bad run, nothing non-finite saved ----------- */

TEST(train_refuses_bad_options_before_allocating_or_saving) {
    const char *dir = test_tmpdir("test_bad_input_train");
    char data[700], out[700], model_dir[800];
    snprintf(data, sizeof data, "%s/d.jsonl", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(model_dir, sizeof model_dir, "%s/model", out);
    write_text(data, "{\"text\": \"Once upon a time there was a cat.\"}\n");
    mt_model *m = load_stories();
    mt_train_options o;
    mt_train_options_default(&o);
    o.method = "full", o.out_dir = out, o.quiet = 1, o.steps = 1, o.threads = 1;
    /* a billion-token row: refused against the context before any buffer is sized (the
     * old check came after ~16 GB had been asked for) */
    o.seq_len = 1000000000;
    double t0 = now_s();
    CHECK_ERR(mt_train_run(m, data, &o, NULL), MT_ERR_ARG, "--seq-len 1000000000: must be an integer in [0, 512]");
    CHECK(now_s() - t0 < 5);
    o.seq_len = 0;
    o.lr = INFINITY; /* one step of this used to save an all-NaN model and return MT_OK */
    CHECK_ERR(mt_train_run(m, data, &o, NULL), MT_ERR_ARG, "--lr inf");
    o.lr = 1e-3f, o.weight_decay = NAN;
    CHECK_ERR(mt_train_run(m, data, &o, NULL), MT_ERR_ARG, "--weight-decay nan");
    struct stat st;
    CHECK(stat(model_dir, &st) != 0);
    mt_model_free(m);
}

TEST(non_finite_weights_are_never_saved_and_json_numbers_stay_json) {
    float w[4] = {1, 2, 3, 4};
    CHECK_OK(mt_check_finite_weights(w, 4, 7));
    w[2] = NAN;
    CHECK_ERR(mt_check_finite_weights(w, 4, 7), MT_ERR_ARG, "step 7 made the weights non-finite");
    w[2] = -INFINITY;
    CHECK_ERR(mt_check_finite_weights(w, 4, 7), MT_ERR_ARG, "nothing was saved");
    char b[32];
    CHECK_STR_EQ(mt_json_number(b, sizeof b, "%.6g", INFINITY), "null");
    CHECK_STR_EQ(mt_json_number(b, sizeof b, "%.6g", NAN), "null");
    CHECK_STR_EQ(mt_json_number(b, sizeof b, "%.6g", 0.25), "0.25");
}

/* ---- item 5 and 11: SQL ------------------------------------------------------------------ */

TEST(sql_time_limit_holds_inside_one_long_printf_and_messages_are_right) {
    const char *dir = test_tmpdir("test_bad_input_sql");
    char path[700];
    snprintf(path, sizeof path, "%s/t.sqlite", dir);
    sqlite3 *raw;
    if (sqlite3_open(path, &raw) != SQLITE_OK) exit(2);
    sqlite3_exec(raw, "CREATE TABLE t(x INTEGER, y TEXT); INSERT INTO t VALUES (1, 'a');", NULL, NULL, NULL);
    sqlite3_close(raw);
    mt_sql_limits lim = {.max_seconds = 1};
    mt_sql_db *db = NULL;
    CHECK_OK(mt_sql_open(path, &lim, &db));
    mt_sql_result *r = NULL;
    /* one call that used to run 14-62 s where the progress handler never runs */
    double t0 = now_s();
    CHECK_ERR(mt_sql_query(db, "SELECT length(printf('%.*c', 2000000000, 'x'))", &r), MT_ERR_SQL, "printf()");
    CHECK_ERR(mt_sql_query(db, "SELECT printf('%n%.*c', 2000000000, 'x')", &r), MT_ERR_SQL, "beyond the sandbox");
    CHECK_ERR(mt_sql_query(db, "SELECT printf('%2000000000d', 1)", &r), MT_ERR_SQL, "beyond the sandbox");
    CHECK_MSG(now_s() - t0 < 2, "took %.1f s", now_s() - t0);
    /* the longest value SQLite may build is capped too */
    CHECK_ERR(mt_sql_query(db, "SELECT length(zeroblob(1000000000))", &r), MT_ERR_SQL, "too big");
    /* ordinary printf still formats as SQLite does */
    CHECK_OK(mt_sql_query(db, "SELECT printf('%5.2f|%s|%d|%%', 3.14159, y, x) FROM t", &r));
    char *text = r ? mt_sql_result_text(r) : NULL;
    CHECK_STR_EQ(text, " 3.14|a|1|%");
    free(text);
    mt_sql_result_free(r);
    r = NULL;
    CHECK_OK(mt_sql_query(db, "SELECT format('%.*c', 3, 'z')", &r));
    text = r ? mt_sql_result_text(r) : NULL;
    CHECK_STR_EQ(text, "zzz");
    free(text);
    mt_sql_result_free(r);
    /* a PRAGMA function is refused for what it is, not as an UPDATE */
    mt_status s = mt_sql_query(db, "SELECT * FROM pragma_table_info('t')", &r);
    CHECK(s == MT_ERR_SQL && strstr(mt_last_error(), "pragma_table_info") && !strstr(mt_last_error(), "UPDATE"));
    mt_sql_close(db);
    mt_sql_limits bad_t = {.max_seconds = -1}, bad_n = {.max_seconds = NAN}, bad_s = {.max_steps = -5};
    CHECK_ERR(mt_sql_open(path, &bad_t, &db), MT_ERR_ARG, "--sql-timeout -1");
    CHECK_ERR(mt_sql_open(path, &bad_n, &db), MT_ERR_ARG, "--sql-timeout nan");
    CHECK_ERR(mt_sql_open(path, &bad_s, &db), MT_ERR_ARG, "--sql-steps -5");
}

/* ---- items 10 and 11: HF config fields ---------------------------------------------------- */

static void expect_config_error(const char *dir, const char *field_json, const char *needle) {
    char path[700], json[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(json, sizeof json,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 172, "
             "\"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"vocab_size\": 512, %s}", field_json);
    write_text(path, json);
    mt_config c;
    CHECK_ERR(mt_config_load_json(path, &c), MT_ERR_FORMAT, needle);
}

TEST(hf_config_fields_are_range_checked_with_the_right_message) {
    const char *dir = test_tmpdir("test_bad_input_config");
    expect_config_error(dir, "\"max_position_embeddings\": 1099511627776",
                        "max_position_embeddings 1099511627776: must be an integer in [1, 4194304]");
    expect_config_error(dir, "\"max_position_embeddings\": 512.5", "max_position_embeddings 512.5 must be an integer");
    expect_config_error(dir, "\"max_position_embeddings\": \"512\"", "max_position_embeddings must be a number");
    expect_config_error(dir, "\"rms_norm_eps\": -1", "rms_norm_eps -1: must be a finite number in [1e-12, 1]");
    expect_config_error(dir, "\"rope_theta\": 0", "rope_theta 0: must be a finite number in [1, ");
    expect_config_error(dir, "\"num_key_value_heads\": -2", "num_key_value_heads -2: must be an integer in [1, 1024]");
    /* and a good one still loads */
    char path[700];
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 172, "
                     "\"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"vocab_size\": 512, "
                     "\"rms_norm_eps\": 1e-5, \"max_position_embeddings\": 256}");
    mt_config c;
    CHECK_OK(mt_config_load_json(path, &c));
    CHECK_INT_EQ(c.max_seq_len, 256);
}

/* ---- item 12: eval --compare's error path --------------------------------------------------- */

TEST(compare_reports_error_paths_free_what_they_loaded) {
    /* LeakSanitizer (make SANITIZE=1 test) and valgrind report the 400 bytes this leaked */
    const char *dir = test_tmpdir("test_bad_input_compare");
    char a[700], b[700];
    snprintf(a, sizeof a, "%s/a.jsonl", dir);
    snprintf(b, sizeof b, "%s/b.jsonl", dir);
    write_text(a, "{\"index\": 1, \"verdict\": \"match\"}\n{\"index\": 2, \"verdict\": \"mismatch\"}\n");
    write_text(b, "{\"index\": 1, \"verdict\": \"match\"}\nnot json\n");
    char *json = NULL;
    CHECK_ERR(mt_eval_compare_reports(a, b, &json), MT_ERR_FORMAT, "b.jsonl:2: not a report line");
    CHECK_ERR(mt_eval_compare_reports(b, a, &json), MT_ERR_FORMAT, "b.jsonl:2: not a report line");
    CHECK(json == NULL);
    CHECK_OK(mt_eval_compare_reports(a, a, &json));
    free(json);
}

/* ---- items 11 and 13: eval limits, progress and messages ------------------------------------ */

typedef struct {
    long calls, last_done, last_total, stop_at;
    int monotonic;
} progress_log;

static int on_progress(long done, long total, void *user) {
    progress_log *p = user;
    p->monotonic &= done == p->last_done + 1;
    p->calls++;
    p->last_done = done, p->last_total = total;
    return p->stop_at && done >= p->stop_at;
}

TEST(eval_checks_sizes_up_front_and_reports_progress) {
    const char *dir = test_tmpdir("test_bad_input_eval");
    mt_model *m = load_stories();
    char path[700];
    /* --text: a 65 MiB file (sparse: no disk used) is refused at once, before reading */
    snprintf(path, sizeof path, "%s/big.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f || ftruncate(fileno(f), MT_MAX_EVAL_TEXT_BYTES + 1) != 0) exit(2);
    fclose(f);
    mt_text_score ts;
    double t0 = now_s();
    CHECK_ERR(mt_eval_text_file(m, path, &ts), MT_ERR_FORMAT, "file too large");
    CHECK(now_s() - t0 < 2);
    /* progress on a text of three windows of the 512-token context */
    snprintf(path, sizeof path, "%s/story.txt", dir);
    f = fopen(path, "w");
    for (int i = 0; f && i < 250; i++) fputs("Once upon a time there was a cat. ", f);
    if (f) fclose(f);
    progress_log pl = {.monotonic = 1};
    mt_eval_options eo = {.progress = on_progress, .progress_user = &pl};
    CHECK_OK(mt_eval_text_file_opts(m, path, &eo, &ts));
    CHECK(pl.calls >= 2 && pl.monotonic && pl.last_done == pl.last_total && pl.calls == pl.last_total);
    /* --data: progress per example, and a caller can stop it */
    snprintf(path, sizeof path, "%s/qa.jsonl", dir);
    write_text(path, "{\"input\": \"Who was Lily?\", \"output\": \"A girl.\"}\n"
                     "{\"input\": \"Who was Tom?\", \"output\": \"A boy.\"}\n"
                     "{\"input\": \"Who was Max?\", \"output\": \"A dog.\"}\n");
    mt_eval_score sc;
    progress_log pd = {.monotonic = 1};
    mt_eval_options od = {.progress = on_progress, .progress_user = &pd, .max_new_tokens = 4};
    CHECK_OK(mt_eval_data_file_opts(m, path, &od, &sc));
    CHECK_INT_EQ(pd.calls, 3);
    CHECK(pd.monotonic && pd.last_total == 3);
    progress_log stop = {.monotonic = 1, .stop_at = 1};
    od.progress_user = &stop;
    CHECK_ERR(mt_eval_data_file_opts(m, path, &od, &sc), MT_ERR_ARG, "stopped after 1 of 3 examples");
    od.progress = NULL;
    od.max_new_tokens = -1;
    CHECK_ERR(mt_eval_data_file_opts(m, path, &od, &sc), MT_ERR_ARG, "--max-new-tokens -1");
    /* an example longer than the context is refused before any is evaluated (it used to be
     * scored on a cut sequence, with an empty answer) */
    f = fopen(path, "w");
    if (!f) exit(2);
    fputs("{\"input\": \"Who was Lily?\", \"output\": \"A girl.\"}\n{\"input\": \"Tell it.\", \"output\": \"", f);
    for (int i = 0; i < 300; i++) fputs("Once upon a time. ", f);
    fputs("\"}\n", f);
    fclose(f);
    progress_log none = {.monotonic = 1};
    od.progress = on_progress, od.progress_user = &none, od.max_new_tokens = 4;
    CHECK_ERR(mt_eval_data_file_opts(m, path, &od, &sc), MT_ERR_ARG, "example 2 is ");
    CHECK(strstr(mt_last_error(), "more than the model's context of 512") != NULL);
    CHECK_INT_EQ(none.calls, 0);
    /* a report that cannot be written says why (errno) */
    write_text(path, "{\"input\": \"Who was Lily?\", \"output\": \"A girl.\"}\n");
    od.progress = NULL;
    od.report_path = "/nonexistent-memtune-dir/report.jsonl";
    CHECK_ERR(mt_eval_data_file_opts(m, path, &od, &sc), MT_ERR_IO, "cannot open for writing: No such file or directory");
    mt_model_free(m);
}

int main(void) {
    mt_set_threads(1);
    RUN(exp_approx_keeps_nan_without_undefined_behaviour);
    RUN(sampler_refuses_non_finite_logits_and_tiny_top_p_stays_in_bounds);
    RUN(generate_and_eval_refuse_a_model_whose_logits_are_nan);
    RUN(generate_options_out_of_range_are_refused_by_name);
    RUN(train_options_out_of_range_are_refused_by_name);
    RUN(train_refuses_bad_options_before_allocating_or_saving);
    RUN(non_finite_weights_are_never_saved_and_json_numbers_stay_json);
    RUN(sql_time_limit_holds_inside_one_long_printf_and_messages_are_right);
    RUN(hf_config_fields_are_range_checked_with_the_right_message);
    RUN(compare_reports_error_paths_free_what_they_loaded);
    RUN(eval_checks_sizes_up_front_and_reports_progress);
    TEST_MAIN_END();
}
