#!/usr/bin/env bash
# The Python package (python/memtune) against $BUILD/libmemtune.so: python3 -m unittest
# discover python/tests (what each test proves: python/tests/test_memtune.py). Under the
# sanitizer build the library is ASan-instrumented, which python3 can load only with libasan
# preloaded: SKIP (exit 77) unless MEMTUNE_PYTHON_ASAN=1 asks to try that.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
command -v python3 >/dev/null || { echo "SKIP: no python3"; exit 77; }
[ -f "$BUILD/libmemtune.so" ] || { echo "SKIP: no $BUILD/libmemtune.so"; exit 77; }
export BUILD MEMTUNE_LIB="$PWD/$BUILD/libmemtune.so" PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
if [ "$BUILD" != "build" ]; then
  [ -n "${MEMTUNE_PYTHON_ASAN:-}" ] || { echo "SKIP: python3 cannot load the sanitizer-built $BUILD/libmemtune.so without LD_PRELOAD of libasan (set MEMTUNE_PYTHON_ASAN=1 to try)"; exit 77; }
  export LD_PRELOAD="$(${CC:-cc} -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0
fi
python3 -m unittest discover -v python/tests
rc=$?
[ $rc -eq 0 ] || exit $rc
# installable offline: pip (Debian's, with setuptools and wheel) into a scratch target, the
# built library copied beside the package; imported from elsewhere it finds that copy
PY=python3
$PY -c "import pip, setuptools, wheel" 2>/dev/null || PY=/usr/bin/python3
$PY -c "import pip, setuptools, wheel" 2>/dev/null || { echo "no pip/setuptools/wheel: install check skipped"; exit 0; }
TMP="$BUILD/tmp/python_install"; rm -rf "$TMP"; mkdir -p "$TMP/build"
cp -r python "$TMP/python" && rm -rf "$TMP/python/build" "$TMP/python"/*.egg-info
cp "$BUILD/libmemtune.so" "$TMP/build/"
$PY -m pip install -q --no-index --no-build-isolation --target "$TMP/site" "$TMP/python" 2>&1 | grep -v 'Running pip as'
(cd "$TMP" && env -u MEMTUNE_LIB PYTHONPATH="$PWD/site" $PY -c "
import memtune, memtune._lib as l, os
assert l.find_library() == os.path.abspath('site/memtune/libmemtune.so'), l.find_library()
print('ok   installed with pip, loads', l.find_library(), memtune.version())") || exit 1
