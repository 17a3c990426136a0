/* libFuzzer target: arbitrary bytes as a llama2.c model .bin (alone in its directory, so
 * no tokenizer is picked up). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("model.bin", data, size);
    mt_model *m = NULL;
    if (mt_model_load(path, NULL, &m) == MT_OK) mt_model_free(m);
    return 0;
}
