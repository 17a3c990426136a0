build-o3/obj/src/formats/gguf_model.o: src/formats/gguf_model.c \
 src/formats/formats.h include/memtune.h src/model/model.h \
 src/formats/gguf.h src/core/file.h src/core/error.h \
 src/tokenizer/tokenizer.h
src/formats/formats.h:
include/memtune.h:
src/model/model.h:
src/formats/gguf.h:
src/core/file.h:
src/core/error.h:
src/tokenizer/tokenizer.h:
