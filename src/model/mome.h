/* The mixture of memory experts (MoME) as the model sees it: plain data read by the
 * inference forward (forward.c) and the training pass (train_model.c). A site is the MLP
 * output of one layer: the MLP's normed input xn goes through product-key routing to K of
 * N = n1·n2 rank-1 experts per head (kernels/mome.c), and their sum is added to the
 * residual stream next to the MLP's own output:
 *
 *   x_next = x_mid + down(silu(gate(xn))·up(xn)) + Σ_h Σ_k g·silu(a_e·xn)·b_e
 *
 * b starts at zero, so an attached fresh layer computes exactly the base model. Creating,
 * initialising, saving and loading is the adapters layer (adapters/mome.c). */
#ifndef MT_MODEL_MOME_H
#define MT_MODEL_MOME_H
#include <stddef.h>
#include "memtune.h"
#include "kernels/kernels.h"
#include "core/file.h"

struct mt_mome {
    mt_mome_shape shape;      /* C = model dim, n1·n2 = N (n1, n2 ≈ √N), H heads, K per head, dk */
    long n_experts;           /* n1·n2 */
    int n_layers;             /* of the model it was made for */
    int n_sites;
    int *layers;              /* [n_sites] the layer of each site, ascending */
    int *site_of_layer;       /* [n_layers] site index or -1 */
    size_t router_size;       /* per site: Wq [H*dk, C] | K1 [H, n1, dk/2] | K2 [H, n2, dk/2] | Wx [H*dk, Cx] */
    mt_mome_context_spec context; /* the routing context (width shape.Cx; dim 0 = none) */
    size_t bank_size;         /* per site: [N, 2C], row e = [a_e | b_e] */
    float *router;            /* [n_sites * router_size] */
    float *bank;              /* [n_sites * bank_size]; loaded: inside bank_file when it could be mapped */
    mt_mapped_file bank_file; /* the adapter file, mapped copy-on-write (data NULL: bank is malloc'd) */
    float *keys;              /* keyed experts (shape.match > 0): [n_sites * n_experts, Cx], all zero
                                 = not yet trained (answers everywhere, adds nothing: b = 0); else NULL */
    int freeze_router;        /* training leaves the router as it is */
};

/* Keyed experts (mm->keys): whether expert e of a site answers at a token of routing context
 * ctx [Cx]. An expert not yet keyed takes ctx as its key when claim is set (training, at a
 * token whose answer it learns: from then on it answers that context alone) and else does not
 * answer. Unkeyed layers: always 1. */
int mt_mome_claim(mt_mome *mm, int site, long e, const float *ctx, int claim);

/* Keyed layers store their used rows and keys in bf16 (unkeyed ones in f32, as ever): rounds
 * them in place, so the layer computes what a save and a load of it will. */
void mt_mome_round_stored(mt_mome *mm);

/* Attaches mm to m (NULL detaches); m does not own it. The KV cache is dropped.
 * MT_ERR_MISMATCH when it was made for another width or layer count. */
mt_status mt_model_set_mome(mt_model *m, struct mt_mome *mm);

#endif
