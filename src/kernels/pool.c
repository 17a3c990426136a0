/* The kernels' thread pool (see pool.h).
 *
 * One job at a time: a 64-bit ticket holds the job's generation (32 bits), its task count
 * (16 bits) and the next unclaimed task (16 bits); a thread claims a task by a
 * compare-and-swap on it, so a claim only succeeds in the generation whose function and
 * context it read (the caller rewrites those only after every task of the previous job has
 * finished). The caller runs tasks too, then waits for the ones in flight.
 *
 * Waiting (a worker for the next job, the caller for the last tasks) spins with a pause for
 * SPIN_NS, which keeps a tiny model's back-to-back loops on warm threads when the machine is
 * ours; then yields the core for up to YIELD_NS (another job's runnable thread gets it at
 * once); then sleeps on a futex until woken. libgomp's default (about 300,000 spins at every
 * barrier, hundreds of times per training step) instead burns the cores another job needs. */
#include "kernels/pool.h"
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "kernels/kernels.h"
#include "memtune.h"

#ifndef SPIN_NS
#define SPIN_NS 30000     /* pause-spin this long before yielding */
#endif
#ifndef YIELD_NS
#define YIELD_NS 300000   /* then yield up to this long before sleeping */
#endif
#define MAX_TASKS 0xffff

static struct {
    pthread_mutex_t lock;          /* held by the thread whose job is in the pool */
    _Atomic uint64_t ticket;       /* gen << 32 | n << 16 | next */
    _Atomic(mt_task_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int team;              /* threads taking part in this job: tids below it */
    _Atomic uint32_t done;         /* tasks of this job finished (the caller's futex) */
    _Atomic uint32_t wake;         /* bumped per job (the workers' futex) */
    _Atomic int sleepers;          /* workers asleep on wake */
    _Atomic int caller_sleeping;   /* the caller asleep on done */
    int started;                   /* threads incl. the caller (workers have tids 1..started-1) */
    uint32_t gen;
} P = {.lock = PTHREAD_MUTEX_INITIALIZER, .started = 1};

static _Thread_local int in_pool;

int mt_pool_nested(void) { return in_pool; }

static void futex_wait(_Atomic uint32_t *w, uint32_t v) {
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w, int n) {
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Returns when *w != v: spins, yields, then sleeps (counted in *sleepers); spin = 0 sleeps
 * at once. */
static void wait_change(_Atomic uint32_t *w, uint32_t v, _Atomic int *sleepers, int spin) {
    if (spin) {
        int64_t t0 = 0;
        for (unsigned i = 1;; i++) {
            if (atomic_load_explicit(w, memory_order_acquire) != v) return;
            if ((i & 31) == 0) {
                int64_t t = now_ns();
                if (t0 == 0) t0 = t;
                else if (t - t0 > YIELD_NS) break;
                else if (t - t0 > SPIN_NS) {
                    sched_yield();
                    continue;
                }
            }
            cpu_relax();
        }
    }
    atomic_fetch_add(sleepers, 1);
    while (atomic_load(w) == v) futex_wait(w, v);
    atomic_fetch_sub(sleepers, 1);
}

/* claims and runs tasks of the current job until none is left unclaimed */
static void run_tasks(int tid) {
    for (;;) {
        uint64_t t = atomic_load_explicit(&P.ticket, memory_order_acquire);
        uint32_t n = (uint32_t)(t >> 16) & 0xffff, i = (uint32_t)t & 0xffff;
        if (i >= n) return;
        mt_task_fn fn = atomic_load_explicit(&P.fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&P.ctx, memory_order_relaxed);
        if (tid >= atomic_load_explicit(&P.team, memory_order_relaxed)) return;
        if (!atomic_compare_exchange_weak_explicit(&P.ticket, &t, t + 1, memory_order_acq_rel,
                                                   memory_order_relaxed))
            continue;
        fn(ctx, (int)i, tid);
        if (atomic_fetch_add(&P.done, 1) + 1 == n && atomic_load(&P.caller_sleeping)) futex_wake(&P.done, 1);
    }
}

typedef struct {
    int tid;
    uint32_t seen;
} worker_arg;

static worker_arg worker_args[MT_MAX_THREADS];

static void *worker_main(void *p) {
    worker_arg *a = p;
    int tid = a->tid;
    uint32_t seen = a->seen;
    in_pool = 1;
    mt_blas_serial();
    for (;;) {
        wait_change(&P.wake, seen, &P.sleepers, tid < atomic_load_explicit(&P.team, memory_order_relaxed));
        seen = atomic_load_explicit(&P.wake, memory_order_acquire);
        run_tasks(tid);
    }
    return NULL;
}

/* starts workers up to n threads in all (called with the lock held, no job in flight); on
 * failure the pool keeps the threads it has */
static void grow(int n) {
    if (n <= P.started) return;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* workers take no signals: the caller's thread does */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (P.started < n) {
        worker_arg *a = &worker_args[P.started];
        a->tid = P.started;
        a->seen = atomic_load(&P.wake);
        pthread_t th;
        if (pthread_create(&th, &attr, worker_main, a)) break;
        P.started++;
    }
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

typedef struct {
    mt_task_fn fn;
    void *ctx;
    int n, groups;
} grouped;

static void run_group(void *p, int g, int tid) {
    grouped *j = p;
    int a = (int)mt_piece((size_t)j->n, j->groups, g), b = (int)mt_piece((size_t)j->n, j->groups, g + 1);
    for (int i = a; i < b; i++) j->fn(j->ctx, i, tid);
}

void mt_parallel(int n, mt_task_fn fn, void *ctx) {
    if (n <= 0) return;
    int nth = mt_kernels_threads();
    if (n > MAX_TASKS) { /* more tasks than a ticket counts: contiguous groups of them */
        grouped j = {fn, ctx, n, MAX_TASKS};
        mt_parallel(MAX_TASKS, run_group, &j);
        return;
    }
    if (n == 1 || nth <= 1 || in_pool || pthread_mutex_trylock(&P.lock) != 0) {
        for (int i = 0; i < n; i++) fn(ctx, i, 0);
        return;
    }
    in_pool = 1;
    grow(nth);
    int team = nth < P.started ? nth : P.started;
    atomic_store_explicit(&P.done, 0, memory_order_relaxed);
    atomic_store_explicit(&P.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&P.ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&P.team, team, memory_order_relaxed);
    P.gen++;
    atomic_store_explicit(&P.ticket, (uint64_t)P.gen << 32 | (uint64_t)n << 16, memory_order_release);
    atomic_fetch_add(&P.wake, 1);
    if (atomic_load(&P.sleepers) > 0) futex_wake(&P.wake, INT_MAX);
    run_tasks(0);
    for (;;) {
        uint32_t d = atomic_load_explicit(&P.done, memory_order_acquire);
        if (d == (uint32_t)n) break;
        wait_change(&P.done, d, &P.caller_sleeping, 1);
    }
    in_pool = 0;
    pthread_mutex_unlock(&P.lock);
}

#define PIECES_PER_THREAD 4

int mt_parallel_pieces(size_t n, int parallel) {
    int nth = mt_kernels_threads();
    if (!parallel || nth <= 1 || n <= 1) return 1;
    size_t p = (size_t)nth * PIECES_PER_THREAD;
    if (p > MAX_TASKS) p = MAX_TASKS;
    return (int)(n < p ? n : p);
}

typedef struct {
    mt_range_fn fn;
    void *ctx;
    size_t n;
    int pieces;
} ranged;

static void run_range(void *p, int i, int tid) {
    ranged *r = p;
    size_t a = mt_piece(r->n, r->pieces, i), b = mt_piece(r->n, r->pieces, i + 1);
    if (a < b) r->fn(r->ctx, a, b, tid);
}

void mt_parallel_range(size_t n, int parallel, mt_range_fn fn, void *ctx) {
    if (n == 0) return;
    int pieces = mt_parallel_pieces(n, parallel);
    if (pieces == 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    ranged r = {fn, ctx, n, pieces};
    mt_parallel(pieces, run_range, &r);
}
