build-o3/obj/src/kernels/embedding.o: src/kernels/embedding.c \
 src/kernels/kernels.h include/memtune.h src/kernels/ops.h \
 src/kernels/real.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h
src/kernels/kernels.h:
include/memtune.h:
src/kernels/ops.h:
src/kernels/real.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
