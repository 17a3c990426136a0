/* Library version string. */
#include "memtune.h"
const char *mt_version(void) { return "0.1.0"; }
