build-o3/obj/src/model/sampler.o: src/model/sampler.c src/model/sampler.h \
 src/kernels/kernels.h include/memtune.h src/kernels/ops.h
src/model/sampler.h:
src/kernels/kernels.h:
include/memtune.h:
src/kernels/ops.h:
