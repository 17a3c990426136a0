#!/usr/bin/env bash
# LoRA on stories260K with LLaMA-Factory's identity set, the same data and schedule as the
# full fine-tuning test (tests/cli/learn_identity.sh, which reaches 88/91 = 96.7% exact match):
# the base frozen, rank-R adapters on all seven projections, plus the trainable token rows
# (EOS, which stories260K never learned) that `--method lora` trains by default. Prints the
# exact match of greedy answers to the training prompts and the answer NLL. Minutes of compute.
#
#   scripts/lora_identity.sh                 # rank 16, alpha 32, lr 1e-2
#   RANK=32 ALPHA=64 LR=6e-3 EPOCHS=40 scripts/lora_identity.sh
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
RANK=${RANK:-16}; ALPHA=${ALPHA:-32}; LR=${LR:-1e-2}; EPOCHS=${EPOCHS:-40}; EXTRA=${EXTRA:-}
TMP="$BUILD/tmp/lora_identity_r${RANK}_a${ALPHA}_lr${LR}_e${EPOCHS}"; rm -rf "$TMP"; mkdir -p "$TMP"
python3 - "$A/instruct/llama-factory/identity.json" "$TMP/identity.jsonl" <<'PY'
import json, sys
fill = lambda s: s.replace("{{name}}", "Memtune").replace("{{author}}", "the memtune team")
rows = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    for r in rows:
        f.write(json.dumps({k: fill(r[k]) for k in ("instruction", "input", "output")}, ensure_ascii=False) + "\n")
PY
D="$TMP/identity.jsonl"
start=$(date +%s)
"$MT" train --model "$A/models/stories260K/stories260K.bin" --data "$D" --eval "$D" --out "$TMP/run" \
  --method lora --rank "$RANK" --alpha "$ALPHA" --lr "$LR" --epochs "$EPOCHS" --batch 2 --seq-len 384 \
  --warmup 20 --threads 2 --quiet $EXTRA
end=$(date +%s)
"$MT" eval --model "$A/models/stories260K/stories260K.bin" --adapter "$TMP/run/adapter" --data "$D" \
  --report "$TMP/report.jsonl" --threads 2 > "$TMP/after.json"
echo "rank $RANK alpha $ALPHA lr $LR epochs $EPOCHS $EXTRA: training $((end - start)) s"
cat "$TMP/after.json"
