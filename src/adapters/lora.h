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
/* Allocates an adapter with zeroed A and B for cfg. */
mt_status mt_lora_alloc(const mt_config *cfg, int rank, float alpha, int rslora, unsigned targets, mt_lora **out);

#endif
