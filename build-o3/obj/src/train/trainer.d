build-o3/obj/src/train/trainer.o: src/train/trainer.c src/core/error.h \
 include/memtune.h src/core/file.h src/core/rng.h src/kernels/kernels.h \
 src/kernels/ops.h src/model/forward.h src/model/model.h \
 src/model/train_model.h src/model/train_model_decl.h \
 src/tokenizer/tokenizer.h src/train/batch.h src/train/chat_template.h \
 src/train/data.h src/train/checkpoint.h src/train/optimizer.h \
 src/train/schedule.h src/train/train_log.h src/train/trainer.h
src/core/error.h:
include/memtune.h:
src/core/file.h:
src/core/rng.h:
src/kernels/kernels.h:
src/kernels/ops.h:
src/model/forward.h:
src/model/model.h:
src/model/train_model.h:
src/model/train_model_decl.h:
src/tokenizer/tokenizer.h:
src/train/batch.h:
src/train/chat_template.h:
src/train/data.h:
src/train/checkpoint.h:
src/train/optimizer.h:
src/train/schedule.h:
src/train/train_log.h:
src/train/trainer.h:
