build-o3/obj/src/formats/gguf.o: src/formats/gguf.c src/formats/gguf.h \
 include/memtune.h src/core/file.h src/formats/dtype.h src/core/error.h
src/formats/gguf.h:
include/memtune.h:
src/core/file.h:
src/formats/dtype.h:
src/core/error.h:
