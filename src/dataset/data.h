/* Training data: JSONL files in the shapes users already have, read into a list of
 * examples. Each line is one example:
 *   {"input","output"}  {"prompt","completion"}  {"instruction","input"?,"output"}
 *   {"messages":[{"role","content"},...]}        {"text"}
 *   {"question","sql"} / {"question","answer"}   (text-to-SQL sets; "sql" wins over "answer")
 * (an optional "system" string is honoured by the first three). Conversational shapes
 * become a list of chat messages; {"text"} stays raw text trained on every token.
 * A line that is not valid JSON, not UTF-8, or lacks the fields is an error naming the file
 * and line, unless skip_bad_lines is set, in which case it is counted and skipped. */
#ifndef MT_DATASET_DATA_H
#define MT_DATASET_DATA_H
#include "memtune.h"
#include "template/chat_template.h"

typedef struct {
    mt_chat_message *messages; /* NULL for raw text examples */
    int n_messages;
    char *text;                /* raw text ({"text"}), else NULL */
    int source_line;           /* 1-based line in its file, for messages */
    int source_file;           /* index into the list of files loaded */
    int is_fact;               /* the {"input","output"} shape (memory tuning's default data) */
} mt_example;

typedef struct {
    mt_example *items;
    int n, cap;
    int n_skipped;             /* bad lines skipped (skip_bad_lines) */
    int n_blank;               /* blank lines ignored */
    char **files;              /* file names, indexed by source_file */
    int n_files;
} mt_dataset;

/* Appends the examples of one JSONL file to ds. */
mt_status mt_dataset_load_jsonl(mt_dataset *ds, const char *path, int skip_bad_lines);
/* The same from text in memory (not kept); path names it in messages. */
mt_status mt_dataset_load_jsonl_text(mt_dataset *ds, const char *path, const char *buf, size_t len, int skip_bad_lines);
void mt_dataset_free(mt_dataset *ds);

#endif
