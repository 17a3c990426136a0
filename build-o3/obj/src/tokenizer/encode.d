build-o3/obj/src/tokenizer/encode.o: src/tokenizer/encode.c \
 src/tokenizer/tok_internal.h src/tokenizer/tokenizer.h include/memtune.h \
 src/core/error.h
src/tokenizer/tok_internal.h:
src/tokenizer/tokenizer.h:
include/memtune.h:
src/core/error.h:
