build-o3/obj/src/train/train_log.o: src/train/train_log.c \
 src/train/train_log.h include/memtune.h src/core/error.h src/core/file.h \
 src/core/rng.h
src/train/train_log.h:
include/memtune.h:
src/core/error.h:
src/core/file.h:
src/core/rng.h:
