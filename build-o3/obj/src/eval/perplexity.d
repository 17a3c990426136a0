build-o3/obj/src/eval/perplexity.o: src/eval/perplexity.c \
 src/core/error.h include/memtune.h src/core/file.h src/kernels/kernels.h \
 src/kernels/ops.h src/model/forward.h src/model/model.h \
 src/tokenizer/tokenizer.h
src/core/error.h:
include/memtune.h:
src/core/file.h:
src/kernels/kernels.h:
src/kernels/ops.h:
src/model/forward.h:
src/model/model.h:
src/tokenizer/tokenizer.h:
