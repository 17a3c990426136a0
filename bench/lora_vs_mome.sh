#!/usr/bin/env bash
# LoRA alone versus LoRA + memory experts on the random-label set (200 facts "Code i?" -> 32
# random characters, the file bench/memory_facts.sh writes), at equal steps and at equal time.
# Both runs use the defaults, the same seed and checks every EVERY steps; every check writes a
# line to DIR/metrics.jsonl with the facts answered exactly (teacher-forced argmax at every
# answer position, which is what greedy decoding reproduces), the facts memorised (also every
# token NLL <= tau) and the elapsed time. LoRA + MoME runs STEPS steps; LoRA alone then runs
# until it has had the same wall time (SIGTERM: it checkpoints and stops), so its metrics hold
# both the equal-steps and the equal-time points (the memory method has no lr schedule, so a
# longer run passes through the shorter one's steps unchanged).
#   STEPS=800 EVERY=20 bench/lora_vs_mome.sh        (about 2 x the LoRA + MoME run's time)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-800}; EVERY=${EVERY:-20}
A=${MEMTUNE_ASSETS:-../shared/assets}
M=$A/models/stories260K/stories260K.bin
OUT=build/bench/lora_vs_mome; rm -rf "$OUT"; mkdir -p "$OUT"
bench/memory_facts.sh prepare
F=build/bench/memory_facts/random.jsonl
COMMON="--model $M --data $F --threads 2 --seed 3 --check-every $EVERY --save-every 0"
build/memtune train $COMMON --steps "$STEPS" --out "$OUT/mome" 2> "$OUT/mome.log" || true
secs=$(python3 -c "import json; print(int(json.load(open('$OUT/mome/report.json'))['seconds']) + 1)")
timeout -s TERM "$secs" build/memtune train $COMMON --experts 0 --steps 1000000 --out "$OUT/lora" 2> "$OUT/lora.log" || true
python3 - "$OUT" "$STEPS" <<'PY'
import json, sys
out, steps = sys.argv[1], int(sys.argv[2])
runs = {name: [json.loads(l) for l in open('%s/%s/metrics.jsonl' % (out, name))] for name in ('mome', 'lora')}
def first(rows, key):
    hit = [r for r in rows if r[key] == r['facts']]
    return '%d (%.0f s)' % (hit[0]['step'], hit[0]['elapsed_s']) if hit else 'not reached'
def at_step(rows, s):
    r = [r for r in rows if r['step'] <= s][-1]
    return '%d/%d exact, %d memorised (step %d, %.0f s)' % (r['facts_exact'], r['facts'], r['facts_memorised'], r['step'], r['elapsed_s'])
end = runs['mome'][-1]['elapsed_s']
print('| build | at step %d | at %.0f s (equal time) | steps done | first step all exact | first step all memorised |' % (steps, end))
print('|---|---|---|---|---|---|')
for name, label in (('mome', 'LoRA + MoME'), ('lora', 'LoRA alone (`--experts 0`)')):
    rows = runs[name]
    timed = [r for r in rows if r['elapsed_s'] <= end][-1]
    print('| %s | %s | %d/%d exact, %d memorised (step %d) | %d | %s | %s |' % (label, at_step(rows, steps),
          timed['facts_exact'], timed['facts'], timed['facts_memorised'], timed['step'], rows[-1]['step'],
          first(rows, 'facts_exact'), first(rows, 'facts_memorised')))
print()
print('recall (exact) over steps:')
for name in ('mome', 'lora'):
    print('  %-5s' % name, ' '.join('%d:%d' % (r['step'], r['facts_exact']) for r in runs[name] if r['step'] % 100 == 0))
PY
