/* The kernels' thread pool (pool.c): every parallel loop of src/kernels/ runs through it.
 *
 * A parallel call is a number of tasks; the calling thread and the pool's workers claim them
 * one at a time from a shared counter, so whichever threads are running do the work: a worker
 * that is descheduled (another job on the machine, a CPU hog on its core) holds up at most
 * the task it is in, never a whole barrier. Idle workers spin briefly, then yield, then sleep
 * on a futex, so an idle pool costs nothing beside other jobs.
 *
 * Results never depend on which thread ran a task: a kernel splits its work by the configured
 * thread count (mt_kernels_threads) and the task index only; tid (0 = the caller, below the
 * thread count) is for per-thread scratch. A call from inside a task, or from a second thread
 * while the pool is busy, runs its tasks in the calling thread, in order. */
#ifndef MT_KERNELS_POOL_H
#define MT_KERNELS_POOL_H
#include <stddef.h>

typedef void (*mt_task_fn)(void *ctx, int task, int tid);
typedef void (*mt_range_fn)(void *ctx, size_t begin, size_t end, int tid);

/* fn(ctx, i, tid) for every i in [0, n), on the kernel threads; returns when all are done */
void mt_parallel(int n, mt_task_fn fn, void *ctx);
/* How many pieces mt_parallel_range splits n units into (1 when !parallel or one thread):
 * it depends on n and the thread count only. */
int mt_parallel_pieces(size_t n, int parallel);
/* fn(ctx, begin, end, tid) over mt_parallel_pieces(n, parallel) contiguous pieces of [0, n) */
void mt_parallel_range(size_t n, int parallel, mt_range_fn fn, void *ctx);
/* the bounds of piece i of n units split in `pieces` (piece i is [mt_piece(i), mt_piece(i+1))) */
static inline size_t mt_piece(size_t n, int pieces, int i) {
    return (size_t)((unsigned __int128)n * (unsigned)i / (unsigned)pieces);
}
/* mt_parallel when cond, else the tasks in order in the calling thread */
static inline void mt_parallel_if(int cond, int n, mt_task_fn fn, void *ctx) {
    if (cond) mt_parallel(n, fn, ctx);
    else
        for (int i = 0; i < n; i++) fn(ctx, i, 0);
}
/* makes the calling thread's BLAS calls serial (matmul.c); every pool thread calls it */
void mt_blas_serial(void);
/* 1 in a pool task (a nested parallel call would run inline) */
int mt_pool_nested(void);

#endif
