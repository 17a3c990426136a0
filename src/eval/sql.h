/* Internals of the SQL sandbox and result sets (public calls are in memtune.h). A result is
 * a table of typed cells copied out of SQLite, so it outlives the statement. */
#ifndef MT_EVAL_SQL_H
#define MT_EVAL_SQL_H
#include "memtune.h"
#include <stdint.h>

typedef enum { MT_CELL_NULL, MT_CELL_INT, MT_CELL_REAL, MT_CELL_TEXT, MT_CELL_BLOB } mt_cell_type;

typedef struct {
    mt_cell_type type;
    int64_t i;
    double f;
    char *bytes;   /* TEXT (NUL-terminated) or BLOB */
    int len;
} mt_sql_cell;

struct mt_sql_result {
    int cols;
    long rows, cap_rows;
    char **names;        /* [cols] */
    char **decltypes;    /* [cols] declared column types ("" for expressions) */
    mt_sql_cell *cells;  /* [rows * cols] */
};

/* Numeric value of a cell: INT, REAL, or TEXT that is a complete decimal number. */
int mt_sql_cell_number(const mt_sql_cell *c, double *out);
/* Fills defaults into zero fields. */
void mt_sql_limits_fill(mt_sql_limits *l);
/* MT_OK, or MT_ERR_ARG naming a negative, NaN or infinite limit (NULL is fine). */
mt_status mt_sql_limits_validate(const mt_sql_limits *l);
/* The cell's value as text (malloc'd; NULL on OOM): numbers printed, NULL as "NULL". */
char *mt_sql_result_cell_string(const mt_sql_result *r, long row, int col);

#endif
