#!/usr/bin/env bash
# Training from the command line: dry run, outputs, bad data, and never losing a run:
# 20 uninterrupted steps == 10 steps + SIGKILL + resume, bit for bit (weights and losses);
# a kill in the middle of a checkpoint write leaves the previous checkpoint usable.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
M="$A/models/stories260K/stories260K.bin"
TMP="$BUILD/tmp/cli_train"; rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
python3 - "$A/instruct/llama-factory/identity.json" "$TMP/identity.jsonl" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    for r in rows:
        fill = lambda s: s.replace("{{name}}", "Memtune").replace("{{author}}", "the memtune team")
        f.write(json.dumps({"instruction": fill(r["instruction"]), "input": fill(r["input"]), "output": fill(r["output"])}) + "\n")
PY
D="$TMP/identity.jsonl"
COMMON="--model $M --data $D --lr 1e-3 --batch 2 --seq-len 128 --seed 3 --log-every 1 --threads 2 --quiet"

"$MT" train $COMMON --out "$TMP/dry" --dry-run > "$TMP/dry.json"
check "dry run prints token counts and a memory plan" "python3 -c \"import json; d=json.load(open('$TMP/dry.json')); assert d['examples']==91 and d['target_tokens']>0 and d['memory']['total']>0, d\""
check "dry run writes nothing" "[ ! -e $TMP/dry ]"

"$MT" train $COMMON --out "$TMP/dry" --dry-run --recompute > "$TMP/dry_rec.json"
check "--recompute plans less activation memory" "python3 -c \"import json; a=json.load(open('$TMP/dry.json'))['memory']; b=json.load(open('$TMP/dry_rec.json'))['memory']; assert b['gradients_and_activations'] < a['gradients_and_activations'], (a, b)\""
"$MT" train $COMMON --steps 4 --save-every 0 --out "$TMP/r0"
"$MT" train $COMMON --steps 4 --save-every 0 --recompute --out "$TMP/r1"
check "--recompute trains the very same weights" "cmp -s $TMP/r0/model/model.safetensors $TMP/r1/model/model.safetensors"

"$MT" train $COMMON --steps 20 --save-every 10 --out "$TMP/a"
check "a run writes model, metrics, loss plot and checkpoint" "[ -f $TMP/a/model/model.safetensors ] && [ -f $TMP/a/model/tokenizer_config.json ] && [ -f $TMP/a/loss.svg ] && [ \$(grep -c '\"loss\"' $TMP/a/metrics.jsonl) -eq 20 ] && [ -f $TMP/a/checkpoints/step-00000020.ckpt ]"
check "the chat template travels with the model" "grep -q chat_template $TMP/a/model/tokenizer_config.json"

MEMTUNE_TEST_KILL_AFTER_STEP=10 "$MT" train $COMMON --steps 20 --save-every 10 --out "$TMP/b" 2>/dev/null; rc=$?
check "the crash hook killed the run (SIGKILL)" "[ $rc -eq 137 ] && [ -f $TMP/b/checkpoints/step-00000010.ckpt ] && [ ! -e $TMP/b/model ]"
"$MT" train $COMMON --steps 20 --save-every 10 --out "$TMP/b" --resume
check "10 steps + SIGKILL + resume = 20 steps: identical weights" "cmp -s $TMP/a/model/model.safetensors $TMP/b/model/model.safetensors"
losses() { python3 -c "import json,sys; print([json.loads(l)['loss'] for l in open(sys.argv[1]) if '\"loss\"' in l])" "$1"; }
check "... and identical losses" "[ \"\$(losses $TMP/a/metrics.jsonl)\" = \"\$(losses $TMP/b/metrics.jsonl)\" ]"

# Kill while the step-10 checkpoint is being written (the test hook pauses mid-write).
MEMTUNE_TEST_CKPT_DELAY_MS=1500 "$MT" train $COMMON --steps 20 --save-every 5 --out "$TMP/c" 2>/dev/null &
pid=$!
for i in $(seq 1 2400); do ls "$TMP/c/checkpoints/" 2>/dev/null | grep -q 'step-00000010.ckpt.tmp' && break; sleep 0.05; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
check "killed during the write: the torn file is a temp file, step 5 is intact" "[ -f $TMP/c/checkpoints/step-00000005.ckpt ] && [ ! -f $TMP/c/checkpoints/step-00000010.ckpt ] && ls $TMP/c/checkpoints | grep -q tmp"
"$MT" train $COMMON --steps 20 --save-every 5 --out "$TMP/c" --resume 2> "$TMP/c.err"
check "resume after a torn checkpoint matches the uninterrupted run" "cmp -s $TMP/a/model/model.safetensors $TMP/c/model/model.safetensors"

# Many epochs over a few examples of different lengths: each epoch's shuffle packs into a
# different number of rows, and a resume lands mid-epoch.
python3 -c "
import json
for i in range(7):
    print(json.dumps({'input': 'q%d' % i + ' word' * (i * 5), 'output': 'answer ' * (1 + (i * 7) % 11)}))" > "$TMP/varied.jsonl"
V="--model $M --method full --data $TMP/varied.jsonl --seq-len 48 --batch 2 --seed 5 --log-every 1 --lr 1e-3 --quiet --threads 2"
"$MT" train $V --steps 40 --out "$TMP/v1"
check "training across many epochs of unequal row counts" "[ -f $TMP/v1/model/model.safetensors ]"
MEMTUNE_TEST_KILL_AFTER_STEP=17 "$MT" train $V --steps 40 --save-every 17 --out "$TMP/v2" 2>/dev/null
"$MT" train $V --steps 40 --save-every 17 --out "$TMP/v2" --resume
check "resume mid-epoch across epochs: identical weights" "cmp -s $TMP/v1/model/model.safetensors $TMP/v2/model/model.safetensors"

# Gradient accumulation: 2 micro-batches of 2 rows = 1 batch of 4 rows (loss normalised by
# the target tokens of the whole step), equal up to float rounding.
"$MT" train $COMMON --steps 5 --batch 4 --out "$TMP/acc1" --clip 0
"$MT" train $COMMON --steps 5 --batch 2 --grad-accum 2 --out "$TMP/acc2" --clip 0
maxdiff() { python3 - "$1" "$2" <<'PY'
import json, struct, sys
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__": continue
        b, e = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((e - b) // 4), raw[8 + n + b:8 + n + e])
    return out
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
print(max(abs(x - y) for k in a for x, y in zip(a[k], b[k])))
PY
}
d=$(maxdiff "$TMP/acc1/model/model.safetensors" "$TMP/acc2/model/model.safetensors")
check "grad-accum 2 x 2 rows = batch 4 (max weight diff $d)" "python3 -c 'import sys; sys.exit(0 if $d < 1e-5 else 1)'"
d0=$(maxdiff "$TMP/acc1/model/model.safetensors" "$TMP/a/model/model.safetensors")
check "... while another batch size differs (max weight diff $d0)" "python3 -c 'import sys; sys.exit(0 if $d0 > 1e-4 else 1)'"

# SIGTERM: the run saves a checkpoint, says so, exits 130; --resume finishes it.
"$MT" train $COMMON --steps 100000 --save-every 0 --out "$TMP/sig" &
pid=$!
for i in $(seq 1 200); do [ -s "$TMP/sig/metrics.jsonl" ] && break; sleep 0.05; done
kill -TERM $pid; wait $pid; rc=$?
check "SIGTERM saves a checkpoint and exits 130" "[ $rc -eq 130 ] && ls $TMP/sig/checkpoints/ | grep -q '^step-.*ckpt$'"
n=$(ls "$TMP/sig/checkpoints/" | sed -n 's/^step-0*\([0-9]*\)\.ckpt$/\1/p' | head -1)
"$MT" train $COMMON --steps $((n + 2)) --save-every 0 --out "$TMP/sig" --resume
check "... and --resume finishes the run" "[ -f $TMP/sig/model/model.safetensors ]"

# A corrupt newest checkpoint is skipped in favour of the one before it.
cp -r "$TMP/a" "$TMP/d"; cp "$TMP/a/checkpoints/step-00000020.ckpt" "$TMP/d/checkpoints/step-00000030.ckpt"
printf 'garbage' | dd of="$TMP/d/checkpoints/step-00000030.ckpt" bs=1 seek=100 conv=notrunc 2>/dev/null
"$MT" train $COMMON --steps 25 --save-every 10 --out "$TMP/d" --resume 2> "$TMP/d.err"; rc=$?
check "corrupt checkpoint skipped with a message; resumes from the one before" "[ $rc -eq 0 ] && grep -q 'step-00000030.ckpt: checksum mismatch' $TMP/d.err && [ \$(grep -c '\"loss\"' $TMP/d/metrics.jsonl) -eq 25 ]"

"$MT" train $COMMON --steps 2 --out "$TMP/e" --resume > /dev/null 2> "$TMP/e.err"; rc=$?
check "resume with no checkpoint: starts from step 0, saying so (issue 26 item 14)" "[ $rc -eq 0 ] && grep -q 'no checkpoint in .* yet; starting from step 0' $TMP/e.err && [ -f $TMP/e/model/model.safetensors ]"
"$MT" train $COMMON --steps 22 --batch 3 --out "$TMP/a" --resume > /dev/null 2> "$TMP/f.err"; rc=$?
check "resume with other settings: clear error" "[ $rc -ne 0 ] && grep -q 'resume with the same settings' $TMP/f.err"

printf '{"input": "a", "output": "b"}\n{"input": oops}\n' > "$TMP/bad.jsonl"
"$MT" train --model $M --data "$TMP/bad.jsonl" --out "$TMP/g" --quiet > /dev/null 2> "$TMP/g.err"; rc=$?
check "bad JSON line: error with file and line" "[ $rc -ne 0 ] && grep -q 'bad.jsonl:2' $TMP/g.err"
"$MT" train --model $M --method full --data "$TMP/bad.jsonl" --out "$TMP/g" --skip-bad-lines --steps 1 --quiet; rc=$?
check "--skip-bad-lines trains on the rest" "[ $rc -eq 0 ] && [ -f $TMP/g/model/model.safetensors ]"

# Continuous fine-tuning: the tuned model trains further on new data.
"$MT" train --model "$TMP/a/model" --method full --data "$TMP/bad.jsonl" --skip-bad-lines --steps 2 --out "$TMP/h" --quiet
check "a tuned model trains further" "[ -f $TMP/h/model/model.safetensors ]"

# From scratch: {"text"} data on a model made by init.
"$MT" init --like stories260k --seed 5 --out "$TMP/scratch" 2>/dev/null
python3 -c "
import json
paras = open('$A/text/tinystories/tinystories_val_first.txt').read().split('\n\n')[:40]
open('$TMP/text.jsonl','w').write(''.join(json.dumps({'text': p.strip()})+'\n' for p in paras if p.strip()))"
"$MT" train --model "$TMP/scratch" --tokenizer "$A/models/stories260K/tok512.bin" --data "$TMP/text.jsonl" --steps 30 --lr 3e-3 --log-every 1 --out "$TMP/s" --quiet
check "training from scratch lowers the loss" "python3 -c \"import json; l=[json.loads(x)['loss'] for x in open('$TMP/s/metrics.jsonl') if '\\\"loss\\\"' in x]; assert l[-1] < l[0] - 1.0, l\""
exit $fail
