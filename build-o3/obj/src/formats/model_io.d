build-o3/obj/src/formats/model_io.o: src/formats/model_io.c \
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
