/* LoRA adapters (adapters layer): creation and PEFT initialisation, attaching to a model,
 * merging into the base weights, and reading/writing Hugging Face PEFT adapter directories.
 * The struct itself and the per-site math are below this layer: model/adapter.h (what the
 * forward and backward read) and kernels/lora.c (forward, backward, merge of one site). The
 * public calls are declared in memtune.h (mt_lora_create, mt_lora_merge, mt_lora_save, ...). */
#ifndef MT_ADAPTERS_LORA_H
#define MT_ADAPTERS_LORA_H
#include "memtune.h"
#include "model/adapter.h"
#include "model/model.h"

/* Parses a target list ("q,k,v,o,gate,up,down", PEFT names "q_proj", ..., or "all") into a
 * site bit mask. MT_ERR_ARG naming the unknown entry. */
mt_status mt_lora_parse_targets(const char *list, unsigned *mask);
/* "q,k,v,..." for a mask (static buffer). */
const char *mt_lora_targets_text(unsigned mask);
/* PEFT's module name of a site ("q_proj", ...) and its parent ("self_attn" or "mlp"). */
const char *mt_lora_site_module(int site);
/* Parses a layer list ("0-3,6"; NULL, "" or "all" = every layer) into on[n_layers] (1 =
 * adapted). MT_ERR_ARG naming a bad entry or a layer outside [0, n_layers). */
mt_status mt_lora_parse_layers(const char *list, int n_layers, unsigned char *on);
/* Allocates an adapter with zeroed A and B for cfg: targets at the layers with on[l] (NULL =
 * every layer). */
mt_status mt_lora_alloc(const mt_config *cfg, int rank, float alpha, int rslora, unsigned targets,
                        const unsigned char *layers_on, mt_lora **out);
/* The same for any set of sites: present[layer * MT_N_SITES + site] (targets = their union). */
mt_status mt_lora_alloc_sites(const mt_config *cfg, int rank, float alpha, int rslora, const unsigned char *present,
                              mt_lora **out);
/* llama.cpp's LoRA GGUF reader (lora_gguf.c; the writer, mt_lora_save_gguf, is public). */
mt_status mt_lora_load_gguf(const mt_model *m, const char *path, mt_lora **out);
/* 1 when layer l has at least one adapted site. */
int mt_lora_layer_used(const mt_lora *l, int layer);
/* token_rows.c: trainable token rows that memtune's own files in dir hold are copied into the PEFT
 * pair just written there (adapter_config.json trainable_token_indices + their tensors in
 * adapter_model.safetensors); nothing to do when there are none. */
mt_status mt_token_rows_fold_into_peft(const char *dir);
/* Is this an adapter_model.safetensors tensor of PEFT's trainable token rows? */
int mt_token_rows_tensor_name(const char *name);

#endif
