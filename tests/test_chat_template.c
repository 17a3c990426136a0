/* Chat templates: real Hugging Face templates (the .jinja files in tests/fixtures/templates, verbatim
 * from each model's tokenizer_config.json) must render exactly what transformers'
 * apply_chat_template renders; the expected strings below are written out by hand from the
 * templates' semantics. Also: Jinja semantics on small snippets, the default template for
 * base models, assistant span extraction, malformed templates (line and column in the
 * message), runtime errors and resource limits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/file.h"
#include "test.h"
#include "template/chat_template.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* system + user + assistant + user */
static const mt_chat_message CHAT[] = {
    {"system", "You are a terse assistant."},
    {"user", "Hello!"},
    {"assistant", "Hi there. How can I help?"},
    {"user", "What is 2+2?"},
};
/* the same without the system message */
static const mt_chat_message CHAT_NO_SYSTEM[] = {
    {"user", "Hello!"},
    {"assistant", "Hi there. How can I help?"},
    {"user", "What is 2+2?"},
};
/* two assistant turns, ending with the assistant (a training example) */
static const mt_chat_message TWO_TURNS[] = {
    {"user", "Hello!"},
    {"assistant", "Hi there. How can I help?"},
    {"user", "What is 2+2?"},
    {"assistant", "4"},
};

static mt_chat_template *load(const char *name) {
    char path[256], *src = NULL;
    size_t len = 0;
    mt_chat_template *t = NULL;
    snprintf(path, sizeof path, "tests/fixtures/templates/%s", name);
    if (mt_file_read_all(path, 1 << 20, &src, &len) != MT_OK) {
        fprintf(stderr, "cannot read %s: %s\n", path, mt_last_error());
        exit(2);
    }
    CHECK_OK(mt_chat_template_compile(src, &t));
    if (t) CHECK_STR_EQ(mt_chat_template_source(t), src);
    free(src);
    return t;
}

/* Renders and compares; prints both strings on a mismatch. */
static void check_render(const mt_chat_template *t, const mt_chat_message *m, int n, int add_generation_prompt,
                         const char *bos, const char *eos, const char *expected) {
    char *out = NULL;
    CHECK_OK(mt_chat_template_render(t, m, n, add_generation_prompt, bos, eos, &out));
    CHECK_STR_EQ(out, expected);
    free(out);
}

/* Spans of every assistant message: the text must equal the plain render, and each span's
 * bytes must equal the expected trained text. */
static void check_spans(const mt_chat_template *t, const mt_chat_message *m, int n, const char *bos,
                        const char *eos, const char *const *expected, int n_expected) {
    char *text = NULL, *full = NULL;
    mt_chat_span *spans = NULL;
    int n_spans = -1;
    CHECK_OK(mt_chat_render_spans(t, m, n, bos, eos, &text, &spans, &n_spans));
    CHECK_OK(mt_chat_template_render(t, m, n, 0, bos, eos, &full));
    CHECK_STR_EQ(text, full);
    CHECK_INT_EQ(n_spans, n_expected);
    for (int i = 0; text && i < n_spans && i < n_expected; i++) {
        CHECK(spans[i].begin <= spans[i].end && spans[i].end <= strlen(text));
        CHECK_STR_EQ(m[spans[i].message].role, "assistant");
        char *got = strndup(text + spans[i].begin, spans[i].end - spans[i].begin);
        CHECK_STR_EQ(got, expected[i]);
        free(got);
    }
    free(text);
    free(full);
    free(spans);
}

static void check_compile_error(const char *source, mt_status status, const char *needle) {
    mt_chat_template *t = NULL;
    CHECK_ERR(mt_chat_template_compile(source, &t), status, needle);
    CHECK(t == NULL);
    mt_chat_template_free(t);
}

static void check_render_error(const char *source, mt_status status, const char *needle) {
    mt_chat_template *t = NULL;
    char *out = NULL;
    CHECK_OK(mt_chat_template_compile(source, &t));
    if (!t) return;
    CHECK_ERR(mt_chat_template_render(t, CHAT, COUNT(CHAT), 1, "<s>", "</s>", &out), status, needle);
    CHECK(out == NULL);
    mt_chat_template_free(t);
}

/* ---- real templates ------------------------------------------------------------------ */

TEST(llama3_instruct_renders_like_transformers) {
    mt_chat_template *t = load("llama3_instruct.jinja");
    const char *expected =
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a terse assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHi there. How can I help?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>";
    check_render(t, CHAT, COUNT(CHAT), 0, "<|begin_of_text|>", "<|eot_id|>", expected);
    char with_prompt[1024];
    snprintf(with_prompt, sizeof with_prompt, "%s<|start_header_id|>assistant<|end_header_id|>\n\n", expected);
    check_render(t, CHAT, COUNT(CHAT), 1, "<|begin_of_text|>", "<|eot_id|>", with_prompt);
    /* content | trim strips the turn's surrounding whitespace */
    const mt_chat_message padded[] = {{"user", "  padded question \n"}, {"assistant", "\n padded answer  "}};
    check_render(t, padded, 2, 0, "<|begin_of_text|>", "<|eot_id|>",
                 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\npadded question<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\npadded answer<|eot_id|>");
    mt_chat_template_free(t);
}

TEST(llama2_chat_folds_system_into_first_user_turn) {
    mt_chat_template *t = load("llama2_chat.jinja");
    const char *expected =
        "<s>[INST] <<SYS>>\nYou are a terse assistant.\n<</SYS>>\n\nHello! [/INST] Hi there. How can I help? </s>"
        "<s>[INST] What is 2+2? [/INST]";
    check_render(t, CHAT, COUNT(CHAT), 0, "<s>", "</s>", expected);
    check_render(t, CHAT, COUNT(CHAT), 1, "<s>", "</s>", expected); /* the template ignores it */
    check_render(t, CHAT_NO_SYSTEM, COUNT(CHAT_NO_SYSTEM), 1, "<s>", "</s>",
                 "<s>[INST] Hello! [/INST] Hi there. How can I help? </s><s>[INST] What is 2+2? [/INST]");
    mt_chat_template_free(t);
}

TEST(llama2_chat_rejects_roles_that_do_not_alternate) {
    mt_chat_template *t = load("llama2_chat.jinja");
    const mt_chat_message bad[] = {{"system", "S"}, {"user", "a"}, {"user", "b"}};
    char *out = NULL;
    CHECK_ERR(mt_chat_template_render(t, bad, 3, 1, "<s>", "</s>", &out), MT_ERR_ARG,
              "Conversation roles must alternate user/assistant/user/assistant/...");
    CHECK(out == NULL);
    const mt_chat_message assistant_first[] = {{"assistant", "a"}, {"user", "b"}};
    CHECK_ERR(mt_chat_template_render(t, assistant_first, 2, 1, "<s>", "</s>", &out), MT_ERR_ARG, "must alternate");
    mt_chat_template_free(t);
}

TEST(mistral_instruct_renders_like_transformers) {
    /* the current template of Mistral-7B-Instruct v0.1 and v0.2: an optional system
     * message goes into the first [INST] */
    mt_chat_template *t = load("mistral_instruct.jinja");
    check_render(t, CHAT, COUNT(CHAT), 1, "<s>", "</s>",
                 "<s> [INST] You are a terse assistant.\n\nHello! [/INST] Hi there. How can I help?</s>"
                 " [INST] What is 2+2? [/INST]");
    check_render(t, CHAT_NO_SYSTEM, COUNT(CHAT_NO_SYSTEM), 0, "<s>", "</s>",
                 "<s> [INST] Hello! [/INST] Hi there. How can I help?</s> [INST] What is 2+2? [/INST]");
    char *out = NULL;
    const mt_chat_message bad[] = {{"user", "a"}, {"user", "b"}};
    CHECK_ERR(mt_chat_template_render(t, bad, 2, 1, "<s>", "</s>", &out), MT_ERR_ARG,
              "After the optional system message, conversation roles must alternate");
    const mt_chat_message tool[] = {{"user", "a"}, {"tool", "b"}};
    CHECK_ERR(mt_chat_template_render(t, tool, 2, 1, "<s>", "</s>", &out), MT_ERR_ARG,
              "Only user and assistant roles are supported");
    mt_chat_template_free(t);
}

TEST(mistral_instruct_original_v01_template) {
    /* the 2023 template: eos and a space after each answer, no system message */
    mt_chat_template *t = load("mistral_instruct_v0.1_original.jinja");
    check_render(t, CHAT_NO_SYSTEM, COUNT(CHAT_NO_SYSTEM), 1, "<s>", "</s>",
                 "<s>[INST] Hello! [/INST]Hi there. How can I help?</s> [INST] What is 2+2? [/INST]");
    char *out = NULL;
    CHECK_ERR(mt_chat_template_render(t, CHAT, COUNT(CHAT), 1, "<s>", "</s>", &out), MT_ERR_ARG,
              "Conversation roles must alternate");
    mt_chat_template_free(t);
}

TEST(qwen2_chatml_adds_default_system_message) {
    mt_chat_template *t = load("qwen2_instruct.jinja");
    const char *turns =
        "<|im_start|>user\nHello!<|im_end|>\n"
        "<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n";
    char expected[1024];
    snprintf(expected, sizeof expected, "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n%s", turns);
    check_render(t, CHAT, COUNT(CHAT), 0, NULL, "<|im_end|>", expected);
    snprintf(expected, sizeof expected, "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n%s<|im_start|>assistant\n", turns);
    check_render(t, CHAT, COUNT(CHAT), 1, NULL, "<|im_end|>", expected);
    snprintf(expected, sizeof expected, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n%s<|im_start|>assistant\n", turns);
    check_render(t, CHAT_NO_SYSTEM, COUNT(CHAT_NO_SYSTEM), 1, NULL, "<|im_end|>", expected);
    mt_chat_template_free(t);
}

TEST(smollm2_chatml_adds_its_default_system_message) {
    mt_chat_template *t = load("smollm2_instruct.jinja");
    const char *turns =
        "<|im_start|>user\nHello!<|im_end|>\n"
        "<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n";
    char expected[1024];
    snprintf(expected, sizeof expected, "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n%s", turns);
    check_render(t, CHAT, COUNT(CHAT), 0, "<|im_start|>", "<|im_end|>", expected);
    snprintf(expected, sizeof expected,
             "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
             "%s<|im_start|>assistant\n", turns);
    check_render(t, CHAT_NO_SYSTEM, COUNT(CHAT_NO_SYSTEM), 1, "<|im_start|>", "<|im_end|>", expected);
    mt_chat_template_free(t);
}

TEST(qwen25_template_with_whitespace_control) {
    mt_chat_template *t = load("qwen2.5_instruct.jinja");
    check_render(t, CHAT_NO_SYSTEM, COUNT(CHAT_NO_SYSTEM), 1, NULL, "<|im_end|>",
                 "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                 "<|im_start|>user\nHello!<|im_end|>\n"
                 "<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n"
                 "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                 "<|im_start|>assistant\n");
    check_render(t, CHAT, COUNT(CHAT), 0, NULL, "<|im_end|>",
                 "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n"
                 "<|im_start|>user\nHello!<|im_end|>\n"
                 "<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n"
                 "<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
    mt_chat_template_free(t);
}

/* ---- spans --------------------------------------------------------------------------- */

TEST(spans_are_assistant_content_and_end_marker) {
    static const struct {
        const char *file, *bos, *eos;
        const char *one[1], *two[2];
    } cases[] = {
        {"llama3_instruct.jinja", "<|begin_of_text|>", "<|eot_id|>",
         {"Hi there. How can I help?<|eot_id|>"}, {"Hi there. How can I help?<|eot_id|>", "4<|eot_id|>"}},
        {"llama2_chat.jinja", "<s>", "</s>",
         {" Hi there. How can I help? </s>"}, {" Hi there. How can I help? </s>", " 4 </s>"}},
        {"mistral_instruct.jinja", "<s>", "</s>",
         {" Hi there. How can I help?</s>"}, {" Hi there. How can I help?</s>", " 4</s>"}},
        {"qwen2_instruct.jinja", NULL, "<|im_end|>",
         {"Hi there. How can I help?<|im_end|>"}, {"Hi there. How can I help?<|im_end|>", "4<|im_end|>"}},
        {"smollm2_instruct.jinja", "<|im_start|>", "<|im_end|>",
         {"Hi there. How can I help?<|im_end|>"}, {"Hi there. How can I help?<|im_end|>", "4<|im_end|>"}},
        {"qwen2.5_instruct.jinja", NULL, "<|im_end|>",
         {"Hi there. How can I help?<|im_end|>"}, {"Hi there. How can I help?<|im_end|>", "4<|im_end|>"}},
    };
    for (int i = 0; i < COUNT(cases); i++) {
        mt_chat_template *t = load(cases[i].file);
        fprintf(stderr, "  %s\n", cases[i].file);
        check_spans(t, CHAT, COUNT(CHAT), cases[i].bos, cases[i].eos, cases[i].one, 1);
        check_spans(t, TWO_TURNS, COUNT(TWO_TURNS), cases[i].bos, cases[i].eos, cases[i].two, 2);
        mt_chat_template_free(t);
    }
}

TEST(spans_exclude_whitespace_after_the_end_marker) {
    /* the original Mistral template writes eos + ' ': the space belongs to the next turn */
    mt_chat_template *t = load("mistral_instruct_v0.1_original.jinja");
    const char *expected[] = {"Hi there. How can I help?</s>", "4</s>"};
    check_spans(t, TWO_TURNS, COUNT(TWO_TURNS), "<s>", "</s>", expected, 2);
    mt_chat_template_free(t);
    /* Llama 3 trims the content: the span is the trimmed answer */
    t = load("llama3_instruct.jinja");
    const mt_chat_message padded[] = {{"user", "q"}, {"assistant", "\n padded answer  "}};
    const char *trimmed[] = {"padded answer<|eot_id|>"};
    check_spans(t, padded, 2, "<|begin_of_text|>", "<|eot_id|>", trimmed, 1);
    mt_chat_template_free(t);
}

TEST(spans_report_templates_that_are_not_prefix_stable) {
    /* Qwen1.5 closes the last message only when a generation prompt follows */
    const char *qwen15 =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content']}}"
        "{% if (loop.last and add_generation_prompt) or not loop.last %}{{ '<|im_end|>' + '\n'}}{% endif %}"
        "{% endfor %}{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}"
        "{{ '<|im_start|>assistant\n' }}{% endif %}";
    mt_chat_template *t = NULL;
    char *text = NULL;
    mt_chat_span *spans = NULL;
    int n = 0;
    CHECK_OK(mt_chat_template_compile(qwen15, &t));
    CHECK_ERR(mt_chat_render_spans(t, TWO_TURNS, COUNT(TWO_TURNS), NULL, "<|im_end|>", &text, &spans, &n),
              MT_ERR_FORMAT, "not prefix-stable at assistant message 1");
    CHECK(text == NULL && spans == NULL && n == 0);
    mt_chat_template_free(t);
    /* a conversation opening with the assistant: the default system message comes first */
    t = load("qwen2_instruct.jinja");
    const mt_chat_message assistant_first[] = {{"assistant", "Hi"}, {"user", "q"}};
    CHECK_ERR(mt_chat_render_spans(t, assistant_first, 2, NULL, "<|im_end|>", &text, &spans, &n), MT_ERR_FORMAT,
              "not prefix-stable at assistant message 0");
    mt_chat_template_free(t);
    /* template errors come through as they are */
    t = load("llama2_chat.jinja");
    const mt_chat_message bad[] = {{"user", "a"}, {"user", "b"}, {"assistant", "c"}};
    CHECK_ERR(mt_chat_render_spans(t, bad, 3, "<s>", "</s>", &text, &spans, &n), MT_ERR_ARG, "must alternate");
    mt_chat_template_free(t);
}

TEST(spans_of_a_conversation_without_assistant_turns) {
    mt_chat_template *t = load("qwen2_instruct.jinja");
    char *text = NULL;
    mt_chat_span *spans = NULL;
    int n = -1;
    CHECK_OK(mt_chat_render_spans(t, CHAT_NO_SYSTEM, 1, NULL, "<|im_end|>", &text, &spans, &n));
    CHECK_INT_EQ(n, 0);
    CHECK(spans == NULL);
    CHECK_STR_EQ(text, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n");
    free(text);
    mt_chat_template_free(t);
}

/* ---- the default template ------------------------------------------------------------ */

TEST(default_template_is_prompt_newline_completion_eos) {
    mt_chat_template *t = NULL;
    CHECK_OK(mt_chat_template_compile(mt_chat_template_default(), &t));
    CHECK_STR_EQ(mt_chat_template_source(t), mt_chat_template_default());
    const mt_chat_message io[] = {{"user", "What is the capital of France?"}, {"assistant", "Paris"}};
    check_render(t, io, 2, 0, "<s>", "</s>", "<s>What is the capital of France?\nParis</s>");
    check_render(t, io, 1, 1, "<s>", "</s>", "<s>What is the capital of France?\n");
    check_render(t, io, 2, 0, NULL, "</s>", "What is the capital of France?\nParis</s>");
    check_render(t, CHAT, COUNT(CHAT), 1, "<s>", "</s>",
                 "<s>You are a terse assistant.\nHello!\nHi there. How can I help?</s>What is 2+2?\n");
    const char *one[] = {"Paris</s>"};
    check_spans(t, io, 2, "<s>", "</s>", one, 1);
    const char *two[] = {"Hi there. How can I help?</s>", "4</s>"};
    check_spans(t, TWO_TURNS, COUNT(TWO_TURNS), "<s>", "</s>", two, 2);
    mt_chat_template_free(t);
}

/* ---- Jinja semantics ----------------------------------------------------------------- */

TEST(jinja_expressions_statements_and_whitespace_match_jinja2) {
    /* expected outputs are what Jinja2 3.1 renders with transformers' settings
     * (trim_blocks, lstrip_blocks, loop controls) for the messages below */
    static const struct { const char *source, *expected; } cases[] = {
        {"{{ 1 + 2 * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 7 / 2 }}|{{ 2 ** 10 }}|{{ - 2 ** 2 }}",
         "7|3|-4|2|3.5|1024|4"},
        {"{{ 1.5 }}|{{ 1e16 }}|{{ 0.1 + 0.2 }}|{{ 3.0 }}|{{ 1e-5 }}|{{ 2.5e-3 }}",
         "1.5|1e+16|0.30000000000000004|3.0|1e-05|0.0025"},
        {"{{ 'a' ~ 1 ~ none ~ true }}|{{ none }}|{{ true }}|{{ [1, 'a', none, [true]] }}|{{ {'a': 1, 'b': 'x'} }}|{{ (1, 2) }}|{{ (1,) }}",
         "a1NoneTrue|None|True|[1, 'a', None, [True]]|{'a': 1, 'b': 'x'}|(1, 2)|(1,)"},
        {"{{ \"it's\" }}|{{ ['it\\'s', 'say \"hi\"'] }}|{{ 'a' 'b' \"c\" }}|{{ '\\x41\\u00e9\\101\\q' }}",
         "it's|[\"it's\", 'say \"hi\"']|abc|A\303\251A\\q"},
        {"{% set x = 5 %}{% for i in range(3) %}{% set x = i %}{{ x }}{% endfor %}{{ x }}",
         "0125"},
        {"{% set ns = namespace(found=false, n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }}",
         "True 6"},
        {"{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}",
         "0134"},
        {"{% for x in [] %}a{% else %}empty{% endfor %}|{% for x in [1,2,3] if x != 2 %}{{ loop.index }}/{{ loop.length }}:{{ x }}{{ ',' if not loop.last }}{% endfor %}",
         "empty|1/2:1,2/2:3"},
        {"{% for i in [1,2,3] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.revindex }}-{{ loop.revindex0 }}-{{ loop.first }};{% endfor %}",
         "-2-3-2-True;1-3-2-1-False;2--1-0-False;"},
        {"{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}|{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}",
         "a=1;b=2;|xy"},
        {"{% for a in 'h\303\251llo' %}[{{ a }}]{% endfor %}|{{ 'h\303\251llo'[1] }}|{{ 'h\303\251llo'[-1] }}|{{ 'h\303\251llo'[1:3] }}|{{ 'h\303\251llo'[::-1] }}|{{ 'h\303\251llo' | length }}",
         "[h][\303\251][l][l][o]|\303\251|o|\303\251l|oll\303\251h|5"},
        {"{{ [1,2,3,4,5][1:] }}|{{ [1,2,3,4,5][:-2] }}|{{ [1,2,3,4,5][::-2] }}|{{ [1,2,3][5:] }}|{{ [1,2,3][3:0:-1] }}",
         "[2, 3, 4, 5]|[1, 2, 3]|[5, 3, 1]|[]|[3, 2]"},
        {"{{ '  a b  ' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ '  a b  '.strip() }}|{{ 'xyaxy'.strip('xy') }}|{{ ' a '.lstrip() }}.|{{ ' a '.rstrip() }}.",
         "a b|a|a b|a|a .| a."},
        {"{{ 'Hello World' | upper }}|{{ 'Hello World' | lower }}|{{ 'hello world-foo(bar' | title }}|{{ \"they're bill's\".title() }}|{{ 'hELLO' | capitalize }}",
         "HELLO WORLD|hello world|Hello World-Foo(Bar|They'Re Bill'S|Hello"},
        {"{{ [1,2,3] | join(', ') }}|{{ [1,2] | first }}|{{ [1,2] | last }}|{{ [] | first }}|{{ 'abc' | first }}|{{ [3,1] | length }}",
         "1, 2, 3|1|2||a|2"},
        {"{{ x | default('d') }}|{{ '' | default('d') }}|{{ '' | default('d', true) }}|{{ x is defined }}|{{ x is not defined }}|{{ none is none }}",
         "d||d|False|True|True"},
        {"{{ {'a': '\303\251\"\\n', 'b': [1, 2.5, none, true]} | tojson }}|{{ {'b': 1, 'a': {'c': []}} | tojson(indent=2) }}|{{ {'b':1,'a':2} | tojson(sort_keys=true) }}",
         "{\"a\": \"\303\251\\\"\\n\", \"b\": [1, 2.5, null, true]}|{\n  \"b\": 1,\n  \"a\": {\n    \"c\": []\n  }\n}|{\"a\": 2, \"b\": 1}"},
        {"{{ 'abc'.startswith('a') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'a,b,,c'.split(',') }}|{{ '  a  b '.split() }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'abc' | replace('b', 'XX') }}",
         "True|True|['a', 'b', '', 'c']|['a', 'b']|bba|aXXc"},
        {"{{ 1 < 2 < 3 }}|{{ 3 > 2 > 2 }}|{{ 'a' in 'abc' }}|{{ 'x' not in ['a'] }}|{{ 'a' in {'a': 1} }}|{{ 1 == 1.0 }}|{{ true == 1 }}|{{ (1, 2) == [1, 2] }}",
         "True|False|True|True|True|True|True|False"},
        {"{{ 'a' if true else 'b' }}|{{ 'a' if false }}|{{ 'a' if false else 'b' if true else 'c' }}|{{ '' or 'x' }}|{{ 'y' and 'z' }}|{{ not 0 }}",
         "a||b|x|z|True"},
        {"{{ messages[0].role }}|{{ messages[0]['content'] }}|{{ messages[-1].role }}|{{ messages | length }}|{{ messages[5] }}|{{ messages[0].nope }}|{{ messages[1:] | map(attribute='role') | join(',') }}",
         "system|Sys|assistant|3|||user,assistant"},
        {"{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }}|{{ [1,2,3,4] | select('odd') | list }}|{{ ['a','B'] | map('upper') | list }}",
         "['Hi']|[1, 3]|['A', 'B']"},
        {"{{ 5 is divisibleby 5 }}|{{ 4 is even }}|{{ 'x' is string }}|{{ {} is mapping }}|{{ 1 is integer }}|{{ true is boolean }}|{{ none is sameas none }}",
         "True|True|True|True|True|True|True"},
        {"{%- if true -%}\n  yes  \n{%- endif -%}\n|  {% if true %}\n  a\n  {% endif %}\n  b\n{# c #}\n  {%+ if true %}x{% endif %}\n{{- ' y ' -}}\n z",
         "yes|    a\n  b\n  x y z"},
        {"line1\n    {% for i in range(2) %}\n    item {{ i }}\n    {% endfor %}\nend\n",
         "line1\n    item 0\n    item 1\nend"},
        {"a\r\n  {% if true %}\r\nb\r\n  {% endif %}\r\nc\r\n",
         "a\nb\nc"},
        {"{% set s %}captured {{ 1 + 1 }}{% endset %}[{{ s }}]|{{ 'ab' * 2 }}|{{ [1] + [2] }}",
         "[captured 2]|abab|[1, 2]"},
        {"{{ {'a': 1}.get('b', 'dflt') }}|{{ {'a': 1}.get('b') }}|{{ messages[0].get('content') }}|{{ dict(a=1) }}|{{ range(5, 0, -2) | list }}",
         "dflt|None|Sys|{'a': 1}|[5, 3, 1]"},
        {"{{ add_generation_prompt }}|{{ bos_token }}|{{ eos_token }}|{{ tools is none }}|{{ custom_tools is defined }}|{{ strftime_now is defined }}",
         "True|<s>|</s>|True|False|False"},
    };
    const mt_chat_message m[] = {{"system", "Sys"}, {"user", "Hi"}, {"assistant", "Hello"}};
    for (int i = 0; i < COUNT(cases); i++) {
        mt_chat_template *t = NULL;
        char *out = NULL;
        CHECK_OK(mt_chat_template_compile(cases[i].source, &t));
        if (!t) { fprintf(stderr, "  case %d: %s\n", i, cases[i].source); continue; }
        CHECK_OK(mt_chat_template_render(t, m, COUNT(m), 1, "<s>", "</s>", &out));
        CHECK_MSG(out && strcmp(out, cases[i].expected) == 0, "case %d: %s\n    got      \"%s\"\n    expected \"%s\"",
                  i, cases[i].source, out ? out : "(null)", cases[i].expected);
        free(out);
        mt_chat_template_free(t);
    }
}

TEST(generation_tag_renders_its_body) {
    mt_chat_template *t = NULL;
    CHECK_OK(mt_chat_template_compile("{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}", &t));
    check_render(t, CHAT_NO_SYSTEM, 2, 0, NULL, NULL, "[Hello!][Hi there. How can I help?]");
    mt_chat_template_free(t);
}

TEST(null_content_is_none_and_null_tokens_are_undefined) {
    mt_chat_template *t = NULL;
    const mt_chat_message m[] = {{"assistant", NULL}};
    CHECK_OK(mt_chat_template_compile("{{ messages[0].content }}|{{ messages[0].content is none }}|{{ bos_token }}|{{ eos_token is defined }}", &t));
    check_render(t, m, 1, 0, NULL, NULL, "None|True||False");
    mt_chat_template_free(t);
    /* as in Jinja, a missing item is undefined, and an attribute of it is an error */
    CHECK_OK(mt_chat_template_compile("{{ messages[0] is defined }}{{ messages[0].content }}", &t));
    char *out = NULL;
    CHECK_ERR(mt_chat_template_render(t, m, 0, 0, NULL, NULL, &out), MT_ERR_FORMAT, "line 1, column 43: undefined value");
    mt_chat_template_free(t);
}

/* ---- errors -------------------------------------------------------------------------- */

TEST(malformed_templates_fail_naming_line_and_column) {
    check_compile_error("Hello\n{% if x %}abc", MT_ERR_FORMAT, "line 2, column 4: '{% if %}' is never closed: expected '{% endif %}'");
    check_compile_error("{% for m in messages %}{{ m }}", MT_ERR_FORMAT, "line 1, column 4: '{% for %}' is never closed");
    check_compile_error("ab\n  {{ x", MT_ERR_FORMAT, "line 2, column 3: unclosed tag: expected '}}'");
    check_compile_error("{% if x", MT_ERR_FORMAT, "line 1, column 1: unclosed tag: expected '%}'");
    check_compile_error("ab {{ 1 + }}", MT_ERR_FORMAT, "line 1, column 11: expected an expression, got '}}'");
    check_compile_error("{{ a b }}", MT_ERR_FORMAT, "line 1, column 6: expected '}}', got 'b'");
    check_compile_error("x\ny\n{{ 'abc }}", MT_ERR_FORMAT, "line 3, column 4: unterminated string literal");
    check_compile_error("{# never closed", MT_ERR_FORMAT, "line 1, column 1: unclosed comment");
    check_compile_error("{% foo %}", MT_ERR_FORMAT, "line 1, column 4: unknown tag 'foo'");
    check_compile_error("{% endif %}", MT_ERR_FORMAT, "line 1, column 4: unknown tag 'endif'");
    check_compile_error("{% if x %}{% endfor %}", MT_ERR_FORMAT, "unknown tag 'endfor'");
    check_compile_error("{% break %}", MT_ERR_FORMAT, "line 1, column 4: 'break' outside of a loop");
    check_compile_error("{{ (1 }}", MT_ERR_FORMAT, "line 1, column 7: unexpected '}'");
    check_compile_error("{% for x y %}{% endfor %}", MT_ERR_FORMAT, "line 1, column 10: expected 'in', got 'y'");
    check_compile_error("{{ '\\xZZ' }}", MT_ERR_FORMAT, "line 1, column 5: truncated \\x escape");
    check_compile_error("{{ x | nosuchfilter }}", MT_ERR_UNSUPPORTED, "line 1, column 8: filter 'nosuchfilter' is not supported");
    check_compile_error("{{ x is nosuchtest }}", MT_ERR_UNSUPPORTED, "test 'nosuchtest' is not supported");
    check_compile_error("{% macro m() %}{% endmacro %}", MT_ERR_UNSUPPORTED, "'{% macro %}' is not supported");
    check_compile_error("{{ '\\0' }}", MT_ERR_UNSUPPORTED, "NUL characters");
}

TEST(runtime_errors_name_line_and_column) {
    check_render_error("{{ raise_exception('no ' + 'way') }}", MT_ERR_ARG, "line 1, column 4: no way");
    check_render_error("\n\n   {{ foo.bar.baz }}", MT_ERR_FORMAT, "line 3, column 10: 'foo' is undefined");
    check_render_error("{{ messages[0]['content'] + 1 }}", MT_ERR_FORMAT, "unsupported operand types for +: 'str' and 'int'");
    check_render_error("{{ messages[0].content + eos }}", MT_ERR_FORMAT, "'eos' is undefined");
    check_render_error("{% for x in 5 %}{% endfor %}", MT_ERR_FORMAT, "'int' object is not iterable");
    check_render_error("{{ 1 // 0 }}", MT_ERR_FORMAT, "division by zero");
    check_render_error("{% set ns.x = 1 %}", MT_ERR_FORMAT, "not a namespace");
    check_render_error("{{ 'a' | tojson(indent=none) | int(x) }}{{ undefined_thing | tojson }}", MT_ERR_FORMAT, "'undefined_thing' is undefined");
}

TEST(limits_stop_runaway_templates) {
    /* output over 64 MiB */
    check_render_error("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", MT_ERR_FORMAT, "longer than 64 MiB");
    /* a string over 64 MiB in one step */
    check_render_error("{{ 'abcd' * 20000000 }}", MT_ERR_FORMAT, "string longer than 64 MiB");
    /* too much work: 10^10 iterations */
    check_render_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", MT_ERR_FORMAT,
                       "takes too long");
    check_render_error("{{ range(1000000) }}", MT_ERR_FORMAT, "range() of more than 100000 items");
    /* a namespace cannot go inside itself (no cycles, no leaks) */
    check_render_error("{% set ns = namespace() %}{% set ns.me = ns %}", MT_ERR_UNSUPPORTED, "namespace cannot be stored");
    /* containers built at render time have a bounded depth */
    check_render_error("{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
                       MT_ERR_FORMAT, "nest more than");
    /* nesting in the source */
    char deep[4096];
    int k = 0;
    k += snprintf(deep + k, sizeof deep - (size_t)k, "{{ ");
    for (int i = 0; i < 1000; i++) deep[k++] = '(';
    k += snprintf(deep + k, sizeof deep - (size_t)k, "1");
    for (int i = 0; i < 1000; i++) deep[k++] = ')';
    snprintf(deep + k, sizeof deep - (size_t)k, " }}");
    check_compile_error(deep, MT_ERR_FORMAT, "nest too deeply");
    k = 0;
    for (int i = 0; i < 300; i++) k += snprintf(deep + k, sizeof deep - (size_t)k, "{%% if x %%}");
    check_compile_error(deep, MT_ERR_FORMAT, "nests too deeply");
    k = snprintf(deep, sizeof deep, "{{ 1");
    for (int i = 0; i < 600; i++) k += snprintf(deep + k, sizeof deep - (size_t)k, "+1");
    snprintf(deep + k, sizeof deep - (size_t)k, " }}");
    check_compile_error(deep, MT_ERR_FORMAT, "expression nests too deeply");
}

TEST(bad_arguments_are_rejected) {
    mt_chat_template *t = NULL;
    char *out = NULL, *text = NULL;
    mt_chat_span *spans = NULL;
    int n = 0;
    CHECK_ERR(mt_chat_template_compile(NULL, &t), MT_ERR_ARG, "must not be NULL");
    CHECK_OK(mt_chat_template_compile("{{ messages | length }}", &t));
    CHECK_ERR(mt_chat_template_render(t, NULL, 2, 0, NULL, NULL, &out), MT_ERR_ARG, "bad arguments");
    CHECK_ERR(mt_chat_template_render(t, CHAT, -1, 0, NULL, NULL, &out), MT_ERR_ARG, "bad arguments");
    const mt_chat_message no_role[] = {{NULL, "x"}};
    CHECK_ERR(mt_chat_template_render(t, no_role, 1, 0, NULL, NULL, &out), MT_ERR_ARG, "message 0 has no role");
    CHECK_ERR(mt_chat_render_spans(t, no_role, 1, NULL, NULL, &text, &spans, &n), MT_ERR_ARG, "message 0 has no role");
    check_render(t, NULL, 0, 0, NULL, NULL, "0");
    mt_chat_template_free(t);
    mt_chat_template_free(NULL);
}

int main(void) {
    RUN(llama3_instruct_renders_like_transformers);
    RUN(llama2_chat_folds_system_into_first_user_turn);
    RUN(llama2_chat_rejects_roles_that_do_not_alternate);
    RUN(mistral_instruct_renders_like_transformers);
    RUN(mistral_instruct_original_v01_template);
    RUN(qwen2_chatml_adds_default_system_message);
    RUN(smollm2_chatml_adds_its_default_system_message);
    RUN(qwen25_template_with_whitespace_control);
    RUN(spans_are_assistant_content_and_end_marker);
    RUN(spans_exclude_whitespace_after_the_end_marker);
    RUN(spans_report_templates_that_are_not_prefix_stable);
    RUN(spans_of_a_conversation_without_assistant_turns);
    RUN(default_template_is_prompt_newline_completion_eos);
    RUN(jinja_expressions_statements_and_whitespace_match_jinja2);
    RUN(generation_tag_renders_its_body);
    RUN(null_content_is_none_and_null_tokens_are_undefined);
    RUN(malformed_templates_fail_naming_line_and_column);
    RUN(runtime_errors_name_line_and_column);
    RUN(limits_stop_runaway_templates);
    RUN(bad_arguments_are_rejected);
    TEST_MAIN_END();
}
