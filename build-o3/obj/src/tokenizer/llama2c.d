build-o3/obj/src/tokenizer/llama2c.o: src/tokenizer/llama2c.c \
 src/tokenizer/tok_internal.h src/tokenizer/tokenizer.h include/memtune.h \
 src/core/error.h src/core/file.h
src/tokenizer/tok_internal.h:
src/tokenizer/tokenizer.h:
include/memtune.h:
src/core/error.h:
src/core/file.h:
