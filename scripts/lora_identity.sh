#!/usr/bin/env bash
# LoRA on stories260K with LLaMA-Factory's identity set, the same data and schedule as the
# full fine-tuning test (tests/cli/learn_identity.sh, which reaches 88/91 = 96.7% exact match):
# the base frozen, rank-R adapters on all seven projections, plus trainable token rows. Prints
# the exact match of greedy answers to the training prompts and the answer NLL. Minutes of
# compute (about 15 on 2 quiet cores).
#
# Token rows: the set is half Chinese, which stories260K's 512-token vocabulary spells in
# byte-fallback tokens (<0x..>) whose embedding/head rows TinyStories never trained (nor EOS).
# With those rows frozen no adapter can make the model emit them: LoRA alone plateaus at an
# answer NLL of ~4.7 (ROWS=auto: EOS only). ROWS=bytes (default) also trains the rows of
# the byte tokens the answers use (72 of them: EOS + 72 rows x 64 = 4,672 parameters).
#
#   scripts/lora_identity.sh                 # rank 16, alpha 32, lr 6e-3, 40 epochs: 85/91
#   RANK=32 ALPHA=32 EPOCHS=60 scripts/lora_identity.sh   # 89/91 (97.8%), the ceiling
#   RANK=32 ALPHA=32 LR=6e-3 EPOCHS=40 ROWS=auto THREADS=1 scripts/lora_identity.sh
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
RANK=${RANK:-16}; ALPHA=${ALPHA:-32}; LR=${LR:-6e-3}; EPOCHS=${EPOCHS:-40}; ROWS=${ROWS:-bytes}; EXTRA=${EXTRA:-}
TMP="$BUILD/tmp/lora_identity_r${RANK}_a${ALPHA}_lr${LR}_e${EPOCHS}_${ROWS}"; rm -rf "$TMP"; mkdir -p "$TMP"
python3 - "$A/instruct/llama-factory/identity.json" "$TMP/identity.jsonl" <<'PY'
import json, sys
fill = lambda s: s.replace("{{name}}", "Memtune").replace("{{author}}", "the memtune team")
rows = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    for r in rows:
        f.write(json.dumps({k: fill(r[k]) for k in ("instruction", "input", "output")}, ensure_ascii=False) + "\n")
PY
D="$TMP/identity.jsonl"
TOKENS=auto
if [ "$ROWS" = bytes ]; then # EOS (2) and the byte-fallback tokens (ids 3-258) the answers use
  TOKENS=$(python3 - "$MT" "$D" <<'PY'
import json, subprocess, sys
ids = set()
for line in open(sys.argv[2]):
    out = subprocess.run([sys.argv[1], "tokenize", "--text", json.loads(line)["output"], "--no-special"],
                         capture_output=True, text=True, check=True).stdout
    ids.update(int(x) for x in out.replace("[", " ").replace("]", " ").replace(",", " ").split())
print(",".join(str(i) for i in [2] + sorted(i for i in ids if 3 <= i <= 258)))
PY
)
fi
start=$(date +%s)
"$MT" train --model "$A/models/stories260K/stories260K.bin" --data "$D" --eval "$D" --out "$TMP/run" \
  --method lora --rank "$RANK" --alpha "$ALPHA" --lr "$LR" --epochs "$EPOCHS" --batch 2 --seq-len 384 \
  --warmup 20 --threads "${THREADS:-2}" --trainable-tokens "$TOKENS" --quiet $EXTRA
end=$(date +%s)
"$MT" eval --model "$A/models/stories260K/stories260K.bin" --adapter "$TMP/run/adapter" --data "$D" \
  --report "$TMP/report.jsonl" --threads 2 > "$TMP/after.json"
echo "rank $RANK alpha $ALPHA lr $LR epochs $EPOCHS rows $ROWS $EXTRA: training $((end - start)) s"
cat "$TMP/after.json"
