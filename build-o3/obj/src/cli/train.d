build-o3/obj/src/cli/train.o: src/cli/train.c src/cli/cli.h \
 include/memtune.h
src/cli/cli.h:
include/memtune.h:
