/* Grammar engine: GBNF parsing (accept/reject strings, errors with line and column, grammars
 * that match nothing), token masks over both tokenizer families (SentencePiece byte
 * fallback, byte-level BPE, multi-byte characters split over tokens, tokens spanning several
 * grammar symbols, EOS only where the grammar ends) checked against a brute-force reference,
 * and JSON Schema -> grammar. */
#include "test.h"
#include <jansson.h>
#include "grammar/matcher.h"
#include "model/sampler.h"
#include "tokenizer/tokenizer.h"

static mt_grammar *compile(const char *src) {
    mt_grammar *g = NULL;
    mt_status s = mt_grammar_compile(src, strlen(src), &g);
    if (s) fprintf(stderr, "  compile failed: %s\n", mt_last_error());
    return g;
}

static int match(const mt_grammar *g, const char *text) { return mt_grammar_match(g, text, strlen(text)); }

#define ACCEPTS(g, text) CHECK_MSG(match(g, text) == 1, "should accept \"%s\"", text)
#define REJECTS(g, text) CHECK_MSG(match(g, text) == 0, "should reject \"%s\"", text)

TEST(test_literals_alternation_sequences) {
    mt_grammar *g = compile("root ::= \"ab\" | \"c\" tail  # comment\ntail ::= \"d\" \"e\"\n");
    CHECK(g != NULL);
    if (!g) return;
    ACCEPTS(g, "ab");
    ACCEPTS(g, "cde");
    REJECTS(g, "");
    REJECTS(g, "a");
    REJECTS(g, "abc");
    REJECTS(g, "cd");
    mt_grammar_free(g);
}

TEST(test_repetitions_and_groups) {
    mt_grammar *g = compile("root ::= (\"x\" | \"y\")+ \"-\"? [0-9]{2,4} \"z\"* (\"ab\"){1}\n");
    CHECK(g != NULL);
    if (!g) return;
    ACCEPTS(g, "x12ab");
    ACCEPTS(g, "xyx-1234zzzab");
    REJECTS(g, "12ab");      /* + needs one */
    REJECTS(g, "x1ab");      /* {2,4}: too few */
    REJECTS(g, "x12345ab");  /* too many */
    REJECTS(g, "x--12ab");
    REJECTS(g, "x12abab");   /* {1} exactly */
    mt_grammar_free(g);
    g = compile("root ::= \"a\"{3,} \"b\"{0,2} \"c\"{2}\n");
    CHECK(g != NULL);
    if (!g) return;
    ACCEPTS(g, "aaacc");
    ACCEPTS(g, "aaaaaaaabbcc");
    REJECTS(g, "aacc");
    REJECTS(g, "aaabbbcc");
    mt_grammar_free(g);
}

TEST(test_classes_escapes_utf8) {
    mt_grammar *g = compile("root ::= [a-c\\x41\\u00e9] [^a-z\\n] . \"\\\"\\\\\\t\\u4e2d\\U0001F600\"\n");
    CHECK(g != NULL);
    if (!g) return;
    ACCEPTS(g, "aZ!\"\\\t\xe4\xb8\xad\xf0\x9f\x98\x80");
    ACCEPTS(g, "\xc3\xa9\xc3\xa9\xe2\x82\xac\"\\\t\xe4\xb8\xad\xf0\x9f\x98\x80"); /* é é € */
    ACCEPTS(g, "A1x\"\\\t\xe4\xb8\xad\xf0\x9f\x98\x80");
    REJECTS(g, "dZ!\"\\\t\xe4\xb8\xad\xf0\x9f\x98\x80");  /* d not in [a-cAé] */
    REJECTS(g, "aq!\"\\\t\xe4\xb8\xad\xf0\x9f\x98\x80");  /* q is in a-z */
    REJECTS(g, "a\n!\"\\\t\xe4\xb8\xad\xf0\x9f\x98\x80"); /* newline excluded */
    REJECTS(g, "aZ!\"\\\t\xe4\xb8\xad\xf0\x9f\x98");      /* truncated emoji */
    REJECTS(g, "aZ\xff\"\\\t\xe4\xb8\xad\xf0\x9f\x98\x80"); /* invalid UTF-8 */
    mt_grammar_free(g);
}

TEST(test_multiline_rules_and_recursion) {
    /* llama.cpp's arithmetic example shape: rules continue after '|' and inside groups */
    mt_grammar *g = compile("root  ::= (expr \"=\" ws term \"\\n\")+\n"
                            "expr  ::= term ([-+*/] term)*\n"
                            "term  ::= ident | num | \"(\" ws expr \")\" ws\n"
                            "ident ::= [a-z] [a-z0-9_]* ws\n"
                            "num   ::= [0-9]+ ws\n"
                            "ws    ::= [ \\t\\n]*\n"
                            "list ::= \"[\" (\n   num |\n   ident\n) \"]\"\n");
    CHECK(g != NULL);
    if (!g) return;
    ACCEPTS(g, "1+2=3\n");
    ACCEPTS(g, "(a*(b+1))=x\nq=1\n");
    REJECTS(g, "(a*(b+1)=x\n");
    REJECTS(g, "1+=3\n");
    mt_grammar_free(g);
}

TEST(test_fixture_grammars) {
    mt_grammar *g = NULL;
    CHECK_OK(mt_grammar_load("tests/fixtures/grammars/json.gbnf", &g));
    if (g) {
        ACCEPTS(g, "{\"a\": [1, -2.5e+10, true, null, \"x\\n\\u00e9\u00e9\"], \"b\": {}}");
        REJECTS(g, "{\"a\": [1,]}");
        REJECTS(g, "{\"a\": 01}");
        REJECTS(g, "{\"a\": \"\n\"}"); /* raw control character in a string */
        mt_grammar_free(g);
    }
    CHECK_OK(mt_grammar_load("tests/fixtures/grammars/arithmetic.gbnf", &g));
    if (g) {
        ACCEPTS(g, "(a*(b+1))=x\n");
        mt_grammar_free(g);
    }
    CHECK_ERR(mt_grammar_load("tests/fixtures/grammars/missing.gbnf", &g), MT_ERR_IO, "missing.gbnf");
}

static void check_bad(const char *src, const char *needle) {
    mt_grammar *g = NULL;
    CHECK_ERR(mt_grammar_compile(src, strlen(src), &g), MT_ERR_FORMAT, needle);
    CHECK(g == NULL);
}

TEST(test_bad_grammars_name_line_and_column) {
    check_bad("root ::= \"a\"\nfoo ::= bar\n", "line 2, column 9: undefined rule 'bar'");
    check_bad("root ::= \"a\n", "line 1, column 10: unclosed string literal");
    check_bad("root ::= [ab\n", "unclosed character class");
    check_bad("root ::= \"a\"\nroot ::= \"b\"\n", "line 2, column 1: rule 'root' is defined twice");
    check_bad("root = \"a\"\n", "line 1, column 6: expected '::='");
    check_bad("foo ::= \"a\"\n", "no rule named 'root'");
    check_bad("root ::= \"\\q\"\n", "line 1, column 11: unknown escape");
    check_bad("root ::= (\"a\" \n", "unclosed '('");
    check_bad("root ::= \"a\"{3,1}\n", "maximum below minimum");
    check_bad("root ::= [z-a]\n", "backwards");
    check_bad("root ::= *\n", "repetition with nothing before it");
    check_bad("root ::= \"a\" )\n", "line 1, column 14: unexpected ')'");
    /* matches nothing: root can never finish, or uses an empty class */
    check_bad("root ::= \"a\" root\n", "matches nothing");
    check_bad("root ::= x \"a\"\nx ::= [^\\x00-\\U0010FFFF]\n", "matches nothing");
    check_bad("root ::= expr\nexpr ::= expr \"+\" \"1\" | \"1\"\n", "rule 'expr' is left-recursive");
    check_bad("root ::= a\na ::= b? a \"x\" | \"y\"\nb ::= \"z\"\n", "left-recursive");
    check_bad("root ::= (\"a\"?)*\n", "left-recursive");
}

/* A tiny SPM-style vocabulary with byte fallback and a byte-level BPE one. */
static const char *SPM_TOKENS[] = {
    "<unk>", "<s>", "</s>", "<0x0A>", "<0x22>", "<0x7B>", "<0xE4>", "<0xB8>", "<0xAD>", "<0xC3>", "<0xA9>",
    "\xe2\x96\x81{", "{\"", "\":", "\xe2\x96\x81\"", "a", "b", "ab", "\"}", "}", "\"", ":", "1", "12", "\xe4\xb8\xad",
    "\xe2\x96\x81", "\xc3\xa9", "\xe2\x96\x81" "a", ",", "\",", "x",
};

static mt_tokenizer *spm_tokenizer(void) {
    int n = (int)(sizeof SPM_TOKENS / sizeof SPM_TOKENS[0]);
    mt_vocab_spec spec = {.kind = MT_TOK_SPM, .n_vocab = n, .tokens = SPM_TOKENS, .bos_id = 1, .eos_id = 2,
                          .unk_id = 0, .pad_id = -1, .add_bos = 1, .add_space_prefix = 1};
    mt_tokenizer *t = NULL;
    CHECK_OK(mt_tokenizer_from_spec(&spec, &t));
    return t;
}

/* The tokens a brute force allows after `prefix` (text so far): those whose bytes extend it
 * to a prefix of some string the grammar accepts, judged by trying the candidates given. */
static int valid_prefix(mt_grammar_matcher *ref, const char *text, size_t len) {
    mt_grammar_matcher_reset(ref, 0);
    return mt_grammar_matcher_accept_bytes(ref, text, len) == MT_OK;
}

/* Checks the mask after `prefix` against byte-level prefix validity of each token. */
static void check_mask_against_bytes(const mt_grammar *g, const mt_tokenizer *t, const int *prefix_ids, int n_prefix) {
    mt_grammar_matcher *m = NULL, *ref = NULL;
    CHECK_OK(mt_grammar_matcher_new(g, t, &m));
    CHECK_OK(mt_grammar_matcher_new(g, NULL, &ref));
    if (!m || !ref) return;
    char text[512];
    size_t len = 0;
    for (int i = 0; i < n_prefix; i++) {
        CHECK_OK(mt_grammar_matcher_accept_token(m, prefix_ids[i]));
        size_t bl;
        const char *b = mt_tokenizer_token_bytes(t, prefix_ids[i], &bl);
        memcpy(text + len, b, bl);
        len += bl;
    }
    int V = mt_tokenizer_vocab_size(t);
    float *logits = calloc((size_t)V, sizeof(float));
    mt_status s = mt_grammar_matcher_mask(m, logits, V);
    for (int id = 0; id < V && s == MT_OK; id++) {
        size_t bl;
        const char *b = mt_tokenizer_token_bytes(t, id, &bl);
        int expect;
        if (id == mt_tokenizer_eos(t)) {
            expect = mt_grammar_match(g, text, len) == 1;
        } else if (bl == 0) {
            expect = 0;
        } else {
            memcpy(text + len, b, bl);
            expect = valid_prefix(ref, text, len + bl);
        }
        int got = !isinf(logits[id]);
        CHECK_MSG(got == expect, "token %d (%s) after %zu bytes: mask says %d, bytes say %d", id,
                  mt_tokenizer_token_text(t, id), len, got, expect);
        /* the one-token check greedy decoding tries first agrees with the mask */
        int one = mt_grammar_matcher_allows(m, id);
        CHECK_MSG(one == got, "token %d (%s) after %zu bytes: allows says %d, mask says %d", id,
                  mt_tokenizer_token_text(t, id), len, one, got);
    }
    free(logits);
    mt_grammar_matcher_free(m);
    mt_grammar_matcher_free(ref);
}

TEST(test_masks_match_byte_reference_spm) {
    mt_tokenizer *t = spm_tokenizer();
    mt_grammar *g = compile("root ::= \"{\" pair (\",\" pair)* \"}\"\npair ::= \"\\\"\" [a-b\\u4e2d\\u00e9]+ \"\\\":\" [0-9]+\n");
    CHECK(t && g);
    if (!t || !g) return;
    check_mask_against_bytes(g, t, NULL, 0);
    int p1[] = {12};          /* {"            */
    check_mask_against_bytes(g, t, p1, 1);
    int p2[] = {12, 6};       /* {" + first byte of 中 (byte fallback) */
    check_mask_against_bytes(g, t, p2, 2);
    int p3[] = {12, 6, 7, 8, 13, 23}; /* {"中":12 -> "}" ends it, EOS not yet */
    check_mask_against_bytes(g, t, p3, 6);
    int p4[] = {12, 9};       /* {" + first byte of é */
    check_mask_against_bytes(g, t, p4, 2);
    int p5[] = {12, 17, 13, 22, 19}; /* {"ab":1} complete: only EOS */
    check_mask_against_bytes(g, t, p5, 5);
    mt_grammar_free(g);
    mt_tokenizer_free(t);
}

TEST(test_first_token_space_is_stripped_for_spm) {
    mt_tokenizer *t = spm_tokenizer();
    mt_grammar *g = compile("root ::= \"{\" [a-b]* \"}\"\n");
    mt_grammar_matcher *m = NULL;
    CHECK_OK(mt_grammar_matcher_new(g, t, &m));
    if (!m) return;
    CHECK_OK(mt_grammar_matcher_reset(m, 1));
    int V = mt_tokenizer_vocab_size(t);
    float logits[64] = {0};
    CHECK_OK(mt_grammar_matcher_mask(m, logits, V));
    for (int id = 0; id < V; id++) CHECK_INT_EQ(mt_grammar_matcher_allows(m, id), !isinf(logits[id]));
    CHECK(!isinf(logits[11]));  /* "▁{" prints as "{" when it comes first */
    CHECK(!isinf(logits[5]));   /* <0x7B> */
    CHECK(isinf(logits[25]));   /* "▁" alone prints nothing */
    CHECK(isinf(logits[27]));   /* "▁a" prints "a" */
    CHECK(isinf(logits[6]));    /* <0xE4> starts a 3-byte character: never "{" (not an overlong form) */
    CHECK_OK(mt_grammar_matcher_accept_token(m, 11));
    memset(logits, 0, sizeof logits);
    CHECK_OK(mt_grammar_matcher_mask(m, logits, V));
    CHECK(isinf(logits[11]));   /* later, "▁{" is " {" */
    CHECK(!isinf(logits[17]) && !isinf(logits[19]));
    CHECK(isinf(logits[2]));    /* EOS: not complete yet */
    CHECK_OK(mt_grammar_matcher_accept_token(m, 19));
    CHECK(mt_grammar_matcher_finished(m));
    mt_grammar_matcher_free(m);
    mt_grammar_free(g);
    mt_tokenizer_free(t);
}

TEST(test_masks_match_byte_reference_gpt2) {
    mt_tokenizer *t = NULL;
    CHECK_OK(mt_tokenizer_load_gpt2_files(test_asset("tokenizers/gpt2/encoder.json"), test_asset("tokenizers/gpt2/vocab.bpe"), &t));
    mt_grammar *g = compile("root ::= \"{\\\"name\\\": \\\"\" [^\"\\\\\\x00-\\x1f]{0,8} \"\\\", \\\"n\\\": \" (\"-\"? [0-9]+ ([eE] [-+]? [0-9]+)?) \"}\"\n");
    CHECK(t && g);
    if (!t || !g) return;
    int *ids = NULL, n = 0;
    const char *prefix = "{\"name\": \"\xe4\xb8\xad\xc3\xa9";
    CHECK_OK(mt_tokenizer_encode(t, prefix, strlen(prefix), 0, 0, &ids, &n));
    for (int k = 0; k <= n; k++) check_mask_against_bytes(g, t, ids, k);
    free(ids);
    const char *prefix2 = "{\"name\": \"ok\", \"n\": -12e";
    CHECK_OK(mt_tokenizer_encode(t, prefix2, strlen(prefix2), 0, 0, &ids, &n));
    check_mask_against_bytes(g, t, ids, n);
    free(ids);
    mt_grammar_free(g);
    mt_tokenizer_free(t);
}

/* Greedy sampling with the one-token check first picks what sampling over the full mask picks,
 * at every step of a run (random logits, so the best token is often refused). */
TEST(test_greedy_check_first_equals_full_mask) {
    mt_tokenizer *t = NULL;
    CHECK_OK(mt_tokenizer_load_gpt2_files(test_asset("tokenizers/gpt2/encoder.json"), test_asset("tokenizers/gpt2/vocab.bpe"), &t));
    mt_grammar *g = compile("root ::= \"{\\\"a\\\": \" (\"true\" | \"false\" | [0-9]{1,6} | \"\\\"\" [a-z ]* \"\\\"\") \"}\"\n");
    CHECK(t && g);
    if (!t || !g) return;
    int V = mt_tokenizer_vocab_size(t);
    float *l1 = malloc(sizeof(float) * V), *l2 = malloc(sizeof(float) * V);
    uint64_t r = 7;
    for (int run = 0; run < 20; run++) {
        mt_grammar_matcher *fast = NULL, *full = NULL;
        CHECK_OK(mt_grammar_matcher_new(g, t, &fast));
        CHECK_OK(mt_grammar_matcher_new(g, t, &full));
        mt_sampler a, b;
        mt_sampler_init(&a, V, 0.0f, 0, 1.0f, 1);
        mt_sampler_init(&b, V, 0.0f, 0, 1.0f, 1);
        a.constraint = (mt_sampler_constraint){mt_grammar_hook_mask, mt_grammar_hook_accept, fast, mt_grammar_hook_allows};
        b.constraint = (mt_sampler_constraint){mt_grammar_hook_mask, mt_grammar_hook_accept, full, NULL};
        for (int step = 0; step < 24 && !mt_grammar_matcher_finished(full); step++) {
            for (int i = 0; i < V; i++) {
                r = r * 6364136223846793005ULL + 1442695040888963407ULL;
                l1[i] = l2[i] = (float)(r >> 40) / (float)(1 << 24);
            }
            if (run % 2) l1[step] = l2[step] = 2.0f; /* a fixed favourite, sometimes allowed */
            int x = mt_sampler_sample(&a, l1), y = mt_sampler_sample(&b, l2);
            CHECK_MSG(x == y && x >= 0, "run %d step %d: check-first picked %d, full mask %d", run, step, x, y);
            if (x != y || x < 0) break;
        }
        mt_sampler_free(&a), mt_sampler_free(&b);
        mt_grammar_matcher_free(fast), mt_grammar_matcher_free(full);
    }
    free(l1), free(l2);
    mt_grammar_free(g);
    mt_tokenizer_free(t);
}


static mt_grammar *schema_grammar(const char *schema) {
    char *gbnf = NULL;
    mt_grammar *g = NULL;
    CHECK_OK(mt_json_schema_to_gbnf(schema, strlen(schema), &gbnf));
    if (gbnf) {
        CHECK_OK(mt_grammar_compile(gbnf, strlen(gbnf), &g));
        if (!g) fprintf(stderr, "%s\n", gbnf);
    }
    free(gbnf);
    return g;
}

TEST(test_json_schema_objects_required_optional_enums) {
    mt_grammar *g = schema_grammar(
        "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}, \"b\": {\"enum\": [\"x\", 2, null]},"
        " \"c\": {\"type\": \"array\", \"items\": {\"type\": \"boolean\"}, \"minItems\": 1, \"maxItems\": 2},"
        " \"d\": {\"type\": \"string\", \"minLength\": 2, \"maxLength\": 3}}, \"required\": [\"a\", \"c\"],"
        " \"additionalProperties\": false}");
    if (!g) return;
    ACCEPTS(g, "{\"a\": 1, \"c\": [true]}");
    ACCEPTS(g, "{\"a\":-12,\"b\":\"x\",\"c\":[true, false],\"d\":\"\\u00e9\\\"\\n\"}");
    ACCEPTS(g, "{\"a\": 0, \"b\": null, \"c\": [false], \"d\": \"\xc3\xa9t\xc3\xa9\"}");
    REJECTS(g, "{\"c\": [true]}");                  /* a is required */
    REJECTS(g, "{\"a\": 1, \"c\": []}");            /* minItems */
    REJECTS(g, "{\"a\": 1, \"c\": [true, true, true]}"); /* maxItems */
    REJECTS(g, "{\"a\": 1, \"b\": \"y\", \"c\": [true]}"); /* not in the enum */
    REJECTS(g, "{\"a\": 1.5, \"c\": [true]}");      /* integer */
    REJECTS(g, "{\"a\": 01, \"c\": [true]}");
    REJECTS(g, "{\"a\": 1, \"c\": [true], \"d\": \"x\"}"); /* minLength */
    REJECTS(g, "{\"a\": 1, \"c\": [true], \"e\": 1}"); /* additionalProperties: false */
    REJECTS(g, "{\"a\": 1, \"c\": [true],}");
    mt_grammar_free(g);
    g = schema_grammar("{\"$defs\": {\"n\": {\"anyOf\": [{\"type\": \"number\"}, {\"type\": \"array\", \"items\": {\"$ref\": \"#/$defs/n\"}}]}},"
                       " \"$ref\": \"#/$defs/n\"}");
    if (!g) return;
    ACCEPTS(g, "-1.5e+300");
    ACCEPTS(g, "[1, [2E-3, []], 0.25]");
    REJECTS(g, "[1, \"2\"]");
    REJECTS(g, "1e");
    mt_grammar_free(g);
    g = schema_grammar("{\"type\": \"string\", \"pattern\": \"^[A-Z]{2}-\\\\d{2,3}(x|\xc3\xa9)?$\"}");
    if (!g) return;
    ACCEPTS(g, "\"AB-12\"");
    ACCEPTS(g, "\"AB-123\xc3\xa9\"");
    REJECTS(g, "\"AB-1\"");
    REJECTS(g, "\"ab-12\"");
    mt_grammar_free(g);
    g = schema_grammar("{\"type\": \"string\", \"pattern\": \"a\\\"b\"}"); /* unanchored, with a quote */
    if (!g) return;
    ACCEPTS(g, "\"xxa\\\"byy\"");
    REJECTS(g, "\"ab\"");
    mt_grammar_free(g);
}

static void check_bad_schema(const char *schema, mt_status code, const char *needle) {
    char *gbnf = NULL;
    CHECK_ERR(mt_json_schema_to_gbnf(schema, strlen(schema), &gbnf), code, needle);
    CHECK(gbnf == NULL);
}

TEST(test_json_schema_refusals_name_the_pointer) {
    check_bad_schema("{\"type\": \"object\", \"properties\": {\"a/b\": {\"type\": \"integer\", \"minimum\": 3}}}", MT_ERR_UNSUPPORTED,
                     "at /properties/a~1b/minimum: keyword \"minimum\" is not supported");
    check_bad_schema("{\"oneOf\": [{\"type\": \"string\"}]}", MT_ERR_UNSUPPORTED, "at /oneOf: keyword \"oneOf\"");
    check_bad_schema("{\"items\": {\"$ref\": \"http://x/y\"}, \"type\": \"array\"}", MT_ERR_UNSUPPORTED, "at /items/$ref: $ref");
    check_bad_schema("{\"$ref\": \"#/$defs/missing\"}", MT_ERR_FORMAT, "names no definition");
    check_bad_schema("{\"type\": \"array\", \"minItems\": 3, \"maxItems\": 2}", MT_ERR_FORMAT, "nothing matches");
    check_bad_schema("{\"type\": \"string\", \"pattern\": \"(?=a)\"}", MT_ERR_UNSUPPORTED, "at /pattern: pattern: lookaround");
    check_bad_schema("{\"type\": \"strin\"}", MT_ERR_FORMAT, "at /type: unknown type \"strin\"");
    check_bad_schema("{\"type\": \"object\", \"required\": [\"x\"]}", MT_ERR_UNSUPPORTED, "at /required/0");
    check_bad_schema("{\"type\": ", MT_ERR_FORMAT, "JSON Schema: line 1");
    check_bad_schema("false", MT_ERR_UNSUPPORTED, "matches nothing");
}

TEST(test_sql_grammar_from_database) {
    char *gbnf = NULL;
    mt_grammar *g = NULL;
    CHECK_OK(mt_sql_grammar_from_db(test_asset("text2sql/nba_roster/nba_roster.db"), &gbnf));
    if (gbnf) CHECK_OK(mt_grammar_compile(gbnf, strlen(gbnf), &g));
    free(gbnf);
    if (!g) return;
    /* every gold query of the text-to-SQL test set */
    FILE *fp = fopen(test_asset("text2sql/nba_roster/data/gold-test-set.jsonl"), "r");
    CHECK(fp != NULL);
    char line[8192];
    int n = 0;
    while (fp && fgets(line, sizeof line, fp)) {
        json_t *o = json_loads(line, 0, NULL);
        const char *sql = json_string_value(json_object_get(o, "sql"));
        if (sql) {
            n++;
            CHECK_MSG(match(g, sql) == 1, "gold SQL rejected: %s", sql);
        }
        json_decref(o);
    }
    if (fp) fclose(fp);
    CHECK_INT_EQ(n, 20);
    ACCEPTS(g, "SELECT T1.name, count(*) AS n FROM nba_roster AS T1 WHERE T1.age BETWEEN 20 AND 30 GROUP BY team HAVING count(*) > 2 ORDER BY n DESC LIMIT 3");
    REJECTS(g, "SELECT height FROM nba_roster");  /* no such column */
    REJECTS(g, "SELECT name FROM players");       /* no such table */
    REJECTS(g, "SELECT name FROM nba_roster WHERE");
    REJECTS(g, "DROP TABLE nba_roster");
    mt_grammar_free(g);
    CHECK_ERR(mt_sql_grammar_from_db("no/such.db", &gbnf), MT_ERR_IO, "no/such.db");
}

int main(void) {
    RUN(test_literals_alternation_sequences);
    RUN(test_repetitions_and_groups);
    RUN(test_classes_escapes_utf8);
    RUN(test_multiline_rules_and_recursion);
    RUN(test_bad_grammars_name_line_and_column);
    RUN(test_fixture_grammars);
    RUN(test_masks_match_byte_reference_spm);
    RUN(test_first_token_space_is_stripped_for_spm);
    RUN(test_masks_match_byte_reference_gpt2);
    RUN(test_greedy_check_first_equals_full_mask);
    RUN(test_json_schema_objects_required_optional_enums);
    RUN(test_json_schema_refusals_name_the_pointer);
    RUN(test_sql_grammar_from_database);
    TEST_MAIN_END();
}
