build-o3/obj/src/formats/safetensors.o: src/formats/safetensors.c \
 src/formats/safetensors.h include/memtune.h src/core/file.h \
 src/formats/dtype.h src/core/error.h
src/formats/safetensors.h:
include/memtune.h:
src/core/file.h:
src/formats/dtype.h:
src/core/error.h:
