/* Perplexity of plain text: the text is tokenized once and scored in consecutive windows
 * of the context length, each window starting with BOS, every following token scored. */
#include "core/error.h"
#include "core/file.h"
#include "kernels/kernels.h"
#include "model/forward.h"
#include "tokenizer/tokenizer.h"
#include <math.h>
#include <stdlib.h>

static double score_window(const float *logits, const int *ids, int n, int vocab) {
    double nll = 0.0;
    for (int t = 0; t + 1 < n; t++) {
        const float *row = logits + (size_t)t * vocab;
        nll += mt_logsumexp(row, vocab) - row[ids[t + 1]];
    }
    return nll;
}

static mt_status eval_text(mt_model *m, const char *text, size_t len, const mt_eval_options *opt, mt_text_score *out) {
    if (!m->tok) return mt_error(MT_ERR_ARG, "the model has no tokenizer");
    if (len > (size_t)MT_MAX_EVAL_TEXT_BYTES)
        return mt_error(MT_ERR_ARG, "%zu bytes of text is more than the %ld an evaluation takes (MT_MAX_EVAL_TEXT_BYTES): "
                        "score a part of it", len, MT_MAX_EVAL_TEXT_BYTES);
    if (!mt_utf8_valid(text, len)) return mt_error(MT_ERR_ARG, "text is not valid UTF-8");
    int *ids = NULL, n = 0;
    mt_status s = mt_tokenizer_encode(m->tok, text, len, 0, 0, &ids, &n);
    if (s) return s;
    int bos = mt_tokenizer_bos(m->tok) >= 0 ? mt_tokenizer_bos(m->tok) : mt_tokenizer_eos(m->tok);
    int ctx = mt_infer_context(m), vocab = m->cfg.vocab_size;
    int *window = malloc((size_t)ctx * sizeof(int));
    float *logits = malloc((size_t)ctx * vocab * sizeof(float));
    if (!window || !logits) s = mt_error(MT_ERR_NOMEM, "out of memory for a %d-token window", ctx);
    double total = 0.0;
    long scored = 0, windows = ctx > 1 ? ((long)n + ctx - 2) / (ctx - 1) : 0, done = 0;
    if (ctx < 2) s = mt_error(MT_ERR_ARG, "a context of %d tokens leaves none to score", ctx);
    for (int start = 0; s == MT_OK && start < n; start += ctx - 1) {
        int len_w = n - start < ctx - 1 ? n - start : ctx - 1;
        window[0] = bos;
        for (int i = 0; i < len_w; i++) window[i + 1] = ids[start + i];
        s = mt_forward(m, window, len_w + 1, 0, logits, 1);
        if (s == MT_OK) total += score_window(logits, window, len_w + 1, vocab);
        if (s == MT_OK && !isfinite(total))
            s = mt_error(MT_ERR_FORMAT, "the model's logits are NaN or infinite (tokens %d to %d): are its weights?",
                         start, start + len_w);
        scored += len_w;
        if (s == MT_OK && opt && opt->progress && opt->progress(++done, windows, opt->progress_user))
            s = mt_error(MT_ERR_ARG, "stopped after %ld of %ld windows", done, windows);
    }
    free(window);
    free(logits);
    free(ids);
    if (s) return s;
    if (scored == 0) return mt_error(MT_ERR_ARG, "no tokens to score");
    out->tokens = scored;
    out->nll = total / scored;
    out->perplexity = exp(out->nll);
    return MT_OK;
}

mt_status mt_eval_text(mt_model *m, const char *text, size_t len, mt_text_score *out) {
    return eval_text(m, text, len, NULL, out);
}

mt_status mt_eval_text_file_opts(mt_model *m, const char *path, const mt_eval_options *opt, mt_text_score *out) {
    char *text = NULL;
    size_t len = 0;
    /* the documented limit, checked before reading (the message names it) */
    mt_status s = mt_file_read_all(path, (size_t)MT_MAX_EVAL_TEXT_BYTES, &text, &len);
    if (s) return s;
    s = eval_text(m, text, len, opt, out);
    free(text);
    if (s) return mt_error_prefix(s, "%s", path);
    return MT_OK;
}

mt_status mt_eval_text_file(mt_model *m, const char *path, mt_text_score *out) {
    return mt_eval_text_file_opts(m, path, NULL, out);
}
