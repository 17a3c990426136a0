build-o3/obj/src/train/checkpoint.o: src/train/checkpoint.c \
 src/train/checkpoint.h include/memtune.h src/core/error.h \
 src/core/file.h
src/train/checkpoint.h:
include/memtune.h:
src/core/error.h:
src/core/file.h:
