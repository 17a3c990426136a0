#!/usr/bin/env bash
# Runs every test binary in $BUILD/tests, then the CLI tests and the fault tests (tests/fault). Exits non-zero on any failure.
set -u
BUILD=${BUILD:-build}
export BUILD
cd "$(dirname "$0")/.."
fail=0; passed=0; skipped=0
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  if "$t" > "$BUILD/tests/$name.log" 2>&1; then
    echo "PASS $name"; passed=$((passed+1))
  else
    echo "FAIL $name"; tail -40 "$BUILD/tests/$name.log"; fail=$((fail+1))
  fi
done
for t in tests/cli/*.sh tests/fault/*.sh; do
  [ -f "$t" ] && [ "$(basename "$t")" != common.sh ] || continue
  name=$(basename "$t" .sh)
  [ "${t#tests/fault/}" != "$t" ] && name=fault_$name
  bash "$t" > "$BUILD/tests/cli_$name.log" 2>&1; rc=$?
  if [ $rc -eq 0 ]; then
    echo "PASS cli/$name"; passed=$((passed+1))
  elif [ $rc -eq 77 ]; then
    echo "SKIP cli/$name: $(tail -1 "$BUILD/tests/cli_$name.log")"; skipped=$((skipped+1))
  else
    echo "FAIL cli/$name"; tail -40 "$BUILD/tests/cli_$name.log"; fail=$((fail+1))
  fi
done
echo "$passed passed, $fail failed, $skipped skipped"
[ "$fail" -eq 0 ]
