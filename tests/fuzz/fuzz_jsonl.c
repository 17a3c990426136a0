/* libFuzzer target for training data: arbitrary bytes as a JSONL (or JSON array) file, loaded
 * with and without --skip-bad-lines. Errors are expected; crashes, leaks and hangs are bugs. */
#include "fuzz_common.h"
#include "dataset/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("data.jsonl", data, size);
    for (int skip = 0; skip < 2; skip++) {
        mt_dataset ds = {0};
        mt_dataset_load_jsonl(&ds, path, skip);
        mt_dataset_free(&ds);
    }
    return 0;
}
