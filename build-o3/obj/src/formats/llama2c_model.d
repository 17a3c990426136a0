build-o3/obj/src/formats/llama2c_model.o: src/formats/llama2c_model.c \
 src/formats/formats.h include/memtune.h src/model/model.h \
 src/formats/dtype.h src/core/error.h src/core/file.h \
 src/tokenizer/tokenizer.h
src/formats/formats.h:
include/memtune.h:
src/model/model.h:
src/formats/dtype.h:
src/core/error.h:
src/core/file.h:
src/tokenizer/tokenizer.h:
