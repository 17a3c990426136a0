build-o3/obj/src/core/error.o: src/core/error.c src/core/error.h \
 include/memtune.h
src/core/error.h:
include/memtune.h:
