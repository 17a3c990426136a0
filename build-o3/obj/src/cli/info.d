build-o3/obj/src/cli/info.o: src/cli/info.c src/cli/cli.h \
 include/memtune.h
src/cli/cli.h:
include/memtune.h:
