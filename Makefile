# memtune build. `make` builds build/memtune, build/libmemtune.a and build/libmemtune.so.
# `make test` builds and runs the whole suite. `make SANITIZE=1 test` does the same under
# AddressSanitizer + UndefinedBehaviorSanitizer in build-asan/.
CC      ?= cc
OPT     ?= -O2
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
  BUILD  ?= build-asan
  SANFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  OPT     = -O1 -g
else
  BUILD  ?= build
  SANFLAGS =
endif
PKGS    = libpcre2-8 jansson sqlite3 libmicrohttpd libcurl libcrypto
# One thread pool: the kernels' own (src/kernels/pool.c) runs every loop and splits the GEMMs,
# each piece a serial OpenBLAS call. Debian's OpenMP build of OpenBLAS (libopenblas-openmp-dev)
# is linked as before (its threads stay unused: every calling thread sets its OpenMP count to
# 1); the rpath picks that build at run time; without it installed, the default openblas is used.
OPENBLAS_OMP_PC ?= /usr/lib/$(shell $(CC) -print-multiarch)/openblas-openmp/pkgconfig
BLAS_PKG = $(if $(wildcard $(OPENBLAS_OMP_PC)/openblas.pc),PKG_CONFIG_PATH=$(OPENBLAS_OMP_PC)) pkg-config
BLAS_DIR = $(shell $(BLAS_PKG) --variable=libdir openblas)
# -fno-math-errno lets sqrtf vectorise; -fno-trapping-math lets GCC turn the clamps and
# maxima of the vectorised loops (mt_exp_approx's range clamp, say) into selects: without it
# "control flow in loop" kept SwiGLU and the exp loops scalar (bench/RESULTS.md). Neither
# changes a result: memtune never reads the FP exception flags or errno of maths calls.
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(OPT) -g -fPIC -pthread -fopenmp $(SANFLAGS) \
           -fno-math-errno -fno-trapping-math -Iinclude -Isrc $(shell $(BLAS_PKG) --cflags openblas) \
           $(shell pkg-config --cflags $(PKGS))
LDLIBS  += $(shell $(BLAS_PKG) --libs openblas) -Wl,-rpath,$(BLAS_DIR) \
           $(shell pkg-config --libs $(PKGS)) -lm -pthread -fopenmp
LDFLAGS += $(SANFLAGS)
# Data-parallel training on MPI (src/dist): built in when pkg-config finds OpenMPI (Debian's
# libopenmpi-dev); `make MPI=0` leaves it out, `make MPI=1` insists. The choice is recorded in
# $(BUILD)/mpi.flag so switching rebuilds what depends on it.
ifeq ($(origin MPI),undefined)
  MPI := $(shell pkg-config --exists ompi-c 2>/dev/null && echo 1 || echo 0)
endif
ifeq ($(MPI),1)
  CFLAGS += -DMT_HAVE_MPI $(shell pkg-config --cflags ompi-c)
  LDLIBS += $(shell pkg-config --libs ompi-c)
endif

LIB_SRC  = $(wildcard src/dist/*.c src/core/*.c src/kernels/*.c src/formats/*.c src/tokenizer/*.c src/model/*.c src/template/*.c src/dataset/*.c src/train/*.c src/eval/*.c src/adapters/*.c src/sqlgen/*.c src/grammar/*.c src/serve/*.c src/jobs/*.c)
CLI_SRC  = $(wildcard src/cli/*.c)
TEST_SRC = $(wildcard tests/test_*.c)
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  = $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TESTS    = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

all: $(BUILD)/memtune $(BUILD)/libmemtune.a $(BUILD)/libmemtune.so $(TESTS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# decoding's dot products (decode.c) may fuse multiply-adds into FMAs; nothing else may, so
# the other kernels round exactly as their double-precision twins and references do
$(BUILD)/obj/src/kernels/decode.o: CFLAGS += -ffp-contract=fast

$(BUILD)/mpi.flag: FORCE
	@mkdir -p $(dir $@)
	@[ "$$(cat $@ 2>/dev/null)" = "$(MPI)" ] || echo "$(MPI)" > $@
$(BUILD)/obj/src/dist/dist.o $(BUILD)/obj/src/cli/train.o: $(BUILD)/mpi.flag
FORCE:

$(BUILD)/libmemtune.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libmemtune.so: $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/memtune: $(CLI_OBJ) $(BUILD)/libmemtune.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libmemtune.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/test.h $(BUILD)/libmemtune.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libmemtune.a $(LDFLAGS) $(LDLIBS)

# benchmark programs (bench/run builds them with the release flags)
$(BUILD)/bench/%: bench/%.c $(BUILD)/libmemtune.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libmemtune.a $(LDFLAGS) $(LDLIBS)

test: all
	BUILD=$(BUILD) bash tests/run.sh

# `make install PREFIX=DIR` (default /usr/local; DESTDIR stages it): the binary in bin/, the
# libraries in lib/, memtune.h in include/, the bundled default model in
# share/memtune/models/stories260K/, where the installed binary finds it (src/cli/cli.c).
PREFIX  ?= /usr/local
INSTALL_MODEL = models/stories260K/stories260K.bin models/stories260K/tok512.bin models/stories260K/SOURCES.md
install: $(BUILD)/memtune $(BUILD)/libmemtune.a $(BUILD)/libmemtune.so
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	           $(DESTDIR)$(PREFIX)/share/memtune/models/stories260K
	install -m 755 $(BUILD)/memtune $(DESTDIR)$(PREFIX)/bin/memtune
	install -m 644 $(BUILD)/libmemtune.a $(DESTDIR)$(PREFIX)/lib/libmemtune.a
	install -m 755 $(BUILD)/libmemtune.so $(DESTDIR)$(PREFIX)/lib/libmemtune.so
	install -m 644 include/memtune.h include/memtune_jobs.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(INSTALL_MODEL) $(DESTDIR)$(PREFIX)/share/memtune/models/stories260K/

clean:
	rm -rf build build-asan

.PHONY: all test clean install FORCE
-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
