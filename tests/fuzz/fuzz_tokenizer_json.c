/* libFuzzer target: arbitrary bytes as a Hugging Face tokenizer.json; a tokenizer that
 * loads is used to encode and decode. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("tokenizer.json", data, size);
    mt_tokenizer *t = NULL;
    char *chat_template = NULL;
    if (mt_tokenizer_load_hf(path, &t, &chat_template) == MT_OK) {
        fuzz_use_tokenizer(t);
        mt_tokenizer_free(t);
    }
    free(chat_template);
    return 0;
}
