build-o3/obj/src/cli/init.o: src/cli/init.c src/cli/cli.h \
 include/memtune.h
src/cli/cli.h:
include/memtune.h:
