build-o3/obj/src/cli/eval.o: src/cli/eval.c src/cli/cli.h \
 include/memtune.h
src/cli/cli.h:
include/memtune.h:
