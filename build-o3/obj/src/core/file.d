build-o3/obj/src/core/file.o: src/core/file.c src/core/file.h \
 include/memtune.h src/core/error.h
src/core/file.h:
include/memtune.h:
src/core/error.h:
