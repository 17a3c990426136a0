/* Training data: every JSONL shape users have becomes the right chat messages; bad lines
 * get errors with file and line (or are skipped and counted); loss masks cover exactly the
 * answers plus EOS; packing keeps documents apart with positions restarting; epochs are
 * reproducible seeded shuffles. */
#include <unistd.h>
#include "test.h"
#include "core/file.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "dataset/batch.h"
#include "dataset/data.h"

static const char *write_tmp(const char *dir, const char *name, const char *content) {
    static char path[8][600];
    static int k = 0;
    char *p = path[k++ % 8];
    snprintf(p, 600, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    fputs(content, f);
    fclose(f);
    return p;
}

TEST(every_shape_becomes_messages) {
    const char *dir = test_tmpdir("data_shapes");
    const char *p = write_tmp(dir, "a.jsonl",
        "{\"input\": \"2+2?\", \"output\": \"4\"}\n"
        "{\"prompt\": \"Capital of France?\", \"completion\": \"Paris\"}\n"
        "\n"
        "{\"instruction\": \"Translate\", \"input\": \"hola\", \"output\": \"hello\"}\n"
        "{\"instruction\": \"Say hi\", \"input\": \"\", \"output\": \"hi\", \"system\": \"Be brief.\"}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n"
        "{\"text\": \"Once upon a time.\"}\n");
    mt_dataset ds = {0};
    CHECK_OK(mt_dataset_load_jsonl(&ds, p, 0));
    CHECK_INT_EQ(ds.n, 6);
    CHECK_INT_EQ(ds.n_blank, 1);
    if (ds.n == 6) {
        CHECK_STR_EQ(ds.items[0].messages[0].content, "2+2?");
        CHECK_STR_EQ(ds.items[0].messages[1].role, "assistant");
        CHECK_STR_EQ(ds.items[1].messages[1].content, "Paris");
        CHECK_STR_EQ(ds.items[2].messages[0].content, "Translate\n\nhola");
        CHECK_INT_EQ(ds.items[3].n_messages, 3);
        CHECK_STR_EQ(ds.items[3].messages[0].role, "system");
        CHECK_STR_EQ(ds.items[3].messages[1].content, "Say hi");
        CHECK_STR_EQ(ds.items[4].messages[1].content, "Hello!");
        CHECK(ds.items[5].messages == NULL);
        CHECK_STR_EQ(ds.items[5].text, "Once upon a time.");
        CHECK_INT_EQ(ds.items[5].source_line, 7);
    }
    mt_dataset_free(&ds);
}

TEST(bad_lines_name_file_and_line) {
    const char *dir = test_tmpdir("data_bad");
    mt_dataset ds = {0};
    const char *p = write_tmp(dir, "bad_json.jsonl", "{\"input\": \"a\", \"output\": \"b\"}\n{\"input\": \"a\", \n");
    CHECK_ERR(mt_dataset_load_jsonl(&ds, p, 0), MT_ERR_FORMAT, "bad_json.jsonl:2:");
    mt_dataset_free(&ds);
    p = write_tmp(dir, "missing.jsonl", "{\"input\": \"a\", \"output\": \"b\"}\n{\"question\": \"a\"}\n");
    CHECK_ERR(mt_dataset_load_jsonl(&ds, p, 0), MT_ERR_FORMAT, "missing.jsonl:2: needs");
    mt_dataset_free(&ds);
    p = write_tmp(dir, "empty_out.jsonl", "{\"input\": \"a\", \"output\": \"\"}\n");
    CHECK_ERR(mt_dataset_load_jsonl(&ds, p, 0), MT_ERR_FORMAT, "empty_out.jsonl:1: the output is empty");
    mt_dataset_free(&ds);
    p = write_tmp(dir, "utf8.jsonl", "{\"input\": \"a\", \"output\": \"b\"}\n{\"input\": \"\xff\", \"output\": \"b\"}\n");
    CHECK_ERR(mt_dataset_load_jsonl(&ds, p, 0), MT_ERR_FORMAT, "utf8.jsonl:2: not valid UTF-8");
    mt_dataset_free(&ds);
    p = write_tmp(dir, "roles.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n");
    CHECK_ERR(mt_dataset_load_jsonl(&ds, p, 0), MT_ERR_FORMAT, "roles.jsonl:1: no assistant message");
    mt_dataset_free(&ds);
    p = write_tmp(dir, "none.jsonl", "\n\n");
    CHECK_ERR(mt_dataset_load_jsonl(&ds, p, 0), MT_ERR_FORMAT, "none.jsonl: no usable example");
    mt_dataset_free(&ds);
    CHECK_ERR(mt_dataset_load_jsonl(&ds, "/nonexistent/x.jsonl", 0), MT_ERR_IO, "x.jsonl");
    mt_dataset_free(&ds);
    /* skipping: the good lines load and the bad ones are counted */
    p = write_tmp(dir, "mixed.jsonl", "{\"input\": \"a\", \"output\": \"b\"}\nnot json\n{\"x\": 1}\n{\"prompt\": \"c\", \"completion\": \"d\"}\n");
    CHECK_OK(mt_dataset_load_jsonl(&ds, p, 1));
    CHECK_INT_EQ(ds.n, 2);
    CHECK_INT_EQ(ds.n_skipped, 2);
    mt_dataset_free(&ds);
    p = write_tmp(dir, "allbad.jsonl", "nope\n{\"x\": 1}\n");
    CHECK_ERR(mt_dataset_load_jsonl(&ds, p, 1), MT_ERR_FORMAT, "no usable example");
    mt_dataset_free(&ds);
}

TEST(json_array_files_load_like_jsonl) {
    mt_dataset ds = {0};
    CHECK_OK(mt_dataset_load_jsonl(&ds, test_asset("instruct/llama-factory/identity.json"), 0));
    CHECK_INT_EQ(ds.n, 91);
    mt_dataset_free(&ds);
}

/* Files saved by Windows editors start with a UTF-8 byte-order mark and end lines with CRLF:
 * both load, in JSONL and in a JSON array, and the mark is not part of the first example. */
TEST(byte_order_mark_and_crlf_load) {
    char dir[] = "/tmp/mt_bom_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    const char *files[2] = {
        write_tmp(dir, "bom.jsonl", "\xEF\xBB\xBF{\"input\":\"a\",\"output\":\"b\"}\r\n{\"input\":\"c\",\"output\":\"d\"}\r\n"),
        write_tmp(dir, "bom.json", "\xEF\xBB\xBF[{\"input\":\"a\",\"output\":\"b\"},{\"input\":\"c\",\"output\":\"d\"}]"),
    };
    for (int f = 0; f < 2; f++) {
        mt_dataset ds = {0};
        CHECK_OK(mt_dataset_load_jsonl(&ds, files[f], 0));
        CHECK_INT_EQ(ds.n, 2);
        CHECK_STR_EQ(ds.items[0].messages[0].content, "a");
        mt_dataset_free(&ds);
        remove(files[f]);
    }
    rmdir(dir);
}

static mt_model *stories(void) {
    mt_model *m = NULL;
    CHECK_OK(mt_model_load(test_asset("models/stories260K/stories260K.bin"), NULL, &m));
    return m;
}

TEST(mask_covers_answer_and_eos_only) {
    mt_model *m = stories();
    if (!m) return;
    mt_chat_template *tpl = NULL;
    CHECK_OK(mt_chat_template_compile(mt_chat_template_default(), &tpl));
    mt_seq_builder b = {.tok = mt_model_tokenizer(m), .tpl = tpl, .eos_id = 2, .bos_id = 1};
    mt_chat_message msgs[2] = {{"user", "Who are you?"}, {"assistant", "I am a cat."}};
    mt_example e = {.messages = msgs, .n_messages = 2};
    mt_token_seq seq;
    CHECK_OK(mt_example_to_seq(&b, &e, &seq));
    int *prompt = NULL, np = 0;
    CHECK_OK(mt_example_prompt_ids(&b, &e, &prompt, &np));
    /* the sequence is the inference prompt, then the answer (learned), then EOS (learned) */
    CHECK(seq.n > np + 1);
    if (seq.n > np + 1) {
        CHECK(memcmp(seq.ids, prompt, (size_t)np * sizeof(int)) == 0);
        for (int i = 0; i < np; i++) CHECK(!seq.learn[i]);
        for (int i = np; i < seq.n; i++) CHECK(seq.learn[i]);
        CHECK_INT_EQ(seq.ids[seq.n - 1], 2);
        char *answer = NULL;
        CHECK_OK(mt_detokenize(mt_model_tokenizer(m), seq.ids + np, seq.n - np - 1, &answer));
        CHECK_STR_EQ(answer, "I am a cat.");
        free(answer);
    }
    free(prompt);
    mt_token_seq_free(&seq);
    /* raw text: BOS + text + EOS, everything after BOS learned */
    mt_example t = {.text = "Once upon a time."};
    CHECK_OK(mt_example_to_seq(&b, &t, &seq));
    CHECK_INT_EQ(seq.ids[0], 1);
    CHECK(!seq.learn[0]);
    for (int i = 1; i < seq.n; i++) CHECK(seq.learn[i]);
    CHECK_INT_EQ(seq.ids[seq.n - 1], 2);
    mt_token_seq_free(&seq);
    mt_chat_template_free(tpl);
    mt_model_free(m);
}

TEST(packing_isolates_documents_and_restarts_positions) {
    mt_packed_data p = {0};
    int a_ids[] = {1, 10, 11, 12}, b_ids[] = {1, 20, 21}, c_ids[] = {1, 30, 31, 32, 33, 34, 35, 36, 37, 38};
    unsigned char a_l[] = {0, 0, 1, 1}, b_l[] = {0, 1, 1}, c_l[] = {0, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    mt_token_seq seqs[3] = {{a_ids, a_l, 4}, {b_ids, b_l, 3}, {c_ids, c_l, 10}};
    p.seqs = seqs;
    p.n_seqs = 3;
    p.seq_len = 6;
    mt_epoch_plan e;
    CHECK_OK(mt_epoch_plan_build(&p, 1, 0, 0, &e));
    /* a (3 positions) + b (2) share row 0; c (9) gets row 1 and is cut at 6 positions */
    CHECK_INT_EQ(e.n_rows, 2);
    int in[6], tg[6], pos[6], doc[6];
    int placed = mt_fill_row(&p, &e, 0, 0, in, tg, pos, doc);
    int want_in[6] = {1, 10, 11, 1, 20, 0}, want_tg[6] = {-1, 11, 12, 20, 21, -1}, want_pos[6] = {0, 1, 2, 0, 1, 5};
    for (int i = 0; i < 6; i++) {
        CHECK_INT_EQ(in[i], want_in[i]);
        CHECK_INT_EQ(tg[i], want_tg[i]);
        CHECK_INT_EQ(pos[i], want_pos[i]);
    }
    CHECK_INT_EQ(placed, 4);
    CHECK(doc[0] == doc[2] && doc[3] == doc[4] && doc[0] != doc[3] && doc[5] != doc[4]);
    mt_epoch_plan_free(&e);
    /* shuffles: same (seed, epoch) -> same order; another epoch -> (usually) another */
    mt_epoch_plan e1, e2, e3;
    mt_token_seq many[40];
    int ids[40][3];
    unsigned char learn[3] = {0, 1, 1};
    for (int i = 0; i < 40; i++) { ids[i][0] = 1; ids[i][1] = i; ids[i][2] = i; many[i] = (mt_token_seq){ids[i], learn, 3}; }
    p.seqs = many;
    p.n_seqs = 40;
    CHECK_OK(mt_epoch_plan_build(&p, 7, 3, 1, &e1));
    CHECK_OK(mt_epoch_plan_build(&p, 7, 3, 1, &e2));
    CHECK_OK(mt_epoch_plan_build(&p, 7, 4, 1, &e3));
    CHECK(memcmp(e1.order, e2.order, sizeof(int) * 40) == 0);
    CHECK(memcmp(e1.order, e3.order, sizeof(int) * 40) != 0);
    mt_epoch_plan_free(&e1);
    mt_epoch_plan_free(&e2);
    mt_epoch_plan_free(&e3);
    /* sequences of unequal length pack into a different number of rows in different
     * epochs, so the trainer must not assume epoch 0's row count */
    static int vids[12][40];
    static unsigned char vlearn[40];
    mt_token_seq varied[12];
    for (int i = 0; i < 12; i++) varied[i] = (mt_token_seq){vids[i], vlearn, 5 + (i * 13) % 31};
    p.seqs = varied;
    p.n_seqs = 12;
    p.seq_len = 48;
    int rows0 = -1, differs = 0;
    for (int ep = 0; ep < 20; ep++) {
        CHECK_OK(mt_epoch_plan_build(&p, 5, ep, 1, &e1));
        if (rows0 < 0) rows0 = e1.n_rows;
        differs |= e1.n_rows != rows0;
        int covered = 0;
        for (int r = 0; r < e1.n_rows; r++) covered += e1.row_count[r];
        CHECK_INT_EQ(covered, 12);
        mt_epoch_plan_free(&e1);
    }
    CHECK(differs);
}

int main(void) {
    RUN(every_shape_becomes_messages);
    RUN(bad_lines_name_file_and_line);
    RUN(json_array_files_load_like_jsonl);
    RUN(byte_order_mark_and_crlf_load);
    RUN(mask_covers_answer_and_eos_only);
    RUN(packing_isolates_documents_and_restarts_positions);
    TEST_MAIN_END();
}
