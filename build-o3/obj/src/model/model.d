build-o3/obj/src/model/model.o: src/model/model.c src/model/model.h \
 include/memtune.h src/model/forward.h src/core/error.h src/core/rng.h \
 src/tokenizer/tokenizer.h
src/model/model.h:
include/memtune.h:
src/model/forward.h:
src/core/error.h:
src/core/rng.h:
src/tokenizer/tokenizer.h:
