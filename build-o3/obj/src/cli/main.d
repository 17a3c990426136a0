build-o3/obj/src/cli/main.o: src/cli/main.c src/cli/cli.h \
 include/memtune.h
src/cli/cli.h:
include/memtune.h:
