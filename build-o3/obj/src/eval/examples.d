build-o3/obj/src/eval/examples.o: src/eval/examples.c src/core/error.h \
 include/memtune.h src/core/file.h src/kernels/kernels.h \
 src/kernels/ops.h src/model/forward.h src/model/model.h \
 src/model/sampler.h src/tokenizer/tokenizer.h src/train/batch.h \
 src/train/chat_template.h src/train/data.h
src/core/error.h:
include/memtune.h:
src/core/file.h:
src/kernels/kernels.h:
src/kernels/ops.h:
src/model/forward.h:
src/model/model.h:
src/model/sampler.h:
src/tokenizer/tokenizer.h:
src/train/batch.h:
src/train/chat_template.h:
src/train/data.h:
