build-o3/obj/src/train/optimizer.o: src/train/optimizer.c \
 src/train/optimizer.h include/memtune.h src/core/error.h
src/train/optimizer.h:
include/memtune.h:
src/core/error.h:
