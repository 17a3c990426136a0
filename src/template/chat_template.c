/* Chat-template engine: the public API (chat_template.h) over the lexer, parser and
 * evaluator of this folder (see internal.h for the design). */
#include "template/internal.h"

/* ======================================================================================
 * Public API
 * ==================================================================================== */

static const char DEFAULT_TEMPLATE[] =
    "{#- memtune's template for models without one (see chat_template.h): system and user\n"
    "    turns are their text and a newline; an assistant turn is its text and EOS. -#}\n"
    "{{- bos_token }}\n"
    "{%- for message in messages %}\n"
    "    {{- message['content'] }}\n"
    "    {%- if message['role'] == 'assistant' %}\n"
    "        {{- eos_token }}\n"
    "    {%- else %}\n"
    "        {{- '\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";

const char *mt_chat_template_default(void) { return DEFAULT_TEMPLATE; }

const char *mt_chat_template_source(const mt_chat_template *t) { return t ? t->source : NULL; }

void mt_chat_template_free(mt_chat_template *t) {
    if (!t) return;
    tpl_arena_free(&t->ar);
    free(t->source);
    free(t->norm);
    free(t);
}

/* Jinja's newline handling: \r\n and \r become \n, and one trailing newline is dropped
 * (keep_trailing_newline is off). */
static char *normalize_newlines(const char *src, size_t n, size_t *out_n) {
    char *d = malloc(n + 1);
    size_t k = 0;
    if (!d) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            d[k++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else {
            d[k++] = src[i];
        }
    }
    if (k && d[k - 1] == '\n') k--;
    d[k] = 0;
    *out_n = k;
    return d;
}

static int make_keys(mt_chat_template *t) {
    for (int i = 0; i < N_LOOP_KEYS; i++) {
        str_obj *o = tpl_arena_str(&t->ar, tpl_loop_keys[i], strlen(tpl_loop_keys[i]));
        if (!o) return -1;
        t->loop_keys[i].kind = V_STR;
        t->loop_keys[i].u.s = o;
    }
    str_obj *role = tpl_arena_str(&t->ar, "role", 4), *content = tpl_arena_str(&t->ar, "content", 7);
    if (!role || !content) return -1;
    t->key_role.kind = t->key_content.kind = V_STR;
    t->key_role.u.s = role;
    t->key_content.u.s = content;
    return 0;
}

mt_status mt_chat_template_compile(const char *source, mt_chat_template **out) {
    if (!source || !out) return mt_error(MT_ERR_ARG, "chat template: source and out must not be NULL");
    *out = NULL;
    size_t n = strlen(source), norm_n = 0;
    if (n > MAX_SOURCE) return mt_error(MT_ERR_FORMAT, "chat template is %zu bytes, over the %zu MiB limit", n, MAX_SOURCE >> 20);
    mt_chat_template *t = calloc(1, sizeof *t);
    if (!t || !(t->source = strdup(source)) || !(t->norm = normalize_newlines(source, n, &norm_n)) || make_keys(t)) {
        mt_chat_template_free(t);
        return mt_error(MT_ERR_NOMEM, "chat template: out of memory");
    }
    lexer lx = {.src = t->norm, .n = norm_n, .ar = &t->ar};
    mt_status status = MT_OK;
    if (tpl_lex_template(&lx)) {
        status = lx.status;
    } else {
        parser p = {.tok = lx.toks, .n = lx.n_toks, .ar = &t->ar, .src = t->norm};
        int which = 0;
        if (tpl_parse_body(&p, &t->body, NULL, &which, NULL) == 0 && tpl_cur(&p)->kind != T_EOF) tpl_unexpected(&p, NULL);
        status = p.status;
    }
    free(lx.toks); /* the AST keeps only arena strings */
    if (status != MT_OK) {
        mt_chat_template_free(t);
        return status;
    }
    *out = t;
    return MT_OK;
}

/* messages[0..n) as the list of {role, content} dicts templates iterate. */
static int build_messages(rctx *c, const mt_chat_message *msgs, int n, list_obj **out) {
    list_obj *l = tpl_list_new(c, NULL);
    if (!l) return -1;
    for (int i = 0; i < n; i++) {
        value role, content = v_none();
        dict_obj *d = NULL;
        if (!msgs[i].role) { tpl_rfail(c, NULL, MT_ERR_ARG, "message %d has no role", i); goto fail; }
        if (!(d = tpl_dict_new(c, NULL))) goto fail;
        if (tpl_str_new(c, NULL, msgs[i].role, strlen(msgs[i].role), &role) ||
            tpl_dict_set(c, NULL, d, c->t->key_role, role) ||
            (msgs[i].content && tpl_str_new(c, NULL, msgs[i].content, strlen(msgs[i].content), &content)) ||
            tpl_dict_set(c, NULL, d, c->t->key_content, content) ||
            tpl_list_push(c, NULL, l, tpl_dict_value(d, V_DICT))) {
            if (d) tpl_v_drop(tpl_dict_value(d, V_DICT));
            goto fail;
        }
    }
    *out = l;
    return 0;
fail:
    tpl_v_drop(tpl_list_value(l));
    return -1;
}

/* The first k messages, sharing the message dicts. */
static int first_messages(rctx *c, const list_obj *all, int k, list_obj **out) {
    list_obj *l = tpl_list_new(c, NULL);
    if (!l) return -1;
    for (int i = 0; i < k; i++)
        if (tpl_list_push(c, NULL, l, tpl_v_ref(all->items[i]))) { tpl_v_drop(tpl_list_value(l)); return -1; }
    *out = l;
    return 0;
}

/* Renders the template with the context transformers passes (see chat_template.h). */
int tpl_render(rctx *c, list_obj *messages, int add_generation_prompt, const char *bos, const char *eos, sbuf *out) {
    value v;
    c->work = 0;
    c->ctl = CTL_NONE;
    c->out = out;
    if (tpl_push_frame(c, NULL)) return -1;
    int rc = tpl_bind(c, NULL, "messages", tpl_v_ref(tpl_list_value(messages)));
    if (rc == 0) rc = tpl_bind(c, NULL, "add_generation_prompt", v_bool(add_generation_prompt));
    if (rc == 0) rc = tpl_bind(c, NULL, "tools", v_none());
    if (rc == 0) rc = tpl_bind(c, NULL, "documents", v_none());
    if (rc == 0 && bos) rc = tpl_str_new(c, NULL, bos, strlen(bos), &v) || tpl_bind(c, NULL, "bos_token", v);
    if (rc == 0 && eos) rc = tpl_str_new(c, NULL, eos, strlen(eos), &v) || tpl_bind(c, NULL, "eos_token", v);
    if (rc == 0) rc = tpl_exec_body(c, &c->t->body);
    tpl_pop_frame(c);
    return rc;
}

static void ctx_init(rctx *c, const mt_chat_template *t) {
    memset(c, 0, sizeof *c);
    c->t = t;
    tpl_live_bytes = 0;
}

static void ctx_free(rctx *c) {
    while (c->n_frames) tpl_pop_frame(c);
    free(c->frames);
    tpl_live_bytes = 0;
}

/* Hands the buffer's text to the caller (an empty string when nothing was written). */
static char *take_text(sbuf *b) {
    char *p = b->p ? b->p : strdup("");
    b->p = NULL;
    b->n = b->cap = 0;
    return p;
}

mt_status mt_chat_template_render(const mt_chat_template *t, const mt_chat_message *messages, int n_messages,
                                  int add_generation_prompt, const char *bos_token, const char *eos_token, char **out) {
    if (!t || !out || n_messages < 0 || (n_messages > 0 && !messages))
        return mt_error(MT_ERR_ARG, "chat template render: bad arguments");
    *out = NULL;
    rctx c;
    list_obj *msgs = NULL;
    sbuf b = {0};
    ctx_init(&c, t);
    if (build_messages(&c, messages, n_messages, &msgs) == 0 &&
        tpl_render(&c, msgs, add_generation_prompt != 0, bos_token, eos_token, &b) == 0 && !(*out = take_text(&b)))
        tpl_rfail(&c, NULL, MT_ERR_NOMEM, "out of memory");
    if (msgs) tpl_v_drop(tpl_list_value(msgs));
    tpl_sb_free(&b);
    ctx_free(&c);
    return c.status;
}

/* A short, printable excerpt of s from byte `at`, for error messages. */
static void excerpt(const char *s, size_t n, size_t at, char *buf, size_t cap) {
    size_t k = 0;
    for (size_t i = at; i < n && i < at + 24 && k + 5 < cap; i++) {
        if (s[i] == '\n') { buf[k++] = '\\'; buf[k++] = 'n'; }
        else buf[k++] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
    }
    buf[k] = 0;
}

/* Fails unless a[0..a_n) is a prefix of b[0..b_n). */
static int check_prefix(rctx *c, const sbuf *a, const sbuf *b, int message, const char *what) {
    if (a->n <= b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0)) return 0;
    size_t i = 0;
    while (i < a->n && i < b->n && a->p[i] == b->p[i]) i++;
    char x[64], y[64];
    excerpt(a->p, a->n, i, x, sizeof x);
    excerpt(b->p, b->n, i, y, sizeof y);
    return tpl_rfail(c, NULL, MT_ERR_FORMAT,
                 "chat template is not prefix-stable at assistant message %d: %s (they differ at byte %zu: \"%s\" vs \"%s\")",
                 message, what, i, x, y);
}

/* The span of assistant message i: what render(0..i] adds to render(0..i) + generation prompt. */
static int assistant_span(rctx *c, list_obj *all, int i, const sbuf *full, const char *bos, const char *eos, mt_chat_span *span) {
    list_obj *before_msgs = NULL, *after_msgs = NULL;
    sbuf before = {0}, after = {0};
    int rc = first_messages(c, all, i, &before_msgs);
    if (rc == 0) rc = first_messages(c, all, i + 1, &after_msgs);
    if (rc == 0) rc = tpl_render(c, before_msgs, 1, bos, eos, &before);
    if (rc == 0) rc = tpl_render(c, after_msgs, 0, bos, eos, &after);
    if (rc == 0) rc = check_prefix(c, &before, &after, i, "its prompt (rendered with add_generation_prompt) does not begin the text that includes it");
    if (rc == 0) rc = check_prefix(c, &after, full, i, "the conversation up to it does not begin the whole conversation");
    if (rc == 0 && eos && *eos && i + 1 < all->n) {
        /* A template that closes a turn only when another message follows (Qwen1.5 writes
         * <|im_end|> after every message but the last) passes the prefix checks, but the
         * span would then miss the end marker the model must learn to produce. */
        size_t k = after.n;
        while (k < full->n && tpl_py_space(full->p[k])) k++;
        if (k < full->n && strncmp(full->p + k, eos, strlen(eos)) == 0)
            rc = tpl_rfail(c, NULL, MT_ERR_FORMAT,
                       "chat template is not prefix-stable at assistant message %d: its end marker \"%s\" is written "
                       "only when another message follows, so the last message of a conversation never gets one",
                       i, eos);
    }
    if (rc == 0) {
        /* the model stops at the turn's end marker: whitespace after it is not its to produce */
        size_t end = after.n;
        while (end > before.n && tpl_py_space(after.p[end - 1])) end--;
        span->message = i;
        span->begin = before.n;
        span->end = end;
    }
    if (before_msgs) tpl_v_drop(tpl_list_value(before_msgs));
    if (after_msgs) tpl_v_drop(tpl_list_value(after_msgs));
    tpl_sb_free(&before);
    tpl_sb_free(&after);
    return rc;
}

mt_status mt_chat_render_spans(const mt_chat_template *t, const mt_chat_message *messages, int n_messages,
                               const char *bos_token, const char *eos_token, char **text, mt_chat_span **spans, int *n_spans) {
    if (!t || !text || !spans || !n_spans || n_messages < 0 || (n_messages > 0 && !messages))
        return mt_error(MT_ERR_ARG, "chat template spans: bad arguments");
    *text = NULL;
    *spans = NULL;
    *n_spans = 0;
    rctx c;
    list_obj *all = NULL;
    sbuf full = {0};
    mt_chat_span *found = NULL;
    int n_found = 0, n_assistant = 0;
    ctx_init(&c, t);
    for (int i = 0; i < n_messages; i++) n_assistant += messages[i].role && !strcmp(messages[i].role, "assistant");
    int rc = build_messages(&c, messages, n_messages, &all);
    if (rc == 0) rc = tpl_render(&c, all, 0, bos_token, eos_token, &full);
    if (rc == 0 && n_assistant && !(found = malloc((size_t)n_assistant * sizeof *found)))
        rc = tpl_rfail(&c, NULL, MT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n_messages && rc == 0; i++)
        if (!strcmp(messages[i].role, "assistant"))
            rc = assistant_span(&c, all, i, &full, bos_token, eos_token, &found[n_found++]);
    if (rc == 0 && !(*text = take_text(&full))) rc = tpl_rfail(&c, NULL, MT_ERR_NOMEM, "out of memory");
    if (rc == 0) {
        *spans = found;
        *n_spans = n_found;
    } else {
        free(found);
    }
    if (all) tpl_v_drop(tpl_list_value(all));
    tpl_sb_free(&full);
    ctx_free(&c);
    return c.status;
}
