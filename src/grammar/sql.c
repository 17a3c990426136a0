/* SQL grammar from a database: placeholder replaced below. */
#include "core/error.h"
mt_status mt_sql_grammar_from_db(const char *db_path, char **gbnf) {
    (void)db_path;
    *gbnf = NULL;
    return mt_error(MT_ERR_UNSUPPORTED, "not yet");
}
