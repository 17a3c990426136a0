/* JSONL loading: one example per line, normalised to chat messages or raw text. */
#include "dataset/data.h"
#include "core/error.h"
#include "core/file.h"
#include "tokenizer/tokenizer.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DATA_FILE_BYTES ((size_t)4 << 30)
#define MAX_MESSAGES 4096

static void example_free(mt_example *e) {
    for (int i = 0; i < e->n_messages; i++) {
        free((char *)e->messages[i].role);
        free((char *)e->messages[i].content);
    }
    free(e->messages);
    free(e->text);
    memset(e, 0, sizeof *e);
}

void mt_dataset_free(mt_dataset *ds) {
    for (int i = 0; i < ds->n; i++) example_free(&ds->items[i]);
    free(ds->items);
    for (int i = 0; i < ds->n_files; i++) free(ds->files[i]);
    free(ds->files);
    memset(ds, 0, sizeof *ds);
}

static const char *string_field(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int add_message(mt_example *e, const char *role, const char *content) {
    mt_chat_message *m = realloc(e->messages, (size_t)(e->n_messages + 1) * sizeof *m);
    if (!m) return 0;
    e->messages = m;
    m[e->n_messages].role = strdup(role);
    m[e->n_messages].content = strdup(content);
    e->n_messages++;
    return m[e->n_messages - 1].role && m[e->n_messages - 1].content;
}

/* {"messages": [...]}: roles system/user/assistant, string content, ends with assistant. */
static const char *parse_messages(json_t *arr, mt_example *e) {
    size_t n = json_array_size(arr);
    if (n == 0) return "\"messages\" is empty";
    if (n > MAX_MESSAGES) return "too many messages";
    int has_assistant = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(arr, i);
        const char *role = string_field(m, "role"), *content = string_field(m, "content");
        if (!role || !content) return "each message needs string \"role\" and \"content\"";
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))
            return "message role must be system, user or assistant";
        if (!strcmp(role, "assistant")) {
            if (!*content) return "an assistant message is empty";
            has_assistant = 1;
        }
        if (!add_message(e, role, content)) return "out of memory";
    }
    if (!has_assistant) return "no assistant message to train on";
    return NULL;
}

/* Prompt/answer shapes. Returns NULL on success or a reason. */
static const char *parse_pair(json_t *o, mt_example *e) {
    const char *system = string_field(o, "system");
    const char *instruction = string_field(o, "instruction");
    const char *prompt = instruction ? instruction : string_field(o, "prompt");
    const char *input = string_field(o, "input");
    const char *answer = string_field(o, "output");
    if (!answer) answer = string_field(o, "completion");
    /* text-to-SQL sets: {"question","sql"} (an "answer" beside the SQL is its result) */
    if (!prompt && !input) prompt = string_field(o, "question");
    if (!answer) answer = string_field(o, "sql");
    if (!answer) answer = string_field(o, "answer");
    char *joined = NULL;
    if (instruction && input && *input) {
        /* Alpaca: the instruction, a blank line, then the input */
        joined = malloc(strlen(instruction) + strlen(input) + 3);
        if (!joined) return "out of memory";
        strcpy(joined, instruction);
        strcat(joined, "\n\n");
        strcat(joined, input);
        prompt = joined;
    } else if (!prompt) prompt = input;
    const char *why = NULL;
    e->is_fact = !instruction && input && string_field(o, "output") && !string_field(o, "prompt");
    if (!prompt || !answer)
        why = "needs \"input\"/\"output\", \"prompt\"/\"completion\", \"instruction\"/\"output\", \"question\"/\"sql\", \"messages\" or \"text\"";
    else if (!*answer) why = "the output is empty";
    else if ((system && !add_message(e, "system", system)) || !add_message(e, "user", prompt) ||
             !add_message(e, "assistant", answer))
        why = "out of memory";
    free(joined);
    return why;
}

static const char *parse_example(json_t *o, mt_example *e) {
    if (!json_is_object(o)) return "a line must be a JSON object";
    json_t *msgs = json_object_get(o, "messages");
    if (json_is_array(msgs)) return parse_messages(msgs, e);
    const char *text = string_field(o, "text");
    if (text && !json_object_get(o, "output") && !json_object_get(o, "completion")) {
        if (!*text) return "\"text\" is empty";
        e->text = strdup(text);
        return e->text ? NULL : "out of memory";
    }
    return parse_pair(o, e);
}

static int push_example(mt_dataset *ds, mt_example *e) {
    if (ds->n == ds->cap) {
        int cap = ds->cap ? ds->cap * 2 : 256;
        mt_example *p = realloc(ds->items, (size_t)cap * sizeof *p);
        if (!p) return 0;
        ds->items = p;
        ds->cap = cap;
    }
    ds->items[ds->n++] = *e;
    return 1;
}

/* One line: parse, normalise, append. Returns MT_OK, or an error naming file:line. */
static mt_status load_line(mt_dataset *ds, const char *path, int line_no, const char *line, size_t len) {
    mt_example e = {.source_line = line_no, .source_file = ds->n_files - 1};
    const char *why = NULL;
    json_error_t jerr;
    json_t *o = NULL;
    if (!mt_utf8_valid(line, len)) why = "not valid UTF-8";
    else if (!(o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr))) why = jerr.text;
    else why = parse_example(o, &e);
    mt_status s = MT_OK;
    if (why) s = mt_error(MT_ERR_FORMAT, "%s:%d: %s", path, line_no, why);
    else if (!push_example(ds, &e)) s = mt_error(MT_ERR_NOMEM, "%s:%d: out of memory", path, line_no);
    if (s) example_free(&e);
    json_decref(o);
    return s;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

/* A file holding one JSON array of examples (Alpaca/LLaMA-Factory style) instead of JSONL;
 * errors name the example's index. */
static mt_status load_json_array(mt_dataset *ds, const char *path, const char *buf, size_t len,
                                 int skip_bad_lines) {
    json_error_t jerr;
    json_t *arr = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!arr) return mt_error(MT_ERR_FORMAT, "%s:%d: %s", path, jerr.line, jerr.text);
    mt_status s = MT_OK;
    for (size_t i = 0; i < json_array_size(arr) && s == MT_OK; i++) {
        mt_example e = {.source_line = (int)i + 1, .source_file = ds->n_files - 1};
        const char *why = parse_example(json_array_get(arr, i), &e);
        if (why) s = mt_error(MT_ERR_FORMAT, "%s: example %zu: %s", path, i + 1, why);
        else if (!push_example(ds, &e)) s = mt_error(MT_ERR_NOMEM, "out of memory");
        if (s) example_free(&e);
        if (s == MT_ERR_FORMAT && skip_bad_lines) {
            ds->n_skipped++;
            s = MT_OK;
        }
    }
    json_decref(arr);
    return s;
}

static size_t skip_space(const char *buf, size_t len) {
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n')) i++;
    return i;
}

mt_status mt_dataset_load_jsonl(mt_dataset *ds, const char *path, int skip_bad_lines) {
    char *buf = NULL;
    size_t len = 0;
    mt_status s = mt_file_read_all(path, MAX_DATA_FILE_BYTES, &buf, &len);
    if (s) return s;
    s = mt_dataset_load_jsonl_text(ds, path, buf, len, skip_bad_lines);
    free(buf);
    return s;
}

mt_status mt_dataset_load_jsonl_text(mt_dataset *ds, const char *path, const char *buf, size_t len, int skip_bad_lines) {
    mt_status s = MT_OK;
    char **files = realloc(ds->files, (size_t)(ds->n_files + 1) * sizeof *files);
    if (!files || !(files[ds->n_files] = strdup(path))) {
        if (files) ds->files = files;
        return mt_error(MT_ERR_NOMEM, "out of memory");
    }
    ds->files = files;
    ds->n_files++;
    int line_no = 0, before = ds->n;
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) buf += 3, len -= 3; /* a UTF-8 byte-order mark */
    size_t first = skip_space(buf, len);
    if (first < len && buf[first] == '[') {
        if (!mt_utf8_valid(buf, len)) s = mt_error(MT_ERR_FORMAT, "%s: not valid UTF-8", path);
        else s = load_json_array(ds, path, buf, len, skip_bad_lines);
        len = 0; /* skip the line loop */
    }
    for (size_t start = 0; start < len && s == MT_OK;) {
        const char *nl = memchr(buf + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - buf) : len;
        line_no++;
        if (is_blank(buf + start, end - start)) ds->n_blank++;
        else if ((s = load_line(ds, path, line_no, buf + start, end - start)) == MT_ERR_FORMAT && skip_bad_lines) {
            ds->n_skipped++;
            s = MT_OK;
        }
        start = end + 1;
    }
    if (s == MT_OK && ds->n == before)
        s = mt_error(MT_ERR_FORMAT, "%s: no usable example%s", path,
                     ds->n_skipped ? " (every example was bad and skipped)" : "");
    return s;
}
