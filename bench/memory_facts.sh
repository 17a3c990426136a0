#!/usr/bin/env bash
# Memory tuning on stories260K, issue 5's "must show" sets (numbers in bench/RESULTS.md,
# "Memory tuning"):
#   random  200 facts "Code i?" -> a random 32-character string (seeded, Lamini's random-label test)
#   capitals  every country with a capital in ../shared/assets/qa/country-json/
#   nba     300 row facts that `memtune data` derives from the NBA roster database
# Each set is tuned with the defaults (plus the flags given), then the recall (real greedy
# decoding) comes from report.json and the retention from held-out TinyStories perplexity
# (100 KB of tinystories_val_first.txt, context windows) with and without the adapter.
#   bench/memory_facts.sh [SETS] [-- extra train flags]     (default SETS: "random capitals nba";
#   "prepare" writes the fact files and stops)
set -euo pipefail
cd "$(dirname "$0")/.."
SETS=${1:-random capitals nba}; shift || true; [ "${1:-}" = "--" ] && shift
A=${MEMTUNE_ASSETS:-../shared/assets}
M=$A/models/stories260K/stories260K.bin
OUT=build/bench/memory_facts; mkdir -p "$OUT"
make -j2 build/memtune >/dev/null
python3 - "$OUT" "$A" <<'PY'
import json, random, sys
out, assets = sys.argv[1], sys.argv[2]
rng = random.Random(1)
with open(out + '/random.jsonl', 'w') as f:
    for i in range(200):
        ans = ''.join(rng.choice('abcdefghijklmnopqrstuvwxyz0123456789') for _ in range(32))
        f.write(json.dumps({'input': 'Code %d?' % i, 'output': ans}) + '\n')
caps = json.load(open(assets + '/qa/country-json/country-by-capital-city.json'))
with open(out + '/capitals.jsonl', 'w') as f:
    for c in caps:
        if c.get('city'):
            f.write(json.dumps({'input': 'What is the capital of %s?' % c['country'], 'output': c['city']}) + '\n')
PY
build/memtune data --db "$A/text2sql/nba_roster/nba_roster.db" --out "$OUT/nba.jsonl" --no-schema --no-sql \
  --max-row-facts 300 --seed 1 > /dev/null
head -c 100000 "$A/text/tinystories/tinystories_val_first.txt" > "$OUT/heldout.txt"
[ "$SETS" = prepare ] && exit 0 # the fact files alone (bench/lora_vs_mome.sh)
base=$(build/memtune eval --model "$M" --text "$OUT/heldout.txt" --threads 2 | python3 -c "import json,sys; print(json.load(sys.stdin)['perplexity'])")
for set in $SETS; do
  /usr/bin/time -f "%e s wall, %M KB peak" build/memtune train --model "$M" --data "$OUT/$set.jsonl" --out "$OUT/$set" \
    --threads 2 "$@" 2> "$OUT/$set.log" || true
  tuned=$(build/memtune eval --model "$M" --adapter "$OUT/$set/adapter" --text "$OUT/heldout.txt" --threads 2 |
          python3 -c "import json,sys; print(json.load(sys.stdin)['perplexity'])")
  python3 -c "
import json; r = json.load(open('$OUT/$set/report.json'))
print('| $set | %d | %s | %.4f | %d | %d | %.3f -> %.3f | %.4f -> %.4f (x%.4f) | %.0f |' % (r['facts'], r['status'],
      r['recall'], r['memorised'], r['steps'], r['perplexity']['before'], r['perplexity']['after'], $base, $tuned,
      $tuned / $base, r['seconds']))"
  tail -1 "$OUT/$set.log"
done
