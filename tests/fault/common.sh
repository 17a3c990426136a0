# Shared by the fault tests (sourced): the bundled stories260K, small data for each method, the
# run commands, and comparisons of two run directories. Needs only the repository (no
# ../shared): the model is models/stories260K.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
MT="$ROOT/$BUILD/memtune"
M="$ROOT/models/stories260K/stories260K.bin"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }

# make_data DIR: DIR/sft.jsonl (instructions, for full and LoRA), DIR/facts.jsonl (memory
# tuning), DIR/general.txt (memory tuning's perplexity guard, so no text is sampled)
make_data() {
  python3 - "$1" <<'PY'
import json, random, sys
d = sys.argv[1]
with open(d + "/sft.jsonl", "w") as f:
    for i in range(16):
        f.write(json.dumps({"instruction": "Who made item %d?" % i, "output": "Item %d was made by the memtune team." % i}) + "\n")
rng = random.Random(7)
with open(d + "/facts.jsonl", "w") as f:
    for i in range(4):
        f.write(json.dumps({"input": "Code %d?" % i, "output": "".join(rng.choice("abcdefghij0123456789") for _ in range(6))}) + "\n")
words = "once upon a time there was a little girl named lily she liked to play in the park with her dog".split()
with open(d + "/general.txt", "w") as f:
    for i in range(60):
        f.write(" ".join(rng.choice(words) for _ in range(12)).capitalize() + ".\n")
PY
}

# args_for METHOD DATADIR STEPS SAVE_EVERY: the training options of a small run of METHOD
args_for() {
  local method=$1 d=$2 steps=$3 save=$4
  case $method in
    full) echo "--model $M --data $d/sft.jsonl --method full --lr 1e-3 --batch 2 --seq-len 64 --seed 3 --steps $steps --log-every 3 --save-every $save --threads 1 --quiet" ;;
    lora) echo "--model $M --data $d/sft.jsonl --method lora --rank 4 --alpha 8 --lr 5e-3 --batch 2 --seq-len 64 --seed 3 --steps $steps --log-every 3 --save-every $save --threads 1 --quiet" ;;
    memory) echo "--model $M --data $d/facts.jsonl --method memory --experts 256 --expert-k 4 --expert-heads 2 --check-every 10 --general $d/general.txt --general-weight 0 --batch 2 --seq-len 32 --seed 3 --steps $steps --save-every $save --threads 1 --quiet" ;;
  esac
}

# the directory a finished run of METHOD leaves its result in
result_dir() { [ "$1" = full ] && echo model || echo adapter; }

# train ARGS...: a run that finished (memory tuning exits 3 when not every fact reached tau)
train_ok() { "$MT" train "$@"; local rc=$?; [ $rc -eq 0 ] || [ $rc -eq 3 ]; }

# metrics without the wall-clock fields (elapsed_s, tokens_per_s), one canonical line each
metrics_of() {
  python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    o = json.loads(line)
    for k in ("elapsed_s", "tokens_per_s"):
        o.pop(k, None)
    print(json.dumps(o, sort_keys=True))
PY
}

# same_run A B METHOD: the result files byte for byte and the metrics (timing aside) equal
same_run() {
  local a=$1 b=$2 r
  r=$(result_dir "$3")
  [ -d "$a/$r" ] && [ -d "$b/$r" ] || return 1
  [ "$(ls "$a/$r")" = "$(ls "$b/$r")" ] || return 1
  for f in "$a/$r"/*; do cmp -s "$f" "$b/$r/$(basename "$f")" || return 1; done
  [ "$(metrics_of "$a/metrics.jsonl")" = "$(metrics_of "$b/metrics.jsonl")" ] || return 1
  if [ "$3" = memory ]; then cmp -s "$a/facts.jsonl" "$b/facts.jsonl" || return 1; fi
  return 0
}

# why_differ A B METHOD: what differs (for a failure message)
why_differ() {
  local r; r=$(result_dir "$3")
  for f in "$1/$r"/*; do cmp "$f" "$2/$r/$(basename "$f")" 2>&1 | head -1; done
  diff <(metrics_of "$1/metrics.jsonl") <(metrics_of "$2/metrics.jsonl") | head -6
}
