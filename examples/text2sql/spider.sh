#!/usr/bin/env bash
# Spider-style text-to-SQL on a few Spider dev databases: for each database, memtune data
# generates schema facts and executed question -> SQL pairs (10% held out); one model is
# fine-tuned on all of them; execution accuracy on the Spider dev questions of each database
# (never trained on: prepare.py also drops any generated question or SQL equal to a dev one)
# and on the held-out generated pairs, before and after.
# usage: examples/text2sql/spider.sh [OUT_DIR]   env: DBS ("concert_singer pets_1 poker_player
#        singer"), EPOCHS (6), LR (5e-3), THREADS (2)
set -euo pipefail
cd "$(dirname "$0")/../.."
MT=${MT:-build/memtune}
[ -x "$MT" ] || make -j2 build/memtune
A=${MEMTUNE_ASSETS:-../shared/assets}
S="$A/text2sql/spiderman_dev"
MODEL=${MODEL:-$A/models/stories260K/stories260K.bin}
OUT=${1:-build/text2sql/spider}
DBS=${DBS:-concert_singer pets_1 poker_player singer}
EPOCHS=${EPOCHS:-6}
LR=${LR:-5e-3}
THREADS=${THREADS:-2}
rm -rf "$OUT"; mkdir -p "$OUT"
start=$(date +%s)
: > "$OUT/train.jsonl"
for db in $DBS; do
  mkdir -p "$OUT/$db"
  python3 -c "
import json, sys
for l in open('$S/spider_dev_original.jsonl'):
    o = json.loads(l)
    if o['db_id'] == '$db': print(json.dumps({'question': o['question'], 'sql': o['query']}))" > "$OUT/$db/dev.jsonl"
  "$MT" data --db "$S/sqlite/$db.sqlite" --out "$OUT/$db/generated.jsonl" --no-rows --seed 1 > "$OUT/$db/generated.stats.json"
  : > "$OUT/$db/none.jsonl"
  python3 examples/text2sql/prepare.py "$OUT/$db/generated.jsonl" "$OUT/$db/none.jsonl" "$OUT/$db/dev.jsonl" "$OUT/$db" > "$OUT/$db/sets.json"
  cat "$OUT/$db/train.jsonl" >> "$OUT/train.jsonl"
  echo "$db: $(wc -l < "$OUT/$db/dev.jsonl") dev questions; generated $(cat "$OUT/$db/generated.stats.json"); sets $(cat "$OUT/$db/sets.json")"
done

evaluate() { # model tag
  for db in $DBS; do
    for set in dev heldout; do
      "$MT" eval --model "$1" --data "$OUT/$db/$set.jsonl" --db "$S/sqlite/$db.sqlite" --normalize whitespace \
        --report "$OUT/$db/$2.$set.report.jsonl" --threads "$THREADS" > "$OUT/$db/$2.$set.json"
    done
  done
}
evaluate "$MODEL" before
"$MT" train --model "$MODEL" --data "$OUT/train.jsonl" --out "$OUT/run" --method full --epochs "$EPOCHS" --lr "$LR" \
  --warmup 20 --batch 8 --seq-len 256 --seed 1 --threads "$THREADS" --log-every 50 2>&1 | tail -2
evaluate "$OUT/run/model" after
python3 - "$OUT" "$(( $(date +%s) - start ))" $DBS <<'PY'
import json, sys
out, secs, dbs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = []
print("database            set       n   exec acc before -> after   valid SQL before -> after   NLL before -> after")
for db in dbs:
    for s in ("dev", "heldout"):
        b, a = (json.load(open(f"{out}/{db}/{t}.{s}.json")) for t in ("before", "after"))
        valid = lambda r: 1 - r["sql_invalid"] / max(1, r["sql_examples"])
        rows.append({"db": db, "set": s, "examples": a["examples"], "execution_accuracy": [b["execution_accuracy"], a["execution_accuracy"]],
                     "valid_sql": [valid(b), valid(a)], "answer_nll": [b["nll"], a["nll"]], "gold_errors": a["sql_gold_errors"]})
        r = rows[-1]
        print(f"{db:19s} {s:8s} {r['examples']:3d}   {b['execution_accuracy']:.3f} -> {a['execution_accuracy']:.3f}"
              f"               {valid(b):.3f} -> {valid(a):.3f}               {b['nll']:.3f} -> {a['nll']:.3f}")
json.dump({"seconds": secs, "sets": rows}, open(f"{out}/summary.json", "w"), indent=1)
print(f"total {secs} s")
PY
