#!/usr/bin/env bash
# A memtune built without MPI (make MPI=0, .ci/run): mpirun -np 2 of it refuses to start two
# separate trainings into one --out, with one clear message, and writes nothing. Skips (77)
# for a build with MPI or without mpirun.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
TMP="$BUILD/tmp/cli_mpi_nompi"; rm -rf "$TMP"; mkdir -p "$TMP"
command -v mpirun >/dev/null || { echo "mpirun not installed"; exit 77; }
ldd "$MT" 2>/dev/null | grep -q libmpi && { echo "$MT is built with MPI (tests/cli/mpi.sh covers it)"; exit 77; }
MPIRUN="mpirun --oversubscribe -np 2"
[ "$(id -u)" -eq 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
printf '{"instruction": "Who are you?", "output": "I am memtune."}\n' > "$TMP/d.jsonl"
$MPIRUN "$MT" train --model models/stories260K/stories260K.bin --data "$TMP/d.jsonl" --steps 2 --threads 1 --out "$TMP/o" > "$TMP/o.out" 2>&1; rc=$?
if [ $rc -ne 0 ] && grep -q 'built without MPI (install libopenmpi-dev and rebuild)' "$TMP/o.out" && [ ! -e "$TMP/o" ]; then
  echo "ok   without MPI: mpirun -np 2 is refused, nothing written"; exit 0
fi
echo "FAIL without MPI: mpirun -np 2 is refused, nothing written (exit $rc)"; cat "$TMP/o.out"; exit 1
