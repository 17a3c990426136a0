build-o3/obj/src/model/presets.o: src/model/presets.c src/model/model.h \
 include/memtune.h src/core/error.h
src/model/model.h:
include/memtune.h:
src/core/error.h:
