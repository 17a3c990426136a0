/* The kernels' thread pool (src/kernels/pool.c): every task runs exactly once per call, in
 * any number of back-to-back calls (the pool's generations), with nested calls and calls
 * from several threads at once; tids stay below the thread count; results that depend on a
 * split depend on the thread count only (the same bits in every run and from every thread). */
#include "test.h"
#include "kernels/kernels.h"
#include "kernels/pool.h"
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

enum { MAXN = 5000 };

typedef struct {
    _Atomic int hits[MAXN];
    _Atomic int bad_tid, nested_calls;
    int nest;
} count_job;

static void inner_task(void *p, int i, int tid) {
    count_job *j = p;
    (void)tid;
    atomic_fetch_add(&j->hits[i], 1);
}

static void count_task(void *p, int i, int tid) {
    count_job *j = p;
    /* a task that runs on the pool is nested; one run inline (one thread, the pool busy) may be */
    if (mt_kernels_threads() > 1 && tid > 0 && !mt_pool_nested()) atomic_fetch_add(&j->bad_tid, 1);
    if (tid < 0 || tid >= mt_kernels_threads()) atomic_fetch_add(&j->bad_tid, 1);
    atomic_fetch_add(&j->hits[i], 1);
    if (j->nest && i == 0) { /* a parallel call inside a task runs inline, in order */
        count_job *inner = calloc(1, sizeof *inner);
        mt_parallel(100, inner_task, inner);
        int ok = 1;
        for (int k = 0; k < 100; k++) ok &= inner->hits[k] == 1;
        if (ok) atomic_fetch_add(&j->nested_calls, 1);
        free(inner);
    }
}

static int run_counts(int n, int nest) {
    count_job *j = calloc(1, sizeof *j);
    j->nest = nest;
    mt_parallel(n, count_task, j);
    int ok = j->bad_tid == 0 && (!nest || j->nested_calls == 1);
    for (int i = 0; i < MAXN; i++) ok &= j->hits[i] == (i < n);
    free(j);
    return ok;
}

TEST(every_task_runs_once_in_many_calls) {
    int ok = 1;
    for (int r = 0; r < 3000; r++) ok &= run_counts(1 + (r * 7919) % MAXN % 97, 0);
    CHECK(ok);
    CHECK(run_counts(MAXN, 0));
    CHECK(run_counts(64, 1));
    CHECK(!mt_pool_nested());
}

static void *caller_thread(void *p) {
    int *ok = p;
    for (int r = 0; r < 300; r++) *ok &= run_counts(1 + r % 200, r % 3 == 0);
    return NULL;
}

TEST(calls_from_several_threads_at_once) {
    int ok[3] = {1, 1, 1};
    pthread_t th[3];
    for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, caller_thread, &ok[i]);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    CHECK(ok[0] && ok[1] && ok[2]);
}

typedef struct {
    size_t covered[1000];
} range_job;

static void range_task(void *p, size_t a, size_t b, int tid) {
    range_job *j = p;
    (void)tid;
    for (size_t i = a; i < b; i++) j->covered[i]++;
}

TEST(ranges_cover_every_unit_once) {
    for (size_t n = 1; n <= 1000; n += 37) {
        range_job *j = calloc(1, sizeof *j);
        mt_parallel_range(n, 1, range_task, j);
        int ok = 1;
        for (size_t i = 0; i < 1000; i++) ok &= j->covered[i] == (i < n);
        CHECK_MSG(ok, "n = %zu", n);
        free(j);
    }
    CHECK_INT_EQ(mt_parallel_pieces(1000, 0), 1);
    CHECK_INT_EQ(mt_parallel_pieces(1, 1), 1);
}

TEST(split_sums_repeat_bit_for_bit) {
    enum { N = 1 << 20 };
    float *x = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) x[i] = (float)((i * 2654435761u) % 1000003) / 1000003.0f - 0.5f;
    double first = mt_sum_squares(x, N);
    int same = 1;
    for (int r = 0; r < 50; r++) same &= mt_sum_squares(x, N) == first;
    CHECK(same);
    double exact = 0;
    for (int i = 0; i < N; i++) exact += (double)x[i] * x[i];
    CHECK_NEAR(first, exact, 1e-9 * exact);
    free(x);
}

int main(void) {
    mt_set_threads(2);
    RUN(every_task_runs_once_in_many_calls);
    RUN(calls_from_several_threads_at_once);
    RUN(ranges_cover_every_unit_once);
    RUN(split_sums_repeat_bit_for_bit);
    mt_set_threads(4); /* more threads than cores: workers added on the fly */
    RUN(every_task_runs_once_in_many_calls);
    RUN(calls_from_several_threads_at_once);
    mt_set_threads(1);
    RUN(every_task_runs_once_in_many_calls);
    TEST_MAIN_END();
}
