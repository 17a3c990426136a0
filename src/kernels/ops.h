/* Declarations of the ops that exist in both precisions. Included twice by kernels.h, with
 * MT_OPS_REAL = float / double and MT_OPS_FN(name) = name / name##_f64; do not include it
 * directly. Shapes are row-major; "rows" is the number of tokens (B*T in training). */
#define REAL_ MT_OPS_REAL

/* ---- linear layer (matmul.c) ---- */
/* out[T, N] = x[T, K] · W[N, K]^T (+ bias[N]) */
void MT_OPS_FN(mt_matmul_forward)(REAL_ *out, const REAL_ *x, const REAL_ *w, const REAL_ *bias,
                                  int T, int K, int N);
/* dx[T, K] += dout·W;  dw[N, K] += dout^T·x;  db[N] += Σ_t dout[t]. Any of dx, dw, db may be
 * NULL. */
void MT_OPS_FN(mt_matmul_backward)(REAL_ *dx, REAL_ *dw, REAL_ *db, const REAL_ *dout,
                                   const REAL_ *x, const REAL_ *w, int T, int K, int N);

/* ---- elementwise (elementwise.c) ---- */
/* out = a + b (out may be a or b) */
void MT_OPS_FN(mt_add)(REAL_ *out, const REAL_ *a, const REAL_ *b, size_t n);
/* out = x ⊙ mask (accumulate: out += x ⊙ mask); mask_i = 0 with probability p, else
 * 1/(1-p), drawn from mt_mix64(key ^ mt_mix64(i)): the same key gives the same mask */
void MT_OPS_FN(mt_dropout)(REAL_ *out, const REAL_ *x, size_t n, uint64_t key, double p, int accumulate);

/* ---- low-rank adapter at a linear site (lora.c) ---- */
/* h[T, r] = x[T, K]·A[r, K]^T;  out[T, N] += scale · h·B[N, r]^T  (h: scratch the caller owns) */
void MT_OPS_FN(mt_lora_forward)(REAL_ *out, REAL_ *h, const REAL_ *x, const REAL_ *a, const REAL_ *b,
                                double scale, int T, int K, int N, int r);
/* For out += scale·(x·A^T)·B^T and dout = ∂loss/∂out: recomputes h = x·A^T, then
 * dB[N, r] += scale · dout^T·h;  dh = scale · dout·B;  dA[r, K] += dh^T·x;  dx[T, K] += dh·A.
 * h, dh: scratch of T*r each. dx, da, db may be NULL (da and db both or neither). */
void MT_OPS_FN(mt_lora_backward)(REAL_ *dx, REAL_ *da, REAL_ *db, REAL_ *h, REAL_ *dh,
                                 const REAL_ *dout, const REAL_ *x, const REAL_ *a, const REAL_ *b,
                                 double scale, int T, int K, int N, int r);
/* W[N, K] += scale · B[N, r]·A[r, K] (merging an adapter into its base weight) */
void MT_OPS_FN(mt_lora_merge_weight)(REAL_ *w, const REAL_ *a, const REAL_ *b, double scale, int K, int N, int r);

/* ---- mixture of memory experts at a site (mome.c) ---- */
/* Product-key routing and rank-1 experts, for T tokens x[T, C] (see mome.c). The router is
 * wq [H*dk, C] | k1 [H, n1, dk/2] | k2 [H, n2, dk/2] | wx [H*dk, Cx] in one array; the bank
 * holds rows [a_e | b_e] of 2C each ([N, 2C]). ctx [T, Cx]: the routing context (NULL when
 * sh->Cx is 0). keys [N, Cx] (NULL, or sh->match 0: every expert answers): an expert whose key
 * is set and does not match the token's context adds nothing and gets no gradient. out[T, C] += Σ_h Σ_k gate·silu(a_e·x)·b_e. Saves q [T, H*dk], idx [T, H, K]
 * (expert ids), gate and z = a_e·x [T, H, K] for the backward. scratch: the caller's
 * mt_mome_scratch_size(sh, T) elements (no allocation inside, so no failure either). */
void MT_OPS_FN(mt_mome_forward)(REAL_ *out, REAL_ *q, int *idx, REAL_ *gate, REAL_ *z, const REAL_ *x,
                                const REAL_ *ctx, const REAL_ *router, const REAL_ *bank, const float *keys,
                                const mt_mome_shape *sh, int T, REAL_ *scratch);
/* dout = ∂loss/∂out. dx[T, C] += input gradient (may be NULL); drouter += router gradient
 * (NULL: a frozen router); slot_grads[T*H*K, 2C] = (da, db) of the expert each slot used
 * (written, not accumulated: several slots may name one expert, the optimizer sums them).
 * scratch as for the forward. */
void MT_OPS_FN(mt_mome_backward)(REAL_ *dx, REAL_ *drouter, REAL_ *slot_grads, const REAL_ *dout,
                                 const REAL_ *x, const REAL_ *ctx, const REAL_ *q, const int *idx, const REAL_ *gate,
                                 const REAL_ *z, const REAL_ *router, const REAL_ *bank, const float *keys,
                                 const mt_mome_shape *sh, int T, REAL_ *scratch);

/* The routing context (kernels.h) of T tokens of one sequence: ids[T], pos[T] (a token at
 * position 0 starts a document); acc[T, width] the running sums (written), ctx[T, width] the
 * normalised blocks. prev: the running sums of the token before ids[0] (NULL: none). */
void MT_OPS_FN(mt_mome_context)(REAL_ *ctx, REAL_ *acc, const int *ids, const int *pos, int T,
                                const mt_mome_context_spec *cs, const REAL_ *prev);

/* ---- token embedding (embedding.c) ---- */
/* out[n, C] = table[ids[i]] row by row (ids must be in range) */
void MT_OPS_FN(mt_embedding_forward)(REAL_ *out, const int *ids, const REAL_ *table, int n, int C);
/* dtable[ids[i]] += dout[i]: a scatter-add, repeated ids add up */
void MT_OPS_FN(mt_embedding_backward)(REAL_ *dtable, const REAL_ *dout, const int *ids, int n, int C);

/* ---- RMSNorm (norm.c) ---- */
/* out[T, C] = x / rms(x) * w, row by row; out may be x */
void MT_OPS_FN(mt_rmsnorm_forward)(REAL_ *out, const REAL_ *x, const REAL_ *w, int T, int C, float eps);
/* The same, also saving rstd[T] = 1 / sqrt(mean(x^2) + eps) for the backward. */
void MT_OPS_FN(mt_rmsnorm_forward_save)(REAL_ *out, REAL_ *rstd, const REAL_ *x, const REAL_ *w,
                                        int T, int C, float eps);
/* dx += ∂/∂x, dw += ∂/∂w (dx or dw may be NULL) */
void MT_OPS_FN(mt_rmsnorm_backward)(REAL_ *dx, REAL_ *dw, const REAL_ *dout, const REAL_ *x,
                                    const REAL_ *w, const REAL_ *rstd, int T, int C);

/* ---- rotary position embedding (rope.c) ---- */
/* Rotates x[T, n_heads*head_dim] in place; row t sits at position pos[t]. interleaved: pairs
 * (2i, 2i+1) (llama2.c, GGUF); otherwise (i, i + head_dim/2) (Hugging Face). */
void MT_OPS_FN(mt_rope_forward)(REAL_ *x, const int *pos, int T, int n_heads, int head_dim,
                                int interleaved, const float *cos_t, const float *sin_t);
/* In place: turns ∂/∂(rotated x) into ∂/∂x by rotating through -angle (the transpose). */
void MT_OPS_FN(mt_rope_backward)(REAL_ *dx, const int *pos, int T, int n_heads, int head_dim,
                                 int interleaved, const float *cos_t, const float *sin_t);

/* ---- attention for training (attention.c) ---- */
/* Causal grouped-query attention over B rows of T tokens with a document mask: documents
 * are contiguous runs of equal doc ids in a row, and token t attends to the tokens s <= t of
 * its own run (packed sequences; doc may be NULL for one document per row). q, out [B*T, H*hd]; k, v [B*T, KV*hd]; query
 * head h reads KV head h / (H/KV). Tiled: saves only lse[B*T, H], the log-sum-exp of each
 * query row's scaled scores, for the backward; no T x T matrix exists at any time. */
void MT_OPS_FN(mt_attention_forward)(REAL_ *out, REAL_ *lse, const REAL_ *q, const REAL_ *k,
                                     const REAL_ *v, const int *doc, int B, int T, int n_heads,
                                     int n_kv_heads, int head_dim);
/* dq, dk, dv += gradients, given the forward's out and lse and the same doc (probabilities
 * are recomputed). */
void MT_OPS_FN(mt_attention_backward)(REAL_ *dq, REAL_ *dk, REAL_ *dv, const REAL_ *dout,
                                      const REAL_ *out, const REAL_ *lse, const REAL_ *q,
                                      const REAL_ *k, const REAL_ *v, const int *doc, int B, int T,
                                      int n_heads, int n_kv_heads, int head_dim);
/* The simple reference the tests check the pair above against: the same function, saving
 * the probabilities att[B, H, T, T] (zero where masked). */
void MT_OPS_FN(mt_attention_forward_ref)(REAL_ *out, REAL_ *att, const REAL_ *q, const REAL_ *k,
                                         const REAL_ *v, const int *doc, int B, int T, int n_heads,
                                         int n_kv_heads, int head_dim);
/* dq, dk, dv += gradients, given the reference forward's att. dscores: scratch of
 * B*H*T*T reals. */
void MT_OPS_FN(mt_attention_backward_ref)(REAL_ *dq, REAL_ *dk, REAL_ *dv, REAL_ *dscores,
                                          const REAL_ *dout, const REAL_ *att, const REAL_ *q,
                                          const REAL_ *k, const REAL_ *v, const int *doc, int B, int T,
                                          int n_heads, int n_kv_heads, int head_dim);

/* ---- SwiGLU (activations.c) ---- */
/* out[i] = silu(gate[i]) * up[i]; out may be gate */
void MT_OPS_FN(mt_swiglu_forward)(REAL_ *out, const REAL_ *gate, const REAL_ *up, size_t n);
/* dgate += dout * up * silu'(gate);  dup += dout * silu(gate) */
void MT_OPS_FN(mt_swiglu_backward)(REAL_ *dgate, REAL_ *dup, const REAL_ *dout, const REAL_ *gate,
                                   const REAL_ *up, size_t n);

/* ---- masked cross-entropy (cross_entropy.c) ---- */
/* Rows i with targets[i] >= 0 are scored; negative targets (-1, -100) are ignored. Rows with
 * a soft target list (soft != NULL, see mt_soft_targets) are scored against it instead.
 * Writes lse[n] (log-sum-exp of each row, for the backward), sets *n_targets (rows scored)
 * and returns the SUM of -log softmax(logits[i])[targets[i]] (soft: Σ_j p_j·(-log softmax))
 * over scored rows. Target ids must be < V. */
double MT_OPS_FN(mt_cross_entropy_forward)(REAL_ *lse, const REAL_ *logits, const int *targets,
                                           const mt_soft_targets *soft, int n, int V, long *n_targets);
/* For loss = scale * Σ NLL: WRITES dlogits = scale * (softmax - onehot(target)) on scored
 * rows (soft: scale * (Σp·softmax - p)) and 0 on ignored ones. dlogits may be logits (in
 * place). */
void MT_OPS_FN(mt_cross_entropy_backward)(REAL_ *dlogits, const REAL_ *logits, const REAL_ *lse,
                                          const int *targets, const mt_soft_targets *soft,
                                          double scale, int n, int V);

#undef REAL_
