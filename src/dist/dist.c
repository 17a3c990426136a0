/* Data-parallel training on MPI (dist.h, memtune.h): init and finalize, rank and size, the
 * small collectives the trainer agrees through, and the bucketed non-blocking all-reduce of
 * the gradients. Built with MT_HAVE_MPI when the build found OpenMPI (pkg-config ompi-c);
 * without it mt_dist_init refuses and every call is the one-process identity.
 *
 * Faults: MPI_COMM_WORLD keeps MPI_ERRORS_ARE_FATAL (a failed MPI call ends the job), and a
 * rank that dies makes mpirun/srun end the others; mt_dist_abort is MPI_Abort for a rank
 * that fails on its own. Calls are made from the thread that called mt_dist_init, never from
 * inside the kernels' OpenMP regions, or, during a gradient exchange with overlap, from the
 * communication thread alone (MPI_THREAD_SERIALIZED). */
#include "dist/dist.h"
#include "core/check.h"
#include "core/error.h"
#include "core/rng.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#ifdef MT_HAVE_MPI
#include <mpi.h>
#endif

#define MAX_REQS 4096

struct range {
    float *buf;
    size_t lo, hi;
};

struct mt_dist {
    int rank, size;
    int first_done;            /* the first step counted (and left out of the stats) */
    int echo;                  /* the last shared error is reported by another rank */
    int agreed;                /* the last error is returned by every rank */
    mt_dist_options o;
    mt_dist_stats st;
    /* the exchange in progress */
    float *buf;
    size_t n, launched;        /* buf[launched, n) has started its all-reduce */
    size_t ready;              /* buf[ready, n) is final */
    /* the communication thread (overlap): a queue of ranges, q_done of q_len summed */
    int thread_on, quit;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct range q[MAX_REQS];
    int q_len, q_done;
};

void mt_dist_options_default(mt_dist_options *o) {
    memset(o, 0, sizeof *o);
    o->overlap = 1;
    o->bucket_bytes = (size_t)4 << 20;
}

int mt_dist_built(void) {
#ifdef MT_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

int mt_dist_rank(const mt_dist *d) { return d ? d->rank : 0; }
int mt_dist_size(const mt_dist *d) { return d ? d->size : 1; }
int mt_dist_is_multi(const mt_dist *d) { return d && d->size > 1; }
int mt_dist_error_is_echo(const mt_dist *d) { return d && d->echo; }
int mt_dist_error_agreed(const mt_dist *d) { return !d || d->agreed; }
void mt_dist_error_reset(mt_dist *d) {
    if (d) d->echo = d->agreed = 0;
}
void mt_dist_error_shared(mt_dist *d, int reported_here) {
    if (!d) return;
    d->agreed = 1;
    d->echo = !reported_here;
}

void mt_dist_get_stats(const mt_dist *d, mt_dist_stats *s) {
    if (d) *s = d->st;
    else memset(s, 0, sizeof *s);
}

uint64_t mt_hash_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

#ifdef MT_HAVE_MPI

static void *comm_main(void *arg);

mt_status mt_dist_init(int *argc, char ***argv, const mt_dist_options *opts, mt_dist **out) {
    *out = NULL;
    mt_dist_options o;
    if (opts) o = *opts;
    else mt_dist_options_default(&o);
    mt_status s = mt_check_int("--dist-bucket-kb", (long long)(o.bucket_bytes >> 10), 1, 1 << 20);
    if (s) return s;
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        return mt_error(MT_ERR_IO, "MPI_Init_thread failed");
    if (inited) MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_FUNNELED) return mt_error(MT_ERR_UNSUPPORTED, "the MPI library offers no MPI_THREAD_FUNNELED");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    mt_dist *d = calloc(1, sizeof *d);
    if (!d) return mt_error(MT_ERR_NOMEM, "out of memory");
    d->o = o;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    /* overlap needs a second thread that may call MPI; without SERIALIZED it stays off */
    if (o.overlap && d->size > 1 && provided >= MPI_THREAD_SERIALIZED) {
        pthread_mutex_init(&d->mu, NULL);
        pthread_cond_init(&d->cv, NULL);
        d->thread_on = pthread_create(&d->thread, NULL, comm_main, d) == 0;
        if (!d->thread_on) pthread_mutex_destroy(&d->mu), pthread_cond_destroy(&d->cv);
    }
    *out = d;
    return MT_OK;
}

void mt_dist_finalize(mt_dist *d) {
    if (!d) return;
    if (d->thread_on) {
        pthread_mutex_lock(&d->mu);
        d->quit = 1;
        pthread_cond_broadcast(&d->cv);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->thread, NULL);
        pthread_mutex_destroy(&d->mu);
        pthread_cond_destroy(&d->cv);
    }
    free(d);
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

void mt_dist_abort(mt_dist *d, int code) {
    (void)d;
    MPI_Abort(MPI_COMM_WORLD, code);
    abort(); /* not reached */
}

/* Time inside a collective counts as communication while an exchange-counted step runs. */
#define TIMED(d, call)                                                                                             \
    do {                                                                                                           \
        double t0_ = mt_now_seconds();                                                                             \
        call;                                                                                                      \
        (d)->st.comm_s += mt_now_seconds() - t0_;                                                                  \
    } while (0)

mt_status mt_dist_sum_long(mt_dist *d, long *v, int n) {
    if (mt_dist_is_multi(d)) TIMED(d, MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_LONG, MPI_SUM, MPI_COMM_WORLD));
    return MT_OK;
}

mt_status mt_dist_sum_double(mt_dist *d, double *v, int n) {
    if (mt_dist_is_multi(d)) TIMED(d, MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    return MT_OK;
}

int mt_dist_max_int(mt_dist *d, int v) {
    if (mt_dist_is_multi(d)) TIMED(d, MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    return v;
}

mt_status mt_dist_bcast(mt_dist *d, void *buf, size_t bytes, int root) {
    if (!mt_dist_is_multi(d)) return MT_OK;
    unsigned char *p = buf;
    while (bytes > 0) { /* MPI counts are ints */
        int chunk = bytes > (1u << 30) ? 1 << 30 : (int)bytes;
        MPI_Bcast(p, chunk, MPI_BYTE, root, MPI_COMM_WORLD);
        p += chunk;
        bytes -= (size_t)chunk;
    }
    return MT_OK;
}

mt_status mt_dist_agree(mt_dist *d, mt_status own) {
    if (!mt_dist_is_multi(d)) return own;
    /* the lowest failing rank, or size when none failed */
    int first = own ? d->rank : d->size;
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == d->size) return MT_OK;
    mt_dist_error_shared(d, own != MT_OK);
    if (own) return own;
    return mt_error(MT_ERR_MISMATCH, "rank %d failed (its message says why)", first);
}

mt_status mt_dist_check_same(mt_dist *d, const uint64_t *hash, const char *const *what, int n) {
    if (!mt_dist_is_multi(d)) return MT_OK;
    for (int i = 0; i < n; i++) {
        uint64_t h0 = hash[i];
        MPI_Bcast(&h0, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
        int first = h0 != hash[i] ? d->rank : d->size;
        MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (first < d->size) {
            mt_dist_error_shared(d, d->rank == 0);
            return mt_error(MT_ERR_MISMATCH, "rank %d's %s differs from rank 0's: every rank must train the same model "
                            "on the same data with the same options (same files on every host, or a shared filesystem)",
                            first, what[i]);
        }
    }
    return MT_OK;
}

/* ---- the gradient exchange ----
 * With overlap, a communication thread sums the buckets (blocking MPI_Allreduce, one at a
 * time, in the order they were queued) while the backward goes on: OpenMPI's non-blocking
 * collectives (libnbc) progress only inside MPI calls and were 10x slower than the blocking
 * ones on 538 MB over shared memory (bench/RESULTS.md). The main thread makes no MPI call
 * while an exchange is in flight (MPI_THREAD_SERIALIZED). */

/* Sums buf[lo, hi) in buckets cut from the top down. */
static void allreduce_range(mt_dist *d, float *buf, size_t lo, size_t hi) {
    size_t per = d->o.bucket_bytes / sizeof(float);
    if (per < 1) per = 1;
    if (per > (1u << 30)) per = 1u << 30;
    while (hi > lo) {
        size_t len = hi - lo < per ? hi - lo : per;
        MPI_Allreduce(MPI_IN_PLACE, buf + hi - len, (int)len, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        hi -= len;
    }
}

static void *comm_main(void *arg) {
    mt_dist *d = arg;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->quit && d->q_done == d->q_len) pthread_cond_wait(&d->cv, &d->mu);
        if (d->quit) break;
        size_t lo = d->q[d->q_done].lo, hi = d->q[d->q_done].hi;
        float *buf = d->q[d->q_done].buf;
        pthread_mutex_unlock(&d->mu);
        double t0 = mt_now_seconds();
        allreduce_range(d, buf, lo, hi);
        double dt = mt_now_seconds() - t0;
        pthread_mutex_lock(&d->mu);
        d->st.background_s += dt;
        d->q_done++;
        pthread_cond_broadcast(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

static void enqueue(mt_dist *d, float *buf, size_t lo, size_t hi) {
    pthread_mutex_lock(&d->mu);
    if (d->q_len == MAX_REQS) { /* full: wait for the thread to catch up */
        while (d->q_done < d->q_len) pthread_cond_wait(&d->cv, &d->mu);
        d->q_len = d->q_done = 0;
    }
    d->q[d->q_len++] = (struct range){buf, lo, hi};
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

void mt_dist_exchange_begin(mt_dist *d, float *grads, size_t n) {
    if (!mt_dist_is_multi(d)) return;
    d->buf = grads;
    d->n = d->launched = d->ready = n;
}

void mt_dist_exchange_ready(mt_dist *d, size_t from) {
    if (!mt_dist_is_multi(d) || !d->buf || !d->thread_on || from >= d->ready) return;
    d->ready = from;
    /* hand whole buckets to the thread (the rest waits for more to be ready, or the finish) */
    size_t per = d->o.bucket_bytes / sizeof(float);
    if (per < 1) per = 1;
    if (d->launched - d->ready >= per) {
        size_t lo = d->launched - (d->launched - d->ready) / per * per;
        enqueue(d, d->buf, lo, d->launched);
        d->launched = lo;
    }
}

mt_status mt_dist_exchange_finish(mt_dist *d, float *extra, size_t n_extra) {
    if (!mt_dist_is_multi(d)) return MT_OK;
    double t0 = mt_now_seconds();
    size_t total = d->buf ? d->n : 0;
    if (d->thread_on) {
        if (d->buf && d->launched > 0) enqueue(d, d->buf, 0, d->launched);
        pthread_mutex_lock(&d->mu);
        while (d->q_done < d->q_len) pthread_cond_wait(&d->cv, &d->mu);
        d->q_len = d->q_done = 0;
        pthread_mutex_unlock(&d->mu);
    } else if (d->buf) {
        allreduce_range(d, d->buf, 0, d->n);
    }
    if (extra && n_extra) {
        allreduce_range(d, extra, 0, n_extra);
        total += n_extra;
    }
    d->buf = NULL;
    d->launched = 0;
    double dt = mt_now_seconds() - t0;
    d->st.comm_s += dt;
    d->st.wait_s += dt;
    d->st.grad_bytes_per_step = total * sizeof(float);
    /* a ring all-reduce sends (and receives) 2 (K - 1) / K of the buffer per rank */
    d->st.sent_bytes_per_step = (size_t)(2.0 * (d->size - 1) / d->size * (double)(total * sizeof(float)));
    return MT_OK;
}

void mt_dist_count_step(mt_dist *d, double seconds) {
    if (!d) return;
    if (!d->first_done) { /* a run's first step allocates and first touches: the stats start after it */
        d->first_done = 1;
        d->st.comm_s = d->st.wait_s = d->st.background_s = 0;
        return;
    }
    d->st.steps++;
    d->st.step_s += seconds;
}

#else /* no MPI in this build */

mt_status mt_dist_init(int *argc, char ***argv, const mt_dist_options *opts, mt_dist **out) {
    (void)argc, (void)argv, (void)opts;
    *out = NULL;
    return mt_error(MT_ERR_UNSUPPORTED, "this memtune was built without MPI (install libopenmpi-dev and rebuild)");
}
void mt_dist_finalize(mt_dist *d) { (void)d; }
void mt_dist_abort(mt_dist *d, int code) {
    (void)d;
    exit(code); /* not reached: there is no mt_dist without MPI */
}
mt_status mt_dist_sum_long(mt_dist *d, long *v, int n) { (void)d, (void)v, (void)n; return MT_OK; }
mt_status mt_dist_sum_double(mt_dist *d, double *v, int n) { (void)d, (void)v, (void)n; return MT_OK; }
int mt_dist_max_int(mt_dist *d, int v) { (void)d; return v; }
mt_status mt_dist_bcast(mt_dist *d, void *buf, size_t bytes, int root) { (void)d, (void)buf, (void)bytes, (void)root; return MT_OK; }
mt_status mt_dist_agree(mt_dist *d, mt_status own) { (void)d; return own; }
mt_status mt_dist_check_same(mt_dist *d, const uint64_t *hash, const char *const *what, int n) {
    (void)d, (void)hash, (void)what, (void)n;
    return MT_OK;
}
void mt_dist_exchange_begin(mt_dist *d, float *grads, size_t n) { (void)d, (void)grads, (void)n; }
void mt_dist_exchange_ready(mt_dist *d, size_t from) { (void)d, (void)from; }
mt_status mt_dist_exchange_finish(mt_dist *d, float *extra, size_t n_extra) { (void)d, (void)extra, (void)n_extra; return MT_OK; }
void mt_dist_count_step(mt_dist *d, double seconds) { (void)d, (void)seconds; }

#endif
