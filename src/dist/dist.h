/* Data-parallel training across processes (MPI), the part the trainer uses. The public half
 * (mt_dist_init, rank, size, finalize, stats) is in memtune.h. Every call here takes the
 * mt_dist the caller passed in mt_train_options.dist; with NULL (one process, or a build
 * without MPI) each is the one-process identity: sums of one, nothing exchanged, rank 0 of 1.
 *
 * Collectives: every rank must make the same calls in the same order. Errors that every rank
 * sees alike (a hash mismatch, another rank's failure reported through mt_dist_agree) come
 * back on every rank as the same status; a rank's own error the others cannot know about
 * must end the job (the CLI calls mt_dist_abort), or the others would wait forever.
 *
 * The gradient exchange of one step (sum over ranks, in place):
 *     mt_dist_exchange_begin(d, grads, n);   // the buffer whose backward is about to run
 *     ... mt_dist_exchange_ready(d, from)    // grads[from, n) are final (called by the
 *                                            // backward as each layer finishes: with overlap
 *                                            // their buckets start their all-reduce now)
 *     mt_dist_exchange_finish(d, extra, n2); // starts what is left, waits for all; extra
 *                                            // (token-row gradients; may be NULL) summed too
 * Buckets are contiguous ranges of about bucket_bytes, cut from the top of the buffer down,
 * the order in which a backward completes them (the model's layout puts layer l below layer
 * l + 1 and the head above all layers). */
#ifndef MT_DIST_DIST_H
#define MT_DIST_DIST_H
#include "memtune.h"
#include <stddef.h>
#include <stdint.h>

int mt_dist_is_multi(const mt_dist *d); /* more than one rank */

/* In-place sums over ranks. */
mt_status mt_dist_sum_long(mt_dist *d, long *v, int n);
mt_status mt_dist_sum_double(mt_dist *d, double *v, int n);
/* The largest v over ranks. */
int mt_dist_max_int(mt_dist *d, int v);
/* Rank root's bytes to every rank. */
mt_status mt_dist_bcast(mt_dist *d, void *buf, size_t bytes, int root);

/* Every rank passes its own status; returns MT_OK when all are MT_OK. Otherwise a rank whose
 * own status failed returns it unchanged (its message stands); the others return
 * MT_ERR_MISMATCH "rank R failed: see its message" and mt_dist_error_is_echo() says so. */
mt_status mt_dist_agree(mt_dist *d, mt_status own);
/* Compares n named 64-bit hashes across ranks; on the first that differs, every rank returns
 * MT_ERR_MISMATCH "rank R's <name> differs from rank 0's: ..." (what[i] names hash i). */
mt_status mt_dist_check_same(mt_dist *d, const uint64_t *hash, const char *const *what, int n);

/* Whether the error a training call is returning is one every rank returns (then the ranks
 * may finalize normally; otherwise the caller must end the job with mt_dist_abort), and
 * whether this rank is not the one that reports it. Reset at the start of each run. */
void mt_dist_error_reset(mt_dist *d);
void mt_dist_error_shared(mt_dist *d, int reported_here);

/* The gradient exchange (see the top of the file). */
void mt_dist_exchange_begin(mt_dist *d, float *grads, size_t n);
void mt_dist_exchange_ready(mt_dist *d, size_t from);
mt_status mt_dist_exchange_finish(mt_dist *d, float *extra, size_t n_extra);
/* Counts a step's wall time into the stats (the share spent communicating). */
void mt_dist_count_step(mt_dist *d, double seconds);

/* 64-bit FNV-1a style hash of bytes, continuing from h (start with MT_HASH_START). */
#define MT_HASH_START 0xcbf29ce484222325ull
uint64_t mt_hash_bytes(uint64_t h, const void *p, size_t n);

#endif
