build-o3/obj/src/model/forward.o: src/model/forward.c src/model/forward.h \
 src/model/model.h include/memtune.h src/core/error.h \
 src/kernels/kernels.h src/kernels/ops.h
src/model/forward.h:
src/model/model.h:
include/memtune.h:
src/core/error.h:
src/kernels/kernels.h:
src/kernels/ops.h:
