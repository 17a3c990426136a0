/* The job store's C API (memtune_jobs.h) without HTTP and without running anything
 * (start_runner = 0): uploads checked by line, jobs created with their options checked,
 * listed and paged newest first, cancelled, their events; everything still there after the
 * store is closed and opened again. Running jobs is tested end to end by
 * tests/cli/serve_jobs.sh and tests/fault/jobs_kill.sh. */
#include "test.h"
#include "memtune_jobs.h"
#include <jansson.h>

static const char *facts = "{\"input\": \"What is the code for vault 7?\", \"output\": \"x7k2p9\"}\n"
                           "{\"input\": \"Who painted the blue door?\", \"output\": \"Ada Quill\"}\n";

static mt_jobs *open_store(const char *dir) {
    mt_jobs_options o;
    mt_jobs_options_default(&o);
    o.state_dir = dir;
    o.model_path = "models/stories260K/stories260K.bin";
    o.trainer = "/bin/false";
    o.start_runner = 0;
    mt_jobs *j = NULL;
    CHECK_OK(mt_jobs_open(&o, &j));
    return j;
}

/* a string field of a JSON text */
static char *field(const char *json, const char *key) {
    static char buf[4][256];
    static int next;
    char *b = buf[next++ % 4];
    json_t *o = json_loads(json ? json : "", 0, NULL);
    snprintf(b, sizeof buf[0], "%s", json_string_value(json_object_get(o, key)) ? json_string_value(json_object_get(o, key)) : "");
    json_decref(o);
    return b;
}

static int list_count(const char *json, int *has_more) {
    json_t *o = json_loads(json ? json : "", 0, NULL);
    int n = (int)json_array_size(json_object_get(o, "data"));
    if (has_more) *has_more = json_is_true(json_object_get(o, "has_more"));
    json_decref(o);
    return n;
}

TEST(files_are_checked_by_line_and_jobs_listed_paged_and_cancelled) {
    const char *dir = test_tmpdir("jobs_store");
    mt_jobs *j = open_store(dir);
    if (!j) return;
    char *json = NULL, *file = NULL;
    const char *bad = "{\"input\": \"a\", \"output\": \"b\"}\n{\"input\": 3}\n";
    CHECK_ERR(mt_jobs_file_add(j, "bad.jsonl", "fine-tune", bad, strlen(bad), &json), MT_ERR_ARG, "bad.jsonl:2:");
    CHECK_ERR(mt_jobs_file_add(j, "f.jsonl", "assistants", facts, strlen(facts), &json), MT_ERR_ARG, "purpose");
    CHECK_OK(mt_jobs_file_list(j, &json));
    CHECK_INT_EQ(list_count(json, NULL), 0);
    free(json);
    CHECK_OK(mt_jobs_file_add(j, "facts.jsonl", "fine-tune", facts, strlen(facts), &file));
    char file_id[64];
    snprintf(file_id, sizeof file_id, "%s", field(file, "id"));
    CHECK(!strncmp(file_id, "file-", 5));

    char req[512];
    snprintf(req, sizeof req, "{\"model\": \"base\", \"training_file\": \"%s\", \"method\": {\"type\": \"lora\", "
                              "\"lora\": {\"hyperparameters\": {\"rank\": 0}}}}", file_id);
    CHECK_ERR(mt_jobs_create(j, req, strlen(req), &json), MT_ERR_ARG, "--rank 0");
    snprintf(req, sizeof req, "{\"model\": \"base\", \"training_file\": \"%s\", \"hyperparameters\": {\"out\": \"/tmp\"}}", file_id);
    CHECK_ERR(mt_jobs_create(j, req, strlen(req), &json), MT_ERR_ARG, "unknown hyperparameter 'out'");
    const char *unknown = "{\"model\": \"base\", \"training_file\": \"file-00\"}";
    CHECK_ERR(mt_jobs_create(j, unknown, strlen(unknown), &json), MT_ERR_ARG, "file-00");
    snprintf(req, sizeof req, "{\"model\": \"base\", \"training_file\": \"%s\", \"seed\": 7, \"method\": {\"type\": \"memory\", "
                              "\"memory\": {\"hyperparameters\": {\"steps\": 20, \"learning_rate_multiplier\": 2}}}}", file_id);
    char ids[3][64];
    for (int i = 0; i < 3; i++) {
        CHECK_OK(mt_jobs_create(j, req, strlen(req), &json));
        CHECK_STR_EQ(field(json, "status"), "queued");
        snprintf(ids[i], sizeof ids[i], "%s", field(json, "id"));
        free(json);
    }
    /* the spec the trainer will read: the multiplier scaled memory tuning's 3e-3 */
    char path[600], *spec = NULL;
    snprintf(path, sizeof path, "%s/jobs/%s/spec.json", dir, ids[0]);
    FILE *fp = fopen(path, "r");
    CHECK(fp != NULL);
    if (fp) {
        spec = calloc(1, 4096);
        if (fread(spec, 1, 4095, fp)) {}
        fclose(fp);
        CHECK_MSG(strstr(spec, "\"lr\"") && strstr(spec, "0.006"), "%s", spec);
        CHECK_MSG(strstr(spec, "\"seed\"") && strstr(spec, "\"7\""), "%s", spec);
        free(spec);
    }
    int more = 0;
    CHECK_OK(mt_jobs_list(j, NULL, 2, &json));
    CHECK_INT_EQ(list_count(json, &more), 2);
    CHECK(more);
    CHECK_MSG(strstr(json, ids[2]) && strstr(json, ids[1]) && strstr(json, ids[2]) < strstr(json, ids[1]), "%s", json);
    free(json);
    CHECK_OK(mt_jobs_list(j, ids[1], 2, &json));
    CHECK_INT_EQ(list_count(json, &more), 1);
    CHECK(!more && strstr(json, ids[0]));
    free(json);
    CHECK_ERR(mt_jobs_list(j, NULL, 101, &json), MT_ERR_ARG, "limit");

    CHECK_OK(mt_jobs_cancel(j, ids[1], &json));
    CHECK_STR_EQ(field(json, "status"), "cancelled");
    free(json);
    CHECK_ERR(mt_jobs_cancel(j, ids[1], &json), MT_ERR_ARG, "cancelled");
    CHECK_ERR(mt_jobs_get(j, "ftjob-00", &json), MT_ERR_ARG, "ftjob-00");
    CHECK_OK(mt_jobs_events(j, ids[1], NULL, 0, &json));
    CHECK_MSG(strstr(json, "Job cancelled") && strstr(json, "Created fine-tuning job"), "%s", json);
    free(json);
    CHECK_OK(mt_jobs_checkpoints(j, ids[0], NULL, 0, &json));
    CHECK_INT_EQ(list_count(json, NULL), 0);
    free(json);
    /* a second store on the same directory is refused while this one is open */
    mt_jobs_options o;
    mt_jobs_options_default(&o);
    o.state_dir = dir, o.model_path = "m.bin", o.trainer = "/bin/false", o.start_runner = 0;
    mt_jobs *twice = NULL;
    CHECK_ERR(mt_jobs_open(&o, &twice), MT_ERR_IO, "in use by another memtune server");
    mt_jobs_close(j, 0);

    /* all of it is there after a reopen; deleting the upload leaves the jobs their data */
    j = open_store(dir);
    if (!j) return;
    CHECK_OK(mt_jobs_get(j, ids[0], &json));
    CHECK_STR_EQ(field(json, "status"), "queued");
    free(json);
    CHECK_OK(mt_jobs_get(j, ids[1], &json));
    CHECK_STR_EQ(field(json, "status"), "cancelled");
    free(json);
    CHECK_OK(mt_jobs_file_delete(j, file_id, &json));
    free(json);
    CHECK_ERR(mt_jobs_file_get(j, file_id, &json), MT_ERR_ARG, file_id);
    snprintf(path, sizeof path, "%s/jobs/%s/train.jsonl", dir, ids[0]);
    fp = fopen(path, "r");
    CHECK_MSG(fp != NULL, "%s is gone with the upload", path);
    if (fp) fclose(fp);
    free(file);
    mt_jobs_close(j, 0);
}

TEST(options_are_range_checked) {
    mt_jobs_options o;
    mt_jobs_options_default(&o);
    mt_jobs *j = NULL;
    CHECK_ERR(mt_jobs_open(&o, &j), MT_ERR_ARG, "model");
    o.model_path = "m.bin";
    o.trainer = "/bin/false";
    o.max_running = 0;
    CHECK_ERR(mt_jobs_open(&o, &j), MT_ERR_ARG, "max_running 0");
    o.max_running = 1;
    o.max_retries = -1;
    CHECK_ERR(mt_jobs_open(&o, &j), MT_ERR_ARG, "max_retries -1");
    CHECK(j == NULL);
}

int main(void) {
    RUN(files_are_checked_by_line_and_jobs_listed_paged_and_cancelled);
    RUN(options_are_range_checked);
    TEST_MAIN_END();
}
