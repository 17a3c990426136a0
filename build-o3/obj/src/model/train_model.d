build-o3/obj/src/model/train_model.o: src/model/train_model.c \
 src/model/train_model.h src/model/model.h include/memtune.h \
 src/model/train_model_decl.h src/core/error.h src/kernels/kernels.h \
 src/kernels/ops.h src/kernels/real.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h
src/model/train_model.h:
src/model/model.h:
include/memtune.h:
src/model/train_model_decl.h:
src/core/error.h:
src/kernels/kernels.h:
src/kernels/ops.h:
src/kernels/real.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
