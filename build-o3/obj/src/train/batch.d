build-o3/obj/src/train/batch.o: src/train/batch.c src/train/batch.h \
 include/memtune.h src/train/chat_template.h src/train/data.h \
 src/core/error.h src/core/rng.h src/tokenizer/tokenizer.h
src/train/batch.h:
include/memtune.h:
src/train/chat_template.h:
src/train/data.h:
src/core/error.h:
src/core/rng.h:
src/tokenizer/tokenizer.h:
