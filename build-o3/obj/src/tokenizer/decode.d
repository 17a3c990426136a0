build-o3/obj/src/tokenizer/decode.o: src/tokenizer/decode.c \
 src/tokenizer/tok_internal.h src/tokenizer/tokenizer.h include/memtune.h \
 src/core/error.h
src/tokenizer/tok_internal.h:
src/tokenizer/tokenizer.h:
include/memtune.h:
src/core/error.h:
