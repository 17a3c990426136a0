#!/usr/bin/env bash
# The bundled default model (issue 26, items 15 and 4): stories260K ships in models/ and is
# found from the binary wherever the tree is (a copy of build/ + models/ in another place,
# run from another working directory, no ../shared needed), and `make install PREFIX=DIR`
# puts the binary, the libraries, memtune.h and the model where the installed binary and a C
# program find them. `info --model stories260K.bin` in the model's own directory (a path
# without a slash) finds tok512.bin beside it.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
MT="$ROOT/$BUILD/memtune"
TMP="$ROOT/$BUILD/tmp/cli_bundled"; rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
unset MEMTUNE_MODEL

check "models/stories260K holds the model, its tokenizer and where they come from" \
  "[ -f models/stories260K/stories260K.bin ] && [ -f models/stories260K/tok512.bin ] && grep -q MIT models/stories260K/SOURCES.md"
check "the bundled files are the published ones (sha256)" \
  "sha256sum models/stories260K/stories260K.bin | grep -q ^b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696 && sha256sum models/stories260K/tok512.bin | grep -q ^037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312"

# the model by its explicit path: what the default must reproduce
"$MT" generate --model models/stories260K/stories260K.bin -t 0 -n 60 -q > "$TMP/explicit.txt"
check "explicit path generates the known opening" "grep -q '^Once upon a time, there was a little girl named Lily' $TMP/explicit.txt"

# a tree elsewhere: the binary and models/ only, run from an unrelated working directory
mkdir -p "$TMP/tree/build" "$TMP/tree/models" "$TMP/cwd"
cp "$MT" "$TMP/tree/build/memtune" && cp -r models/stories260K "$TMP/tree/models/"
(cd "$TMP/cwd" && "$TMP/tree/build/memtune" generate -t 0 -n 60 -q) > "$TMP/moved.txt" 2> "$TMP/moved.err"
check "a tree copied elsewhere finds its bundled default (no ../shared)" "cmp -s $TMP/moved.txt $TMP/explicit.txt"

# item 4: a bare relative model path
(cd models/stories260K && "$MT" info --model stories260K.bin) > "$TMP/info.json" 2> "$TMP/info.err"
check "info --model stories260K.bin (no slash) finds tok512.bin beside it" \
  "python3 -c \"import json; d=json.load(open('$TMP/info.json')); assert d['dim'] == 64, d\""
cp models/stories260K/stories260K.bin "$TMP/cwd/" && cp models/stories260K/tok512.bin "$TMP/cwd/"
(cd "$TMP/cwd" && "$MT" generate --model stories260K.bin -t 0 -n 60 -q) > "$TMP/bare.txt" 2>&1
check "generate --model stories260K.bin (no slash) runs" "cmp -s $TMP/bare.txt $TMP/explicit.txt"

# make install into a prefix
SAN=0; [ "$BUILD" = build-asan ] && SAN=1
make -s install PREFIX="$TMP/prefix" SANITIZE=$SAN > "$TMP/install.log" 2>&1
check "make install PREFIX puts bin, lib, include and the model in place" \
  "[ -x $TMP/prefix/bin/memtune ] && [ -f $TMP/prefix/lib/libmemtune.a ] && [ -f $TMP/prefix/lib/libmemtune.so ] && [ -f $TMP/prefix/include/memtune.h ] && [ -f $TMP/prefix/share/memtune/models/stories260K/stories260K.bin ] && [ -f $TMP/prefix/share/memtune/models/stories260K/tok512.bin ]"
(cd "$TMP/cwd" && "$TMP/prefix/bin/memtune" generate -t 0 -n 60 -q) > "$TMP/installed.txt" 2> "$TMP/installed.err"
check "the installed binary finds the installed default model" "cmp -s $TMP/installed.txt $TMP/explicit.txt"
cat > "$TMP/use.c" <<'C'
#include <memtune.h>
#include <stdio.h>
int main(int argc, char **argv) {
    mt_model *m;
    if (argc < 2 || mt_model_load(argv[1], NULL, &m) != MT_OK) { fprintf(stderr, "%s\n", mt_last_error()); return 1; }
    printf("%zu\n", mt_model_param_count(m));
    mt_model_free(m);
    return 0;
}
C
SANFLAGS=""; [ "$SAN" = 1 ] && SANFLAGS="-fsanitize=address,undefined"
cc -std=c11 $SANFLAGS -I"$TMP/prefix/include" "$TMP/use.c" -L"$TMP/prefix/lib" -Wl,-rpath,"$TMP/prefix/lib" -lmemtune -o "$TMP/use" 2> "$TMP/cc.err"
check "a C program builds against the installed header and library and loads the installed model" \
  "[ \"\$($TMP/use $TMP/prefix/share/memtune/models/stories260K/stories260K.bin)\" = 260032 ]"
exit $fail
