/* libFuzzer target: arbitrary bytes as a Hugging Face config.json. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("config.json", data, size);
    mt_config cfg;
    mt_config_load_json(path, &cfg);
    return 0;
}
