/* Memory tuning (method "memory"): drive the loss on chosen facts to ~0 so greedy decoding
 * returns each stored answer byte for byte, while the base stays frozen and general text is
 * scored as before.
 *
 * What trains: memory experts at the MLP output of a few layers (model/mome.h; sparse AdamW
 * on the expert rows a step used, dense AdamW on the router), the stop token's and template
 * markers' embedding rows (model/adapter.h), and optionally a LoRA adapter.
 *
 * Objective: per fact, the mean NLL of its answer tokens plus EOS (prompt masked); a step's
 * loss is the weighted mean over the facts in it. Schedule: facts not yet memorised fill the
 * step first (weight 1, in a seeded shuffled order); left-over room rehearses memorised ones
 * (weight rehearsal_weight). Every check_every steps all facts are checked in one batched
 * teacher-forced pass: a fact is memorised when at every answer position the argmax is the
 * next answer token (which is what greedy decoding will then produce) and its NLL is <= tau.
 * All memorised at two checks in a row: status "completed"; the step cap first:
 * "partially_completed". General text's perplexity is measured before and at every check;
 * above general_limit times the base, a row of general text joins every later step
 * (rehearsal of general text), and the report says so. At the end every fact is answered by
 * real greedy decoding (KV cache, the path users run) for DIR/facts.jsonl and the recall. */
#include "core/check.h"
#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "model/adapter.h"
#include "model/model.h"
#include "model/mome.h"
#include "model/sampler.h"
#include "model/forward.h"
#include "model/train_model.h"
#include "tokenizer/tokenizer.h"
#include "dataset/batch.h"
#include "train/checkpoint.h"
#include "core/atomic_dir.h"
#include "train/memory.h"
#include "train/memory_run.h"
#include "train/progress.h"
#include "train/train_log.h"
#include "train/optimizer.h"
#include "train/sparse_adam.h"
#include <jansson.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_STEPS 2000
#define DEFAULT_LR 3e-3f
#define GENERAL_TOKENS 1024 /* scored, of sampled text when no --general file is given */
#define DISTILL_TOKENS 4096 /* distilled on, likewise */
#define DISTILL_K 32        /* the base's most likely next tokens kept per position */
#define MAX_DISTILL_WEIGHT 256.0f
#define MIN_CHECK_EVERY 10


/* ---- facts ----------------------------------------------------------------------------- */


/* Every example must be a prompt with one answer; the same prompt with two answers is a
 * conflict (the model cannot return both); exact duplicates are kept once. */
static mt_status check_facts(memory_run *r) {
    mt_dataset *d = &r->data;
    int kept = 0;
    for (int i = 0; i < d->n; i++) {
        mt_example *e = &d->items[i];
        if (!e->messages || e->n_messages < 2 || strcmp(e->messages[e->n_messages - 1].role, "assistant"))
            return mt_error(MT_ERR_ARG, "%s:%d: memory tuning needs prompt/answer facts ({\"input\", \"output\"})",
                            d->files[e->source_file], e->source_line);
        int dup = 0;
        for (int j = 0; j < kept && !dup; j++) {
            mt_example *f = &d->items[j];
            if (strcmp(fact_input(e), fact_input(f))) continue;
            if (strcmp(fact_output(e), fact_output(f)))
                return mt_error(MT_ERR_ARG, "conflict: %s:%d and %s:%d ask \"%.80s\" with different answers (\"%.40s\" vs "
                                "\"%.40s\"); a memorised fact has one answer", d->files[f->source_file], f->source_line,
                                d->files[e->source_file], e->source_line, fact_input(e), fact_output(f), fact_output(e));
            dup = 1;
        }
        if (dup) {
            if (!r->o.quiet)
                mt_progress_message(MT_PROGRESS_WARNING, "%s:%d repeats an earlier fact; kept once", d->files[e->source_file],
                        e->source_line);
            continue; /* the duplicate's memory stays owned by the dataset */
        }
        mt_example tmp = d->items[kept];
        d->items[kept++] = *e;
        d->items[i] = tmp;
    }
    r->n_facts = kept;
    return kept ? MT_OK : mt_error(MT_ERR_ARG, "no facts to memorise");
}

static mt_status render_facts(memory_run *r) {
    r->facts = calloc((size_t)r->n_facts, sizeof *r->facts);
    if (!r->facts) return mt_error(MT_ERR_NOMEM, "out of memory");
    int longest = 0;
    for (int i = 0; i < r->n_facts; i++) {
        mt_example *e = &r->data.items[i];
        mt_status s = mt_example_to_seq(&r->b, e, &r->facts[i]);
        if (s) return mt_error_prefix(s, "%s:%d", r->data.files[e->source_file], e->source_line);
        if (r->facts[i].n > r->T)
            return mt_error(MT_ERR_ARG, "%s:%d: the fact is %d tokens long, more than the %d a row holds (--seq-len, at most "
                            "the context): shorten it or raise --seq-len", r->data.files[e->source_file], e->source_line,
                            r->facts[i].n, r->T);
        if (r->facts[i].n > longest) longest = r->facts[i].n;
    }
    /* Rows span the context (up to 512 tokens) by default: general text must be distilled
     * and scored at every position inference will reach, or whatever learns the facts is
     * free to change the model at the positions never seen. Facts pack several to a row;
     * with few facts the step shrinks to the rows they need (plus the general row). */
    long capacity = 0;
    for (int i = 0; i < r->n_facts; i++) capacity += r->facts[i].n;
    int need = 1 + (int)((capacity + capacity / 8 + r->T - 1) / r->T) + (r->o.general_weight > 0);
    if (r->B > need) r->B = need;
    return MT_OK;
}

/* ---- batches ----------------------------------------------------------------------------- */

static void clear_rows(memory_run *r) {
    for (int i = 0; i < r->B * r->T; i++) {
        r->inputs[i] = 0, r->targets[i] = -1, r->pos[i] = i % r->T, r->doc[i] = -1 - i; /* padding: each position alone (no attention work) */
        r->weight[i] = 0;
    }
}

/* Places sequence ids/learn at (row, col) as document doc with loss weight w per fact (spread
 * over its targets, so each fact counts by its mean NLL). Returns the targets placed. */
static int place(memory_run *r, const mt_token_seq *q, int row, int col, int doc, float w) {
    int n_learn = 0;
    for (int k = 1; k < q->n; k++) n_learn += q->learn[k];
    for (int k = 0; k < q->n; k++) {
        int at = row * r->T + col + k;
        r->inputs[at] = q->ids[k];
        r->targets[at] = k + 1 < q->n && q->learn[k + 1] ? q->ids[k + 1] : -1;
        r->pos[at] = k;
        r->doc[at] = doc;
        r->weight[at] = n_learn ? w / n_learn : 0;
    }
    return n_learn;
}

/* Row 0 of a step: the next row of general text, scored against the base model's own
 * next-token distributions (distillation, mt_soft_targets) so that whatever learns the facts
 * keeps the base's predictions elsewhere. Returns the positions placed. */
static int place_distill_row(memory_run *r) {
    size_t kt = (size_t)r->T * DISTILL_K, off = (size_t)r->distill_cursor * kt;
    for (int k = 0; k < r->T; k++) {
        r->inputs[k] = r->distill_ids[(size_t)r->distill_cursor * r->T + k];
        r->targets[k] = -1, r->pos[k] = k, r->doc[k] = 0;
    }
    memcpy(r->soft_ids, r->base_ids + off, kt * sizeof(int));
    memcpy(r->soft_p, r->base_p + off, kt * sizeof(float));
    r->distill_cursor = (r->distill_cursor + 1) % r->n_distill_rows;
    return r->T;
}

static int distilling(const memory_run *r) { return r->distill_weight > 0 && r->base_ids; }

/* Packs facts into the rows (after the distillation row): unmemorised first, then rehearsal.
 * Returns Σ weights: facts' plus distill_weight times that for the general row. */
static double fill_step(memory_run *r, long *n_targets) {
    clear_rows(r);
    int *used_col = calloc((size_t)r->B, sizeof(int)), doc = 1;
    unsigned char *taken = calloc((size_t)r->n_facts, 1);
    double wsum = 0;
    *n_targets = 0;
    int first_row = 0, general_n = 0;
    if (distilling(r)) general_n = place_distill_row(r), first_row = 1;
    for (int pass = 0; pass < 2 && used_col && taken; pass++)
        for (int visited = 0; visited < r->n_facts; visited++) {
            int f = r->order[(r->cursor + visited) % r->n_facts];
            if (taken[f] || (pass == 0) == r->memorised[f]) continue;
            int row = first_row;
            while (row < r->B && used_col[row] + r->facts[f].n > r->T) row++;
            if (row == r->B) continue;
            float w = pass == 0 ? 1.0f : r->o.rehearsal_weight;
            if (w <= 0) continue;
            *n_targets += place(r, &r->facts[f], row, used_col[row], doc++, w);
            used_col[row] += r->facts[f].n;
            taken[f] = 1;
            wsum += w;
            if (pass == 0) r->cursor = (r->cursor + visited + 1) % r->n_facts;
        }
    if (general_n > 0) { /* the general row weighs distill_weight times all the step's facts */
        double gw = r->distill_weight * (wsum > 0 ? wsum : 1);
        for (int k = 0; k < general_n; k++) r->weight[k] = (float)(gw / general_n);
        wsum += gw;
        *n_targets += general_n;
    }
    free(used_col);
    free(taken);
    return wsum;
}

/* ---- checks ------------------------------------------------------------------------------ */

/* The stored token's logit minus the best other token's at one position: > 0 exactly when
 * greedy decoding picks it (a tie goes to neither). */
static double logit_margin(const float *logits, int V, int target) {
    float rival = -INFINITY;
    for (int v = 0; v < V; v++)
        if (v != target && logits[v] > rival) rival = logits[v];
    return (double)logits[target] - rival;
}


/* One teacher-forced pass over all facts: exact = the argmax is every next answer token;
 * memorised = robust() above. Returns the number memorised. */
static mt_status check_facts_memorised(memory_run *r, int *n_ok) {
    const int V = r->m->cfg.vocab_size;
    *n_ok = 0, r->n_exact = 0;
    for (int next = 0; next < r->n_facts;) {
        clear_rows(r);
        int first = next, row = 0, col = 0;
        int *where = malloc((size_t)r->n_facts * sizeof(int));
        if (!where) return mt_error(MT_ERR_NOMEM, "out of memory");
        for (; next < r->n_facts; next++) {
            if (col + r->facts[next].n > r->T) row++, col = 0;
            if (row == r->B) break;
            where[next] = row * r->T + col;
            place(r, &r->facts[next], row, col, next, 1.0f);
            col += r->facts[next].n;
        }
        mt_status s = mt_train_forward(r->state, r->inputs, r->targets, r->pos, r->doc, 1.0, NULL, NULL);
        for (int f = first; s == MT_OK && f < next; f++) {
            const mt_token_seq *q = &r->facts[f];
            double sum = 0, worst = 0, margin = INFINITY;
            int n = 0;
            for (int k = 0; k + 1 < q->n; k++) {
                if (!q->learn[k + 1]) continue;
                const float *row_logits = r->state->logits + (size_t)(where[f] + k) * V;
                double nll = r->state->lse[where[f] + k] - row_logits[q->ids[k + 1]];
                sum += nll, n++;
                worst = fmax(worst, nll);
                margin = fmin(margin, logit_margin(row_logits, V, q->ids[k + 1]));
            }
            int exact = margin > 0, ok = robust(r, margin, worst);
            r->memorised[f] = (unsigned char)ok;
            r->fact_nll[f] = n ? sum / n : 0;
            r->fact_max_nll[f] = worst;
            r->fact_margin[f] = n ? margin : 0;
            *n_ok += ok;
            r->n_exact += exact;
        }
        free(where);
        if (s) return s;
    }
    return MT_OK;
}

/* Mean NLL of the general text in rows of T tokens (each its own document from position 0). */
static mt_status general_perplexity(memory_run *r, double *ppl) {
    double nll = 0;
    long count = 0;
    mt_status s = MT_OK;
    for (int start = 0; s == MT_OK && start + 1 < r->n_general;) {
        clear_rows(r);
        for (int row = 0; row < r->B && start + 1 < r->n_general; row++) {
            int len = r->n_general - start < r->T ? r->n_general - start : r->T;
            for (int k = 0; k < len; k++) {
                int at = row * r->T + k;
                r->inputs[at] = r->general_ids[start + k];
                r->targets[at] = k + 1 < len ? r->general_ids[start + k + 1] : -1;
                r->pos[at] = k, r->doc[at] = row;
            }
            start += len - 1 > 0 ? len - 1 : 1;
        }
        double part;
        long n;
        s = mt_train_forward(r->state, r->inputs, r->targets, r->pos, r->doc, 1.0, &part, &n);
        nll += part, count += n;
    }
    *ppl = count ? exp(nll / count) : NAN;
    return s;
}

/* ---- general text ------------------------------------------------------------------------ */

typedef struct { char *text; size_t len, cap; } text_buf;

static int collect_text(const char *piece, size_t len, void *user) {
    text_buf *b = user;
    if (b->len + len + 1 > b->cap) {
        size_t cap = (b->len + len + 1) * 2;
        char *t = realloc(b->text, cap);
        if (!t) return 1;
        b->text = t, b->cap = cap;
    }
    memcpy(b->text + b->len, piece, len);
    b->len += len;
    b->text[b->len] = 0;
    return 0;
}

/* Samples n tokens of text from the base model (temperature 1, seeded), in pieces of 256. */
static mt_status sample_base_text(memory_run *r, int n, uint64_t seed, text_buf *b) {
    mt_generate_options g;
    mt_generate_options_default(&g);
    g.temperature = 1.0f, g.top_p = 1.0f, g.seed = seed, g.echo_prompt = 0;
    g.stop_at_eos = 0, g.max_new_tokens = 256;
    mt_status s = MT_OK;
    for (int done = 0; s == MT_OK && done < n; done += g.max_new_tokens, g.seed++) {
        s = mt_generate(r->m, "", &g, collect_text, b, NULL);
        if (!s && collect_text("\n", 1, b)) s = mt_error(MT_ERR_NOMEM, "out of memory");
    }
    return s ? mt_error_prefix(s, "sampling general text from the base model") : MT_OK;
}

static mt_status tokenize_text(memory_run *r, text_buf *b, const char *what, int **ids, int *n) {
    mt_status s = mt_tokenize(r->m->tok, b->text ? b->text : "", 1, ids, n);
    free(b->text);
    *b = (text_buf){0};
    if (s == MT_OK && *n < 16) s = mt_error(MT_ERR_ARG, "%s: too little general text (%d tokens)", what, *n);
    return s;
}

/* The general text: --general FILE (its first half scored by the guard, the second half
 * distilled on), or text the base model samples before any tuning (GENERAL_TOKENS scored,
 * DISTILL_TOKENS more, from other seeds, distilled on), which measures how far tuning moves
 * the model's own distribution. The guard never scores text that was trained on. */
static mt_status load_general(memory_run *r) {
    text_buf b = {0};
    int *ids = NULL, n = 0, *more = NULL, n_more = 0;
    const char *what = r->o.general ? r->o.general : "sampled text";
    mt_status s;
    uint64_t seed = r->o.seed ? r->o.seed : 1;
    if (r->o.general) s = mt_file_read_all(r->o.general, 64u << 20, &b.text, &b.len);
    else s = sample_base_text(r, GENERAL_TOKENS, seed, &b);
    if (!s) s = tokenize_text(r, &b, what, &ids, &n);
    if (!s && !r->o.general && r->o.general_weight > 0 && !(s = sample_base_text(r, DISTILL_TOKENS, seed + 1000, &b)))
        s = tokenize_text(r, &b, what, &more, &n_more);
    free(b.text);
    if (s) {
        free(ids), free(more);
        return s;
    }
    if (more) { /* scored: all of the first sample; distilled on: the second */
        r->general_ids = ids, r->n_general = n;
        r->distill_ids = more, r->n_distill_rows = n_more / r->T, r->distill_owned = 1;
    } else {
        r->general_ids = ids, r->n_general = n / 2;
        r->distill_ids = ids + n / 2, r->n_distill_rows = (n - n / 2) / r->T;
    }
    return MT_OK;
}

/* The base's DISTILL_K most likely next tokens (probabilities) at position i of logits row. */
static void top_k_probs(const float *row, float lse, int V, int *ids, float *p) {
    int n = 0;
    for (int v = 0; v < V; v++) { /* insertion into a sorted list of at most DISTILL_K */
        if (n == DISTILL_K && row[v] <= row[ids[n - 1]]) continue;
        int at = n < DISTILL_K ? n++ : n - 1;
        while (at > 0 && row[ids[at - 1]] < row[v]) ids[at] = ids[at - 1], at--;
        ids[at] = v;
    }
    for (int j = 0; j < n; j++) p[j] = expf(row[ids[j]] - lse);
    for (int j = n; j < DISTILL_K; j++) ids[j] = -1, p[j] = 0;
}

/* Runs the model once over every distillation row before any step (every adapter part
 * starts as the identity, so this is the base model) and keeps its top-k distributions. */
static mt_status record_base_distributions(memory_run *r) {
    if (r->n_distill_rows == 0 || (r->B < 2 && r->o.general_weight == 0)) return MT_OK; /* nothing to distil */
    if (r->B < 2) return mt_error(MT_ERR_ARG, "memory tuning distils general text in one row of each step: use --batch >= 2 "
                                  "(or --general-weight 0)");
    const int V = r->m->cfg.vocab_size;
    size_t per_row = (size_t)r->T * DISTILL_K;
    r->base_ids = malloc((size_t)r->n_distill_rows * per_row * sizeof(int));
    r->base_p = malloc((size_t)r->n_distill_rows * per_row * sizeof(float));
    r->soft_ids = malloc((size_t)r->B * per_row * sizeof(int));
    r->soft_p = calloc((size_t)r->B * per_row, sizeof(float));
    if (!r->base_ids || !r->base_p || !r->soft_ids || !r->soft_p) return mt_error(MT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < (size_t)r->B * per_row; i++) r->soft_ids[i] = -1; /* only row 0 is ever filled */
    r->soft = (mt_soft_targets){r->soft_ids, r->soft_p, DISTILL_K};
    mt_status s = MT_OK;
    for (int first = 0; s == MT_OK && first < r->n_distill_rows; first += r->B) {
        clear_rows(r);
        int rows = r->n_distill_rows - first < r->B ? r->n_distill_rows - first : r->B;
        for (int i = 0; i < rows * r->T; i++)
            r->inputs[i] = r->distill_ids[(size_t)first * r->T + i], r->doc[i] = i / r->T;
        s = mt_train_forward(r->state, r->inputs, r->targets, r->pos, r->doc, 1.0, NULL, NULL);
        for (int i = 0; s == MT_OK && i < rows * r->T; i++)
            top_k_probs(r->state->logits + (size_t)i * V, r->state->lse[i], V,
                        r->base_ids + ((size_t)first * r->T + i) * DISTILL_K, r->base_p + ((size_t)first * r->T + i) * DISTILL_K);
    }
    return s;
}

/* ---- what trains --------------------------------------------------------------------- */

/* Answer tokens the adapters cannot make the model say. The output layer scores the final
 * hidden state's direction n (|n| = 1) with logit_j = u_j·n, u_j = output row j ⊙ the final
 * norm's gain, and neither LoRA nor the experts touch it: token t is the greedy choice only
 * where margin(n) = u_t·n - max_(j != t) u_j·n > 0. REACH_ITERS rounds of projected subgradient
 * ascent from n = u_t/|u_t| find (a lower bound of) the best margin; below REACH_MARGIN times
 * the median |u_j| the token counts as out of reach and its row trains (in a tied model that is
 * also its input embedding). Measured on stories260K (margins / median row norm): the second
 * byte of "í" 0.017, "]" 0.019, "[" 0.029 — none learned through LoRA + experts in 100 steps
 * — against 0.076–0.22 for the digits and 0.13 for the first byte of "í", which were. Candidates
 * go in chunks of 64: one GEMM per round. */
#define REACH_ITERS 200
#define REACH_MARGIN 0.05

/* dst[C] = src / |src|; returns |src| */
static double unit(float *dst, const float *src, int C) {
    double ss = 0;
    for (int c = 0; c < C; c++) ss += (double)src[c] * src[c];
    double norm = sqrt(ss);
    for (int c = 0; c < C; c++) dst[c] = (float)(src[c] / (norm + 1e-30));
    return norm;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* one ascent round for k directions q [k, C]; best[i] = the best margin so far; decided[i] once
 * it passes the bar */
static void reach_round(const float *u, float *q, const float *scores, const int *cand, float *best,
                        unsigned char *decided, int k, int V, int C, float bar, int it) {
    for (int i = 0; i < k; i++) {
        if (decided[i]) continue;
        const float *row = scores + (size_t)i * V;
        int t = cand[i], rival = t ? 0 : 1;
        for (int j = 0; j < V; j++)
            if (j != t && row[j] > row[rival]) rival = j;
        float margin = row[t] - row[rival];
        if (margin > best[i]) best[i] = margin;
        if (best[i] >= bar) {
            decided[i] = 1;
            continue;
        }
        const float *ut = u + (size_t)t * C, *ur = u + (size_t)rival * C;
        float *n = q + (size_t)i * C;
        double dd = 0;
        for (int c = 0; c < C; c++) dd += (double)(ut[c] - ur[c]) * (ut[c] - ur[c]);
        double step = 0.05 / sqrt(it + 1.0) / (sqrt(dd) + 1e-30);
        for (int c = 0; c < C; c++) n[c] += (float)(step * (ut[c] - ur[c]));
        unit(n, n, C);
    }
}

static int out_of_reach(const mt_model *m, const int *cand, int n, unsigned char *hard) {
    const mt_config *c = &m->cfg;
    int V = c->vocab_size, C = c->dim, chunk = 64;
    memset(hard, 0, (size_t)n);
    if (!m->output || !m->norm_final || n == 0) return 1; /* nothing to measure with: no rows added */
    float *u = malloc((size_t)V * C * sizeof(float)), *q = malloc((size_t)chunk * C * sizeof(float));
    float *scores = malloc((size_t)chunk * V * sizeof(float)), *norms = malloc((size_t)V * sizeof(float));
    float best[64];
    int ok = u && q && scores && norms;
    for (size_t i = 0; ok && i < (size_t)V * C; i++) u[i] = m->output[i] * m->norm_final[i % C];
    for (int j = 0; ok && j < V; j++) norms[j] = (float)unit(q, u + (size_t)j * C, C); /* q: scratch here */
    if (ok) qsort(norms, (size_t)V, sizeof(float), cmp_float);
    float bar = ok ? (float)REACH_MARGIN * norms[V / 2] : 0;
    for (int first = 0; ok && first < n; first += chunk) {
        int k = n - first < chunk ? n - first : chunk, open = k;
        unsigned char *decided = hard + first;
        for (int i = 0; i < k; i++) {
            unit(q + (size_t)i * C, u + (size_t)cand[first + i] * C, C);
            best[i] = -INFINITY;
        }
        for (int it = 0; it < REACH_ITERS && open > 0; it++) {
            mt_matmul_forward(scores, q, u, NULL, k, C, V);
            reach_round(u, q, scores, cand + first, best, decided, k, V, C, bar, it);
            open = 0;
            for (int i = 0; i < k; i++) open += !decided[i];
        }
        for (int i = 0; i < k; i++) decided[i] = !decided[i]; /* hard = never passed the bar */
    }
    free(u), free(q), free(scores), free(norms);
    return ok;
}

/* "auto": the stop token, control and template tokens in the facts, and answer tokens out of
 * the adapters' reach; or a comma list of ids; or "none" */
static mt_status auto_rows(memory_run *r, int **ids, int *n) {
    int V = r->m->cfg.vocab_size, bos = r->b.bos_id, n_cand = 0;
    unsigned char *seen = calloc((size_t)V, 1);
    int *cand = malloc((size_t)V * sizeof(int)), *out = malloc((size_t)V * sizeof(int));
    unsigned char *hard = malloc((size_t)V);
    if (!seen || !cand || !out || !hard) {
        free(seen), free(cand), free(out), free(hard);
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    *n = 0;
    if (r->b.eos_id >= 0 && r->b.eos_id < V) out[(*n)++] = r->b.eos_id, seen[r->b.eos_id] = 1;
    for (int f = 0; f < r->n_facts; f++)
        for (int k = 0; k < r->facts[f].n; k++) {
            int id = r->facts[f].ids[k], type = mt_tokenizer_type(r->m->tok, id);
            if (id < 0 || id >= V || seen[id] || id == bos) continue;
            if (type == MT_TOKTYPE_CONTROL || type == MT_TOKTYPE_USER_DEFINED) out[(*n)++] = id, seen[id] = 1;
            else if (r->facts[f].learn[k]) cand[n_cand++] = id, seen[id] = 1;
        }
    int ok = out_of_reach(r->m, cand, n_cand, hard);
    for (int i = 0; ok && i < n_cand; i++)
        if (hard[i]) out[(*n)++] = cand[i];
    free(seen), free(cand), free(hard);
    if (!ok) {
        free(out);
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    *ids = out;
    return MT_OK;
}

static mt_status setup_rows(memory_run *r) {
    const char *spec = r->o.trainable_tokens ? r->o.trainable_tokens : "auto";
    if (!strcmp(spec, "none")) return MT_OK;
    int *ids = NULL, n = 0;
    mt_status s = MT_OK;
    if (!strcmp(spec, "auto")) {
        s = auto_rows(r, &ids, &n);
    } else {
        if (!(ids = malloc(MT_MAX_TOKEN_ROW_IDS * sizeof(int)))) return mt_error(MT_ERR_NOMEM, "out of memory");
        s = mt_parse_token_ids(spec, ids, MT_MAX_TOKEN_ROW_IDS, &n);
    }
    if (!s && n > 0) s = mt_token_rows_create(r->m, ids, n, &r->rows);
    if (!s && r->rows) s = mt_model_attach_token_rows(r->m, r->rows);
    free(ids);
    return s;
}

/* The default bank (--experts -1, --expert-sites unset), sized from the facts and the model:
 *  - sites: every layer of a model of at most 8 layers, else 8 layers evenly spread (the
 *    last among them);
 *  - experts per site N: the facts' answer positions P (answer tokens + EOS) each route H·K
 *    slots per site; N = P·H·K/2 rounded up to a power of two (two slots per expert: the load
 *    at which 200 random labels were all learnt with 65,536 experts), at least 4,096 and at
 *    most 131,072;
 *  - then halved (down to 4,096) while the banks would pass BANK_BUDGET bytes (sites·N·2C
 *    floats): a smollm-135m-shaped model (30 layers of width 576) gets 8 sites of 32,768.
 * Either flag given keeps its value. */
#define BANK_BUDGET (2.0 * (1 << 30))
#define MIN_AUTO_EXPERTS 4096L
#define MAX_AUTO_EXPERTS (1L << 17)
static void auto_bank(const memory_run *r, long *experts, char *sites, size_t cap, int *n_sites) {
    const mt_config *c = &r->m->cfg;
    int L = c->n_layers;
    *n_sites = L;
    if (!r->o.expert_sites && L > 8) {
        size_t at = 0;
        *n_sites = 8;
        for (int i = 0; i < 8 && at + 8 < cap; i++) at += (size_t)snprintf(sites + at, cap - at, i ? ",%d" : "%d", ((i + 1) * L + 7) / 8 - 1);
    }
    if (r->o.experts >= 0) {
        *experts = r->o.experts;
        return;
    }
    long P = 0;
    for (int f = 0; f < r->n_facts; f++)
        for (int k = 1; k < r->facts[f].n; k++) P += r->facts[f].learn[k];
    long want = P * r->o.expert_heads * r->o.expert_k / 2, n = MIN_AUTO_EXPERTS;
    while (n < want && n < MAX_AUTO_EXPERTS) n *= 2;
    while (n > MIN_AUTO_EXPERTS && (double)*n_sites * n * 2 * c->dim * sizeof(float) > BANK_BUDGET) n /= 2;
    *experts = n;
}

static mt_status setup_trainables(memory_run *r) {
    mt_status s = setup_rows(r);
    long experts;
    int n_sites;
    char *sites = r->auto_sites; /* r->mome_opts keeps pointing at it */
    auto_bank(r, &experts, sites, sizeof r->auto_sites, &n_sites);
    if (!s && experts > 0) {
        mt_mome_options mo;
        mt_mome_options_default(&mo);
        mo.experts = experts, mo.k = r->o.expert_k, mo.heads = r->o.expert_heads;
        mo.sites = r->o.expert_sites ? r->o.expert_sites : sites[0] ? sites : NULL;
        mo.freeze_router = r->o.freeze_router, mo.seed = r->o.seed;
        mo.context_dim = r->o.expert_context;
        r->mome_opts = mo;
        if (!(s = mt_mome_create(r->m, &mo, &r->mome))) s = mt_model_attach_mome(r->m, r->mome);
    }
    if (!s && r->o.memory_lora) {
        mt_lora_options lo;
        mt_lora_options_default(&lo);
        lo.rank = r->o.lora_rank, lo.alpha = r->o.lora_alpha, lo.rslora = r->o.lora_rslora;
        lo.targets = r->o.lora_targets, lo.seed = r->o.seed;
        if (!(s = mt_lora_create(r->m, &lo, &r->lora))) s = mt_model_attach_lora(r->m, r->lora);
    }
    if (!s && !r->rows && !r->mome && !r->lora)
        s = mt_error(MT_ERR_ARG, "memory tuning with nothing to train (--experts 0, --trainable-tokens none, no LoRA)");
    return s;
}

static mt_status allocate(memory_run *r) {
    size_t n = (size_t)r->B * r->T;
    r->inputs = malloc(n * sizeof(int)), r->targets = malloc(n * sizeof(int));
    r->pos = malloc(n * sizeof(int)), r->doc = malloc(n * sizeof(int));
    r->weight = malloc(n * sizeof(float));
    r->memorised = calloc((size_t)r->n_facts, 1);
    r->fact_nll = calloc((size_t)r->n_facts, sizeof(double));
    r->fact_max_nll = calloc((size_t)r->n_facts, sizeof(double));
    r->fact_margin = calloc((size_t)r->n_facts, sizeof(double));
    r->order = malloc((size_t)r->n_facts * sizeof(int));
    if (!r->inputs || !r->targets || !r->pos || !r->doc || !r->weight || !r->memorised || !r->fact_nll ||
        !r->fact_max_nll || !r->fact_margin || !r->order)
        return mt_error(MT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < r->n_facts; i++) r->order[i] = i;
    for (int i = r->n_facts - 1; i > 0; i--) { /* seeded Fisher-Yates */
        int j = (int)(mt_rng_next(&r->rng) % (uint64_t)(i + 1)), t = r->order[i];
        r->order[i] = r->order[j], r->order[j] = t;
    }
    mt_status s = mt_train_create(r->m, r->B, r->T, &r->state);
    if (!s) s = mt_train_set_trainable(r->state, NULL, 0);
    float lr = r->o.lr;
    if (!s && r->rows) s = mt_adamw_init(&r->rows_opt, (size_t)(1 + r->rows->untied) * r->rows->n * r->rows->dim, lr, 0.9f, 0.999f, 1e-8f, 0);
    if (!s && r->mome && !r->mome->freeze_router)
        s = mt_adamw_init(&r->router_opt, r->mome->n_sites * r->mome->router_size, lr, 0.9f, 0.999f, 1e-8f, 0);
    if (!s && r->mome) s = mt_sparse_adam_init(&r->bank_opt, 2 * r->mome->shape.C);
    if (!s && r->mome) {
        size_t slots = (size_t)r->mome->n_sites * n * r->mome->shape.H * r->mome->shape.K;
        if (!(r->slot_ids = malloc(slots * sizeof(long)))) s = mt_error(MT_ERR_NOMEM, "out of memory");
    }
    if (!s && r->lora) s = mt_adamw_init(&r->lora_opt, r->lora->n_params, lr, 0.9f, 0.999f, 1e-8f, 0);
    return s;
}

/* ---- one step ------------------------------------------------------------------------------ */

/* The expert rows a step used, summed per expert: row [a_e | b_e] of site k has id k·N + e,
 * matching the per-slot (da, db) gradients the backward wrote. Only a fact's answer positions
 * (where a target is learnt) bring rows into training; every other position (the prompt, the
 * distilled general text, padding) reaches only rows that already train. So the rows that
 * change, and with them the adapter and the checkpoints, follow the facts: the general row
 * alone touched most of the bank (the quick start: 228,900 of 327,680 rows in 150 steps, as
 * Adam moves a row by ~lr whatever its gradient's size) while its distillation only needs to
 * hold back the rows the facts move. */
static mt_status gather_bank_grads(memory_run *r) {
    const mt_mome *mm = r->mome;
    int per_pos = mm->shape.H * mm->shape.K;
    size_t per_site = (size_t)r->B * r->T * per_pos;
    for (int site = 0; site < mm->n_sites; site++)
        for (size_t i = 0; i < per_site; i++) {
            long id = (long)site * mm->n_experts + r->state->mome_idx[site * per_site + i];
            int answer = r->targets[i / per_pos] >= 0;
            r->slot_ids[site * per_site + i] = answer || mt_sparse_adam_has(&r->bank_opt, id) ? id : -1;
        }
    return mt_sparse_rows_gather(&r->gathered, r->slot_ids, r->state->mome_slot_grads, (long)(mm->n_sites * per_site),
                                 2 * mm->shape.C);
}

static mt_status update_bank(memory_run *r, float lr) {
    /* row id site·N + e addresses [a_e | b_e] of that site: sites are contiguous [N, 2C] */
    return mt_sparse_adam_update(&r->bank_opt, r->mome->bank, &r->gathered, r->loop.step + 1, lr, 0);
}

/* Every trained gradient, in the order their norms add up: token rows, router, LoRA, the
 * bank's gathered rows. */
static int trained_gradients(void *self, mt_grad_span *g, int cap) {
    memory_run *r = self;
    (void)cap;
    g[0] = (mt_grad_span){r->rows ? r->state->row_grads : NULL, r->rows ? r->rows_opt.n : 0};
    g[1] = (mt_grad_span){r->state->mome_router_grads, r->state->mome_router_grads ? r->router_opt.n : 0};
    g[2] = (mt_grad_span){r->lora ? r->state->lora_grads : NULL, r->lora ? r->lora->n_params : 0};
    g[3] = (mt_grad_span){r->mome ? r->gathered.grads : NULL, r->mome ? (size_t)r->gathered.n * 2 * r->mome->shape.C : 0};
    return 4;
}

static mt_status train_step(void *self, mt_loop *l, double *loss) {
    memory_run *r = self;
    (void)l;
    long n_targets;
    double wsum = fill_step(r, &n_targets);
    if (n_targets == 0) return mt_error(MT_ERR_ARG, "no fact fits a row of --seq-len %d", r->T);
    mt_train_zero_grads(r->state);
    mt_train_set_target_weights(r->state, r->weight);
    if (distilling(r)) mt_train_set_soft_targets(r->state, &r->soft);
    mt_status s = mt_train_forward(r->state, r->inputs, r->targets, r->pos, r->doc, 1.0 / wsum, NULL, NULL);
    double nll = 0; /* of the facts' answer tokens alone (the general row is not a fact) */
    long n_fact_targets = 0;
    for (int i = 0; !s && i < r->B * r->T; i++)
        if (r->targets[i] >= 0)
            nll += r->state->lse[i] - r->state->logits[(size_t)i * r->m->cfg.vocab_size + r->targets[i]], n_fact_targets++;
    if (!s) s = mt_train_backward(r->state);
    mt_train_set_target_weights(r->state, NULL);
    mt_train_set_soft_targets(r->state, NULL);
    if (!s && r->mome) s = gather_bank_grads(r);
    *loss = n_fact_targets ? nll / n_fact_targets : 0;
    return s;
}

static mt_status update(void *self, mt_loop *l, float lr) {
    memory_run *r = self;
    (void)l;
    mt_status s = MT_OK;
    if (r->rows) {
        mt_adamw_begin_step(&r->rows_opt);
        r->rows_opt.lr = lr;
        mt_adamw_update(&r->rows_opt, r->rows->values, r->state->row_grads, 0, r->rows_opt.n, 0);
        mt_token_rows_sync(r->rows);
    }
    if (r->state->mome_router_grads) {
        mt_adamw_begin_step(&r->router_opt);
        r->router_opt.lr = lr;
        mt_adamw_update(&r->router_opt, r->mome->router, r->state->mome_router_grads, 0, r->router_opt.n, 0);
    }
    if (r->mome && (s = update_bank(r, lr))) return s;
    if (r->lora) {
        mt_adamw_begin_step(&r->lora_opt);
        r->lora_opt.lr = lr;
        mt_adamw_update(&r->lora_opt, r->lora->params, r->state->lora_grads, 0, r->lora->n_params, 0);
    }
    return MT_OK;
}

/* ---- the run ------------------------------------------------------------------------------- */

static mt_status setup(memory_run *r, const char *data_path) {
    mt_train_options *o = &r->o;
    if (!r->m->tok) return mt_error(MT_ERR_ARG, "the model has no tokenizer (give one with --tokenizer)");
    if (r->m->lora || r->m->mome || r->m->token_rows)
        return mt_error(MT_ERR_ARG, "memory tuning makes its own adapter: detach the one attached first");
    if (o->experts < -1) return mt_error(MT_ERR_ARG, "--experts %ld: give N > 0, 0 (none) or -1 (sized from the facts)", o->experts);
    if (o->batch < 1 || o->steps < 0 || !(o->lr >= 0) || !(o->tau >= 0) || !(o->margin >= 0) || isinf(o->margin) ||
        !(o->general_limit >= 1) || o->rehearsal_weight < 0 || o->warmup < 0)
        return mt_error(MT_ERR_ARG, "memory tuning needs batch >= 1, steps >= 0, tau >= 0, a finite margin >= 0, a general "
                        "limit >= 1, a rehearsal weight >= 0 and warmup >= 0");
    if (o->lr == 0) o->lr = DEFAULT_LR;
    mt_status ps = mt_schedule_parse(o->schedule ? o->schedule : "constant", &r->loop.sched);
    if (ps) return ps;
    if (o->steps == 0) o->steps = DEFAULT_STEPS;
    const mt_config *c = &r->m->cfg;
    r->T = o->seq_len > 0 ? o->seq_len : (c->max_seq_len < 512 ? c->max_seq_len : 512); /* until the facts are known */
    r->B = o->batch;
    mt_rng_seed(&r->rng, o->seed ? o->seed : 1);
    mt_status s = data_path ? mt_dataset_load_jsonl(&r->data, data_path, o->skip_bad_lines) : MT_OK;
    if (!s && o->data_text) s = mt_dataset_load_jsonl_text(&r->data, "examples", o->data_text, strlen(o->data_text), o->skip_bad_lines);
    for (int i = 0; !s && i < o->n_data; i++) s = mt_dataset_load_jsonl(&r->data, o->data[i], o->skip_bad_lines);
    if (!s) s = check_facts(r);
    const char *src = r->m->chat_template ? r->m->chat_template : mt_chat_template_default();
    if (!s && (s = mt_chat_template_compile(src, &r->tpl))) s = mt_error_prefix(s, "chat template");
    if (s) return s;
    r->b = (mt_seq_builder){.tok = r->m->tok, .tpl = r->tpl, .bos_id = mt_tokenizer_bos(r->m->tok),
                            .eos_id = mt_tokenizer_eos(r->m->tok) >= 0 ? mt_tokenizer_eos(r->m->tok) : c->eos_id};
    if (!s) s = render_facts(r);
    if (!s) s = load_general(r); /* before anything attaches: the base model's own text */
    if (!s) s = setup_trainables(r);
    if (!s) s = allocate(r);
    r->distill_weight = o->general_weight;
    if (!s) s = record_base_distributions(r);
    return s;
}

static void memory_free(memory_run *r) {
    if (r->state) mt_train_free(r->state);
    /* the adapter parts stay alive only as long as the run: detach, then free */
    if (r->m->mome == r->mome) mt_model_attach_mome(r->m, NULL);
    if (r->m->lora == r->lora) mt_model_attach_lora(r->m, NULL);
    mt_token_rows_free(r->rows);
    mt_mome_free(r->mome);
    mt_lora_free(r->lora);
    mt_adamw_free(&r->rows_opt), mt_adamw_free(&r->router_opt), mt_adamw_free(&r->lora_opt);
    if (r->mome) mt_sparse_adam_free(&r->bank_opt);
    mt_sparse_rows_free(&r->gathered);
    for (int i = 0; r->facts && i < r->n_facts; i++) mt_token_seq_free(&r->facts[i]);
    free(r->facts);
    if (r->tpl) mt_chat_template_free(r->tpl);
    mt_dataset_free(&r->data);
    free(r->inputs), free(r->targets), free(r->pos), free(r->doc), free(r->weight);
    free(r->memorised), free(r->fact_nll), free(r->fact_max_nll), free(r->fact_margin), free(r->order), free(r->slot_ids);
    free(r->general_ids);
    if (r->distill_owned) free(r->distill_ids);
    free(r->base_ids), free(r->base_p), free(r->soft_ids), free(r->soft_p);
    free(r->ckpt_dir);
    if (r->metrics) fclose(r->metrics);
    mt_memory_best_free(r);
    mt_infer_free(r->m);
}

static void print_setup(const memory_run *r) {
    if (r->o.quiet) return;
    mt_progress_message(MT_PROGRESS_INFO, "memory tuning %d facts; rows of %d x %d; lr %g; margin %g, tau %g", r->n_facts, r->B,
            r->T, (double)r->o.lr, (double)r->o.margin, (double)r->o.tau);
    if (r->mome)
        mt_progress_message(MT_PROGRESS_INFO, "memory experts: %ld per site at %d layer(s), k=%d, heads=%d, routing context %d, "
                "router %s: %zu parameters", r->mome->n_experts, r->mome->n_sites, r->mome->shape.K, r->mome->shape.H,
                r->mome->context.dim, r->mome->freeze_router ? "frozen" : "trained", mt_mome_param_count(r->mome));
    if (r->rows) {
        char list[3072] = "";
        for (int i = 0, len = 0; i < r->rows->n && len < (int)sizeof list - 12; i++)
            len += snprintf(list + len, sizeof list - (size_t)len, " %d", r->rows->ids[i]);
        mt_progress_message(MT_PROGRESS_INFO, "trainable token rows:%s", list);
    }
}

/* The guard acts on the general perplexity: above the limit general text weighs twice as much
 * from the next step on (up to MAX_DISTILL_WEIGHT); back under half the allowed rise, it
 * returns halfway towards --general-weight, so the facts get the steps again. */
static void adjust_general_weight(memory_run *r, double ratio) {
    float was = r->distill_weight, floor = r->o.general_weight;
    if (ratio > r->o.general_limit && was < MAX_DISTILL_WEIGHT) {
        r->distill_weight = was > 0 ? 2 * was : 1;
        r->guard_trips++;
    } else if (ratio < 1 + (r->o.general_limit - 1) / 2 && was > floor) {
        r->distill_weight = was / 2 > floor ? was / 2 : floor;
    }
    mt_progress p = {.kind = MT_PROGRESS_GUARD, .step = r->loop.step, .total_steps = r->o.steps, .general_perplexity = r->ppl_last,
                     .base_perplexity = r->ppl_base, .general_ratio = ratio, .general_limit = r->o.general_limit,
                     .general_weight = r->distill_weight};
    if (r->distill_weight != was) mt_progress_emit(&p);
}

/* Checks all facts (and the general text); returns whether every fact is memorised. */
static mt_status check(memory_run *r, int *all_ok, int *n_ok) {
    mt_status s = check_facts_memorised(r, n_ok);
    if (!s) s = general_perplexity(r, &r->ppl_last);
    if (s) return s;
    *all_ok = *n_ok == r->n_facts;
    double ratio = r->ppl_last / r->ppl_base;
    if (r->base_ids) adjust_general_weight(r, ratio); /* recorded: the guard can distil */
    if ((s = mt_memory_best_consider(r))) return s;
    double elapsed = r->seconds_before + mt_now_seconds() - r->t0;
    mt_progress p = {.kind = MT_PROGRESS_CHECK, .step = r->loop.step, .total_steps = r->o.steps, .loss = r->last_loss,
                     .facts = r->n_facts, .facts_memorised = *n_ok, .facts_exact = r->n_exact, .general_perplexity = r->ppl_last,
                     .base_perplexity = r->ppl_base, .general_weight = r->distill_weight, .elapsed_s = elapsed,
                     .fact_margins = r->fact_margin};
    mt_progress_emit(&p);
    if (r->metrics) {
        char b[2][32]; /* JSON has no NaN or inf (core/check.h) */
        fprintf(r->metrics, "{\"step\": %ld, \"loss\": %s, \"facts_exact\": %d, \"facts_memorised\": %d, \"facts\": %d, "
                "\"general_perplexity\": %s, \"general_weight\": %g, \"elapsed_s\": %.2f}\n", r->loop.step,
                mt_json_number(b[0], 32, "%.6g", r->last_loss), r->n_exact, *n_ok, r->n_facts,
                mt_json_number(b[1], 32, "%.6g", r->ppl_last), (double)r->distill_weight, elapsed);
        fflush(r->metrics);
    }
    return MT_OK;
}

/* DIR/metrics.jsonl, a line per check: a fresh run starts it, a resumed one appends (the
 * lines after the checkpoint's step, written by the run that died, are dropped first). */
static mt_status open_metrics(memory_run *r) {
    char *path = mt_path_join(r->o.out_dir, "metrics.jsonl");
    if (!path) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_status s = r->o.resume ? mt_metrics_drop_after(path, r->loop.step) : MT_OK;
    if (!s && !(r->metrics = fopen(path, r->o.resume ? "a" : "w"))) s = mt_error(MT_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    free(path);
    return s;
}

/* After a step: its progress event, and every check_every steps (and at the cap) a check. */
static mt_status after_step(void *self, mt_loop *l, double grad_norm, float lr) {
    memory_run *r = self;
    (void)grad_norm, (void)lr;
    r->last_loss = l->loss;
    double now = mt_now_seconds();
    mt_progress p = {.kind = MT_PROGRESS_STEP, .step = r->loop.step, .total_steps = r->o.steps, .loss = l->loss,
                     .lr = r->o.lr, .elapsed_s = r->seconds_before + now - r->t0,
                     .tokens_per_s = r->loop.tokens / fmax(r->seconds_before + now - r->t0, 1e-9), .logged = r->loop.step % 10 == 0};
    mt_progress_emit(&p);
    if (r->loop.step % r->check_every == 0 || r->loop.step == r->o.steps) {
        int all_ok;
        mt_status s = check(r, &all_ok, &r->n_ok);
        r->all_ok_checks = all_ok ? r->all_ok_checks + 1 : 0;
        return s;
    }
    return MT_OK;
}

/* The stop rule: every fact memorised at two checks in a row. */
static int all_memorised(void *self, const mt_loop *l) {
    (void)l;
    return ((const memory_run *)self)->all_ok_checks >= 2;
}

static mt_status checkpoint(void *self, mt_loop *l) {
    memory_run *r = self;
    (void)l;
    return mt_memory_checkpoint_save(r, r->seconds_before + mt_now_seconds() - r->t0);
}

/* Test hook: forget what was learnt (the best-check restore must bring it back). */
static void test_hooks(void *self, mt_loop *l) {
    memory_run *r = self;
    (void)l;
    if (r->o.test_forget_after_step > 0 && r->o.test_forget_after_step == r->loop.step) mt_memory_test_forget(r);
}

/* Steps until every fact is memorised at two checks in a row, the step cap or a stop
 * request; checkpoints every save_every steps and on a stop. */
static const mt_train_method memory_method = {
    .name = "memory",
    .compute_gradients = train_step,
    .gradients = trained_gradients,
    .update = update,
    .after_step = after_step,
    .done = all_memorised,
    .save_checkpoint = checkpoint,
    .step_end = test_hooks,
};

/* The end of a run: a checkpoint (so --resume with more --steps continues), the adapter,
 * every fact answered by greedy decoding, the report. */
static mt_status finish(memory_run *r, double seconds, mt_train_result *res, int *stopped) {
    double recall = 0, mean_nll = 0, max_nll = 0;

    char *last = mt_checkpoint_path(r->ckpt_dir, r->loop.step);
    mt_status s = last ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s && mt_checkpoint_verify(last) != MT_OK) s = mt_memory_checkpoint_save(r, seconds);
    if (!s) mt_checkpoint_prune(r->ckpt_dir, 1); /* the last one continues the run; the bank makes them large */
    free(last);
    int restored = 0, last_exact = r->n_exact, last_ok = r->n_ok;
    double last_ppl = r->ppl_last;
    if (!s) s = mt_memory_best_restore(r, &restored);
    if (!s && restored) s = check_facts_memorised(r, &r->n_ok); /* the per-fact figures of the values kept */
    if (!s && restored && !r->o.quiet)
        mt_progress_message(MT_PROGRESS_INFO, "the last check (step %ld: %d exact, %d memorised, general perplexity %.4g) is worse than "
                "step %ld's (%d exact, %d memorised, %.4g): the adapter keeps step %ld's values", r->loop.step, last_exact,
                last_ok, last_ppl, r->best.step, r->best.exact, r->best.memorised, r->best.ppl, r->best.step);
    if (!s) s = mt_memory_save_adapter(r);
    if (!s) s = mt_memory_final_answers(r, &recall, &mean_nll, &max_nll, stopped);
    if (!s && *stopped) return MT_OK;
    /* completed: every fact memorised at the last two checks and answered exactly by the
     * decoding users run (the two agree unless a margin is below rounding) */
    int completed = r->all_ok_checks >= 2 && recall == 1.0;
    const char *status = completed ? "completed" : "partially_completed";
    if (!s) s = mt_memory_write_report(r, status, recall, mean_nll, max_nll, seconds, restored ? r->best.step : -1);
    if (!s && !r->o.quiet)
        mt_progress_message(MT_PROGRESS_INFO, "%s: recall %.4f (%d/%d memorised) after %ld steps in %.1f s; general perplexity %.4g -> %.4g",
                status, recall, r->n_ok, r->n_facts, r->loop.step, seconds, r->ppl_base, r->ppl_last);
    res->completed = completed;
    res->recall = recall;
    res->perplexity_ratio = r->ppl_last / r->ppl_base;
    return s;
}

mt_status mt_memory_train(mt_model *m, const char *data_path, const mt_train_options *opts, mt_train_result *res) {
    memory_run r = {.m = m, .o = *opts};
    double t0 = r.t0 = mt_now_seconds();
    mt_status s = setup(&r, data_path);
    if (!s) s = mt_mkdir_p(r.o.out_dir);
    if (!s && !(r.ckpt_dir = mt_path_join(r.o.out_dir, "checkpoints"))) s = mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s) s = general_perplexity(&r, &r.ppl_base);
    r.ppl_last = r.ppl_base;
    if (s) {
        memory_free(&r);
        return s;
    }
    print_setup(&r);
    if (r.o.dry_run) {
        mt_progress_message(MT_PROGRESS_DRY_RUN, "{\"facts\": %d, \"seq_len\": %d, \"batch\": %d, \"steps\": %d, \"experts\": %ld, \"parameters\": %zu}",
               r.n_facts, r.T, r.B, r.o.steps, r.mome ? r.mome->n_experts : 0, mt_mome_param_count(r.mome));
        memory_free(&r);
        return MT_OK;
    }
    /* about one pass over the facts between checks */
    long capacity = 0;
    for (int f = 0; f < r.n_facts; f++) capacity += r.facts[f].n;
    r.check_every = r.o.check_every > 0 ? r.o.check_every : (int)((capacity + (long)r.B * r.T - 1) / ((long)r.B * r.T));
    if (r.check_every < MIN_CHECK_EVERY) r.check_every = MIN_CHECK_EVERY;
    r.loop.total_steps = r.o.steps, r.loop.tokens_per_step = (long)r.B * r.T;
    r.loop.peak_lr = r.o.lr, r.loop.warmup = r.o.warmup, r.loop.clip = r.o.clip, r.loop.save_every = r.o.save_every;
    int all_ok = 0, stopped = 0;
    r.o.resume = mt_checkpoint_start(r.ckpt_dir, r.o.resume);
    if (r.o.resume) s = mt_memory_checkpoint_resume(&r);
    if (!s) s = open_metrics(&r);
    if (!s && !r.o.resume && !(s = check(&r, &all_ok, &r.n_ok))) r.all_ok_checks = all_ok;
    if (!s) s = mt_loop_run(&r.loop, &memory_method, &r);
    stopped = r.loop.interrupted;
    double seconds = r.seconds_before + mt_now_seconds() - t0;
    if (!s && !stopped) s = finish(&r, seconds, res, &stopped);
    res->steps = r.loop.step;
    res->tokens = r.loop.tokens;
    res->seconds = seconds;
    res->train_loss = r.loop.loss;
    res->interrupted = stopped;
    memory_free(&r);
    return s;
}
