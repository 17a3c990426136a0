/* Minimal test harness: each tests/test_*.c is one binary with several TEST functions,
 * run by tests/run.sh. A failed CHECK prints the file, line and the values that differed. */
#ifndef MT_TEST_H
#define MT_TEST_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memtune.h"

static int mt_test_failures = 0;
static int mt_test_checks = 0;

#define CHECK(cond) do { mt_test_checks++; if (!(cond)) { mt_test_failures++; \
    fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_MSG(cond, ...) do { mt_test_checks++; if (!(cond)) { mt_test_failures++; \
    fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define CHECK_OK(expr) do { mt_status s_ = (expr); mt_test_checks++; if (s_ != MT_OK) { \
    mt_test_failures++; fprintf(stderr, "  FAIL %s:%d: %s -> %s: %s\n", __FILE__, __LINE__, \
    #expr, mt_status_name(s_), mt_last_error()); } } while (0)
/* expects failure with the given status and an error message containing `needle` */
#define CHECK_ERR(expr, status, needle) do { mt_status s_ = (expr); mt_test_checks++; \
    if (s_ != (status) || !strstr(mt_last_error(), (needle))) { mt_test_failures++; \
    fprintf(stderr, "  FAIL %s:%d: %s -> %s (\"%s\"), wanted %s containing \"%s\"\n", __FILE__, \
    __LINE__, #expr, mt_status_name(s_), mt_last_error(), mt_status_name(status), needle); } } while (0)
#define CHECK_INT_EQ(a, b) do { long long a_ = (a), b_ = (b); mt_test_checks++; if (a_ != b_) { \
    mt_test_failures++; fprintf(stderr, "  FAIL %s:%d: %s == %s: %lld != %lld\n", __FILE__, \
    __LINE__, #a, #b, a_, b_); } } while (0)
#define CHECK_STR_EQ(a, b) do { const char *a_ = (a), *b_ = (b); mt_test_checks++; \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) { mt_test_failures++; \
    fprintf(stderr, "  FAIL %s:%d: %s == %s:\n    got      \"%s\"\n    expected \"%s\"\n", \
    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } } while (0)
#define CHECK_NEAR(a, b, tol) do { double a_ = (a), b_ = (b); mt_test_checks++; \
    if (!(fabs(a_ - b_) <= (tol))) { mt_test_failures++; fprintf(stderr, \
    "  FAIL %s:%d: |%s - %s| = |%.9g - %.9g| = %.3g > %.3g\n", __FILE__, __LINE__, #a, #b, \
    a_, b_, fabs(a_ - b_), (double)(tol)); } } while (0)

#define TEST(name) static void name(void)
#define RUN(name) do { int f_ = mt_test_failures; fprintf(stderr, "%s\n", #name); name(); \
    if (mt_test_failures > f_) fprintf(stderr, "  -> %s FAILED\n", #name); } while (0)
#define TEST_MAIN_END() do { fprintf(stderr, "%d checks, %d failures\n", mt_test_checks, \
    mt_test_failures); return mt_test_failures ? 1 : 0; } while (0)

/* Path of the shared assets (../shared/assets by default; MEMTUNE_ASSETS overrides). */
static inline const char *test_assets(void) {
    const char *a = getenv("MEMTUNE_ASSETS");
    return a ? a : "../shared/assets";
}
static inline char *test_asset(const char *rel) {
    static char buf[8][1024];
    static int next = 0;
    char *b = buf[next++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", test_assets(), rel);
    return b;
}
/* A fresh scratch directory under build/, removed and recreated. */
static inline const char *test_tmpdir(const char *name) {
    static char buf[512];
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    snprintf(buf, sizeof buf, "%s/tmp/%s", build, name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    if (system(cmd) != 0) { fprintf(stderr, "cannot create %s\n", buf); exit(2); }
    return buf;
}
#endif
