build-o3/obj/src/cli/convert.o: src/cli/convert.c src/cli/cli.h \
 include/memtune.h
src/cli/cli.h:
include/memtune.h:
