/* memtune public C API.
 *
 * Load a model (llama2.c .bin, Hugging Face directory, GGUF), tokenize, generate, score
 * text, convert between formats and create randomly initialised models. Every call that can
 * fail returns an mt_status; on failure mt_last_error() gives a message naming the file and
 * the problem. The library never exits the process. */
#ifndef MEMTUNE_H
#define MEMTUNE_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MT_OK = 0,
    MT_ERR_IO,          /* a file could not be opened, read or written */
    MT_ERR_FORMAT,      /* a file is malformed, truncated or inconsistent */
    MT_ERR_NOMEM,       /* allocation failed */
    MT_ERR_ARG,         /* a caller-supplied argument is invalid */
    MT_ERR_UNSUPPORTED, /* valid input that memtune does not handle (dtype, architecture) */
    MT_ERR_MISMATCH,    /* two inputs disagree (tokenizer vs model, shapes vs config) */
    MT_ERR_SQL,         /* an SQL statement failed, was refused by the sandbox or hit a limit */
} mt_status;

const char *mt_last_error(void);
const char *mt_status_name(mt_status s);
const char *mt_version(void);

/* ---- configuration ------------------------------------------------------------------ */

typedef enum { MT_ROPE_SCALING_NONE = 0, MT_ROPE_SCALING_LLAMA3 = 1 } mt_rope_scaling;

typedef struct mt_config {
    char arch[32];        /* "llama", "mistral" or "qwen2" */
    int dim;              /* hidden size */
    int hidden_dim;       /* MLP intermediate size */
    int n_layers;
    int n_heads;
    int n_kv_heads;       /* grouped-query attention when < n_heads */
    int head_dim;         /* usually dim / n_heads; explicit in some configs */
    int vocab_size;
    int max_seq_len;      /* context length */
    float norm_eps;       /* RMSNorm epsilon */
    float rope_theta;
    int rope_interleaved; /* 1: rotate pairs (2i, 2i+1) (llama2.c, GGUF); 0: rotate halves (HF) */
    int tied_embeddings;  /* output head shares the token embedding */
    int attn_bias;        /* q/k/v projections have biases (Qwen2) */
    mt_rope_scaling rope_scaling;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
    int bos_id, eos_id, pad_id; /* -1 when unknown */
} mt_config;

/* Presets: "stories260k", "stories15m", "stories110m", "smollm-135m", "llama-3.2-1b", "qwen2-0.5b". */
mt_status mt_config_preset(const char *name, mt_config *out);
/* Reads a Hugging Face config.json. */
mt_status mt_config_load_json(const char *path, mt_config *out);
/* Checks internal consistency (positive sizes, divisibility). */
mt_status mt_config_validate(const mt_config *cfg, const char *what);
size_t mt_config_param_count(const mt_config *cfg);

/* ---- models ------------------------------------------------------------------------- */

typedef struct mt_model mt_model;
typedef struct mt_tokenizer mt_tokenizer;

typedef struct {
    const char *tokenizer_path; /* optional: llama2.c tokenizer .bin or tokenizer.json */
    int keep_quantized;         /* GGUF whose linear weights (q, k, v, o, gate, up, down) are all
                                   block types (Q4_K, Q8_0, ...): keep them as the file's blocks
                                   (mt_model_base_dtype says "gguf"); decoding multiplies on the
                                   blocks, longer inputs and LoRA training dequantize one matrix
                                   at a time. 0: dequantize everything to f32 */
} mt_load_options;

/* path: llama2.c .bin, .gguf, or a directory with config.json + safetensors. */
mt_status mt_model_load(const char *path, const mt_load_options *opts, mt_model **out);
void mt_model_free(mt_model *m);
const mt_config *mt_model_config(const mt_model *m);
mt_tokenizer *mt_model_tokenizer(const mt_model *m); /* NULL when the model has none */
size_t mt_model_param_count(const mt_model *m);
/* Bytes needed to run inference with a context of n_ctx tokens (weights + KV cache + buffers). */
size_t mt_model_inference_bytes(const mt_model *m, int n_ctx);

/* Context length for inference (KV cache size). By default the model's own context length,
 * capped at 4096 (the memtune command's env MEMTUNE_CTX changes the cap); n > 0 sets it explicitly, for example
 * to run past a context length a converter wrote too small. Frees any KV cache. */
mt_status mt_model_set_context(mt_model *m, int n);

/* A randomly initialised model (normal(0, 0.02) weights, unit norms), no tokenizer. */
mt_status mt_model_init(const mt_config *cfg, uint64_t seed, mt_model **out);

typedef enum { MT_FORMAT_HF = 0, MT_FORMAT_GGUF = 1, MT_FORMAT_LLAMA2C = 2 } mt_format;
mt_status mt_format_parse(const char *name, mt_format *out);
/* HF: path is a directory (created). GGUF, llama2c: path is a file (llama2c also writes
 * tokenizer.bin beside it when the model has a tokenizer). All writes are atomic. */
mt_status mt_model_save(const mt_model *m, const char *path, mt_format fmt);
/* GGUF with its weights in `type`: "f32" (what mt_model_save writes), "f16", "bf16", "q8_0"
 * (as llama.cpp's convert_hf_to_gguf.py --outtype writes them: 2-D weights in the type,
 * norms and biases F32), or "q4_0", "q4_k" (= "q4_k_m"), "q6_k" (as llama-quantize writes that
 * file type without an importance matrix: its per-tensor mix, its fallbacks for rows that
 * are not whole 256-value blocks, ggml's reference quantizers byte for byte). Loading
 * such a file dequantizes it. */
mt_status mt_model_save_gguf(const mt_model *m, const char *path, const char *type);

/* Logits for every position of ids[0..n) (positions 0..n-1), written to out[n*vocab]. */
mt_status mt_model_logits(mt_model *m, const int *ids, int n, float *out);

void mt_set_threads(int n); /* 0 = all cores */

/* Holds the weights of the linear layers (q, k, v, o, gate, up, down) as "bf16" or "q8_0"
 * (Q8_0 blocks along each row) instead of f32, to cut memory for a frozen base (LoRA); they
 * are dequantised one matrix at a time when used. "f32" goes back (to the dequantised
 * values). Embeddings, norms, biases and the head stay f32. A model with such a base runs,
 * trains adapters and merges them (re-quantising, see mt_lora_merge_report), but is saved
 * only after going back to f32. */
mt_status mt_model_set_base_dtype(mt_model *m, const char *dtype);
const char *mt_model_base_dtype(const mt_model *m);

/* ---- tokenizer ---------------------------------------------------------------------- */

/* Encodes UTF-8 text (invalid UTF-8 is an error). add_special: prepend BOS when the
 * tokenizer's rules say so. *ids is malloc'd; free() it. */
mt_status mt_tokenize(const mt_tokenizer *t, const char *text, int add_special, int **ids, int *n_ids);
/* Decodes ids to UTF-8 text (malloc'd, NUL-terminated). */
mt_status mt_detokenize(const mt_tokenizer *t, const int *ids, int n_ids, char **text);
int mt_tokenizer_vocab_size(const mt_tokenizer *t);
int mt_tokenizer_bos(const mt_tokenizer *t);
int mt_tokenizer_eos(const mt_tokenizer *t);

/* ---- generation --------------------------------------------------------------------- */

typedef struct {
    int max_new_tokens;  /* tokens to sample after the prompt; default 256 */
    int echo_prompt;     /* default 1: the prompt's text comes first in the output */
    int limit_includes_prompt; /* 1: max_new_tokens counts the echoed prompt tokens after
                                  BOS too, as llama2.c's -n does; default 0 */
    float temperature;   /* 0 = greedy; default 1.0 */
    int top_k;           /* 0 = off */
    float top_p;         /* 1.0 = off; default 0.9 */
    uint64_t seed;       /* 0 = time-based */
    int stop_at_eos;     /* default 1: stop at EOS (and at BOS, as llama2.c does) */
    const struct mt_grammar *grammar; /* NULL = unconstrained; else the generated text (not
                                         the prompt) always continues a match of it, and
                                         EOS is sampled only where it may end */
} mt_generate_options;

void mt_generate_options_default(mt_generate_options *o);

typedef struct {
    int prompt_tokens;
    int generated_tokens;
    double prompt_seconds;
    double generate_seconds;
    const char *stop_reason;   /* why generation ended (a static string): "eos" (a stop token),
                                  "max_tokens", "context" (the context window is full),
                                  "grammar" (the grammar's match is complete), "callback" */
} mt_generate_stats;

/* Called with each newly completed UTF-8 text fragment; return non-zero to stop. */
typedef int (*mt_text_callback)(const char *text, size_t len, void *user);

mt_status mt_generate(mt_model *m, const char *prompt, const mt_generate_options *opts,
                      mt_text_callback cb, void *user, mt_generate_stats *stats);

/* ---- contexts: one model, many sequences -------------------------------------------- */

/* Thread safety. A loaded mt_model (weights, config, tokenizer, chat template) is read-only
 * while contexts use it: any number of contexts may run on one model at once, each in its
 * own thread, and mt_tokenize / mt_detokenize may be called on the model's tokenizer from
 * any thread. Calls that change a model (mt_model_set_lora, mt_model_attach_*,
 * mt_model_set_context, mt_model_set_base_dtype, mt_lora_merge, mt_train, mt_model_free)
 * must not overlap with any other use of it. A context, and the adapters it uses, is used by
 * one thread at a time. mt_last_error() is per thread. mt_set_threads (call it before starting
 * threads) sets the kernel threads every context uses, in whichever thread it runs.
 *
 * A context holds one sequence's KV cache and position, the adapters it applies (LoRA
 * unmerged with a weight each, memory experts with their routing context, trainable token
 * rows: none is written into the model) and its scratch. The functions that take a model
 * (mt_generate, mt_model_logits, the evals) run the model's own default context, which
 * applies whatever is attached to the model. */
typedef struct mt_context mt_context;
typedef struct mt_lora mt_lora;
typedef struct mt_mome mt_mome;
typedef struct mt_token_rows mt_token_rows;
typedef struct mt_adapter_set mt_adapter_set;

/* n_ctx: KV cache length; 0 = the model's inference context (see mt_model_set_context). */
mt_status mt_context_create(const mt_model *m, int n_ctx, mt_context **out);
void mt_context_free(mt_context *c);
const mt_model *mt_context_model(const mt_context *c);
int mt_context_size(const mt_context *c);
int mt_context_pos(const mt_context *c);   /* tokens in the cache */
void mt_context_reset(mt_context *c);      /* empties the cache (position 0) */
/* The adapter set (not owned; each call empties the cache). */
mt_status mt_context_add_lora(mt_context *c, const mt_lora *l, float weight);
mt_status mt_context_set_mome(mt_context *c, const mt_mome *mm);
mt_status mt_context_set_token_rows(mt_context *c, const mt_token_rows *r);
/* Applies every part of a set (mt_adapter_set_open), its LoRA with this weight. */
mt_status mt_context_use_adapter_set(mt_context *c, const mt_adapter_set *a, float weight);
void mt_context_clear_adapters(mt_context *c);
/* Runs ids[0..n) at the context's position, appends them to the cache and writes the last
 * position's logits to logits[vocab]. */
mt_status mt_context_decode(mt_context *c, const int *ids, int n, float *logits);
/* One token for each of n contexts of one model (ids[i] appended to cs[i]), logits[i][vocab]
 * each: the same numbers as n calls of mt_context_decode, in one forward that reads each
 * weight matrix once for all of them (batched decoding). On an error no context has moved. */
mt_status mt_contexts_decode_batch(mt_context *const *cs, const int *ids, int n, float *const *logits);
/* mt_generate on a context (starts from an empty cache). */
mt_status mt_context_generate(mt_context *c, const char *prompt, const mt_generate_options *opts,
                              mt_text_callback cb, void *user, mt_generate_stats *stats);
/* Loads an adapter directory (as mt_adapter_set_load) without attaching anything to m: for
 * contexts. m is only read. */
mt_status mt_adapter_set_open(const mt_model *m, const char *dir, mt_adapter_set **out);

/* ---- serving: an OpenAI-compatible HTTP server (README: Serving) ----------------------- */

/* GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions (stream as
 * server-sent events), POST /v1/adapters, on libmicrohttpd. Each request's "model" picks the
 * base model or a named adapter directory; every request decodes in its own context, all
 * of them batched one token per step on the shared model. The server never prints: it logs
 * through the callback. The model must outlive the server and not change while it runs. */
typedef struct mt_server mt_server;
typedef struct mt_jobs mt_jobs; /* fine-tuning jobs (memtune_jobs.h) */
typedef void (*mt_log_callback)(const char *message, void *user);

typedef struct {
    const char *host;          /* address to bind; default "127.0.0.1" */
    int port;                  /* default 8080; 0 = any free port (see mt_server_port) */
    const char *api_key;       /* NULL: none; else every /v1 route needs "Bearer KEY" */
    const char *model_name;    /* the base model's id in /v1/models; default "base" */
    int parallel;              /* sequences decoded at once; default 4 */
    int queue;                 /* requests waiting beyond those; default 64, then 503 */
    int n_ctx;                 /* tokens per sequence; 0 = the model's inference context */
    int max_adapters;          /* adapters kept loaded (least recently used leave); default 8 */
    size_t max_body;           /* request body limit in bytes; default 8 MiB */
    int batched;               /* 1 (default): one batched forward per step; 0: one per sequence */
    int allow_adapter_upload;  /* POST /v1/adapters allowed; default 1 */
    mt_jobs *jobs;             /* NULL: none; else /v1/files and /v1/fine_tuning/jobs run on
                                  it (memtune_jobs.h) and every tuned model is served by name */
    mt_log_callback log;       /* NULL: silent */
    void *log_user;
} mt_server_options;

void mt_server_options_default(mt_server_options *o);
/* Starts listening and decoding (threads of its own) and returns at once. */
mt_status mt_server_start(const mt_model *m, const mt_server_options *o, mt_server **out);
/* Makes an adapter directory callable as model `name` (loaded on first use). */
mt_status mt_server_add_adapter(mt_server *s, const char *name, const char *path);
int mt_server_port(const mt_server *s);
/* Stops accepting, lets running requests finish for up to grace_ms, cuts the rest. */
void mt_server_shutdown(mt_server *s, int grace_ms);
void mt_server_free(mt_server *s);

/* ---- data-parallel training on MPI (README: Training on several processes) ------------ */

/* K processes started by mpirun (or srun) train one model together: each loads the model and
 * the data, takes its share of every global batch (K x batch x grad_accum rows), and the
 * ranks sum their gradients (non-blocking all-reduce in buckets, started layer by layer as
 * the backward finishes them) before the same optimizer step on every rank. The loss is
 * normalised by the target tokens of the whole global batch, so K ranks with batch B train
 * as one process with batch K*B. Rank 0 alone writes checkpoints, metrics and outputs;
 * methods full and lora (memory runs as one process).
 *
 * The program calls mt_dist_init once (it is MPI_Init_thread), passes the handle in
 * mt_train_options.dist, and calls mt_dist_finalize before it exits. Built in when the build
 * found OpenMPI (pkg-config ompi-c; `make MPI=0` leaves it out): mt_dist_built() says so,
 * and without it mt_dist_init fails with MT_ERR_UNSUPPORTED. A NULL handle is one process. */
typedef struct mt_dist mt_dist;
typedef struct {
    int overlap;               /* start each bucket's all-reduce as soon as the backward has
                                  finished its layers (default 1); 0 = after the whole backward */
    size_t bucket_bytes;       /* gradient bytes per all-reduce, default 4 MiB; 1 KiB to 1 GiB */
} mt_dist_options;
typedef struct {
    long steps;                /* optimizer steps counted (all but the first of the process's
                                  first run, which allocates and first-touches the state) */
    double step_s;             /* their wall time */
    double comm_s;             /* time spent inside MPI calls during them */
    double wait_s;             /* of which: waiting for the gradient exchange after the backward */
    double background_s;       /* all-reduce time of the communication thread (overlap), hidden
                                  behind the backward except for what wait_s shows */
    size_t grad_bytes_per_step;/* gradient bytes summed across ranks per step */
    size_t sent_bytes_per_step;/* bytes a rank sends per step in a ring all-reduce: 2 (K-1)/K of those */
} mt_dist_stats;
int mt_dist_built(void);
void mt_dist_options_default(mt_dist_options *o);
/* opts NULL = defaults; argc/argv may be NULL. */
mt_status mt_dist_init(int *argc, char ***argv, const mt_dist_options *opts, mt_dist **out);
int mt_dist_rank(const mt_dist *d);  /* 0 for NULL */
int mt_dist_size(const mt_dist *d);  /* 1 for NULL */
/* 1 when the last failed training call's error is another rank's failure seen here (that
 * rank reports the cause; this one need not repeat it). */
int mt_dist_error_is_echo(const mt_dist *d);
/* 1 when every rank returns the failed call's error (the ranks may finalize normally); 0 when
 * it is this rank's alone and the others may be waiting for it: end the job (mt_dist_abort). */
int mt_dist_error_agreed(const mt_dist *d);
void mt_dist_get_stats(const mt_dist *d, mt_dist_stats *s);
/* Ends every rank of the job now (MPI_Abort): for a failure the other ranks cannot know of. */
void mt_dist_abort(mt_dist *d, int code) __attribute__((noreturn));
void mt_dist_finalize(mt_dist *d);

/* ---- training ----------------------------------------------------------------------- */

/* Progress of a training run (py24). The library never prints: every figure and message of a
 * run goes to the options' progress callback, and the CLI (or Python, or your program) shows
 * it. Each event fills the fields its kind names; the rest are 0 (NULL for strings). */
typedef enum {
    MT_PROGRESS_INFO = 0,  /* message: what the run is doing (setup, resumed, saved) */
    MT_PROGRESS_WARNING,   /* message: something the caller may want to fix */
    MT_PROGRESS_STEP,      /* an optimizer step finished: step, total_steps, loss, lr, tokens_per_s,
                              elapsed_s; logged = 1 on the steps that write a metrics line (every
                              log_every), which also set window_loss and grad_norm */
    MT_PROGRESS_EVAL,      /* eval_loss on the held-out set at step */
    MT_PROGRESS_CHECK,     /* memory: every fact checked at step: facts, facts_memorised,
                              facts_exact, general_perplexity, base_perplexity, elapsed_s */
    MT_PROGRESS_GUARD,     /* memory: the perplexity guard changed general_weight (general_perplexity,
                              general_ratio, general_limit) */
    MT_PROGRESS_STOPPED,   /* stopped on request at step after saving a checkpoint */
    MT_PROGRESS_STEP_END,  /* step is done, its checkpoint (if any) written: a safe point */
    MT_PROGRESS_DRY_RUN,   /* message: the dry run's token counts and memory plan (JSON) */
    MT_PROGRESS_RECALL,    /* memory: the final recall (greedy decoding of every fact) has answered
                              facts_answered of facts; sent before each fact (a stop request
                              then ends it there) */
} mt_progress_kind;

typedef struct {
    mt_progress_kind kind;
    const char *method;       /* "full", "lora" or "memory" */
    const char *message;      /* INFO, WARNING, DRY_RUN: the text (no newline at the end) */
    long step, total_steps;
    double loss, window_loss, lr, grad_norm, tokens_per_s, elapsed_s;
    int logged;
    double eval_loss;
    int facts, facts_memorised, facts_exact;
    double general_perplexity, base_perplexity, general_ratio, general_limit, general_weight;
    int facts_answered;        /* RECALL */
    const double *fact_margins; /* CHECK: [facts] each fact's smallest answer margin (the stored
                                   token's logit minus the runner-up's), valid during the call */
} mt_progress;

/* Called on the training thread; return non-zero to stop the run (it saves a checkpoint first,
 * as on the stop flag). */
typedef int (*mt_progress_callback)(const mt_progress *p, void *user);
const char *mt_progress_kind_name(mt_progress_kind k);

typedef struct {
    const char *method;        /* "full", "lora" (see lora_* below) or "memory"; NULL or "auto"
                                  (default): memory when every example is {"input","output"},
                                  else full */
    const char *const *data;   /* extra JSONL files besides mt_train's data_path */
    int n_data;
    const char *eval_data;     /* optional held-out JSONL: eval loss every eval_every steps */
    const char *out_dir;       /* default "memtune-out" */
    int epochs;                /* default 3; ignored when steps > 0 */
    int steps;                 /* optimizer steps; 0 = from epochs */
    float lr;                  /* peak learning rate; 0 (default) = 1e-4, or 3e-3 for memory */
    int batch;                 /* rows per micro-batch, default 4 */
    int grad_accum;            /* micro-batches per step, default 1 */
    int seq_len;               /* tokens per row, default min(512, context length) */
    int warmup;                /* linear warmup steps, default 0 */
    const char *schedule;      /* "cosine", "linear" or "constant" after warmup; NULL: the method's
                                * default (cosine; memory: constant) */
    float weight_decay;        /* decoupled, on matrices only; default 0 */
    float clip;                /* max global gradient norm; 0 = off; default 1.0 */
    int eval_every;            /* steps; default: 10 evals over the run */
    int save_every;            /* steps between checkpoints; default 100; 0 = only at the end */
    int log_every;             /* steps between metrics lines; default 10 */
    int keep_checkpoints;      /* newest checkpoints kept; default 2 */
    uint64_t seed;             /* data order; default 1 */
    int shuffle;               /* default 1 */
    int threads;               /* 0 = all cores; for this call only (the count before comes back) */
    int dry_run;               /* report token counts and the memory plan (MT_PROGRESS_DRY_RUN), then return */
    int resume;                /* continue from the newest valid checkpoint in out_dir */
    int skip_bad_lines;        /* skip (and count) bad JSONL lines instead of failing */
    int quiet;                 /* INFO/WARNING messages only where they must show (a skipped checkpoint); figures still come */
    /* method "lora": the base weights never change; the adapter attached to the model is
     * trained in place (and stays attached), or, with none attached, one is made from these
     * settings and freed at the end; either way it is written to <out_dir>/adapter (PEFT
     * layout) instead of <out_dir>/model */
    int lora_rank;             /* default 8 */
    float lora_alpha;          /* default 16 */
    int lora_rslora;           /* default 0 */
    const char *lora_targets;  /* default all: q,k,v,o,gate,up,down */
    const char *lora_layers;   /* layers to adapt, e.g. "0-3,6"; default all */
    float lora_dropout;        /* dropout on the adapter input path while training; default 0 */
    const char *base_dtype;    /* lora: "f32" (default), "bf16" or "q8_0": hold the frozen
                                  base's linear layers so (mt_model_set_base_dtype on m) */
    /* rows of the embedding/head that train with a frozen base (methods lora and memory):
     * NULL or "auto" (default) = the stop token (EOS) and every control or user-defined
     * token the rendered training data contains, except BOS; "none"; or a comma list of ids.
     * Saved to <out_dir>/adapter/trainable_tokens.*. Ignored by method full. */
    const char *trainable_tokens;
    int recompute;             /* activation recomputation: keep only each layer's input and
                                * rerun the layer in the backward (less memory, ~1/3 more
                                * compute); default 0 */
    /* method "memory" (README: Memory tuning): per-fact objective, memorise-until-exact
     * schedule, memory experts + token rows (+ LoRA with memory_lora); writes
     * <out_dir>/adapter, <out_dir>/report.json and <out_dir>/facts.jsonl. --steps caps the run
     * (default 2000); lr 0 = the method's default (1e-4 full/lora, 3e-3 memory) */
    long experts;              /* memory experts per site; default -1: from the facts and the
                                  model (README: Memory tuning, the bank); 0 = none */
    int expert_k;              /* experts chosen per head per token; default 8 */
    int expert_heads;          /* routing heads; default 4 */
    const char *expert_sites;  /* layers whose MLP output gets experts ("2,4", "last", "all");
                                  NULL = all of at most 8 layers, else 8 spread evenly */
    int freeze_router;         /* keep the router at its initialisation; default 0 (trains) */
    int expert_context;        /* routing context values per decay (mt_mome_options.context_dim);
                                  default 32; 0 = none */
    float expert_match;        /* keyed experts (mt_mome_options.match): an expert answers only
                                  where the routing context matches the one it was trained at */
    int memory_lora;           /* also train a LoRA adapter (lora_rank, ...); default 1 */
    float tau;                 /* with margin: also every answer-token NLL <= tau; default 0 = off */
    const char *general;       /* general text for the perplexity guard; NULL = text sampled
                                  from the base model before tuning */
    float general_limit;       /* allowed perplexity ratio to the base; default 1.05; above it
                                  general text weighs twice as much from then on */
    float general_weight;      /* loss weight of general text, distilled from the base's own
                                  next-token distributions, relative to a step's facts;
                                  default 1; 0 = off until the guard trips */
    int check_every;           /* steps between checks of all facts; 0 = about one pass */
    float rehearsal_weight;    /* loss weight of memorised facts rehearsed; default 0.25 */
    float margin;              /* memorised (recalled robustly): at every answer position the
                                  stored token's logit leads the runner-up by >= margin;
                                  default 2 (README: Memory tuning, completion) */
    /* progress, stopping, data in memory (py24) */
    mt_progress_callback progress; /* NULL: nothing is reported (the result still is) */
    void *progress_user;
    const volatile int *stop;  /* when *stop becomes non-zero the run saves a checkpoint and
                                  returns with result.interrupted (a signal handler may set it) */
    const char *data_text;     /* JSONL examples (or a JSON array of them) in memory, named
                                  "examples" in messages; trained on besides data_path, which may
                                  then be NULL */
    /* fault injection for the test suite; 0 = off */
    long test_forget_after_step;   /* memory: negate what was learnt after this step */
    int test_checkpoint_delay_ms;  /* pause halfway through writing each checkpoint */
    /* data-parallel training: the handle from mt_dist_init, shared by every rank's call;
     * NULL (default) = one process */
    mt_dist *dist;
} mt_train_options;

typedef struct {
    long steps;                /* optimizer steps done (including resumed ones) */
    long tokens;               /* tokens processed in this run */
    double train_loss;         /* mean loss of the last logged window */
    double eval_loss;          /* last eval loss; NAN when no eval set */
    double seconds;
    int interrupted;           /* stopped by the stop flag or the progress callback after saving a checkpoint */
    /* method memory */
    int completed;             /* every fact memorised at two checks in a row */
    double recall;             /* fraction of facts whose greedy answer is exact (final) */
    double perplexity_ratio;   /* general-text perplexity after / before */
} mt_train_result;

void mt_train_options_default(mt_train_options *o);
/* Fine-tunes m in place on data_path (JSONL; see README for the shapes; NULL when
 * opts->data_text holds the examples) and saves the result to <out_dir>/model as an HF
 * directory. opts NULL = defaults. */
mt_status mt_train(mt_model *m, const char *data_path, const mt_train_options *opts);
mt_status mt_train_run(mt_model *m, const char *data_path, const mt_train_options *opts, mt_train_result *res);
/* Options by `memtune train`'s flag names without the dashes in front ("seq-len", "64";
 * flags take "0" or "1"; "no-memory-lora"; also "data-text"), for bindings that do not lay out
 * the struct themselves (Python). Strings are not copied: they must outlive the run.
 * mt_train_options_new returns defaults (NULL when out of memory). (py24) */
mt_status mt_train_options_set(mt_train_options *o, const char *name, const char *value);
mt_train_options *mt_train_options_new(void);
void mt_train_options_free(mt_train_options *o);
void mt_train_options_set_progress(mt_train_options *o, mt_progress_callback cb, void *user, const volatile int *stop);

/* ---- LoRA adapters ------------------------------------------------------------------ */

/* Low-rank adapters on a model's linear layers: W·x + scale·B·(A·x) with A [r, in] and
 * B [out, r] at each targeted projection, scale = alpha / r (alpha / sqrt(r) with rslora).
 * An adapter is attached to a model (not owned by it) and then applies, unmerged, in
 * mt_generate, mt_model_logits, the evals and training; or it is fused into the weights with
 * mt_lora_merge. Files use Hugging Face PEFT's layout (adapter_config.json +
 * adapter_model.safetensors). */
typedef struct mt_lora mt_lora;

typedef struct {
    int rank;            /* default 8 */
    float alpha;         /* default 16 */
    int rslora;          /* scale alpha / sqrt(rank); default 0 */
    const char *targets; /* comma list of q,k,v,o,gate,up,down (or q_proj, ...; "all");
                            default all seven */
    uint64_t seed;       /* A's initialisation; default 1 */
    const char *layers;  /* layers to adapt, "0-3,6" (PEFT's layers_to_transform); default all */
    float dropout;       /* LoRA dropout on the adapter's input in training, [0, 1); default 0 */
} mt_lora_options;

void mt_lora_options_default(mt_lora_options *o);
/* A new adapter for m: A kaiming-uniform U(-1/sqrt(in), 1/sqrt(in)) as PEFT does, B zero, so
 * the attached model starts out computing exactly the base. */
mt_status mt_lora_create(const mt_model *m, const mt_lora_options *o, mt_lora **out);
void mt_lora_free(mt_lora *l);
size_t mt_lora_param_count(const mt_lora *l);
/* Attaches l as the model's only adapter (NULL detaches all). The model does not own it:
 * free it after detaching. */
mt_status mt_model_attach_lora(mt_model *m, mt_lora *l);
/* Adds l to the attached adapters (up to 16), its term multiplied by weight: inference then
 * computes W·x + Σ_i weight_i·scale_i·B_i·A_i·x, unmerged. Training needs exactly one
 * adapter of weight 1. */
mt_status mt_model_add_lora(mt_model *m, mt_lora *l, float weight);
/* W += scale·B·A at every adapted site of m (fp32). l need not be attached; if it is, it is
 * detached (applying it again would count it twice). */
mt_status mt_lora_merge(mt_model *m, mt_lora *l);
/* The same with the term multiplied by weight (merge several adapters one after another). */
mt_status mt_lora_merge_scaled(mt_model *m, mt_lora *l, float weight);
/* The same; for a bf16/Q8_0 base (mt_model_set_base_dtype) the sum is formed in f32 and
 * stored back in the base's dtype, and *max_change (may be NULL) gets the largest
 * |stored - f32 sum| over all merged weights: what re-quantising cost. 0 for an f32 base. */
mt_status mt_lora_merge_report(mt_model *m, mt_lora *l, float weight, double *max_change);
/* Writes dir/adapter_config.json and dir/adapter_model.safetensors (dir is created).
 * base_model: recorded as base_model_name_or_path (may be NULL). */
mt_status mt_lora_save(const mt_lora *l, const mt_model *m, const char *dir, const char *base_model);
/* Reads a LoRA adapter made for m (shapes are checked against m): a PEFT directory, or a
 * llama.cpp LoRA GGUF file (a path ending in .gguf). */
mt_status mt_lora_load(const mt_model *m, const char *dir, mt_lora **out);
/* Writes llama.cpp's LoRA GGUF (general.type "adapter", adapter.lora.alpha,
 * blk.N.attn_q.weight.lora_a [in, r] / lora_b [r, out], Q/K rows in GGUF's interleaved
 * layout), which `llama-cli -m BASE.gguf --lora FILE` applies; BASE.gguf being m as GGUF. */
mt_status mt_lora_save_gguf(const mt_lora *l, const mt_model *m, const char *path);

/* ---- trainable token rows ----------------------------------------------------------- */

/* Chosen rows of the token embedding (and of the head when it is not tied) that train while
 * the rest of the base stays frozen, as PEFT's trainable_token_indices. A base that never
 * learned its stop token (stories260K's EOS) needs this to end answers under LoRA or memory
 * tuning. While attached the rows are written into the model's weights (the base rows are
 * kept and restored on detach), so inference with them costs nothing extra and a merge or
 * save of the model includes them. */
typedef struct mt_token_rows mt_token_rows;

/* Rows for the given distinct token ids, starting from m's current rows. */
mt_status mt_token_rows_create(const mt_model *m, const int *ids, int n, mt_token_rows **out);
/* Detaches them (restoring the base rows) if attached, then frees. */
void mt_token_rows_free(mt_token_rows *r);
int mt_token_rows_count(const mt_token_rows *r);
const int *mt_token_rows_ids(const mt_token_rows *r);
/* Attaches r (NULL detaches and restores the base rows). The model does not own r. */
mt_status mt_model_attach_token_rows(mt_model *m, mt_token_rows *r);
/* Saves the rows as PEFT does: when dir holds a LoRA adapter (adapter_config.json), its
 * config gains "trainable_token_indices" (a list; {"embed_tokens": [...], "lm_head": [...]}
 * for an untied head) and adapter_model.safetensors gains the replacement rows as
 * ...embed_tokens.token_adapter.trainable_tokens_delta [n, dim] (and ...lm_head...); otherwise
 * the same tensors go to dir/trainable_tokens.safetensors with dir/trainable_tokens.json
 * (mt_lora_save later copies them into its PEFT pair). Load reads PEFT's adapters and
 * memtune's files, including those written before this layout (which held differences). */
mt_status mt_token_rows_save(const mt_token_rows *r, const char *dir);
mt_status mt_token_rows_load(const mt_model *m, const char *dir, mt_token_rows **out);
/* 1 when dir holds trainable token rows (trainable_tokens.json, or trainable_token_indices in
 * adapter_config.json) */
int mt_token_rows_present(const char *dir);

/* ---- memory experts (MoME) ---------------------------------------------------------- */

/* A mixture of memory experts at the MLP output of chosen layers: N tiny rank-1 experts
 * (a_e, b_e), of which product-key routing picks K per head per token, so the cost per token
 * grows with √N. b starts at zero: a fresh layer computes exactly the base model. Used by
 * memory tuning (method "memory"); saved as mome_config.json + mome.safetensors. */
typedef struct mt_mome mt_mome;

typedef struct {
    long experts;        /* N; default 65536. Must factor as n1·n2 with both >= k (powers of two do) */
    int k;               /* experts per head per token; default 8 */
    int heads;           /* default 4 */
    int query_dim;       /* routing query dims per head (even); 0 = min(dim, 128) */
    const char *sites;   /* layers whose MLP output gets the experts: "2,4", "last", "all";
                            NULL = all */
    int freeze_router;   /* keep the router at its random initialisation while training */
    int context_dim;     /* routing context: values per decay added to the router's query
                            (decayed codes of the document's tokens so far, decays 0.5 and
                            0.9); default 32; 0 = route on the hidden state alone */
    float match;         /* keyed experts (needs a context): an expert trained at a token keeps
                            that token's routing context as its key and answers only where
                            the context matches it, cosine >= match (README: Memory tuning);
                            default 0 = off (every expert answers wherever it is routed) */
    uint64_t seed;       /* initialisation; default 1 */
} mt_mome_options;

void mt_mome_options_default(mt_mome_options *o);
mt_status mt_mome_create(const mt_model *m, const mt_mome_options *o, mt_mome **out);
void mt_mome_free(mt_mome *mm);
long mt_mome_experts(const mt_mome *mm);
size_t mt_mome_param_count(const mt_mome *mm);
/* Attaches mm (NULL detaches); the model does not own it. */
mt_status mt_model_attach_mome(mt_model *m, mt_mome *mm);
mt_status mt_mome_save(const mt_mome *mm, const char *dir);
mt_status mt_mome_load(const mt_model *m, const char *dir, mt_mome **out);
int mt_mome_present(const char *dir);

/* ---- a tuned adapter directory as a whole ------------------------------------------- */

/* What a lora or memory run writes to <out_dir>/adapter: loads every part found in dir
 * (LoRA adapter_config.json, trainable_tokens.json, ...) and attaches it to m. Free the set
 * after the model, or before it to detach the token rows. */
typedef struct mt_adapter_set mt_adapter_set;
mt_status mt_adapter_set_load(mt_model *m, const char *dir, mt_adapter_set **out);
/* The same, added to whatever is attached: the LoRA (dir may also be a llama.cpp LoRA .gguf)
 * with this weight (mt_model_add_lora); token rows only if none are attached yet. */
mt_status mt_adapter_set_load_scaled(mt_model *m, const char *dir, float weight, mt_adapter_set **out);
/* The set's LoRA adapter, or NULL (e.g. to merge it). */
mt_lora *mt_adapter_set_lora(const mt_adapter_set *a);
void mt_adapter_set_free(mt_adapter_set *a);

/* ---- evaluation --------------------------------------------------------------------- */

typedef struct {
    long tokens;       /* tokens scored */
    double nll;        /* mean negative log-likelihood per scored token (nats) */
    double perplexity; /* exp(nll) */
} mt_text_score;

/* Scores a UTF-8 text file in non-overlapping windows of the context length (each window
 * starts with BOS; every token after it is scored). */
mt_status mt_eval_text_file(mt_model *m, const char *path, mt_text_score *out);
mt_status mt_eval_text(mt_model *m, const char *text, size_t len, mt_text_score *out);

typedef struct {
    long examples;
    double exact_match;   /* fraction of examples whose greedy answer equals the expected
                             output after trimming whitespace at both ends */
    double nll;           /* mean NLL per expected answer token (EOS included) */
    long answer_tokens;
} mt_data_score;

/* Evaluates a JSONL file of prompt/answer examples (the training shapes): greedy decoding
 * of each prompt (rendered with the model's chat template, or the default one) against the
 * expected output, and the NLL of the expected output. report_path (optional) gets a JSON
 * line per example: index, prompt, expected, produced, exact, nll. */
mt_status mt_eval_data_file(mt_model *m, const char *path, const char *report_path, mt_data_score *out);

/* ---- SQL: a sandbox for untrusted queries, result sets, execution accuracy ------------ */

/* Limits on one untrusted query. Zero fields take the defaults shown. */
typedef struct {
    long max_steps;       /* SQLite VM instructions (counted every 1000): 50,000,000 */
    double max_seconds;   /* wall time: 10 s */
    long max_rows;        /* rows in a result: 100,000 */
    long max_bytes;       /* text/blob bytes in a result: 64 MiB */
} mt_sql_limits;

typedef struct mt_sql_db mt_sql_db;
typedef struct mt_sql_result mt_sql_result;

/* Opens a SQLite file for untrusted queries: read-only and immutable (no locks, no journal,
 * no writes), PRAGMA query_only, no ATTACH, extensions off, and an authorizer that allows
 * only reading tables and calling ordinary functions. limits may be NULL. */
mt_status mt_sql_open(const char *path, const mt_sql_limits *limits, mt_sql_db **out);
void mt_sql_close(mt_sql_db *db);
/* Runs one statement: exactly one SELECT (or WITH ... SELECT, or VALUES) with nothing but
 * comments, spaces and ';' after it. Anything else, an SQLite error, or a limit reached
 * returns MT_ERR_SQL with the reason in mt_last_error(). */
mt_status mt_sql_query(mt_sql_db *db, const char *sql, mt_sql_result **out);
void mt_sql_result_free(mt_sql_result *r);
long mt_sql_result_rows(const mt_sql_result *r);
int mt_sql_result_cols(const mt_sql_result *r);
/* The result as compact JSON: a single value as itself ("42", "\"a\"", "null"), else an
 * array of rows, each an array of values. malloc'd; NULL on OOM. */
char *mt_sql_result_json(const mt_sql_result *r);
/* The result as plain text: a single value as its text, rows joined by "; ", values in a row
 * by ", " (NULL as "NULL"). malloc'd; NULL on OOM. */
char *mt_sql_result_text(const mt_sql_result *r);

/* Whether two result sets are the same answer. Same column count (names ignored); rows
 * compared in order when `ordered`, else as multisets (duplicates count). Values: NULL
 * equals only NULL; integers and reals compare as numbers, equal when
 * |a-b| <= 1e-6 * max(|a|,|b|) (or |a-b| <= 1e-9 near zero); a text that is a complete
 * decimal number ("42", "4.50", " 7") compares as that number against numbers, any other
 * text never equals a number; text equals text byte for byte; blobs equal equal bytes. */
int mt_sql_results_equal(const mt_sql_result *a, const mt_sql_result *b, int ordered);
/* Whether the statement orders its final result (an ORDER BY outside any parentheses). */
int mt_sql_has_order_by(const char *sql);

typedef enum {
    MT_SQL_MATCH = 0,     /* produced and gold results are the same answer */
    MT_SQL_MISMATCH,      /* both ran; the results differ */
    MT_SQL_INVALID,       /* the produced SQL failed, was refused or hit a limit */
    MT_SQL_GOLD_ERROR,    /* the gold SQL itself failed (the example cannot be scored) */
} mt_sql_verdict;
const char *mt_sql_verdict_name(mt_sql_verdict v);

/* Runs gold and produced SQL and compares them (ordered iff gold has ORDER BY). *error gets
 * a malloc'd message for INVALID / GOLD_ERROR (else NULL). Returns an error status only for
 * failures that are not the query's fault (out of memory). */
mt_status mt_sql_execution_match(mt_sql_db *db, const char *gold, const char *produced,
                                 mt_sql_verdict *verdict, char **error);

/* ---- evaluation with options ---------------------------------------------------------- */

typedef enum {
    MT_NORMALIZE_TRIM = 0,   /* strip whitespace at both ends (the default) */
    MT_NORMALIZE_NONE,       /* byte for byte */
    MT_NORMALIZE_WHITESPACE, /* trim, and every run of whitespace counts as one space */
    MT_NORMALIZE_LOWER,      /* as whitespace, and ASCII letters compared case-insensitively */
} mt_normalize;
/* Parses "none", "trim", "whitespace", "lower"; -1 if unknown. */
int mt_normalize_parse(const char *name);
/* Whether a and b are equal under the normalisation. */
int mt_text_equal_normalized(const char *a, const char *b, mt_normalize how);

/* Progress of a long evaluation: `done` of `total` units (text windows, examples) so far.
 * Return non-zero to stop early: the evaluation then fails with MT_ERR_ARG ("stopped"). */
typedef int (*mt_eval_progress_fn)(long done, long total, void *user);

typedef struct {
    const char *report_path;  /* JSON line per example (optional) */
    mt_normalize normalize;   /* for exact match */
    const char *db_path;      /* SQLite file: the expected answers are SQL; execution accuracy */
    mt_sql_limits limits;     /* for the generated SQL (zeros = defaults) */
    int max_new_tokens;       /* cap on generated tokens (0: 256 with db_path, else
                                 2 x expected-answer tokens + 16) */
    mt_eval_progress_fn progress; /* optional: called after each example (or text window) */
    void *progress_user;
    const struct mt_grammar *grammar; /* constrains each greedy answer (NULL = off) */
} mt_eval_options;

typedef struct {
    mt_data_score base;       /* examples, exact match, answer NLL */
    long sql_examples;        /* examples scored by execution (gold SQL ran) */
    long sql_match;           /* produced SQL returned the gold result */
    long sql_invalid;         /* produced SQL failed or was refused */
    long sql_gold_errors;     /* examples whose gold SQL failed (not scored) */
    double execution_accuracy;/* sql_match / sql_examples */
} mt_eval_score;

/* mt_eval_data_file with options. With db_path set, each example's expected output is SQL:
 * the report line gains verdict and error, and the score the SQL fields. */
mt_status mt_eval_data_file_opts(mt_model *m, const char *path, const mt_eval_options *opt, mt_eval_score *out);

/* The greedy answer to one prompt, rendered as a user turn with the model's chat template (or
 * the default one), exactly as evaluation and memory tuning answer their examples: what a
 * tuned model says to a question it was trained on. max_new_tokens 0 = 256. *answer is
 * malloc'd (free() it). (py24) */
mt_status mt_answer(mt_model *m, const char *prompt, int max_new_tokens, char **answer);

/* Compares two eval reports (JSONL written by --report) example by example (matched by
 * index). *json gets a malloc'd JSON object: totals of each run, examples that changed
 * verdict, and the list of changes. */
mt_status mt_eval_compare_reports(const char *report_a, const char *report_b, char **json);

/* ---- data generation from a database --------------------------------------------------- */

typedef struct {
    uint64_t seed;            /* sampling of values and rows (default 0) */
    int schema_facts;         /* 1: write schema facts (default on via mt_datagen_defaults) */
    int row_facts;            /* 1: question -> answer facts from rows */
    int sql_pairs;            /* 1: question -> SQL pairs with answers */
    int max_row_facts;        /* cap (0: no cap) */
    int max_sql_pairs;        /* cap (0: no cap) */
    int values_per_column;    /* filter values sampled per categorical column (default 4) */
    mt_sql_limits limits;
} mt_datagen_options;
void mt_datagen_defaults(mt_datagen_options *o);

typedef struct {
    long schema_facts, row_facts, sql_pairs; /* lines written */
    long duplicates;          /* generated twice (same question), written once */
    long failed;              /* templates whose SQL did not run (must be 0; counted) */
    long empty;               /* SQL that ran but returned no rows, only NULLs, or a list of
                                 more than 30 rows; dropped */
} mt_datagen_stats;

/* Writes JSONL training data grounded in the database at db_path to out_path (atomically).
 * Facts are {"input","output","kind"}; SQL pairs are {"question","sql","answer","kind"}
 * (the loader reads question/sql as prompt/output). Every SQL line was run to make its
 * answer. */
mt_status mt_datagen_sqlite(const char *db_path, const mt_datagen_options *opt, const char *out_path,
                            mt_datagen_stats *stats);

typedef struct {
    long read;                /* lines read */
    long kept;
    long bad_json;            /* not a JSON object with string question and sql */
    long sql_error;           /* SQL failed or was refused */
    long empty_result;        /* ran, returned no rows or only NULLs */
    long duplicates;          /* same question and SQL as an earlier kept line */
    char *reasons;            /* JSON object: each reason for dropping -> count (malloc'd) */
} mt_filter_stats;
void mt_filter_stats_free(mt_filter_stats *st);

/* Keeps the question -> SQL lines of in_path whose SQL runs in the sandbox and returns a
 * result that is not empty or all NULL; writes them (atomically) to out_path, each with a
 * "result" field added (the SQL's result as text). Free stats with mt_filter_stats_free. */
mt_status mt_data_filter_sql(const char *db_path, const char *in_path, const char *out_path,
                             const mt_sql_limits *limits, mt_filter_stats *stats);

/* ---- limits and option checks (README: Bad input) ------------------------------------ */

/* Every numeric option of the C API is range-checked (NaN and infinities refused) with a
 * message naming the option, the value and the allowed range. These are the limits that are
 * not obvious from the option itself. */
#define MT_MAX_THREADS 1024               /* mt_set_threads, threads options */
#define MT_MAX_TEMPERATURE 1000.0f        /* generation temperature */
#define MT_MAX_CONTEXT (1 << 22)          /* context lengths (mt_model_set_context, configs) */
#define MT_MAX_BATCH 65536                /* rows per micro-batch */
#define MT_MAX_BATCH_TOKENS (1 << 24)     /* grad_accum x batch x seq_len of one step */
#define MT_MAX_EXPERTS (1L << 26)         /* memory experts per site */
#define MT_SQL_MIN_SECONDS 0.001         /* mt_sql_limits.max_seconds (0: the default) */
#define MT_SQL_MAX_SECONDS 86400.0
#define MT_SQL_MAX_STEPS 1000000000000000.0 /* mt_sql_limits.max_steps (0: the default) */
#define MT_MAX_EVAL_TEXT_BYTES (64L << 20)  /* mt_eval_text_file: larger files are refused */
#define MT_MAX_EVAL_EXAMPLES 1000000L     /* mt_eval_data_file: examples per file */

/* MT_OK, or MT_ERR_ARG naming the first option out of range ("--lr inf: must be a finite
 * number in [0, 10]"). m may be NULL: then the checks that need the model (seq_len against
 * its context length) are left to mt_train_run, which always validates first. */
mt_status mt_train_options_validate(const mt_model *m, const mt_train_options *o);
/* The same for generation options (mt_generate validates first). */
mt_status mt_generate_options_validate(const mt_generate_options *o);
/* mt_eval_text_file with options: only opt->progress and opt->progress_user are used. The
 * file may hold at most MT_MAX_EVAL_TEXT_BYTES; mt_eval_data_file_opts checks, before
 * evaluating anything, that the file has at most MT_MAX_EVAL_EXAMPLES examples and that each
 * one (prompt and answer, rendered as in training) fits the model's context. */
mt_status mt_eval_text_file_opts(mt_model *m, const char *path, const mt_eval_options *opt, mt_text_score *out);
/* ---- grammars and JSON Schema (constrained decoding) ----------------------------------- */

/* A compiled grammar in llama.cpp's GBNF: `name ::= alternatives`, "literals" with \n \t
 * \r \\ \" \xHH \uHHHH \UHHHHHHHH escapes, [character classes] with ranges and ^
 * negation, `.` (any character), (groups), `*` `+` `?` `{m}` `{m,}` `{m,n}`, # comments.
 * Matching is over UTF-8 text. The start rule is `root`. Errors give line and column; a
 * grammar that matches nothing, references an undefined rule or is left-recursive is
 * refused. One compiled grammar may be used by many generations at once (read-only). */
typedef struct mt_grammar mt_grammar;
mt_status mt_grammar_compile(const char *gbnf, size_t len, mt_grammar **out);
/* Reads a GBNF file (errors name it). */
mt_status mt_grammar_load(const char *path, mt_grammar **out);
void mt_grammar_free(mt_grammar *g);
/* 1 when the whole of text[0..len) matches the grammar, 0 when not; -1 on an error. */
int mt_grammar_match(const mt_grammar *g, const char *text, size_t len);

/* JSON Schema (draft 2020-12 subset: type, properties, required, additionalProperties:
 * false, enum, const, items, minItems/maxItems, minLength/maxLength, simple pattern,
 * anyOf, $ref to local $defs) to GBNF text (*gbnf malloc'd). Other keywords are refused
 * with an error naming the keyword and its JSON pointer. */
mt_status mt_json_schema_to_gbnf(const char *schema_json, size_t len, char **gbnf);
/* Reads a JSON Schema file and compiles its grammar. */
mt_status mt_grammar_load_json_schema(const char *path, mt_grammar **out);

/* GBNF (malloc'd) for the SQLite SELECT subset whose table and column names are those of
 * the database at db_path (opened read-only). */
mt_status mt_sql_grammar_from_db(const char *db_path, char **gbnf);

/* ---- Hugging Face Hub names and caches ------------------------------------------------ */

/* A model named "ORG/NAME[@REVISION][:QUANT]" (a Hub repository, a branch, tag or commit,
 * default "main", and for a repository of GGUF files the quantization its file name carries,
 * "Q4_K_M") is found in, or downloaded into, the cache layout huggingface_hub writes:
 * <cache_dir>/models--ORG--NAME/{refs/<rev>, snapshots/<commit>/<file> -> ../../blobs/<etag>}.
 * The library reads no environment: the caller passes the cache directory ($HF_HUB_CACHE,
 * else $HF_HOME/hub, else ~/.cache/huggingface/hub), the endpoint ($HF_ENDPOINT) and the
 * token ($HF_TOKEN) in these options. */
typedef struct {
    const char *cache_dir; /* required */
    const char *endpoint;  /* NULL: https://huggingface.co */
    const char *token;     /* NULL: none (a gated repository answers 401/403) */
    int offline;           /* 1: the cache only, never the network */
    /* Called as a file downloads (done of total bytes, total 0 when unknown; done starts at
     * the bytes a resumed download already had); return non-zero to stop (MT_ERR_IO, the
     * partial file kept for a later resume). NULL: nothing is reported. */
    int (*progress)(const char *file, uint64_t done, uint64_t total, void *user);
    void *progress_user;
} mt_hub_options;

/* 1 when s has the shape of a Hub name (ORG/NAME[@REV][:QUANT], the characters the Hub
 * allows), 0 when not. A path that exists should be used as a path whatever its shape. */
int mt_hub_is_name(const char *s);
/* Resolves name to a local path mt_model_load reads (*local_path malloc'd): the snapshot
 * directory (config.json, tokenizer files, safetensors) or, with :QUANT, the GGUF file whose
 * name carries QUANT (case-insensitive). A complete copy in the cache is used without the
 * network; otherwise the needed files are downloaded (resuming <blob>.incomplete files with
 * a Range request; LFS files checked against their sha256 etag; nothing appears under
 * snapshots/ before it is whole). Errors name the repository and say what to do (401/403:
 * gated, set a token; 404; no network and no cached copy; checksum mismatch; no GGUF
 * matching QUANT, listing the GGUF files there are). */
mt_status mt_hub_resolve(const char *name, const mt_hub_options *o, char **local_path);

#ifdef __cplusplus
}
#endif
#endif
