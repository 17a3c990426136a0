/* Internal interface of the formats layer: each model format's loader and writer (called by
 * model_io.c's dispatch), the HF config.json writer, and the helpers they share (tensor
 * lists, RoPE layout conversion on write, tokenizer files given by the user). */
#ifndef MT_FORMATS_FORMATS_H
#define MT_FORMATS_FORMATS_H
#include "memtune.h"
#include "model/model.h"

mt_status mt_hf_load(const char *dir, const mt_load_options *opts, mt_model **out);
mt_status mt_hf_save(const mt_model *m, const char *dir);
mt_status mt_gguf_load_model(const char *path, const mt_load_options *opts, mt_model **out);
mt_status mt_gguf_save_model(const mt_model *m, const char *path);
mt_status mt_llama2c_load(const char *path, const mt_load_options *opts, mt_model **out);
mt_status mt_llama2c_save(const mt_model *m, const char *path);

/* Token ids outside the vocabulary become -1 (unknown). */
void mt_config_drop_bad_token_ids(mt_config *cfg);
/* Fills bos/eos/pad ids that config.json left unknown from a generation_config.json. */
mt_status mt_generation_config_apply(const char *path, mt_config *cfg);
/* Writes dir/config.json and dir/generation_config.json for cfg. */
mt_status mt_config_save_json(const mt_config *cfg, const char *dir);
/* The HF class a config is written as. A llama-class model with q/k/v biases is written
 * with attention_bias=true, which in transformers also gives o_proj a bias: the writer then
 * stores zero o_proj biases (*zero_o_bias = 1). */
const char *mt_hf_architecture(const mt_config *cfg, int *zero_o_bias);

/* The model's tensor list, malloc'd (free() it); *n receives the count. */
mt_tensor_ref *mt_model_tensor_list(const mt_model *m, int *n);
/* Heads whose rows a RoPE layout change permutes in this tensor kind (0: not Q/K). */
int mt_tensor_rope_heads(const mt_config *cfg, int kind);
/* Floats a scratch buffer needs for mt_tensor_in_layout() (the largest Q/K tensor). */
size_t mt_qk_scratch_floats(const mt_config *cfg);
/* The tensor's data as a file in the given RoPE layout stores it: r->data itself, or a
 * permuted copy in scratch. */
const float *mt_tensor_in_layout(const mt_model *m, const mt_tensor_ref *r, int interleaved, float *scratch);

/* Loads a tokenizer the user named (tokenizer.json or a llama2.c tokenizer .bin) for the
 * model at model_path and checks that it fits: exactly model_vocab tokens when exact, at
 * most otherwise. chat_template may be NULL. */
mt_status mt_load_user_tokenizer(const char *tok_path, const char *model_path, int model_vocab, int exact,
                                 mt_tokenizer **tok, char **chat_template);
/* MT_ERR_MISMATCH unless the tokenizer's vocabulary fits the model's (see above). */
mt_status mt_check_tokenizer_fits(const mt_tokenizer *tok, const char *tok_path, const char *model_path,
                                  int model_vocab, int exact);

/* Refuses (MT_ERR_FORMAT) a config whose parameters cannot fit in `bytes` of tensor data at
 * `min_bytes_per_param`, before anything the size of the model is allocated. */
mt_status mt_check_params_fit(const char *path, const mt_config *cfg, uint64_t bytes, double min_bytes_per_param);
/* Strings equal and arch one of those memtune models. */
int mt_arch_known(const char *arch);

#endif
