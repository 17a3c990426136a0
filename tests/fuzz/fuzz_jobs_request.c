/* libFuzzer target for the body of POST /v1/fine_tuning/jobs (src/jobs/spec.c): arbitrary
 * bytes as the request. Errors (a 400 with a message) are expected; crashes, leaks, hangs,
 * an error without a message, or an accepted spec whose options the trainer would refuse
 * are bugs. */
#include "fuzz_common.h"
#include "jobs/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mt_job_spec sp;
    mt_serve_error e;
    if (mt_job_spec_parse((const char *)data, size, &sp, &e) == 0) {
        if (!sp.model || !sp.training_file || !sp.hyperparameters) abort();
        /* what the trainer process will do with the options: they must still pass */
        mt_train_options o;
        mt_train_options_default(&o);
        json_t *args = mt_job_spec_args_json(&sp);
        for (size_t i = 0; i < json_array_size(args); i++) {
            json_t *pair = json_array_get(args, i);
            if (mt_train_options_set(&o, json_string_value(json_array_get(pair, 0)), json_string_value(json_array_get(pair, 1))))
                abort();
        }
        if (mt_train_options_validate(NULL, &o)) abort();
        json_decref(args);
        mt_job_spec_free(&sp);
    } else {
        if (e.http < 400 || e.http > 599 || !e.message[0]) abort();
        free(mt_serve_error_json(&e));
    }
    return 0;
}
