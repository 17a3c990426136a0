build-o3/obj/src/train/schedule.o: src/train/schedule.c \
 src/train/schedule.h include/memtune.h src/core/error.h
src/train/schedule.h:
include/memtune.h:
src/core/error.h:
