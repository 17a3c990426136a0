/* Checkpoints: one self-validating file per checkpoint, written atomically, so a crash at
 * any instant leaves the previous checkpoint intact and a torn file is recognised and
 * skipped on resume.
 *
 * Layout (little-endian): "MTCKPT01" | u32 json_len | u32 n_blobs | u64 payload_len |
 * u64 checksum (FNV-1a over json and payload) | json | payload. The JSON holds the trainer's
 * state (step, data position, RNG, settings) and the name and byte size of each blob; the
 * payload is the blobs (weights, optimizer moments) back to back. */
#ifndef MT_TRAIN_CHECKPOINT_H
#define MT_TRAIN_CHECKPOINT_H
#include <stddef.h>
#include "memtune.h"

typedef struct {
    const char *name;
    void *data;    /* written from / read into */
    size_t bytes;
} mt_ckpt_blob;

/* json_state must be a JSON object text; the blob table is added under "blobs". */
mt_status mt_checkpoint_write(const char *path, const char *json_state, const mt_ckpt_blob *blobs, int n);
/* Reads and validates a checkpoint: checksum, then each expected blob (name and size must
 * match) is copied into blobs[i].data. *json_state is malloc'd. */
mt_status mt_checkpoint_read(const char *path, char **json_state, const mt_ckpt_blob *blobs, int n);
/* Validates a checkpoint and returns its JSON state alone (to size the blobs before
 * mt_checkpoint_read). *json_state is malloc'd. */
mt_status mt_checkpoint_read_state(const char *path, char **json_state);
/* Validates a checkpoint without loading blobs (magic, sizes, checksum). */
mt_status mt_checkpoint_verify(const char *path);
/* Newest valid "step-*.ckpt" in dir (by step number); invalid ones are reported to the
 * run's progress callback and skipped. MT_ERR_IO when there is none. *path is malloc'd. */
mt_status mt_checkpoint_find_latest(const char *dir, char **path);
/* Deletes all but the newest `keep` checkpoints in dir. */
void mt_checkpoint_prune(const char *dir, int keep);
/* Removes the temporary files that checkpoint writes killed midway left in dir (exactly the
 * names "step-N.ckpt.tmp.<pid>", and only those whose process is gone). Returns the count. */
int mt_checkpoint_remove_temps(const char *dir);
/* Every method calls this when a run starts: removes those temporary files, and, when
 * resuming, makes sure there is a valid checkpoint to resume from. A run killed before its
 * first checkpoint has none: it then starts from step 0 (invalid checkpoints are removed),
 * and a message on stderr says so (as it does for removed temp files, even when quiet: the
 * run's files changed). Returns whether to resume (0 when resume is 0). */
int mt_checkpoint_start(const char *dir, int resume);
/* "dir/step-00000042.ckpt", malloc'd */
char *mt_checkpoint_path(const char *dir, long step);

#endif
