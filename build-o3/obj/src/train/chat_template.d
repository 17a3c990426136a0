build-o3/obj/src/train/chat_template.o: src/train/chat_template.c \
 src/train/chat_template.h include/memtune.h src/core/error.h
src/train/chat_template.h:
include/memtune.h:
src/core/error.h:
