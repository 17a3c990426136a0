/* What a database holds, column by column: declared type, how values are written (plain
 * numbers, numbers stored as text, money like "$1,234", quantities like "215 lbs", heights
 * like 6' 7"), the markers that stand for a missing value ("--", "NA"), the most frequent
 * values, and which columns can serve as a row's name (key) or as a category to filter and
 * group by. The data generator writes its questions and SQL from this profile. */
#ifndef MT_SQLGEN_PROFILE_H
#define MT_SQLGEN_PROFILE_H
#include "memtune.h"

typedef enum {
    MT_FMT_TEXT,          /* free text */
    MT_FMT_INTEGER,       /* stored as INTEGER */
    MT_FMT_REAL,          /* stored as REAL */
    MT_FMT_INT_TEXT,      /* text holding an integer: "41" */
    MT_FMT_REAL_TEXT,     /* text holding a decimal: "4.5" */
    MT_FMT_MONEY,         /* text like "$4,556,983" */
    MT_FMT_UNIT,          /* text like "215 lbs" (one unit for the column) */
    MT_FMT_FEET_INCHES,   /* text like 6' 7" */
} mt_value_format;

typedef struct {
    char *name, *decltype;
    long non_null, distinct;
    mt_value_format format;
    char unit[24];         /* MT_FMT_UNIT: "lbs" */
    char **missing;        /* values that mark "unknown" in a formatted column */
    int n_missing;
    char **values;         /* distinct non-missing values, most frequent first (capped) */
    long *counts;
    int n_values;
    int numeric;           /* aggregates make sense (a number format, not an id) */
    int categorical;       /* few distinct text values that repeat: filter and group by */
} mt_column_profile;

typedef struct {
    char *name;
    long rows;
    mt_column_profile *cols;
    int n_cols;
    int key;               /* column naming a row (mostly unique text), or -1 */
} mt_table_profile;

typedef struct {
    mt_table_profile *tables;
    int n_tables;
} mt_db_profile;

mt_status mt_db_profile_build(mt_sql_db *db, mt_db_profile *out);
void mt_db_profile_free(mt_db_profile *p);

/* SQL snippets (malloc'd; NULL on OOM): "name" quoted as an identifier, 'text' as a
 * literal, the column's value as a number, and a condition that excludes NULL and the
 * missing markers. */
char *mt_sql_ident(const char *name);
char *mt_sql_literal(const char *text);
char *mt_column_number_sql(const mt_column_profile *c);
char *mt_column_valid_sql(const mt_column_profile *c);
/* One sentence describing how the column's values are written. */
char *mt_column_format_text(const mt_table_profile *t, const mt_column_profile *c);
const char *mt_value_format_name(mt_value_format f);

#endif
