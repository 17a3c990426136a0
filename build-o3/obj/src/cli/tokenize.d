build-o3/obj/src/cli/tokenize.o: src/cli/tokenize.c src/cli/cli.h \
 include/memtune.h
src/cli/cli.h:
include/memtune.h:
