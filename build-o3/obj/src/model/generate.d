build-o3/obj/src/model/generate.o: src/model/generate.c src/core/error.h \
 include/memtune.h src/core/rng.h src/model/forward.h src/model/model.h \
 src/model/sampler.h src/tokenizer/tokenizer.h
src/core/error.h:
include/memtune.h:
src/core/rng.h:
src/model/forward.h:
src/model/model.h:
src/model/sampler.h:
src/tokenizer/tokenizer.h:
