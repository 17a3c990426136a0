build-o3/obj/src/tokenizer/hf.o: src/tokenizer/hf.c \
 src/tokenizer/tok_internal.h src/tokenizer/tokenizer.h include/memtune.h \
 src/core/error.h src/core/file.h
src/tokenizer/tok_internal.h:
src/tokenizer/tokenizer.h:
include/memtune.h:
src/core/error.h:
src/core/file.h:
