build-o3/obj/src/core/version.o: src/core/version.c include/memtune.h
include/memtune.h:
