/* Tokenizer tests: llama.cpp's published test vectors (Llama 2 SentencePiece and GPT-2
 * byte-level BPE, encoded by HF tokenizers), SmolLM2's published encodings, llama2.c's
 * stories260K tokenizer, streaming decode of split characters, save -> load round trips in
 * both file formats, GGUF-style vocabularies through mt_tokenizer_from_spec, malformed
 * files, random input, and speed. */
#include "test.h"
#include "core/file.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"
#include <jansson.h>
#include <time.h>

#define LLAMA_BIN "tokenizers/llama2-spm/tokenizer.bin"
#define VOCAB_DIR "tokenizers/llama.cpp-vocab/"
#define SEPARATOR "\n__ggml_vocab_test__\n"

/* ---- helpers ------------------------------------------------------------------------ */

static char *slurp(const char *path, size_t *len) {
    char *s = NULL;
    if (mt_file_read_all(path, 1 << 28, &s, len) != MT_OK) {
        fprintf(stderr, "  cannot read %s: %s\n", path, mt_last_error());
        return NULL;
    }
    return s;
}

typedef struct {
    int n;
    char *text[64];
    int n_ids[64];
    int ids[64][512];
} cases;

/* llama.cpp's .inp/.out pair: texts separated by SEPARATOR (the file ends with one, so
 * the last piece is an empty text), ids one line per text. */
static int load_cases(const char *name, cases *c) {
    char inp_path[256], out_path[256];
    snprintf(inp_path, sizeof inp_path, VOCAB_DIR "ggml-vocab-%s.gguf.inp", name);
    snprintf(out_path, sizeof out_path, VOCAB_DIR "ggml-vocab-%s.gguf.out", name);
    size_t il, ol;
    char *inp = slurp(test_asset(inp_path), &il), *out = slurp(test_asset(out_path), &ol);
    if (!inp || !out) return 0;
    memset(c, 0, sizeof *c);
    for (char *p = inp; p && c->n < 64;) {
        char *sep = strstr(p, SEPARATOR);
        if (sep) *sep = 0;
        c->text[c->n++] = strdup(p);
        p = sep ? sep + strlen(SEPARATOR) : NULL;
    }
    char *line = out;
    for (int i = 0; i < c->n; i++) {
        char *nl = line ? strchr(line, '\n') : NULL;
        if (nl) *nl = 0;
        for (char *tok = line ? strtok(line, " ") : NULL; tok && c->n_ids[i] < 512; tok = strtok(NULL, " "))
            c->ids[i][c->n_ids[i]++] = atoi(tok);
        line = nl ? nl + 1 : NULL;
    }
    free(inp);
    free(out);
    return c->n;
}

static void free_cases(cases *c) {
    for (int i = 0; i < c->n; i++) free(c->text[i]);
}

static void print_ids(const char *what, const int *ids, int n) {
    fprintf(stderr, "    %s:", what);
    for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

/* Encodes every case as llama.cpp's test does (no BOS, no special parsing); returns how
 * many matched. With check_decode, every text must also decode back to itself. */
static int check_cases(const mt_tokenizer *t, const cases *c, const char *label, int check_decode) {
    int matched = 0;
    for (int i = 0; i < c->n; i++) {
        int *ids = NULL, n = 0;
        CHECK_OK(mt_tokenizer_encode(t, c->text[i], strlen(c->text[i]), 0, 0, &ids, &n));
        int same = n == c->n_ids[i] && (n == 0 || !memcmp(ids, c->ids[i], (size_t)n * sizeof *ids));
        matched += same;
        CHECK_MSG(same, "%s case %d \"%s\"", label, i, c->text[i]);
        if (!same) {
            print_ids("got     ", ids, n);
            print_ids("expected", c->ids[i], c->n_ids[i]);
        }
        if (check_decode) {
            char *back = NULL;
            CHECK_OK(mt_detokenize(t, ids, n, &back));
            CHECK_STR_EQ(back, c->text[i]);
            free(back);
        }
        free(ids);
    }
    return matched;
}

static mt_tokenizer *load_llama(void) {
    mt_tokenizer *t = NULL;
    CHECK_OK(mt_tokenizer_load_llama2c(test_asset(LLAMA_BIN), 32000, &t));
    return t;
}

static mt_tokenizer *load_gpt2(void) {
    mt_tokenizer *t = NULL;
    CHECK_OK(mt_tokenizer_load_gpt2_files(test_asset("tokenizers/gpt2/encoder.json"),
                                          test_asset("tokenizers/gpt2/vocab.bpe"), &t));
    return t;
}

static mt_tokenizer *load_smollm(char **chat_template) {
    mt_tokenizer *t = NULL;
    CHECK_OK(mt_tokenizer_load_hf(test_asset("tokenizers/smollm/tokenizer.json"), &t, chat_template));
    return t;
}

static void check_encoding(const mt_tokenizer *t, const char *text, int add_special, const int *want, int n_want) {
    int *ids = NULL, n = 0;
    CHECK_OK(mt_tokenize(t, text, add_special, &ids, &n));
    int same = n == n_want && (n == 0 || !memcmp(ids, want, (size_t)n * sizeof *ids));
    CHECK_MSG(same, "encoding of \"%s\"", text);
    if (!same) {
        print_ids("got     ", ids, n);
        print_ids("expected", want, n_want);
    }
    free(ids);
}

/* ---- published vectors -------------------------------------------------------------- */

TEST(llama_spm_matches_llama_cpp_vectors_and_decodes_back) {
    cases c;
    mt_tokenizer *t = load_llama();
    if (!t || !load_cases("llama-spm", &c)) return;
    CHECK_INT_EQ(c.n, 47);
    CHECK_INT_EQ(check_cases(t, &c, "llama-spm", 1), c.n);
    CHECK_INT_EQ(mt_tokenizer_vocab_size(t), 32000);
    CHECK_INT_EQ(mt_tokenizer_bos(t), 1);
    CHECK_INT_EQ(mt_tokenizer_eos(t), 2);
    CHECK_STR_EQ(mt_tokenizer_token_text(t, 29871), "\xe2\x96\x81");
    CHECK_STR_EQ(mt_tokenizer_token_text(t, 1), "<s>");
    CHECK_INT_EQ(mt_tokenizer_type(t, 3 + 0x41), MT_TOKTYPE_BYTE);
    free_cases(&c);
    mt_tokenizer_free(t);
}

TEST(gpt2_matches_llama_cpp_vectors_and_decodes_back) {
    cases c;
    mt_tokenizer *t = load_gpt2();
    if (!t || !load_cases("gpt-2", &c)) return;
    CHECK_INT_EQ(c.n, 47);
    CHECK_INT_EQ(check_cases(t, &c, "gpt-2", 1), c.n);
    CHECK_INT_EQ(mt_tokenizer_vocab_size(t), 50257);
    CHECK_INT_EQ(mt_tokenizer_eos(t), 50256);
    CHECK_STR_EQ(mt_tokenizer_pre(t), "gpt2");
    free_cases(&c);
    mt_tokenizer_free(t);
}

TEST(smollm2_matches_published_encodings) {
    char *tmpl = NULL;
    mt_tokenizer *t = load_smollm(&tmpl);
    if (!t) return;
    CHECK_INT_EQ(mt_tokenizer_vocab_size(t), 49153); /* 49152 + a third party's [PAD] */
    CHECK_STR_EQ(mt_tokenizer_pre(t), "smollm");
    CHECK_INT_EQ(mt_tokenizer_bos(t), 0);
    CHECK_INT_EQ(mt_tokenizer_eos(t), 0);
    CHECK_INT_EQ(mt_tokenizer_add_bos(t), 0);
    size_t len;
    char *json = slurp(test_asset("tokenizers/smollm/test_vectors.json"), &len);
    CHECK(json && strstr(json, "\"Hello\", \"ids\": [19556]"));
    free(json);
    check_encoding(t, "Hello", 1, (int[]){19556}, 1);
    check_encoding(t, "The capital of France is", 1, (int[]){504, 3575, 282, 4649, 314}, 5);
    check_encoding(t, "def fibonacci(n):", 1, (int[]){1604, 3987, 46477, 24, 94, 727}, 6);
    free(tmpl);
    mt_tokenizer_free(t);
}

TEST(stories260k_tok512_encodes_like_llama2c) {
    mt_tokenizer *t = NULL;
    CHECK_OK(mt_tokenizer_load_llama2c(test_asset("models/stories260K/tok512.bin"), 512, &t));
    if (!t) return;
    check_encoding(t, "Once upon a time", 1, (int[]){1, 403, 407, 261, 378}, 5);
    char *text = NULL;
    CHECK_OK(mt_detokenize(t, (int[]){1, 403, 407, 261, 378}, 5, &text));
    CHECK_STR_EQ(text, "Once upon a time");
    free(text);
    mt_tokenizer_free(t);
}

/* ---- special tokens ----------------------------------------------------------------- */

TEST(special_tokens_are_single_ids_when_parsed) {
    mt_tokenizer *t = load_smollm(NULL);
    if (!t) return;
    const char *chat = "<|im_start|>user\nHi<|im_end|>";
    int *ids = NULL, n = 0;
    CHECK_OK(mt_tokenize(t, chat, 0, &ids, &n));
    CHECK(n >= 3 && ids[0] == 1 && ids[n - 1] == 2);
    char *back = NULL;
    CHECK_OK(mt_detokenize(t, ids, n, &back));
    CHECK_STR_EQ(back, "user\nHi"); /* control tokens decode to nothing */
    free(back);
    free(ids);
    CHECK_OK(mt_tokenizer_encode(t, chat, strlen(chat), 0, 0, &ids, &n));
    CHECK(n > 3 && ids[0] != 1);
    free(ids);
    mt_tokenizer_free(t);

    t = load_llama();
    if (!t) return;
    CHECK_OK(mt_tokenize(t, "<s>Hello</s>", 0, &ids, &n));
    /* the space prefix goes in front of the text after a special token, as in llama.cpp */
    CHECK(n == 3 && ids[0] == 1 && ids[1] == 15043 && ids[2] == 2);
    free(ids);
    mt_tokenizer_free(t);
}

/* ---- decoding ----------------------------------------------------------------------- */

TEST(streaming_decode_holds_split_utf8) {
    mt_tokenizer *t = load_llama();
    if (!t) return;
    char buf[64];
    mt_detok_stream s;
    mt_detok_init(&s);
    /* BOS, "<0xE2><0x96><0x81>" (U+2581 as bytes), then "▁Hello" */
    CHECK_INT_EQ(mt_detok_push(t, &s, 1, buf, sizeof buf), 0);
    CHECK_INT_EQ(mt_detok_push(t, &s, 3 + 0xE2, buf, sizeof buf), 0);
    CHECK_INT_EQ(mt_detok_push(t, &s, 3 + 0x96, buf, sizeof buf), 0);
    CHECK_INT_EQ(mt_detok_push(t, &s, 3 + 0x81, buf, sizeof buf), 3);
    CHECK_STR_EQ(buf, "\xe2\x96\x81");
    CHECK_INT_EQ(mt_detok_push(t, &s, 15043, buf, sizeof buf), 6);
    CHECK_STR_EQ(buf, " Hello"); /* not the first text: its space stays */

    /* first text after BOS loses the dummy-prefix space */
    mt_detok_init(&s);
    mt_detok_push(t, &s, 1, buf, sizeof buf);
    CHECK_INT_EQ(mt_detok_push(t, &s, 15043, buf, sizeof buf), 5);
    CHECK_STR_EQ(buf, "Hello");

    /* a broken sequence becomes U+FFFD and the next character still comes out */
    mt_detok_init(&s);
    mt_detok_push(t, &s, 3 + 0xE2, buf, sizeof buf);
    CHECK_INT_EQ(mt_detok_push(t, &s, 3 + 'A', buf, sizeof buf), 4);
    CHECK_STR_EQ(buf, "\xef\xbf\xbd" "A");
    mt_detok_push(t, &s, 3 + 0xF0, buf, sizeof buf);
    CHECK_INT_EQ(mt_detok_flush(&s, buf, sizeof buf), 3);
    CHECK_INT_EQ(mt_detok_push(t, &s, 3 + 0xFF, buf, sizeof buf), 3);
    CHECK_INT_EQ(mt_detok_push(t, &s, -5, buf, sizeof buf), 0);
    CHECK_INT_EQ(mt_detok_push(t, &s, 15043, buf, 4), 3); /* " Hello" in 4 bytes: cut, NUL-terminated */
    CHECK_STR_EQ(buf, " He");
    mt_tokenizer_free(t);

    /* byte-level BPE: an emoji split over tokens comes out whole, once */
    t = load_gpt2();
    if (!t) return;
    const char *text = "x \xf0\x9f\xa6\x99 y";
    int *ids = NULL, n = 0;
    CHECK_OK(mt_tokenize(t, text, 0, &ids, &n));
    char out[64] = "";
    size_t total = 0;
    mt_detok_init(&s);
    for (int i = 0; i < n; i++) {
        size_t k = mt_detok_push(t, &s, ids[i], buf, sizeof buf);
        CHECK(mt_utf8_valid(buf, k));
        if (total + k < sizeof out) memcpy(out + total, buf, k + 1);
        total += k;
    }
    CHECK(n > 4);
    CHECK_STR_EQ(out, text);
    free(ids);
    mt_tokenizer_free(t);
}

TEST(invalid_utf8_is_rejected_with_its_position) {
    mt_tokenizer *t = load_llama();
    if (!t) return;
    int *ids = (int *)1, n = 7;
    CHECK_ERR(mt_tokenize(t, "ab\xff", 1, &ids, &n), MT_ERR_ARG, "invalid UTF-8 in text at byte 2");
    CHECK(ids == NULL && n == 0);
    CHECK_ERR(mt_tokenize(t, "\xc0\xaf", 1, &ids, &n), MT_ERR_ARG, "at byte 0");         /* overlong */
    CHECK_ERR(mt_tokenize(t, "a\xed\xa0\x80", 1, &ids, &n), MT_ERR_ARG, "at byte 1");    /* surrogate */
    CHECK_ERR(mt_tokenize(t, "abc\xe2\x96", 1, &ids, &n), MT_ERR_ARG, "at byte 3");      /* cut short */
    CHECK_ERR(mt_tokenize(t, "\xf4\x90\x80\x80", 1, &ids, &n), MT_ERR_ARG, "at byte 0"); /* > U+10FFFF */
    CHECK(!mt_utf8_valid("\xe2\x96", 2) && mt_utf8_valid("\xe2\x96\x81", 3));
    char *text = NULL;
    CHECK_ERR(mt_detokenize(t, (int[]){5, 32000}, 2, &text), MT_ERR_ARG, "32000");
    mt_tokenizer_free(t);
}

/* ---- round trips -------------------------------------------------------------------- */

static int files_equal(const char *a, const char *b) {
    size_t la, lb;
    char *x = slurp(a, &la), *y = slurp(b, &lb);
    int same = x && y && la == lb && !memcmp(x, y, la);
    free(x);
    free(y);
    return same;
}

TEST(llama2c_save_load_round_trip) {
    const char *dir = test_tmpdir("tok_llama2c");
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.bin", dir);
    mt_tokenizer *t = load_llama(), *back = NULL;
    cases c;
    if (!t || !load_cases("llama-spm", &c)) return;
    CHECK_OK(mt_tokenizer_save_llama2c(t, path));
    CHECK_MSG(files_equal(path, test_asset(LLAMA_BIN)), "saved file differs from the original");
    CHECK_OK(mt_tokenizer_load_llama2c(path, 32000, &back));
    if (back) CHECK_INT_EQ(check_cases(back, &c, "llama2c round trip", 0), c.n);
    mt_tokenizer_free(back);
    free_cases(&c);
    mt_tokenizer_free(t);

    t = NULL;
    CHECK_OK(mt_tokenizer_load_llama2c(test_asset("models/stories260K/tok512.bin"), 512, &t));
    if (t) CHECK_OK(mt_tokenizer_save_llama2c(t, path));
    CHECK(files_equal(path, test_asset("models/stories260K/tok512.bin")));
    mt_tokenizer_free(t);
    t = load_gpt2();
    CHECK_ERR(mt_tokenizer_save_llama2c(t, path), MT_ERR_UNSUPPORTED, "SentencePiece");
    mt_tokenizer_free(t);
}

TEST(hf_save_load_round_trip_spm) {
    const char *dir = test_tmpdir("tok_hf_spm");
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    mt_tokenizer *t = load_llama(), *back = NULL;
    cases c;
    if (!t || !load_cases("llama-spm", &c)) return;
    CHECK_OK(mt_tokenizer_save_hf(t, dir, "{{ messages }}"));
    char *tmpl = NULL;
    CHECK_OK(mt_tokenizer_load_hf(path, &back, &tmpl));
    if (back) {
        CHECK_INT_EQ(mt_tokenizer_kind_of(back), MT_TOK_SPM);
        CHECK_INT_EQ(mt_tokenizer_vocab_size(back), 32000);
        CHECK_INT_EQ(mt_tokenizer_bos(back), 1);
        CHECK_INT_EQ(mt_tokenizer_eos(back), 2);
        CHECK_INT_EQ(mt_tokenizer_add_bos(back), 1);
        CHECK_INT_EQ(mt_tokenizer_add_space_prefix(back), 1);
        CHECK_INT_EQ(check_cases(back, &c, "hf spm round trip", 1), c.n);
        check_encoding(back, "Once upon a time", 1, (int[]){1, 9038, 2501, 263, 931}, 5);
    }
    CHECK_STR_EQ(tmpl, "{{ messages }}");
    free(tmpl);
    mt_tokenizer_free(back);
    free_cases(&c);
    mt_tokenizer_free(t);
}

TEST(hf_save_load_round_trip_byte_level) {
    const char *dir = test_tmpdir("tok_hf_bpe");
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    mt_tokenizer *t = load_gpt2(), *back = NULL;
    cases c;
    if (!t || !load_cases("gpt-2", &c)) return;
    CHECK_OK(mt_tokenizer_save_hf(t, dir, NULL));
    char *tmpl = (char *)1;
    CHECK_OK(mt_tokenizer_load_hf(path, &back, &tmpl));
    CHECK(tmpl == NULL);
    if (back) {
        CHECK_STR_EQ(mt_tokenizer_pre(back), "gpt2");
        CHECK_INT_EQ(mt_tokenizer_eos(back), 50256);
        CHECK_INT_EQ(check_cases(back, &c, "hf gpt-2 round trip", 1), c.n);
    }
    mt_tokenizer_free(back);
    mt_tokenizer_free(t);
    free_cases(&c);

    /* SmolLM2: two-stage pre-tokenizer (digits, then GPT-2) and the chat template */
    t = load_smollm(NULL);
    if (!t) return;
    dir = test_tmpdir("tok_hf_smollm");
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    CHECK_OK(mt_tokenizer_save_hf(t, dir, "T"));
    back = NULL;
    CHECK_OK(mt_tokenizer_load_hf(path, &back, NULL));
    if (back) {
        CHECK_STR_EQ(mt_tokenizer_pre(back), "smollm");
        CHECK_INT_EQ(mt_tokenizer_vocab_size(back), 49153);
        check_encoding(back, "def fibonacci(n):", 1, (int[]){1604, 3987, 46477, 24, 94, 727}, 6);
        check_encoding(back, "<|im_start|>", 0, (int[]){1}, 1);
    }
    mt_tokenizer_free(back);

    /* chat_template as a list of named templates: "default" is taken */
    char cfg[700];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    const char *list = "{\"eos_token\": {\"content\": \"<|im_end|>\"}, \"chat_template\": "
                       "[{\"name\": \"tool_use\", \"template\": \"A\"}, {\"name\": \"default\", \"template\": \"B\"}]}";
    CHECK_OK(mt_write_file_atomic(cfg, list, strlen(list)));
    char *tmpl2 = NULL;
    back = NULL;
    CHECK_OK(mt_tokenizer_load_hf(path, &back, &tmpl2));
    CHECK_STR_EQ(tmpl2, "B");
    CHECK_INT_EQ(mt_tokenizer_eos(back), 2);
    free(tmpl2);
    mt_tokenizer_free(back);
    mt_tokenizer_free(t);
}

/* The GGUF reader builds tokenizers from arrays: SPM pieces in U+2581 form with scores and
 * types, BPE tokens with merges and a pre-tokenizer name in llama.cpp's spelling. */
TEST(from_spec_with_gguf_style_arrays) {
    cases c;
    mt_tokenizer *src = load_llama(), *t = NULL;
    if (!src || !load_cases("llama-spm", &c)) return;
    int n = mt_tokenizer_vocab_size(src);
    const char **tokens = malloc((size_t)n * sizeof *tokens);
    float *scores = malloc((size_t)n * sizeof *scores);
    int *types = malloc((size_t)n * sizeof *types);
    for (int i = 0; i < n; i++) {
        tokens[i] = mt_tokenizer_token_text(src, i);
        scores[i] = mt_tokenizer_score(src, i);
        types[i] = mt_tokenizer_type(src, i);
    }
    mt_vocab_spec spm = {.kind = MT_TOK_SPM, .n_vocab = n, .tokens = tokens, .scores = scores, .types = types,
                         .bos_id = 1, .eos_id = 2, .unk_id = 0, .pad_id = -1, .add_bos = 1, .add_space_prefix = 1};
    CHECK_OK(mt_tokenizer_from_spec(&spm, &t));
    if (t) CHECK_INT_EQ(check_cases(t, &c, "spm from spec", 1), c.n);
    mt_tokenizer_free(t);
    spm.bos_id = n;
    CHECK_ERR(mt_tokenizer_from_spec(&spm, &t), MT_ERR_FORMAT, "BOS id 32000 out of range");
    free_cases(&c);
    free(tokens);
    free(scores);
    free(types);
    mt_tokenizer_free(src);

    src = load_gpt2();
    if (!src || !load_cases("gpt-2", &c)) return;
    n = mt_tokenizer_vocab_size(src);
    int nm = mt_tokenizer_n_merges(src);
    tokens = malloc((size_t)n * sizeof *tokens);
    types = malloc((size_t)n * sizeof *types);
    const char **merges = malloc((size_t)nm * sizeof *merges);
    for (int i = 0; i < n; i++) {
        tokens[i] = mt_tokenizer_token_text(src, i);
        types[i] = mt_tokenizer_type(src, i);
    }
    for (int i = 0; i < nm; i++) merges[i] = mt_tokenizer_merge(src, i);
    mt_vocab_spec bpe = {.kind = MT_TOK_BPE, .n_vocab = n, .tokens = tokens, .types = types, .n_merges = nm,
                         .merges = merges, .bos_id = 50256, .eos_id = 50256, .unk_id = -1, .pad_id = -1,
                         .pre = "gpt-2"};
    t = NULL;
    CHECK_OK(mt_tokenizer_from_spec(&bpe, &t));
    if (t) CHECK_INT_EQ(check_cases(t, &c, "bpe from spec", 1), c.n);
    mt_tokenizer_free(t);
    bpe.pre = "klingon";
    CHECK_ERR(mt_tokenizer_from_spec(&bpe, &t), MT_ERR_UNSUPPORTED, "klingon");
    free_cases(&c);
    free(tokens);
    free(types);
    free(merges);
    mt_tokenizer_free(src);
}


/* ---- pre-tokenizers, on a tiny byte-level vocabulary -------------------------------- */

/* GPT-2's spelling of raw bytes (into a static buffer). */
static const char *mapped(const char *raw) {
    static char buf[8][256];
    static int next;
    char *out = buf[next++ % 8];
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)raw; *p && n < 240; p++)
        n += mt_utf8_encode(mt_gpt2_byte_to_cp(*p), out + n);
    out[n] = 0;
    return out;
}

/* The 256 byte tokens (id = byte), then " 1", merges of digits up to "1234", "'S", "xyz"
 * (no merge makes it) and " a". */
static const char *tiny_extra[] = {" 1", "12", "123", "1234", "'S", "xyz", " a"};
static const char *tiny_merges[][2] = {{" ", "1"}, {"1", "2"}, {"12", "3"}, {"123", "4"}, {"'", "S"}, {" ", "a"}};
#define TINY_EXTRA 7
#define TINY_MERGES 6

static mt_tokenizer *tiny_bpe(const char *pre) {
    static char text[256 + TINY_EXTRA][64], merge[TINY_MERGES][64];
    const char *tokens[256 + TINY_EXTRA], *merges[TINY_MERGES];
    for (int b = 0; b < 256; b++) {
        text[b][mt_utf8_encode(mt_gpt2_byte_to_cp((unsigned char)b), text[b])] = 0;
        tokens[b] = text[b];
    }
    for (int i = 0; i < TINY_EXTRA; i++) tokens[256 + i] = strcpy(text[256 + i], mapped(tiny_extra[i]));
    for (int i = 0; i < TINY_MERGES; i++) {
        snprintf(merge[i], sizeof merge[i], "%s ", mapped(tiny_merges[i][0]));
        strcat(merge[i], mapped(tiny_merges[i][1]));
        merges[i] = merge[i];
    }
    mt_vocab_spec spec = {.kind = MT_TOK_BPE, .n_vocab = 256 + TINY_EXTRA, .tokens = tokens, .n_merges = TINY_MERGES,
                          .merges = merges, .bos_id = -1, .eos_id = -1, .unk_id = -1, .pad_id = -1, .pre = pre};
    mt_tokenizer *t = NULL;
    CHECK_OK(mt_tokenizer_from_spec(&spec, &t));
    return t;
}

/* Encodes text and compares with the expected pieces (raw text, '|'-separated). */
static void check_pieces(const mt_tokenizer *t, const char *text, const char *want, const char *label) {
    int *ids = NULL, n = 0;
    CHECK_OK(mt_tokenize(t, text, 0, &ids, &n));
    char got[512] = "";
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *piece = mt_tokenizer_token_bytes(t, ids[i], &len);
        if (i) strcat(got, "|");
        strncat(got, piece, len);
    }
    CHECK_MSG(!strcmp(got, want), "%s \"%s\": got \"%s\", expected \"%s\"", label, text, got, want);
    free(ids);
}

TEST(pre_tokenizers_split_as_their_regexes_say) {
    const char *pres[] = {"gpt2", "llama3", "qwen2", "smollm"};
    const char *want_digits[] = {"1234", "123|4", "1|2|3|4", "1|2|3|4"};
    const char *want_space_digits[] = {"x| 1|2", "x| |12", "x| |1|2", "x| |1|2"};
    const char *want_caps[] = {"I|T|'|S", "I|T|'S", "I|T|'S", "I|T|'|S"};
    const char *want_word[] = {"x|y|z", "xyz", "x|y|z", "x|y|z"}; /* llama3 ignores merges */
    for (int k = 0; k < 4; k++) {
        mt_tokenizer *t = tiny_bpe(pres[k]);
        if (!t) continue;
        check_pieces(t, "1234", want_digits[k], pres[k]);
        check_pieces(t, "x 12", want_space_digits[k], pres[k]);
        check_pieces(t, "IT'S", want_caps[k], pres[k]);
        check_pieces(t, "xyz", want_word[k], pres[k]);
        check_pieces(t, "b a", "b| a", pres[k]);
        mt_tokenizer_free(t);
    }
}

static void write_json_file(const char *path, json_t *doc) {
    CHECK(json_dump_file(doc, path, 0) == 0);
    json_decref(doc);
}

/* Llama 3's tokenizer.json shape: Split regex + ByteLevel without regex, merges as pairs,
 * ignore_merges, special added tokens, BOS from a TemplateProcessing inside a Sequence. */
TEST(hf_llama3_shaped_json_loads) {
    const char *dir = test_tmpdir("tok_llama3_json");
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    mt_tokenizer *tiny = tiny_bpe("gpt2");
    if (!tiny) return;
    json_t *vocab = json_object(), *merges = json_array();
    for (int i = 0; i < mt_tokenizer_vocab_size(tiny); i++)
        json_object_set_new(vocab, mt_tokenizer_token_text(tiny, i), json_integer(i));
    for (int i = 0; i < TINY_MERGES; i++)
        json_array_append_new(merges, json_pack("[s,s]", mapped(tiny_merges[i][0]), mapped(tiny_merges[i][1])));
    int bos = mt_tokenizer_vocab_size(tiny);
    json_t *doc = json_pack(
        "{s:[{s:i,s:s,s:b}],s:n,s:{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b}]},"
        "s:{s:s,s:[{s:s},{s:s,s:[{s:{s:s,s:i}},{s:{s:s,s:i}}]}]},s:{s:s},s:{s:s,s:b,s:o,s:o}}",
        "added_tokens", "id", bos, "content", "<|begin_of_text|>", "special", 1,
        "normalizer",
        "pre_tokenizer", "type", "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex", MT_PRE_LLAMA3,
        "behavior", "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0, "use_regex", 0,
        "post_processor", "type", "Sequence", "processors", "type", "ByteLevel", "type", "TemplateProcessing",
        "single", "SpecialToken", "id", "<|begin_of_text|>", "type_id", 0, "Sequence", "id", "A", "type_id", 0,
        "decoder", "type", "ByteLevel",
        "model", "type", "BPE", "ignore_merges", 1, "vocab", vocab, "merges", merges);
    CHECK(doc != NULL);
    write_json_file(path, doc);
    mt_tokenizer *t = NULL;
    CHECK_OK(mt_tokenizer_load_hf(path, &t, NULL));
    if (t) {
        CHECK_STR_EQ(mt_tokenizer_pre(t), "llama3");
        CHECK_INT_EQ(mt_tokenizer_ignore_merges(t), 1);
        CHECK_INT_EQ(mt_tokenizer_bos(t), bos);
        CHECK_INT_EQ(mt_tokenizer_add_bos(t), 1);
        CHECK_INT_EQ(mt_tokenizer_type(t, bos), MT_TOKTYPE_CONTROL);
        int x = mt_tokenizer_find(t, mapped("xyz")), n123 = mt_tokenizer_find(t, mapped("123"));
        check_encoding(t, "1234xyz", 1, (int[]){bos, n123, '4', x}, 4);
        check_encoding(t, "<|begin_of_text|>1", 0, (int[]){bos, '1'}, 2);
    }
    mt_tokenizer_free(t);
    mt_tokenizer_free(tiny);
}

/* Mistral-style SPM tokenizer.json: Metaspace pre-tokenizer instead of a normalizer. */
TEST(hf_metaspace_json_loads_as_spm) {
    const char *dir = test_tmpdir("tok_metaspace_json");
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    json_t *vocab = json_object();
    const char *first[] = {"<unk>", "<s>", "</s>"};
    const char *last[] = {"\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a", "ab", "\xe2\x96\x81" "ab"};
    for (int i = 0; i < 3; i++) json_object_set_new(vocab, first[i], json_integer(i));
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        json_object_set_new(vocab, s, json_integer(3 + b));
    }
    for (int i = 0; i < 6; i++) json_object_set_new(vocab, last[i], json_integer(259 + i));
    json_t *doc = json_pack(
        "{s:[{s:i,s:s,s:b},{s:i,s:s,s:b},{s:i,s:s,s:b}],s:{s:s,s:s,s:s,s:b},"
        "s:{s:s,s:[{s:{s:s,s:i}},{s:{s:s,s:i}}]},s:{s:s,s:s,s:b,s:o,s:[s,s,s]}}",
        "added_tokens", "id", 0, "content", "<unk>", "special", 1, "id", 1, "content", "<s>", "special", 1, "id", 2,
        "content", "</s>", "special", 1,
        "pre_tokenizer", "type", "Metaspace", "replacement", "\xe2\x96\x81", "prepend_scheme", "first", "split", 0,
        "post_processor", "type", "TemplateProcessing", "single", "SpecialToken", "id", "<s>", "type_id", 0,
        "Sequence", "id", "A", "type_id", 0,
        "model", "type", "BPE", "unk_token", "<unk>", "byte_fallback", 1, "vocab", vocab, "merges",
        "\xe2\x96\x81 a", "a b", "\xe2\x96\x81" "a b");
    CHECK(doc != NULL);
    write_json_file(path, doc);
    mt_tokenizer *t = NULL;
    CHECK_OK(mt_tokenizer_load_hf(path, &t, NULL));
    if (!t) return;
    CHECK_INT_EQ(mt_tokenizer_kind_of(t), MT_TOK_SPM);
    CHECK_INT_EQ(mt_tokenizer_unk(t), 0);
    check_encoding(t, "ab ab", 1, (int[]){1, 264, 264}, 3);
    check_encoding(t, "ac", 0, (int[]){262, 3 + 'c'}, 2);
    char *text = NULL;
    CHECK_OK(mt_detokenize(t, (int[]){1, 264, 264, 262, 3 + 'c'}, 5, &text));
    CHECK_STR_EQ(text, "ab ab ac");
    free(text);
    mt_tokenizer_free(t);
}

/* ---- malformed files ---------------------------------------------------------------- */

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, n, f);
        fclose(f);
    }
}

TEST(malformed_llama2c_files_are_refused_by_name) {
    const char *dir = test_tmpdir("tok_bad");
    size_t len;
    char *orig = slurp(test_asset("models/stories260K/tok512.bin"), &len);
    if (!orig) return;
    char path[600];
    snprintf(path, sizeof path, "%s/tok512.bin", dir);
    mt_tokenizer *t = NULL;
    size_t start17 = 4; /* where token 17's record starts */
    for (int i = 0; i < 17; i++) {
        int32_t n;
        memcpy(&n, orig + start17 + 4, 4);
        start17 += 8 + (size_t)n;
    }
    size_t cuts[] = {0, 2, 4, 9, 13, start17 + 6, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(path, orig, cuts[i]);
        CHECK_ERR(mt_tokenizer_load_llama2c(path, 512, &t), MT_ERR_FORMAT, "tok512.bin: truncated");
        CHECK(t == NULL);
    }
    write_bytes(path, orig, start17 + 6);
    CHECK_ERR(mt_tokenizer_load_llama2c(path, 512, &t), MT_ERR_FORMAT, "tok512.bin: truncated at token 17");
    write_bytes(path, orig, start17); /* cut between records: looks like a 17-token vocabulary */
    CHECK_ERR(mt_tokenizer_load_llama2c(path, 512, &t), MT_ERR_MISMATCH, "tok512.bin: holds 17 tokens");
    CHECK_ERR(mt_tokenizer_load_llama2c(test_asset("models/stories260K/tok512.bin"), 32000, &t), MT_ERR_MISMATCH,
              "tok512.bin: holds 512 tokens but the model's vocabulary has 32000");
    memcpy(orig + 8, &(int32_t){-3}, 4); /* first token's length */
    write_bytes(path, orig, len);
    CHECK_ERR(mt_tokenizer_load_llama2c(path, 512, &t), MT_ERR_FORMAT, "token 0 has length -3");
    memcpy(orig, &(int32_t){0}, 4);
    write_bytes(path, orig, len);
    CHECK_ERR(mt_tokenizer_load_llama2c(path, 512, &t), MT_ERR_FORMAT, "max_token_length 0");
    CHECK_ERR(mt_tokenizer_load_llama2c("/nonexistent/tok.bin", 512, &t), MT_ERR_IO, "/nonexistent/tok.bin");
    free(orig);
}

TEST(malformed_tokenizer_json_is_refused_by_name) {
    const char *dir = test_tmpdir("tok_bad_json");
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    mt_tokenizer *t = NULL;
    const struct {
        const char *json;
        mt_status status;
        const char *needle;
    } bad[] = {
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {", MT_ERR_FORMAT, "tokenizer.json: not valid JSON"},
        {"not json at all", MT_ERR_FORMAT, "not valid JSON"},
        {"[1, 2]", MT_ERR_FORMAT, "not a JSON object"},
        {"{\"version\": \"1.0\"}", MT_ERR_FORMAT, "tokenizer.json: no \"model\" section"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", MT_ERR_UNSUPPORTED, "WordPiece"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, \"pre_tokenizer\": {\"type\": "
         "\"ByteLevel\"}}", MT_ERR_FORMAT, "vocabulary is empty"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}}, \"pre_tokenizer\": {\"type\": "
         "\"ByteLevel\"}}", MT_ERR_FORMAT, "token id 0 is used twice"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999}}}", MT_ERR_FORMAT, "out of range"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [3]}}", MT_ERR_FORMAT, "merge 0"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", MT_ERR_UNSUPPORTED, "byte-level"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Split\", "
         "\"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}, \"decoder\": {\"type\": \"ByteLevel\"}}",
         MT_ERR_FORMAT, "pre-tokenizer regex"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"Lowercase\"}}",
         MT_ERR_UNSUPPORTED, "Lowercase"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_bytes(path, bad[i].json, strlen(bad[i].json));
        CHECK_ERR(mt_tokenizer_load_hf(path, &t, NULL), bad[i].status, bad[i].needle);
        CHECK_MSG(strstr(mt_last_error(), "tokenizer.json") != NULL, "message names the file: %s", mt_last_error());
        CHECK(t == NULL);
    }
    CHECK_ERR(mt_tokenizer_load_hf("/nonexistent/tokenizer.json", &t, NULL), MT_ERR_IO, "/nonexistent");
}

/* ---- robustness and speed ----------------------------------------------------------- */

static uint64_t rng_state = 88172645463325252ULL;
static uint32_t next_random(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

/* Random bytes through the encoder (which accepts invalid UTF-8) and random ids through
 * the decoder: no crash, every token id in range, the decoder's output valid UTF-8. */
static void fuzz_one(const mt_tokenizer *t) {
    char text[256];
    int n_vocab = mt_tokenizer_vocab_size(t);
    for (int round = 0; round < 300; round++) {
        size_t len = next_random() % sizeof text;
        for (size_t i = 0; i < len; i++) {
            uint32_t r = next_random();
            text[i] = (char)(r % 4 == 0 ? ' ' : r % 4 == 1 ? 'a' + (int)(r % 26) : (int)(r >> 8));
        }
        int *ids = NULL, n = 0, in_range = 1;
        CHECK_OK(mt_tokenizer_encode(t, text, len, 1, round & 1, &ids, &n));
        for (int i = 0; i < n; i++) in_range &= ids[i] >= 0 && ids[i] < n_vocab;
        CHECK(in_range);
        for (int i = 0; i < n; i++) ids[i] = (int)(next_random() % (uint32_t)n_vocab);
        char *back = NULL;
        CHECK_OK(mt_detokenize(t, ids, n, &back));
        CHECK(back && mt_utf8_valid(back, strlen(back)));
        free(back);
        free(ids);
    }
}

TEST(random_bytes_and_ids_are_handled) {
    mt_tokenizer *t = load_llama();
    if (t) fuzz_one(t);
    mt_tokenizer_free(t);
    t = load_smollm(NULL);
    if (t) fuzz_one(t);
    mt_tokenizer_free(t);
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* 8 KB of prose with a long run of spaces and one long word: milliseconds, not seconds
 * (the bound is loose so sanitizer builds pass). */
TEST(encoding_kilobytes_takes_milliseconds) {
    char text[8300];
    size_t n = 0;
    while (n < 7000) n += (size_t)snprintf(text + n, sizeof text - n, "The quick brown fox, 1234 jumps! ");
    memset(text + n, ' ', 500);
    memset(text + n + 500, 'z', 700);
    text[n + 1200] = 0;
    mt_tokenizer *tk[2] = {load_gpt2(), load_llama()};
    for (int k = 0; k < 2; k++) {
        if (!tk[k]) continue;
        int *ids = NULL, count = 0;
        double t0 = seconds();
        CHECK_OK(mt_tokenize(tk[k], text, 1, &ids, &count));
        double ms = (seconds() - t0) * 1e3;
        fprintf(stderr, "  %s: %zu bytes -> %d tokens in %.2f ms\n", k ? "llama-spm" : "gpt2", strlen(text), count, ms);
        CHECK_MSG(ms < 200, "took %.1f ms", ms);
        char *back = NULL;
        CHECK_OK(mt_detokenize(tk[k], ids, count, &back));
        CHECK(back && !strcmp(back, text));
        free(back);
        free(ids);
        mt_tokenizer_free(tk[k]);
    }
}

int main(void) {
    RUN(llama_spm_matches_llama_cpp_vectors_and_decodes_back);
    RUN(gpt2_matches_llama_cpp_vectors_and_decodes_back);
    RUN(smollm2_matches_published_encodings);
    RUN(stories260k_tok512_encodes_like_llama2c);
    RUN(special_tokens_are_single_ids_when_parsed);
    RUN(streaming_decode_holds_split_utf8);
    RUN(invalid_utf8_is_rejected_with_its_position);
    RUN(llama2c_save_load_round_trip);
    RUN(hf_save_load_round_trip_spm);
    RUN(hf_save_load_round_trip_byte_level);
    RUN(from_spec_with_gguf_style_arrays);
    RUN(pre_tokenizers_split_as_their_regexes_say);
    RUN(hf_llama3_shaped_json_loads);
    RUN(hf_metaspace_json_loads_as_spm);
    RUN(malformed_llama2c_files_are_refused_by_name);
    RUN(malformed_tokenizer_json_is_refused_by_name);
    RUN(random_bytes_and_ids_are_handled);
    RUN(encoding_kilobytes_takes_milliseconds);
    TEST_MAIN_END();
}
