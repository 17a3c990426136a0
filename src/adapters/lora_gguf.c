/* llama.cpp's LoRA adapter GGUF, written for `llama-cli --lora` and read back:
 *
 *   general.type          "adapter"
 *   general.architecture  "llama" (what memtune's GGUF model writer and llama.cpp's
 *                         converter call Llama-family bases; llama.cpp refuses a mismatch)
 *   adapter.type          "lora"
 *   adapter.lora.alpha    f32; llama.cpp scales by alpha / rank (rank = lora_a's ne[1])
 *   blk.N.attn_q.weight.lora_a   ne [in, r]   (A as PEFT has it, [r, in] row-major)
 *   blk.N.attn_q.weight.lora_b   ne [r, out]  (B, [out, r] row-major)
 *   ... attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down
 *
 * The tensor name is the base tensor's GGUF name plus ".lora_a"/".lora_b". GGUF Llama
 * models keep Q/K rows in the interleaved RoPE layout, so B's rows at attn_q/attn_k are in
 * that layout (A's columns are input features and never move). rsLoRA has no key of its
 * own: its scale alpha/sqrt(r) is written as alpha' = alpha·sqrt(r), so alpha'/r is the same.
 * Only f32 tensors are written; F16/BF16/Q8_0 ones are read too. */
#include "adapters/lora.h"
#include "core/error.h"
#include "formats/gguf.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const site_gguf[MT_N_SITES] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                  "ffn_gate", "ffn_up", "ffn_down"};

static int qk_heads(const mt_config *c, int site) {
    return site == MT_SITE_Q ? c->n_heads : site == MT_SITE_K ? c->n_kv_heads : 0;
}

static void declare(mt_gguf_writer *w, const mt_lora *l, const mt_config *c) {
    char name[96];
    for (int layer = 0; layer < l->n_layers; layer++)
        for (int site = 0; site < MT_N_SITES; site++) {
            const float *a, *b;
            if (!mt_lora_site(l, layer, site, &a, &b)) continue;
            int in, out;
            mt_linear_site_shape(c, site, &in, &out);
            uint64_t ne_a[2] = {(uint64_t)in, (uint64_t)l->rank}, ne_b[2] = {(uint64_t)l->rank, (uint64_t)out};
            snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", layer, site_gguf[site]);
            mt_gguf_add_tensor(w, name, 2, ne_a);
            snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", layer, site_gguf[site]);
            mt_gguf_add_tensor(w, name, 2, ne_b);
        }
}

static mt_status put_data(mt_gguf_writer *w, const mt_lora *l, const mt_config *c) {
    int max_out = c->n_heads * c->head_dim;
    float *perm = malloc((size_t)max_out * l->rank * sizeof(float));
    mt_status s = perm ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    for (int layer = 0; layer < l->n_layers && !s; layer++)
        for (int site = 0; site < MT_N_SITES && !s; site++) {
            const float *a, *b;
            if (!mt_lora_site(l, layer, site, &a, &b)) continue;
            int in, out, heads = qk_heads(c, site);
            mt_linear_site_shape(c, site, &in, &out);
            s = mt_gguf_writer_put_f32(w, a, (size_t)l->rank * in);
            if (!s && heads && !c->rope_interleaved) { /* HF layout in memory: GGUF wants interleaved */
                mt_permute_qk_rows(perm, b, heads, c->head_dim, l->rank, 1);
                b = perm;
            }
            if (!s) s = mt_gguf_writer_put_f32(w, b, (size_t)out * l->rank);
        }
    free(perm);
    return s;
}

mt_status mt_lora_save_gguf(const mt_lora *l, const mt_model *m, const char *path) {
    if (l->n_layers != m->cfg.n_layers)
        return mt_error(MT_ERR_MISMATCH, "the adapter has %d layers, the model %d", l->n_layers, m->cfg.n_layers);
    mt_gguf_writer w;
    mt_gguf_writer_init(&w);
    mt_gguf_add_string(&w, "general.architecture", "llama");
    mt_gguf_add_string(&w, "general.type", "adapter");
    mt_gguf_add_string(&w, "general.name", "memtune LoRA adapter");
    mt_gguf_add_string(&w, "adapter.type", "lora");
    float alpha = l->rslora ? l->alpha * sqrtf((float)l->rank) : l->alpha;
    mt_gguf_add_f32(&w, "adapter.lora.alpha", alpha);
    declare(&w, l, &m->cfg);
    mt_status s = mt_gguf_writer_begin(&w, path);
    if (!s) s = put_data(&w, l, &m->cfg);
    if (!s) s = mt_gguf_writer_commit(&w);
    mt_gguf_writer_free(&w);
    return s;
}

/* ---- reading ---- */

/* "blk.N.<site>.weight.lora_a|b": layer, site and which (0 = A, 1 = B); 0 when not one. */
static int parse_name(const char *name, int *layer, int *site, int *which) {
    char base[32], ab;
    int n = 0;
    if (sscanf(name, "blk.%d.%31[a-z_].weight.lora_%c%n", layer, base, &ab, &n) != 3 || name[n] || (ab != 'a' && ab != 'b'))
        return 0;
    *which = ab == 'b';
    for (int s = 0; s < MT_N_SITES; s++)
        if (!strcmp(base, site_gguf[s])) {
            *site = s;
            return 1;
        }
    return 0;
}

/* Finds every pair, checks shapes against m, and fills present[] and the rank. */
static mt_status scan_tensors(const mt_gguf *g, const mt_config *c, const char *path, unsigned char *present, int *rank) {
    size_t n_sites = (size_t)c->n_layers * MT_N_SITES;
    unsigned char *seen = calloc(n_sites, 2);
    if (!seen) return mt_error(MT_ERR_NOMEM, "out of memory");
    mt_status s = MT_OK;
    *rank = 0;
    for (size_t i = 0; i < g->n_tensors && !s; i++) {
        const mt_gguf_tensor *t = &g->tensors[i];
        int layer, site, which, in, out;
        if (!parse_name(t->name, &layer, &site, &which)) {
            s = mt_error(MT_ERR_UNSUPPORTED, "%s: tensor %s is not a LoRA pair of a Llama linear layer (token "
                         "embedding / output adapters are not supported)", path, t->name);
            break;
        }
        if (layer < 0 || layer >= c->n_layers) {
            s = mt_error(MT_ERR_MISMATCH, "%s: tensor %s is for layer %d; the model has %d layers", path, t->name,
                         layer, c->n_layers);
            break;
        }
        mt_linear_site_shape(c, site, &in, &out);
        uint64_t r = t->n_dims == 2 ? (which ? t->ne[0] : t->ne[1]) : 0, fit = which ? (uint64_t)out : (uint64_t)in;
        uint64_t along = t->n_dims == 2 ? (which ? t->ne[1] : t->ne[0]) : 0;
        if (t->n_dims != 2 || along != fit || r < 1 || r > 65536)
            s = mt_error(MT_ERR_MISMATCH, "%s: %s has ne [%llu, %llu]; this model needs [%s] with %s = %llu", path,
                         t->name, (unsigned long long)t->ne[0], (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 1),
                         which ? "r, out" : "in, r", which ? "out" : "in", (unsigned long long)fit);
        else if (*rank && (int)r != *rank)
            s = mt_error(MT_ERR_UNSUPPORTED, "%s: %s has rank %llu, other tensors %d (one rank per adapter)", path,
                         t->name, (unsigned long long)r, *rank);
        else {
            *rank = (int)r;
            seen[((size_t)layer * MT_N_SITES + site) * 2 + which] = 1;
        }
    }
    for (size_t i = 0; i < n_sites && !s; i++) {
        if (seen[2 * i] != seen[2 * i + 1])
            s = mt_error(MT_ERR_FORMAT, "%s: blk.%zu.%s.weight has lora_%c but not lora_%c", path, i / MT_N_SITES,
                         site_gguf[i % MT_N_SITES], seen[2 * i] ? 'a' : 'b', seen[2 * i] ? 'b' : 'a');
        present[i] = seen[2 * i];
    }
    if (!s && !*rank) s = mt_error(MT_ERR_FORMAT, "%s: no LoRA tensors", path);
    free(seen);
    return s;
}

static mt_status check_header(const mt_gguf *g, const char *path, float *alpha) {
    char *type = NULL, *atype = NULL, *arch = NULL;
    double a = 0;
    mt_status s = mt_gguf_get_string(g, "general.type", &type, 0);
    if (!s && (!type || strcmp(type, "adapter")))
        s = mt_error(MT_ERR_FORMAT, "%s: general.type is \"%s\", not \"adapter\": a model, not a LoRA adapter", path,
                     type ? type : "(absent)");
    if (!s) s = mt_gguf_get_string(g, "adapter.type", &atype, 1);
    if (!s && strcmp(atype, "lora"))
        s = mt_error(MT_ERR_UNSUPPORTED, "%s: adapter.type is \"%s\"; memtune reads \"lora\"", path, atype);
    if (!s) s = mt_gguf_get_string(g, "general.architecture", &arch, 1);
    if (!s && strcmp(arch, "llama"))
        s = mt_error(MT_ERR_MISMATCH, "%s: an adapter for architecture \"%s\"; memtune's GGUF bases are \"llama\"", path, arch);
    if (!s) s = mt_gguf_get_float(g, "adapter.lora.alpha", &a, 1);
    if (!s && !isfinite(a)) s = mt_error(MT_ERR_FORMAT, "%s: adapter.lora.alpha is not finite", path);
    *alpha = (float)a;
    free(type);
    free(atype);
    free(arch);
    return s;
}

static mt_status read_pairs(const mt_gguf *g, const mt_config *c, const char *path, mt_lora *l) {
    char name[96];
    float *tmp = malloc((size_t)c->n_heads * c->head_dim * l->rank * sizeof(float));
    mt_status s = tmp ? MT_OK : mt_error(MT_ERR_NOMEM, "out of memory");
    for (int layer = 0; layer < l->n_layers && !s; layer++)
        for (int site = 0; site < MT_N_SITES && !s; site++) {
            size_t i = (size_t)layer * MT_N_SITES + site;
            if (l->a_offset[i] == MT_LORA_NONE) continue;
            int in, out, heads = qk_heads(c, site);
            mt_linear_site_shape(c, site, &in, &out);
            snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", layer, site_gguf[site]);
            s = mt_gguf_read_f32(g, mt_gguf_find_tensor(g, name), l->params + l->a_offset[i], (size_t)l->rank * in);
            snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", layer, site_gguf[site]);
            float *b = l->params + l->b_offset[i], *dst = heads && !c->rope_interleaved ? tmp : b;
            if (!s) s = mt_gguf_read_f32(g, mt_gguf_find_tensor(g, name), dst, (size_t)out * l->rank);
            if (!s && dst == tmp) mt_permute_qk_rows(b, tmp, heads, c->head_dim, l->rank, 0);
        }
    for (size_t j = 0; !s && j < l->n_params; j++)
        if (!isfinite(l->params[j])) s = mt_error(MT_ERR_FORMAT, "%s: non-finite adapter weight", path);
    free(tmp);
    return s;
}

mt_status mt_lora_load_gguf(const mt_model *m, const char *path, mt_lora **out) {
    *out = NULL;
    mt_gguf g;
    mt_status s = mt_gguf_open(path, &g);
    if (s) return s;
    float alpha = 0;
    int rank = 0;
    mt_lora *l = NULL;
    unsigned char *present = malloc((size_t)m->cfg.n_layers * MT_N_SITES);
    if (!present) s = mt_error(MT_ERR_NOMEM, "out of memory");
    if (!s) s = check_header(&g, path, &alpha);
    if (!s) s = scan_tensors(&g, &m->cfg, path, present, &rank);
    if (!s) s = mt_lora_alloc_sites(&m->cfg, rank, alpha, 0, present, &l);
    if (!s) s = read_pairs(&g, &m->cfg, path, l);
    free(present);
    mt_gguf_close(&g);
    if (s) mt_lora_free(l);
    else *out = l;
    return s;
}
