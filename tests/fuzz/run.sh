#!/usr/bin/env bash
# Builds memtune's libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined) and
# runs each for N seconds:   tests/fuzz/run.sh [seconds=20] [target ...]
# Targets: gguf safetensors llama2c hf_config tokenizer_json tok_bin chat_template jsonl grammar serve_request jobs_request hub_name. Corpora start from
# small valid files (make_seeds.c) and the corpus kept in the repository (tests/fuzz/corpus/
# <target>: small inputs that reach distinct code, so a short run in CI starts deep), and
# grow in $FUZZ_BUILD/corpus/<target> (FUZZ_BUILD defaults to build/fuzz); inputs that crash
# are saved as $FUZZ_BUILD/crash-<target>-*. FUZZ_KEEP=1 merges what a run found back into
# tests/fuzz/corpus (libFuzzer -merge=1 keeps only inputs that add coverage; inputs over 4 KB
# are left out to keep the repository small). CI (.ci/run) runs every target for 10 s.
# Exits non-zero if any target failed.
set -u
cd "$(dirname "$0")/../.."
secs=${1:-20}
[ $# -gt 0 ] && shift
targets=${*:-gguf safetensors llama2c hf_config tokenizer_json tok_bin chat_template jsonl grammar serve_request jobs_request hub_name}
out=${FUZZ_BUILD:-build/fuzz}
pkgs="openblas libpcre2-8 jansson libcurl libcrypto"
cflags="-std=c11 -D_GNU_SOURCE -g -O1 -w -fopenmp -fno-omit-frame-pointer -fsanitize=address,undefined
        -fno-sanitize-recover=undefined -Iinclude -Isrc $(pkg-config --cflags $pkgs)"
libs="$(pkg-config --libs $pkgs) -lm -pthread -fopenmp"
mkdir -p "$out/obj" "$out/tmp"

# The library, from the same source folders as the Makefile's LIB_SRC.
srcs=$(sed -n 's/^LIB_SRC *= *\$(wildcard \(.*\))$/\1/p' Makefile)
[ -n "$srcs" ] || { echo "cannot read LIB_SRC from the Makefile"; exit 1; }
export cflags out
ls $srcs | xargs -P "$(nproc)" -I{} sh -c \
  'clang $cflags -fsanitize=fuzzer-no-link -c "{}" -o "$out/obj/$(echo "{}" | tr / _).o"' || exit 1
rm -f "$out/libmemtune-fuzz.a"
ar rcs "$out/libmemtune-fuzz.a" "$out"/obj/*.o || exit 1

clang $cflags tests/fuzz/make_seeds.c "$out/libmemtune-fuzz.a" $libs -o "$out/make_seeds" || exit 1
rm -rf "$out/seeds" && "$out/make_seeds" "$out/seeds" || exit 1

failed=0
for t in $targets; do
  clang $cflags -fsanitize=fuzzer "tests/fuzz/fuzz_$t.c" "$out/libmemtune-fuzz.a" $libs -o "$out/fuzz_$t" || exit 1
  mkdir -p "$out/corpus/$t"
  cp -n "$out/seeds/$t"/* "$out/corpus/$t/" 2>/dev/null
  cp -n tests/fuzz/corpus/"$t"/* "$out/corpus/$t/" 2>/dev/null
  [ "$t" = chat_template ] && cp -n tests/fixtures/templates/* "$out/corpus/$t/" 2>/dev/null
  [ "$t" = grammar ] && cp -n tests/fixtures/grammars/* "$out/corpus/$t/" 2>/dev/null
  echo "== fuzz_$t for ${secs}s"
  if TMPDIR="$out/tmp" "$out/fuzz_$t" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$out/crash-$t-" "$out/corpus/$t" > "$out/fuzz_$t.log" 2>&1; then
    grep -E "^stat::number_of_executed_units|^Done" "$out/fuzz_$t.log" | tr '\n' ' '; echo
  else
    echo "FAILED: fuzz_$t (log: $out/fuzz_$t.log)"; tail -30 "$out/fuzz_$t.log"; failed=1
  fi
  if [ -n "${FUZZ_KEEP:-}" ] && [ $failed -eq 0 ]; then
    mkdir -p "tests/fuzz/corpus/$t"
    TMPDIR="$out/tmp" "$out/fuzz_$t" -merge=1 -max_len=4096 "tests/fuzz/corpus/$t" "$out/corpus/$t" > "$out/merge_$t.log" 2>&1 ||
      { echo "FAILED: merging the corpus of fuzz_$t"; tail -5 "$out/merge_$t.log"; failed=1; }
  fi
  rm -rf "$out"/tmp/memtune-fuzz-*
done
exit $failed
