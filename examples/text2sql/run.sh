#!/usr/bin/env bash
# Text-to-SQL on the NBA roster database, end to end:
#   1. memtune data: schema facts and executed question -> SQL pairs from the database;
#   2. memtune data --filter: the shipped LLM-generated query files, kept where the SQL runs;
#   3. prepare.py: one training set (gold-test-set questions and SQL removed), 10% of the
#      generated pairs held out;
#   4. memtune eval --db: execution accuracy of the base model on gold-test-set.jsonl and on
#      the held-out pairs;
#   5. memtune train --method memory: memory-tune the bundled stories260K on the training set
#      (LoRA + memory experts, general text distilled so the model keeps what it knew), for
#      STEPS steps; it stops earlier when every line is memorised;
#   6. memtune eval --db again with the adapter, and eval --compare before/after.
# usage: examples/text2sql/run.sh [OUT_DIR]
# env: STEPS (400), THREADS (2); METHOD=full (with EPOCHS (3), LR (5e-3)) for plain fine-tuning
set -euo pipefail
cd "$(dirname "$0")/../.."
MT=${MT:-build/memtune}
[ -x "$MT" ] || make -j2 build/memtune
A=${MEMTUNE_ASSETS:-../shared/assets}
N="$A/text2sql/nba_roster"
DB="$N/nba_roster.db"
MODEL=${MODEL:-$A/models/stories260K/stories260K.bin}
OUT=${1:-build/text2sql/nba}
METHOD=${METHOD:-memory}
STEPS=${STEPS:-400}
EPOCHS=${EPOCHS:-3}
LR=${LR:-5e-3}
THREADS=${THREADS:-2}
rm -rf "$OUT"; mkdir -p "$OUT"
start=$(date +%s)

echo "== 1. generate training data from $DB"
"$MT" data --db "$DB" --out "$OUT/generated.jsonl" --no-rows --seed 1 | tee "$OUT/generated.stats.json"
echo "== 2. filter the shipped question -> SQL files"
cat "$N/data/training_data/generated_queries_large.jsonl" "$N/data/training_data/generated_queries_v2_large.jsonl" > "$OUT/queries.jsonl"
"$MT" data --filter "$OUT/queries.jsonl" --db "$DB" --out "$OUT/filtered.jsonl" | tee "$OUT/filtered.stats.json"
echo "== 3. assemble train / held-out sets"
python3 examples/text2sql/prepare.py "$OUT/generated.jsonl" "$OUT/filtered.jsonl" "$N/data/gold-test-set.jsonl" "$OUT" | tee "$OUT/sets.json"

evaluate() { # tag [eval flags for the model]
  tag=$1; shift
  for set in gold heldout; do
    data="$N/data/gold-test-set.jsonl"; [ $set = heldout ] && data="$OUT/heldout.jsonl"
    "$MT" eval "$@" --data "$data" --db "$DB" --report "$OUT/$tag.$set.report.jsonl" \
      --normalize whitespace --threads "$THREADS" > "$OUT/$tag.$set.json"
    echo "$tag $set: $(cat "$OUT/$tag.$set.json")"
  done
}
echo "== 4. evaluate the base model"
evaluate before --model "$MODEL"
if [ "$METHOD" = memory ]; then
  echo "== 5. memory-tune (at most $STEPS steps)"
  rc=0
  "$MT" train --model "$MODEL" --data "$OUT/train.jsonl" --out "$OUT/run" --method memory --steps "$STEPS" \
    --seed 1 --threads "$THREADS" 2>&1 | tr '\r' '\n' | grep -E "^memtune|facts memorised|memorised" | tail -4 || rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 3 ] || { echo "memtune train failed (exit $rc)"; exit $rc; } # 3: partially completed
  python3 -c "import json; r = json.load(open('$OUT/run/report.json')); print('status %s, recall %.3f (%d of %d memorised), general-text perplexity x%.3f, %d steps in %.0f s' % (r['status'], r['recall'], r['memorised'], r['facts'], r['perplexity']['ratio'], r['steps'], r['seconds']))"
  echo "== 6. evaluate the tuned model"
  evaluate after --model "$MODEL" --adapter "$OUT/run/adapter"
else
  echo "== 5. fine-tune ($EPOCHS epochs, lr $LR, full)"
  "$MT" train --model "$MODEL" --data "$OUT/train.jsonl" --eval "$OUT/heldout.jsonl" --out "$OUT/run" --method full \
    --epochs "$EPOCHS" --lr "$LR" --warmup 20 --batch 8 --seq-len 256 --seed 1 --threads "$THREADS" --log-every 50 2>&1 | tail -3
  echo "== 6. evaluate the tuned model"
  evaluate after --model "$OUT/run/model"
fi
for set in gold heldout; do
  "$MT" eval --compare "$OUT/before.$set.report.jsonl" "$OUT/after.$set.report.jsonl" > "$OUT/compare.$set.json"
done
python3 - "$OUT" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
out, secs = sys.argv[1], int(sys.argv[2])
rows = []
for set in ("gold", "heldout"):
    b, a = (json.load(open(f"{out}/{t}.{set}.json")) for t in ("before", "after"))
    c = json.load(open(f"{out}/compare.{set}.json"))
    rows.append({"set": set, "examples": a["examples"],
                 "execution_accuracy": [b["execution_accuracy"], a["execution_accuracy"]],
                 "valid_sql": [1 - b["sql_invalid"] / b["sql_examples"], 1 - a["sql_invalid"] / a["sql_examples"]],
                 "exact_match": [b["exact_match"], a["exact_match"]], "answer_nll": [b["nll"], a["nll"]],
                 "fixed": c["fixed"], "broken": c["broken"]})
summary = {"seconds": secs, "sets": rows}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
print("set      n   exec acc before -> after   valid SQL before -> after   exact before -> after   NLL before -> after")
for r in rows:
    print(f"{r['set']:8s} {r['examples']:3d}   {r['execution_accuracy'][0]:.3f} -> {r['execution_accuracy'][1]:.3f}"
          f"               {r['valid_sql'][0]:.3f} -> {r['valid_sql'][1]:.3f}               "
          f"{r['exact_match'][0]:.3f} -> {r['exact_match'][1]:.3f}           {r['answer_nll'][0]:.3f} -> {r['answer_nll'][1]:.3f}")
print(f"total {secs} s")
PY
