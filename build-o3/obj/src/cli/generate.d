build-o3/obj/src/cli/generate.o: src/cli/generate.c src/cli/cli.h \
 include/memtune.h
src/cli/cli.h:
include/memtune.h:
