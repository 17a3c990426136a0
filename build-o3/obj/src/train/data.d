build-o3/obj/src/train/data.o: src/train/data.c src/train/data.h \
 include/memtune.h src/train/chat_template.h src/core/error.h \
 src/core/file.h src/tokenizer/tokenizer.h
src/train/data.h:
include/memtune.h:
src/train/chat_template.h:
src/core/error.h:
src/core/file.h:
src/tokenizer/tokenizer.h:
