#!/usr/bin/env bash
# Data-parallel training throughput on one host (issue 25): full fine-tuning of the
# smollm-135m shape (memtune init; vocabulary 49153 to fit SmolLM's tokenizer.json from the
# shared assets) on the identity data, seq-len 128, the same global batch (2 rows per step)
# three ways:
#   1x2             1 process x 2 threads, --batch 2
#   1x1             1 process x 1 thread, --batch 1 (half the rows: the per-rank baseline of
#                   the scaling efficiency, tokens/s(2x1) / (2 x tokens/s(1x1)))
#   2x1             mpirun -np 2, 1 thread each, --batch 1 (the all-reduce overlapping the backward)
#   2x1-no-overlap  the same, all-reduce after the whole backward (--dist-no-overlap)
# Prints per config: median tokens/s of steps 2..N (metrics.jsonl; step 1 allocates the
# gradients), and for MPI the share of step time in communication and waiting on it (the
# CLI's "MPI:" line, steps 2..N too).
# usage: bench/mpi.sh [CONFIG|all] [steps=5] [like=smollm-135m|stories260K]
# Time it on an otherwise idle machine (the team's /work/bin/quiet).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
WHICH=${1:-all}; STEPS=${2:-5}; LIKE=${3:-smollm-135m}
OUT="$BUILD/bench/mpi"; mkdir -p "$OUT"
MPIRUN="mpirun --oversubscribe -np 2"
[ "$(id -u)" -eq 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
python3 - "$A/instruct/llama-factory/identity.json" "$OUT/identity.jsonl" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    for r in rows:
        fill = lambda s: s.replace("{{name}}", "Memtune").replace("{{author}}", "the memtune team")
        f.write(json.dumps({"instruction": fill(r["instruction"]), "input": fill(r["input"]), "output": fill(r["output"])}) + "\n")
PY
if [ "$LIKE" = stories260K ]; then
  MODEL="--model models/stories260K/stories260K.bin"
else
  if [ ! -f "$OUT/smollm-135m/model.safetensors" ]; then
    "$MT" init --like smollm-135m --out "$OUT/smollm-135m.tmp" > /dev/null
    sed 's/"vocab_size": 49152/"vocab_size": 49153/' "$OUT/smollm-135m.tmp/config.json" > "$OUT/smollm-135m.json"
    rm -rf "$OUT/smollm-135m.tmp"
    "$MT" init --config "$OUT/smollm-135m.json" --seed 1 --out "$OUT/smollm-135m" > /dev/null
  fi
  MODEL="--model $OUT/smollm-135m --tokenizer $A/tokenizers/smollm/tokenizer.json"
fi
C="$MODEL --data $OUT/identity.jsonl --seq-len 128 --steps $STEPS --save-every 0 --log-every 1 --lr 1e-4"
run() {
  local name=$1; shift
  rm -rf "$OUT/$name"
  local t0=$(date +%s.%N)
  "$@" --out "$OUT/$name" 2> "$OUT/$name.err"
  python3 - "$OUT/$name" "$name" "$t0" "$LIKE" <<'PY'
import json, re, statistics, sys, time
d, name, t0, like = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
tps = [json.loads(l)["tokens_per_s"] for l in open(d + "/metrics.jsonl") if '"loss"' in l][1:]
err = open(d + ".err").read()
m = re.search(r"MPI: .*?([0-9.]+) ms per step, ([0-9.]+)% of it in communication, ([0-9.]+)% waiting.*?ran ([0-9.]+)%", err)
extra = (", %s ms/step, %s%% of step time in MPI calls on the training thread, %s%% waiting after the backward, "
         "overlapping all-reduce busy %s%% of step time" % m.groups()) if m else ""
print("%-15s %s: median %.1f tokens/s over steps 2..%d (%s)%s; wall %.0f s" % (name, like, statistics.median(tps), len(tps) + 1,
      " ".join("%.1f" % t for t in tps), extra, time.time() - t0))
PY
}
[ "$WHICH" = all ] || [ "$WHICH" = 1x2 ] && run 1x2 "$MT" train $C --batch 2 --threads 2
[ "$WHICH" = all ] || [ "$WHICH" = 1x1 ] && run 1x1 "$MT" train $C --batch 1 --threads 1
[ "$WHICH" = all ] || [ "$WHICH" = 2x1 ] && run 2x1 $MPIRUN "$MT" train $C --batch 1 --threads 1
[ "$WHICH" = all ] || [ "$WHICH" = 2x1-no-overlap ] && run 2x1-no-overlap $MPIRUN "$MT" train $C --batch 1 --threads 1 --dist-no-overlap
true
