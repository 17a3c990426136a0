#!/usr/bin/env bash
# Regenerates tests/fixtures/quant/ from ggml's own quantizers and dequantizers (see
# make_quant_fixtures.c). Needs a ggml or llama.cpp checkout OUTSIDE this repository:
#   GGML_SRC=/tmp/ggml bash tests/reference/make_quant_fixtures.sh [OUT_DIR]
# It builds ggml-base under $GGML_SRC/build-memtune (CPU-only, no -march=native, so the
# reference quantizers round as on any x86-64) and runs the harness. Deterministic: two runs
# give identical files. Checked with ggml-org/ggml d99724f2 (2026-08-21).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../fixtures/quant}
: "${GGML_SRC:?set GGML_SRC to a ggml (or llama.cpp) checkout}"
src=$GGML_SRC; [ -d "$src/ggml" ] && src=$src/ggml   # llama.cpp keeps ggml in a subfolder
bld=$GGML_SRC/build-memtune
cmake -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF \
      -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$bld" -j2 --target ggml-base >/dev/null
lib=$(dirname "$(find "$bld" -name 'libggml-base.*' | head -1)")
cc -O2 -I"$src/include" "$here/make_quant_fixtures.c" -L"$lib" -Wl,-rpath,"$lib" -lggml-base -lm \
   -o "$bld/make_quant_fixtures"
mkdir -p "$out"
"$bld/make_quant_fixtures" "$out"
ls -l "$out"
