build-o3/obj/src/cli/cli.o: src/cli/cli.c src/cli/cli.h include/memtune.h
src/cli/cli.h:
include/memtune.h:
