build-o3/obj/src/formats/hf_config.o: src/formats/hf_config.c \
 src/formats/formats.h include/memtune.h src/model/model.h \
 src/core/error.h src/core/file.h
src/formats/formats.h:
include/memtune.h:
src/model/model.h:
src/core/error.h:
src/core/file.h:
