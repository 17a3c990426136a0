/* libFuzzer target: arbitrary bytes as a Hub model name (ORG/NAME[@REV][:QUANT]) and, split at
 * the first newline, a repository file name matched against its quantization suffix. A name
 * that parses must come back in pieces that each fit their buffers and reassemble to it. */
#include "fuzz_common.h"
#include "formats/hub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0;
    char *file = strchr(s, '\n');
    if (file) *file++ = 0;
    mt_hub_name n;
    if (mt_hub_name_parse(s, &n)) {
        if (!mt_hub_is_name(s) || !n.org[0] || !n.name[0] || !n.rev[0]) abort();
        char back[sizeof n.org + sizeof n.name + sizeof n.rev + sizeof n.quant + 4];
        snprintf(back, sizeof back, "%s/%s@%s%s%s", n.org, n.name, n.rev, n.quant[0] ? ":" : "", n.quant);
        mt_hub_name again;
        if (!mt_hub_name_parse(back, &again) || memcmp(&n, &again, sizeof n)) abort();
        if (file && n.quant[0]) {
            int m = mt_hub_gguf_match(file, n.quant);
            if (m < 0 || m > 2 || (m && !mt_hub_is_gguf(file))) abort();
        }
    }
    free(s);
    return 0;
}
