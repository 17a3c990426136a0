/* Hub names and GGUF suffix matching (src/formats/hub_name.c), and mt_hub_resolve's argument
 * checks and cache lookup without a network (the downloads are tested in tests/cli/hub.sh
 * against a stand-in Hub). */
#include "test.h"
#include "formats/hub.h"
#include "core/file.h"
#include <unistd.h>

TEST(test_names) {
    mt_hub_name n;
    CHECK(mt_hub_name_parse("HuggingFaceTB/SmolLM2-135M", &n));
    CHECK_STR_EQ(n.org, "HuggingFaceTB");
    CHECK_STR_EQ(n.name, "SmolLM2-135M");
    CHECK_STR_EQ(n.rev, "main");
    CHECK_STR_EQ(n.quant, "");
    CHECK(mt_hub_name_parse("bartowski/SmolLM2-135M-Instruct-GGUF@refs/pr/3:Q4_K_M", &n));
    CHECK_STR_EQ(n.name, "SmolLM2-135M-Instruct-GGUF");
    CHECK_STR_EQ(n.rev, "refs/pr/3");
    CHECK_STR_EQ(n.quant, "Q4_K_M");
    CHECK(mt_hub_name_parse("a/b.c_d:q8_0", &n));
    CHECK_STR_EQ(n.name, "b.c_d");
    CHECK_STR_EQ(n.quant, "q8_0");
    CHECK(mt_hub_name_parse("org/name@v1.0", &n));
    CHECK_STR_EQ(n.rev, "v1.0");
    const char *bad[] = {"", "name", "/abs/path", "./a/b", "../a/b", "a/b/c", "a//b", "a/", "/b", "a/b@",
                         "a/b:", "a/b:Q4 K", "a/b@x:Q4:Q8", "a--x/b", "a/b..c", "a/.b", "a/b.", "-a/b",
                         "a/b@../x", "a/b@/x", "a/b@x//y", "org/na me", "models/stories260K/stories260K bin"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) CHECK_MSG(!mt_hub_is_name(bad[i]), "'%s'", bad[i]);
    char longname[200];
    memset(longname, 'x', sizeof longname);
    longname[0] = 'o', longname[1] = '/', longname[sizeof longname - 1] = 0;
    CHECK(!mt_hub_is_name(longname)); /* a name over the Hub's 96 characters */
    CHECK(mt_hub_is_name("models/stories260K.bin")); /* a missing path of this shape is tried as a name */
}

TEST(test_gguf_match) {
    CHECK_INT_EQ(mt_hub_gguf_match("smollm2-135m-instruct-q4_k_m.gguf", "Q4_K_M"), 2);
    CHECK_INT_EQ(mt_hub_gguf_match("SmolLM2.Q4_K_M.gguf", "q4_k_m"), 2);
    CHECK_INT_EQ(mt_hub_gguf_match("SmolLM2.Q4_K_M.gguf", "Q4_K"), 1); /* inside a longer type */
    CHECK_INT_EQ(mt_hub_gguf_match("sub/dir/model-Q8_0-00001-of-00002.gguf", "Q8_0"), 2);
    CHECK_INT_EQ(mt_hub_gguf_match("model-Q8_0.bin", "Q8_0"), 0);
    CHECK_INT_EQ(mt_hub_gguf_match("q8_0/model.gguf", "Q8_0"), 0); /* the directory does not count */
    CHECK_INT_EQ(mt_hub_gguf_match("model.F16.gguf", "Q8_0"), 0);
    CHECK(mt_hub_is_gguf("X.GGUF") && !mt_hub_is_gguf("gguf"));
    CHECK(mt_hub_is_hex("0123456789abcdef0123456789abcdef01234567", 40));
    CHECK(!mt_hub_is_hex("0123456789ABCDEF0123456789abcdef01234567", 40));
    CHECK(!mt_hub_is_hex("0123", 40));
}

TEST(test_resolve_offline) {
    char *path = (char *)1;
    mt_hub_options o = {.cache_dir = test_tmpdir("hub"), .offline = 1};
    CHECK_ERR(mt_hub_resolve("not a name", &o, &path), MT_ERR_ARG, "not a Hub model name");
    CHECK(path == NULL);
    CHECK_ERR(mt_hub_resolve("a/b", NULL, &path), MT_ERR_ARG, "no cache directory");
    CHECK_ERR(mt_hub_resolve("a/b", &o, &path), MT_ERR_IO, "not in the cache");
    /* a snapshot with a config but no weights is incomplete; with a dangling weights link too */
    char *snap = mt_strdup_printf("%s/models--a--b/snapshots/0123456789abcdef0123456789abcdef01234567", o.cache_dir);
    char *ref = mt_strdup_printf("%s/models--a--b/refs", o.cache_dir);
    CHECK_OK(mt_mkdir_p(snap));
    CHECK_OK(mt_mkdir_p(ref));
    char *p = mt_strdup_printf("%s/main", ref);
    CHECK_OK(mt_write_file_atomic(p, "0123456789abcdef0123456789abcdef01234567\n", 41));
    free(p);
    p = mt_path_join(snap, "config.json");
    CHECK_OK(mt_write_file_atomic(p, "{}", 2));
    free(p);
    CHECK_ERR(mt_hub_resolve("a/b", &o, &path), MT_ERR_IO, "incomplete");
    p = mt_path_join(snap, "model.safetensors");
    CHECK(symlink("../../blobs/missing", p) == 0);
    CHECK_ERR(mt_hub_resolve("a/b", &o, &path), MT_ERR_IO, "incomplete");
    unlink(p);
    CHECK_OK(mt_write_file_atomic(p, "x", 1));
    free(p);
    CHECK_OK(mt_hub_resolve("a/b", &o, &path));
    CHECK_STR_EQ(path, snap);
    free(path);
    /* :QUANT finds the GGUF in the snapshot; a name without one takes a lone GGUF */
    p = mt_path_join(snap, "m.Q4_K_M.gguf");
    CHECK_OK(mt_write_file_atomic(p, "GGUF", 4));
    CHECK_OK(mt_hub_resolve("a/b:q4_k_m", &o, &path));
    CHECK_STR_EQ(path, p);
    free(path);
    CHECK_ERR(mt_hub_resolve("a/b:Q8_0", &o, &path), MT_ERR_IO, "not in the cache");
    CHECK_ERR(mt_hub_resolve("a/b@other", &o, &path), MT_ERR_IO, "no snapshot");
    free(p), free(snap), free(ref);
}

int main(void) {
    RUN(test_names);
    RUN(test_gguf_match);
    RUN(test_resolve_offline);
    TEST_MAIN_END();
}
