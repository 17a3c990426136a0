#!/usr/bin/env bash
# Learning: full fine-tuning of stories260K on LLaMA-Factory's identity set (placeholders
# filled) lowers the eval loss and makes greedy answers to the training prompts match the
# expected outputs exactly for at least 90% of them (two prompts occur twice with different
# answers, so 89 of 91 is the ceiling; the misses are near-duplicate Chinese prompts whose
# answers differ, where rounding decides: 88 of 91 on one machine, 85 on an AMD EPYC with
# the same code, since OpenBLAS picks its kernels by CPU). Minutes of compute: under the
# sanitizer build (SANITIZE=1) it reports SKIP (exit 77), which run.sh does not count.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
if [ "$BUILD" != "build" ] && [ -z "${MEMTUNE_SLOW_TESTS:-}" ]; then
  echo "SKIP: too slow under $BUILD (set MEMTUNE_SLOW_TESTS=1 to run)"; exit 77
fi
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
TMP="$BUILD/tmp/learn_identity"; rm -rf "$TMP"; mkdir -p "$TMP"
python3 - "$A/instruct/llama-factory/identity.json" "$TMP/identity.jsonl" <<'PY'
import json, sys
fill = lambda s: s.replace("{{name}}", "Memtune").replace("{{author}}", "the memtune team")
rows = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    for r in rows:
        f.write(json.dumps({k: fill(r[k]) for k in ("instruction", "input", "output")}, ensure_ascii=False) + "\n")
PY
D="$TMP/identity.jsonl"
"$MT" train --model "$A/models/stories260K/stories260K.bin" --data "$D" --eval "$D" --out "$TMP/run" \
  --lr 6e-3 --epochs 40 --batch 2 --seq-len 384 --warmup 20 --threads 2 --quiet || exit 1
"$MT" eval --model "$TMP/run/model" --data "$D" --report "$TMP/report.jsonl" > "$TMP/after.json" || exit 1
cat "$TMP/after.json"
python3 - "$TMP/after.json" "$TMP/run/metrics.jsonl" <<'PY'
import json, sys
after = json.load(open(sys.argv[1]))
evals = [json.loads(l)["eval_loss"] for l in open(sys.argv[2]) if "eval_loss" in l]
print("eval loss (mean answer NLL) at step 0:", evals[0], "at the end:", evals[-1], "; exact match:", after["exact_match"])
assert evals[-1] < evals[0] / 10, "eval loss did not fall tenfold"
assert abs(after["nll"] - evals[-1]) < 0.05, "eval --data and the trainer disagree on the answer NLL"
assert after["examples"] == 91 and after["exact_match"] >= 0.90, "exact match below 90%"
PY
