build-o3/obj/src/tokenizer/tokenizer.o: src/tokenizer/tokenizer.c \
 src/tokenizer/tok_internal.h src/tokenizer/tokenizer.h include/memtune.h \
 src/core/error.h
src/tokenizer/tok_internal.h:
src/tokenizer/tokenizer.h:
include/memtune.h:
src/core/error.h:
