/* Writes small valid inputs for the fuzz targets into <dir>/<target>/: a tiny model (the
 * shape fuzz_safetensors.c's fixed config.json describes) with a tiny SentencePiece-style
 * tokenizer, saved in every format. Mutating valid files reaches far deeper than noise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memtune.h"
#include "core/file.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

static mt_tokenizer *tiny_tokenizer(void) {
    static const char *const tokens[16] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "c", "\xe2\x96\x81" "a",
                                           "\xe2\x96\x81" "b", "ab", "bc", "\xe2\x96\x81" "ab", "abc", "d", "e", "<0x0A>"};
    float scores[16];
    int types[16];
    for (int i = 0; i < 16; i++) {
        scores[i] = (float)-i;
        types[i] = i == 0 ? MT_TOKTYPE_UNKNOWN : i < 3 ? MT_TOKTYPE_CONTROL : i == 15 ? MT_TOKTYPE_BYTE : MT_TOKTYPE_NORMAL;
    }
    mt_vocab_spec spec = {.kind = MT_TOK_SPM, .n_vocab = 16, .tokens = tokens, .scores = scores, .types = types,
                          .bos_id = 1, .eos_id = 2, .unk_id = 0, .pad_id = -1, .add_bos = 1, .add_space_prefix = 1};
    mt_tokenizer *t = NULL;
    if (mt_tokenizer_from_spec(&spec, &t) != MT_OK) fprintf(stderr, "tokenizer: %s\n", mt_last_error());
    return t;
}

static int save(const mt_model *m, const char *dir, const char *target, const char *name, mt_format fmt) {
    char *sub = mt_strdup_printf("%s/%s", dir, target), *path = mt_strdup_printf("%s/%s/%s", dir, target, name);
    int ok = mt_mkdir_p(sub) == MT_OK && mt_model_save(m, fmt == MT_FORMAT_HF ? sub : path, fmt) == MT_OK;
    if (!ok) fprintf(stderr, "%s: %s\n", path, mt_last_error());
    free(sub);
    free(path);
    return ok;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR\n");
        return 2;
    }
    mt_config c = {0};
    c.dim = 8, c.hidden_dim = 16, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1, c.vocab_size = 16;
    c.max_seq_len = 32, c.tied_embeddings = 1, c.rope_interleaved = 1, c.bos_id = 1, c.eos_id = 2, c.pad_id = -1;
    mt_model *m = NULL;
    if (mt_model_init(&c, 1, &m) != MT_OK) return 1;
    m->tok = tiny_tokenizer();
    const char *d = argv[1];
    int ok = save(m, d, "gguf", "tiny.gguf", MT_FORMAT_GGUF) && save(m, d, "llama2c", "tiny.bin", MT_FORMAT_LLAMA2C) &&
             save(m, d, "safetensors", "", MT_FORMAT_HF);
    /* the llama2.c writer put tokenizer.bin beside tiny.bin; the HF writer wrote the rest */
    char *cmd = mt_strdup_printf("cd '%s' && mkdir -p tok_bin hf_config tokenizer_json && mv llama2c/tokenizer.bin tok_bin/ "
                                 "&& mv safetensors/config.json hf_config/ && mv safetensors/tokenizer.json tokenizer_json/ "
                                 "&& rm -f safetensors/*.json", d);
    ok = ok && system(cmd) == 0;
    free(cmd);
    /* training data: one line of each shape */
    cmd = mt_strdup_printf("mkdir -p '%s/jsonl' && printf '%%s\\n' '{\"input\": \"a\", \"output\": \"b\"}' "
                           "'{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}' "
                           "'{\"text\": \"t\"}' > '%s/jsonl/seed.jsonl'", d, d);
    ok = ok && cmd && system(cmd) == 0;
    free(cmd);
    mt_model_free(m);
    return ok ? 0 : 1;
}
