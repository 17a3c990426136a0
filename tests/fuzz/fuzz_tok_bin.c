/* libFuzzer target: arbitrary bytes as a llama2.c tokenizer .bin; a tokenizer that loads is
 * used to encode and decode. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("tokenizer.bin", data, size);
    mt_tokenizer *t = NULL;
    if (mt_tokenizer_load_llama2c(path, 0, &t) == MT_OK) {
        fuzz_use_tokenizer(t);
        mt_tokenizer_free(t);
    }
    return 0;
}
