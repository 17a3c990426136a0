build-o3/obj/src/kernels/kernels_f64.o: src/kernels/kernels_f64.c \
 src/kernels/kernels.h include/memtune.h src/kernels/ops.h \
 src/core/error.h /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h \
 src/kernels/activations.c src/kernels/real.h src/kernels/attention.c \
 src/kernels/cross_entropy.c src/kernels/embedding.c src/kernels/matmul.c \
 src/kernels/norm.c src/kernels/rope.c
src/kernels/kernels.h:
include/memtune.h:
src/kernels/ops.h:
src/core/error.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
src/kernels/activations.c:
src/kernels/real.h:
src/kernels/attention.c:
src/kernels/cross_entropy.c:
src/kernels/embedding.c:
src/kernels/matmul.c:
src/kernels/norm.c:
src/kernels/rope.c:
