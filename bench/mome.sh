#!/usr/bin/env bash
# Memory tuning benchmarks (numbers in bench/RESULTS.md, "Memory tuning"):
#  1. per-token time and memory of the MoME layer for N = 2^10, 2^14, 2^17, 2^20 experts
#     (bench/bench_mome.c, one thread, stories260K's width);
#  2. random-label facts on stories260K: LoRA + MoME (default), LoRA alone (--experts 0) and
#     LoRA + MoME with a frozen router, at equal steps; recall and general perplexity from
#     each run's report.json.
#   bench/mome.sh [FACTS] [STEPS]     (defaults 20 facts, 150 steps)
# On a shared machine the times are noisy (other jobs share the CPU); compare rows of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
FACTS=${1:-20}; STEPS=${2:-150}
OUT=build/bench/mome; mkdir -p "$OUT"
make -j2 build/memtune build/bench/bench_mome >/dev/null
/usr/bin/time -v build/bench/bench_mome 128 > "$OUT/scaling.jsonl" 2> "$OUT/scaling.time"
cat "$OUT/scaling.jsonl"; grep "Maximum resident" "$OUT/scaling.time"
python3 -c "
import json, random
rng = random.Random(1)
for i in range($FACTS):
    print(json.dumps({'input': 'Code %d?' % i, 'output': ''.join(rng.choice('abcdefghijklmnopqrstuvwxyz0123456789') for _ in range(32))}))" > "$OUT/facts.jsonl"
M=../shared/assets/models/stories260K/stories260K.bin
run() { name=$1; shift
  /usr/bin/time -f "%e s, %M KB peak" build/memtune train --model $M --data "$OUT/facts.jsonl" --out "$OUT/$name" \
    --threads 2 --steps $STEPS --check-every 10 --quiet "$@" 2> "$OUT/$name.time" || true
  python3 -c "
import json; r = json.load(open('$OUT/$name/report.json'))
print('$name', r['status'], 'recall', r['recall'], 'memorised', r['memorised'], '/', r['facts'], 'steps', r['steps'],
      'seconds %.1f' % r['seconds'], 'ppl %.3f -> %.3f' % (r['perplexity']['before'], r['perplexity']['after']))"
  tail -1 "$OUT/$name.time"; }
run lora_mome
run lora_only --experts 0
run lora_mome_frozen_router --freeze-router
run mome_only --no-memory-lora
