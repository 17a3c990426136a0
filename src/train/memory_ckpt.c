/* Checkpoints of a memory-tuning run (see memory_run.h): the same self-validating file as
 * full fine-tuning's (train/checkpoint.h), with the run's own blobs. The bank is saved
 * sparsely: only rows the optimizer has touched differ from their seeded initial values, so
 * a checkpoint holds those rows' ids, values and moments, not the whole [N, 2C] table. */
#include "core/error.h"
#include "core/file.h"
#include "train/checkpoint.h"
#include "train/memory_run.h"
#include "train/progress.h"
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BLOBS 20

typedef struct {
    mt_ckpt_blob b[MAX_BLOBS];
    int n;
    long bank_rows;
    int64_t *bank_ids;   /* [bank_rows] row id site·N + e of each slot */
    float *bank_values;  /* [bank_rows, 2C] those rows of the bank */
    float *bank_m, *bank_v; /* loading: [bank_rows, 2C] their moments (saving: the optimizer's) */
    int64_t *best_ids;   /* [r->best.n_rows] the best check's row ids */
} blob_set;

static void add(blob_set *bs, const char *name, void *data, size_t bytes) {
    bs->b[bs->n++] = (mt_ckpt_blob){name, data, bytes};
}

static void blob_set_free(blob_set *bs, int loading) {
    free(bs->bank_ids), free(bs->bank_values), free(bs->best_ids);
    if (loading) free(bs->bank_m), free(bs->bank_v);
}

/* The best check's values (r->best sized by the caller when loading). */
static int best_is_current(const memory_run *r) { return r->best.have && r->best.step == r->loop.step; }

static mt_status add_best(memory_run *r, int loading, blob_set *bs) {
    /* saving: the current values are the best's; loading: prepare_best sized r->best only when
     * the file holds it (r->loop.step is not restored yet) */
    if (!r->best.have || (!loading && best_is_current(r))) return MT_OK;
    size_t n = (size_t)r->best.n_rows, width = r->mome ? 2 * (size_t)r->mome->shape.C : 0;
    if (!(bs->best_ids = malloc(n * sizeof(int64_t) + 1))) return mt_error(MT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !loading && i < n; i++) bs->best_ids[i] = r->best.row_ids[i];
    add(bs, "best_dense", r->best.dense, mt_memory_dense_size(r) * sizeof(float));
    add(bs, "best_row_ids", bs->best_ids, n * sizeof(int64_t));
    add(bs, "best_rows", r->best.rows, n * width * sizeof(float));
    return MT_OK;
}

/* The blob table for a run with bank_rows rows of bank state; loading: the bank's scratch
 * receives the file's rows (else it is filled from the run). */
static mt_status make_blobs(memory_run *r, long bank_rows, int loading, blob_set *bs) {
    memset(bs, 0, sizeof *bs);
    mt_status s = add_best(r, loading, bs);
    if (s) return s;
    size_t nf = (size_t)r->n_facts;
    add(bs, "memorised", r->memorised, nf);
    add(bs, "fact_nll", r->fact_nll, nf * sizeof(double));
    add(bs, "fact_max_nll", r->fact_max_nll, nf * sizeof(double));
    add(bs, "fact_margin", r->fact_margin, nf * sizeof(double));
    if (r->rows) {
        size_t bytes = r->rows_opt.n * sizeof(float);
        add(bs, "token_rows", r->rows->values, bytes);
        add(bs, "token_rows_adam_m", r->rows_opt.m, bytes);
        add(bs, "token_rows_adam_v", r->rows_opt.v, bytes);
    }
    if (r->lora) {
        size_t bytes = r->lora->n_params * sizeof(float);
        add(bs, "lora", r->lora->params, bytes);
        add(bs, "lora_adam_m", r->lora_opt.m, bytes);
        add(bs, "lora_adam_v", r->lora_opt.v, bytes);
    }
    if (!r->mome) return MT_OK;
    const mt_mome *mm = r->mome;
    size_t router = (size_t)mm->n_sites * mm->router_size * sizeof(float), width = 2 * (size_t)mm->shape.C;
    add(bs, "router", mm->router, router);
    if (!mm->freeze_router) {
        add(bs, "router_adam_m", r->router_opt.m, router);
        add(bs, "router_adam_v", r->router_opt.v, router);
    }
    size_t n = (size_t)bank_rows, row_bytes = width * sizeof(float);
    bs->bank_rows = bank_rows;
    bs->bank_ids = malloc(n * sizeof(int64_t) + 1);
    bs->bank_values = malloc(n * row_bytes + 1);
    bs->bank_m = loading ? malloc(n * row_bytes + 1) : r->bank_opt.m;
    bs->bank_v = loading ? malloc(n * row_bytes + 1) : r->bank_opt.v;
    if (!bs->bank_ids || !bs->bank_values || (loading && (!bs->bank_m || !bs->bank_v)))
        return mt_error(MT_ERR_NOMEM, "out of memory for the bank's checkpoint (%ld rows)", bank_rows);
    add(bs, "bank_ids", bs->bank_ids, n * sizeof(int64_t));
    add(bs, "bank_rows", bs->bank_values, n * row_bytes);
    add(bs, "bank_adam_m", bs->bank_m, n * row_bytes);
    add(bs, "bank_adam_v", bs->bank_v, n * row_bytes);
    if (loading || n == 0) return MT_OK;
    long *ids = malloc(n * sizeof(long));
    if (!ids) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_sparse_adam_ids(&r->bank_opt, ids);
    for (size_t i = 0; i < n; i++) {
        bs->bank_ids[i] = ids[i];
        memcpy(bs->bank_values + i * width, mm->bank + (size_t)ids[i] * width, row_bytes);
    }
    free(ids);
    return MT_OK;
}

/* FNV-1a over the rendered facts: a resume with other data is refused. */
static char *facts_fingerprint(const memory_run *r) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int f = 0; f < r->n_facts; f++)
        for (int k = -1; k < r->facts[f].n; k++) {
            uint32_t v = k < 0 ? 0xffffffffu : (uint32_t)r->facts[f].ids[k] ^ ((uint32_t)r->facts[f].learn[k] << 31);
            for (int i = 0; i < 4; i++) h = (h ^ ((v >> (8 * i)) & 0xff)) * 0x100000001b3ull;
        }
    return mt_strdup_printf("%016llx", (unsigned long long)h);
}

static char *state_json(memory_run *r, double seconds, long bank_rows) {
    char *fp = facts_fingerprint(r);
    const mt_mome *mm = r->mome;
    json_t *o = json_pack("{s:s, s:I, s:I, s:i, s:i, s:i, s:f, s:i, s:i, s:i, s:f, s:f, s:I, s:i, s:i, s:s?, s:I, s:i, "
                          "s:I, s:I, s:I, s:I, s:b, s:I, s:i, s:i, s:f, s:I, s:b}",
                          "method", "memory", "step", (json_int_t)r->loop.step, "tokens", (json_int_t)r->loop.tokens,
                          "cursor", r->cursor, "distill_cursor", r->distill_cursor, "guard_trips", r->guard_trips,
                          "distill_weight", (double)r->distill_weight, "all_ok_checks", r->all_ok_checks,
                          "memorised_at_last_check", r->n_ok, "exact_at_last_check", r->n_exact, "perplexity_last", r->ppl_last, "seconds", seconds,
                          "seed", (json_int_t)r->o.seed, "batch", r->B, "seq_len", r->T, "facts_fingerprint", fp,
                          "experts", (json_int_t)(mm ? mm->n_experts : 0), "sites", mm ? mm->n_sites : 0,
                          "bank_state_rows", (json_int_t)bank_rows, "token_rows_adam_step", (json_int_t)r->rows_opt.step,
                          "router_adam_step", (json_int_t)r->router_opt.step, "lora_adam_step", (json_int_t)r->lora_opt.step,
                          "best_have", r->best.have, "best_step", (json_int_t)r->best.step, "best_exact", r->best.exact,
                          "best_memorised", r->best.memorised, "best_perplexity", r->best.ppl,
                          "best_rows", (json_int_t)r->best.n_rows, "best_is_current", best_is_current(r));
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    free(fp);
    return text;
}

mt_status mt_memory_checkpoint_save(memory_run *r, double seconds) {
    long bank_rows = r->mome ? mt_sparse_adam_rows(&r->bank_opt) : 0;
    blob_set bs;
    mt_status s = make_blobs(r, bank_rows, 0, &bs);
    char *json = s ? NULL : state_json(r, seconds, bank_rows), *path = mt_checkpoint_path(r->ckpt_dir, r->loop.step);
    if (!s && (!json || !path)) s = mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s) s = mt_mkdir_p(r->ckpt_dir);
    if (!s) s = mt_checkpoint_write(path, json, bs.b, bs.n);
    if (!s) mt_checkpoint_prune(r->ckpt_dir, r->o.keep_checkpoints > 0 ? r->o.keep_checkpoints : 1);
    blob_set_free(&bs, 0);
    free(json), free(path);
    return s;
}

static json_int_t get_int(json_t *st, const char *key) { return json_integer_value(json_object_get(st, key)); }

/* The settings a step depends on must be the checkpoint's. */
static mt_status check_settings(memory_run *r, json_t *st, const char *path) {
    const char *method = json_string_value(json_object_get(st, "method"));
    if (!method || strcmp(method, "memory"))
        return mt_error(MT_ERR_MISMATCH, "%s: written by a %s run, not memory tuning", path, method ? method : "full/LoRA");
    if (get_int(st, "batch") != r->B || get_int(st, "seq_len") != r->T || (uint64_t)get_int(st, "seed") != r->o.seed)
        return mt_error(MT_ERR_MISMATCH, "%s: was written with rows of %lld x %lld and --seed %lld; resume with the same "
                        "--batch, --seq-len and --seed", path, get_int(st, "batch"), get_int(st, "seq_len"),
                        get_int(st, "seed"));
    char *fp = facts_fingerprint(r);
    const char *was = json_string_value(json_object_get(st, "facts_fingerprint"));
    int same = fp && was && !strcmp(fp, was);
    free(fp);
    if (!same) return mt_error(MT_ERR_MISMATCH, "%s: was written for other facts (the data or the tokenizer changed)", path);
    const mt_mome *mm = r->mome;
    if (get_int(st, "experts") != (mm ? mm->n_experts : 0) || get_int(st, "sites") != (mm ? mm->n_sites : 0))
        return mt_error(MT_ERR_MISMATCH, "%s: was written with %lld experts at %lld site(s); resume with the same --experts "
                        "and --expert-sites", path, get_int(st, "experts"), get_int(st, "sites"));
    return MT_OK;
}

/* Scalars of the schedule and the moments' step counts, checked for sense. */
static mt_status restore_scalars(memory_run *r, json_t *st, const char *path) {
    json_int_t step = get_int(st, "step"), cursor = get_int(st, "cursor"), dc = get_int(st, "distill_cursor");
    json_int_t ok = get_int(st, "memorised_at_last_check"), exact = get_int(st, "exact_at_last_check");
    if (step < 0 || cursor < 0 || cursor >= r->n_facts || dc < 0 || (r->n_distill_rows > 0 && dc >= r->n_distill_rows) ||
        ok < 0 || ok > r->n_facts || exact < ok || exact > r->n_facts)
        return mt_error(MT_ERR_FORMAT, "%s: schedule position or last check out of range (step %lld, cursor %lld, %lld "
                        "memorised, %lld exact)", path, step, cursor, ok, exact);
    r->loop.step = step, r->loop.tokens = get_int(st, "tokens");
    /* the last check's counts: the closing message and the keep-best choice compare with them */
    r->cursor = (int)cursor, r->distill_cursor = (int)dc, r->n_ok = (int)ok, r->n_exact = (int)exact;
    r->guard_trips = (int)get_int(st, "guard_trips"), r->all_ok_checks = (int)get_int(st, "all_ok_checks");
    r->distill_weight = (float)json_number_value(json_object_get(st, "distill_weight"));
    r->ppl_last = json_number_value(json_object_get(st, "perplexity_last"));
    r->seconds_before = json_number_value(json_object_get(st, "seconds"));
    r->rows_opt.step = get_int(st, "token_rows_adam_step");
    r->router_opt.step = get_int(st, "router_adam_step");
    r->lora_opt.step = get_int(st, "lora_adam_step");
    for (int f = 0; f < r->n_facts; f++)
        if (r->memorised[f] > 1) return mt_error(MT_ERR_FORMAT, "%s: bad memorised flag", path);
    return MT_OK;
}

/* Sizes r->best for the checkpoint's best check (its values arrive with the blobs). */
static mt_status prepare_best(memory_run *r, json_t *st, const char *path) {
    mt_memory_best_free(r);
    if (!json_is_true(json_object_get(st, "best_have")) || json_is_true(json_object_get(st, "best_is_current")))
        return MT_OK; /* none, or taken from the restored state (mt_memory_checkpoint_resume) */
    json_int_t n = get_int(st, "best_rows");
    if (n < 0 || (!r->mome && n > 0) || (r->mome && n > (json_int_t)r->mome->n_sites * r->mome->n_experts))
        return mt_error(MT_ERR_FORMAT, "%s: %lld rows in the best check", path, (long long)n);
    size_t width = r->mome ? 2 * (size_t)r->mome->shape.C : 0;
    r->best.dense = malloc(mt_memory_dense_size(r) * sizeof(float) + 1);
    r->best.row_ids = malloc((size_t)n * sizeof(long) + 1);
    r->best.rows = malloc((size_t)n * width * sizeof(float) + 1);
    if (!r->best.dense || !r->best.row_ids || !r->best.rows) return mt_error(MT_ERR_NOMEM, "out of memory");
    r->best.have = 1, r->best.n_rows = r->best.cap = (long)n;
    r->best.step = get_int(st, "best_step");
    r->best.exact = (int)get_int(st, "best_exact"), r->best.memorised = (int)get_int(st, "best_memorised");
    r->best.ppl = json_number_value(json_object_get(st, "best_perplexity"));
    return MT_OK;
}

static mt_status restore_bank(memory_run *r, const blob_set *bs, const char *path) {
    mt_mome *mm = r->mome;
    if (!mm) return MT_OK;
    long n = bs->bank_rows, max_id = (long)mm->n_sites * mm->n_experts;
    size_t width = 2 * (size_t)mm->shape.C;
    long *ids = malloc((size_t)n * sizeof(long) + 1);
    if (!ids) return mt_error(MT_ERR_NOMEM, "out of memory");
    for (long i = 0; i < n; i++) ids[i] = (long)bs->bank_ids[i];
    mt_status s = mt_sparse_adam_restore(&r->bank_opt, ids, n, max_id, bs->bank_m, bs->bank_v);
    for (long i = 0; !s && i < n; i++)
        memcpy(mm->bank + (size_t)ids[i] * width, bs->bank_values + (size_t)i * width, width * sizeof(float));
    free(ids);
    return s ? mt_error_prefix(s, "%s: bank state", path) : MT_OK;
}

mt_status mt_memory_checkpoint_resume(memory_run *r) {
    char *path = NULL, *json = NULL, *json2 = NULL;
    mt_status s = mt_checkpoint_find_latest(r->ckpt_dir, &path);
    if (s) return s;
    json_error_t e;
    json_t *st = NULL;
    blob_set bs = {0};
    if (!(s = mt_checkpoint_read_state(path, &json)) && !(st = json_loads(json, 0, &e)))
        s = mt_error(MT_ERR_FORMAT, "%s: bad state: %s", path, e.text);
    if (!s) s = check_settings(r, st, path);
    json_int_t bank_rows = s ? 0 : get_int(st, "bank_state_rows");
    if (!s && r->mome && (bank_rows < 0 || bank_rows > (json_int_t)r->mome->n_sites * r->mome->n_experts))
        s = mt_error(MT_ERR_FORMAT, "%s: %lld rows of bank state for a bank of %ld", path, (long long)bank_rows,
                     (long)r->mome->n_sites * r->mome->n_experts);
    if (!s) s = prepare_best(r, st, path);
    if (!s) s = make_blobs(r, (long)bank_rows, 1, &bs);
    if (!s) s = mt_checkpoint_read(path, &json2, bs.b, bs.n);
    if (!s) s = restore_scalars(r, st, path);
    if (!s) s = restore_bank(r, &bs, path);
    for (long i = 0; !s && i < r->best.n_rows; i++) {
        r->best.row_ids[i] = (long)bs.best_ids[i];
        if (bs.best_ids[i] < 0 || bs.best_ids[i] >= (int64_t)r->mome->n_sites * r->mome->n_experts)
            s = mt_error(MT_ERR_FORMAT, "%s: best check row id %lld out of range", path, (long long)bs.best_ids[i]);
    }
    if (!s && r->rows) mt_token_rows_sync(r->rows);
    if (!s && json_is_true(json_object_get(st, "best_have")) && json_is_true(json_object_get(st, "best_is_current"))) {
        s = mt_memory_best_snapshot(r); /* the checkpoint's own step was its best check */
        r->best.ppl = json_number_value(json_object_get(st, "best_perplexity"));
    }
    if (!s && !r->o.quiet)
        mt_progress_message(MT_PROGRESS_INFO, "resumed from %s (step %lld, %d/%d facts memorised, %d exact at the last check)", path,
                (long long)r->loop.step, r->n_ok, r->n_facts, r->n_exact);
    blob_set_free(&bs, 1);
    json_decref(st);
    free(json), free(json2), free(path);
    return s;
}
