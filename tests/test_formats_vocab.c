/* Tokenizers carried in GGUF metadata: llama.cpp's vocabulary-only files load as tokenizers
 * and reproduce llama.cpp's published encodings (SentencePiece-style "llama" and byte-level
 * "gpt2"), and a model written to GGUF (and HF) with such a tokenizer gives back one that
 * encodes identically. */
#include "test.h"
#include "core/file.h"
#include "formats/gguf.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#define SEPARATOR "\n__ggml_vocab_test__\n"

typedef struct {
    char *inp, *out;  /* file contents */
    char *texts[128]; /* pointers into inp (separators overwritten with NULs) */
    size_t lens[128];
    char *lines[128]; /* pointers into out */
    int n;
} vocab_cases;

/* llama.cpp's format: each input text followed by the separator; one output line of ids per
 * text. */
static void load_cases(const char *name, vocab_cases *c) {
    char path[512];
    size_t len;
    memset(c, 0, sizeof *c);
    snprintf(path, sizeof path, "%s/tokenizers/llama.cpp-vocab/%s.inp", test_assets(), name);
    CHECK_OK(mt_file_read_all(path, 1 << 20, &c->inp, &len));
    snprintf(path, sizeof path, "%s/tokenizers/llama.cpp-vocab/%s.out", test_assets(), name);
    CHECK_OK(mt_file_read_all(path, 1 << 20, &c->out, &len));
    if (!c->inp || !c->out) exit(1);
    for (char *p = c->inp, *sep; (sep = strstr(p, SEPARATOR)) && c->n < 128; p = sep + strlen(SEPARATOR)) {
        *sep = 0;
        c->texts[c->n] = p;
        c->lens[c->n++] = (size_t)(sep - p);
    }
    int lines = 0;
    for (char *p = c->out, *nl; (nl = strchr(p, '\n')) && lines < 128; p = nl + 1) {
        *nl = 0;
        c->lines[lines++] = p;
    }
    CHECK_INT_EQ(lines, c->n);
}

static void free_cases(vocab_cases *c) {
    free(c->inp);
    free(c->out);
}

/* Encodes every case without BOS or special-token parsing; returns how many matched. */
static int run_cases(const mt_tokenizer *t, const vocab_cases *c, const char *label) {
    int matched = 0;
    for (int i = 0; i < c->n; i++) {
        int *ids = NULL, n = 0;
        mt_status s = mt_tokenizer_encode(t, c->texts[i], c->lens[i], 0, 0, &ids, &n);
        char got[8192] = "";
        size_t used = 0;
        for (int k = 0; k < n && used + 16 < sizeof got; k++) used += (size_t)snprintf(got + used, 16, " %d", ids[k]);
        free(ids);
        if (s == MT_OK && strcmp(got, c->lines[i]) == 0) matched++;
        else if (matched + 3 > i) /* report the first few differences only */
            fprintf(stderr, "  %s case %d \"%.60s\": got \"%.200s\", expected \"%.200s\" %s\n", label, i, c->texts[i],
                    got, c->lines[i], s ? mt_last_error() : "");
    }
    return matched;
}

static void check_vocab_file(const char *name, int want_vocab) {
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizers/llama.cpp-vocab/%s", test_assets(), name);
    vocab_cases c;
    load_cases(name, &c);
    mt_tokenizer *t = NULL;
    CHECK_OK(mt_tokenizer_load_gguf(path, &t));
    if (!t) {
        free_cases(&c);
        return;
    }
    CHECK_INT_EQ(mt_tokenizer_vocab_size(t), want_vocab);
    CHECK_INT_EQ(run_cases(t, &c, name), c.n);

    /* The same vocabulary written with a (tiny, random) model to GGUF and HF and read back. */
    mt_config cfg = {0};
    cfg.dim = 8, cfg.hidden_dim = 8, cfg.n_layers = 1, cfg.n_heads = 2, cfg.vocab_size = want_vocab;
    cfg.max_seq_len = 16, cfg.tied_embeddings = 1, cfg.bos_id = cfg.eos_id = cfg.pad_id = -1;
    mt_model *m = NULL;
    CHECK_OK(mt_model_init(&cfg, 7, &m));
    if (!m) exit(1);
    m->tok = t;
    const char *dir = test_tmpdir("formats_vocab");
    char gguf[600], hf[600];
    snprintf(gguf, sizeof gguf, "%s/m.gguf", dir);
    snprintf(hf, sizeof hf, "%s/hf", dir);
    CHECK_OK(mt_model_save(m, gguf, MT_FORMAT_GGUF));
    CHECK_OK(mt_model_save(m, hf, MT_FORMAT_HF));
    const char *paths[2] = {gguf, hf};
    for (int f = 0; f < 2; f++) {
        mt_model *back = NULL;
        CHECK_OK(mt_model_load(paths[f], NULL, &back));
        CHECK(back && back->tok);
        if (back && back->tok) {
            CHECK_INT_EQ(mt_tokenizer_vocab_size(back->tok), want_vocab);
            CHECK_INT_EQ(mt_tokenizer_bos(back->tok), mt_tokenizer_bos(t));
            CHECK_INT_EQ(mt_tokenizer_eos(back->tok), mt_tokenizer_eos(t));
            CHECK_INT_EQ(run_cases(back->tok, &c, f ? "hf round trip" : "gguf round trip"), c.n);
        }
        mt_model_free(back);
    }
    mt_model_free(m);
    free_cases(&c);
}

TEST(test_llama_spm_vocab_gguf_matches_llama_cpp) { check_vocab_file("ggml-vocab-llama-spm.gguf", 32000); }
TEST(test_gpt2_vocab_gguf_matches_llama_cpp) { check_vocab_file("ggml-vocab-gpt-2.gguf", 50257); }
TEST(test_phi3_vocab_gguf_matches_llama_cpp) { check_vocab_file("ggml-vocab-phi-3.gguf", 32064); }

TEST(test_gguf_without_tokenizer_is_an_error_for_the_tokenizer_loader) {
    const char *dir = test_tmpdir("formats_vocab_none");
    char path[600];
    snprintf(path, sizeof path, "%s/empty.gguf", dir);
    mt_gguf_writer w;
    mt_gguf_writer_init(&w);
    mt_gguf_add_string(&w, "general.architecture", "llama");
    CHECK_OK(mt_gguf_writer_begin(&w, path));
    CHECK_OK(mt_gguf_writer_commit(&w));
    mt_gguf_writer_free(&w);
    mt_tokenizer *t = NULL;
    CHECK_ERR(mt_tokenizer_load_gguf(path, &t), MT_ERR_FORMAT, "no tokenizer");
    CHECK(t == NULL);
}

int main(void) {
    RUN(test_llama_spm_vocab_gguf_matches_llama_cpp);
    RUN(test_gpt2_vocab_gguf_matches_llama_cpp);
    RUN(test_phi3_vocab_gguf_matches_llama_cpp);
    RUN(test_gguf_without_tokenizer_is_an_error_for_the_tokenizer_loader);
    TEST_MAIN_END();
}
