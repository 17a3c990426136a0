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
PKGS    = openblas libpcre2-8 jansson sqlite3
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(OPT) -g -fPIC -pthread -fopenmp $(SANFLAGS) \
           -Iinclude -Isrc $(shell pkg-config --cflags $(PKGS))
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lm -pthread -fopenmp
LDFLAGS += $(SANFLAGS)

LIB_SRC  = $(wildcard src/core/*.c src/kernels/*.c src/formats/*.c src/tokenizer/*.c src/model/*.c src/train/*.c src/eval/*.c src/adapters/*.c src/data/*.c)
CLI_SRC  = $(wildcard src/cli/*.c)
TEST_SRC = $(wildcard tests/test_*.c)
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  = $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TESTS    = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

all: $(BUILD)/memtune $(BUILD)/libmemtune.a $(BUILD)/libmemtune.so $(TESTS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

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

test: all
	BUILD=$(BUILD) bash tests/run.sh

clean:
	rm -rf build build-asan

.PHONY: all test clean
-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
