#!/usr/bin/env bash
# Resuming after a kill, for every method (full, LoRA, memory tuning), each compared with an
# uninterrupted run (result files byte for byte, metrics.jsonl with its timing fields aside):
# - item 6: the metrics line whose averaging window spans the resume logs the same loss (the
#   window is in the checkpoint);
# - item 7: a kill -9 in the middle of a checkpoint write leaves step-N.ckpt.tmp.<pid>; the
#   next start removes it, and only it (look-alike names and other directories are kept);
# - item 14: a run killed before its first checkpoint restarts from step 0 on --resume, with
#   a message, instead of failing.
source "$(dirname "$0")/common.sh"
TMP="$ROOT/$BUILD/tmp/fault_resume"; rm -rf "$TMP"; mkdir -p "$TMP"
make_data "$TMP"

# wait_for_temp DIR PID: true once PID writes a checkpoint temp file in DIR (the write hook
# holds it open for a while)
wait_for_temp() {
  for _ in $(seq 200); do
    ls "$1"/step-*.ckpt.tmp.* > /dev/null 2>&1 && return 0
    kill -0 "$2" 2> /dev/null || return 1
    sleep 0.05
  done
  return 1
}

for method in full lora memory; do
  steps=12; [ $method = memory ] && steps=20
  A=$(args_for $method "$TMP" $steps 4)
  train_ok $A --out "$TMP/$method-ref" 2> "$TMP/$method-ref.err" || echo "reference run failed: $(tail -2 "$TMP/$method-ref.err")"

  # items 6 and 7: killed after the step-4 checkpoint, then killed again while writing step 8's
  out="$TMP/$method-a"
  MEMTUNE_TEST_KILL_AFTER_STEP=5 "$MT" train $A --out "$out" 2> /dev/null
  MEMTUNE_TEST_CKPT_DELAY_MS=5000 "$MT" train $A --out "$out" --resume 2> /dev/null & pid=$!
  if wait_for_temp "$out/checkpoints" $pid; then kill -9 $pid; fi
  wait $pid 2> /dev/null
  check "$method: a kill during a checkpoint write leaves its temp file (the setup of this test)" \
    "ls $out/checkpoints/step-*.ckpt.tmp.$pid > /dev/null 2>&1"
  mkdir -p "$out/other"
  touch "$out/checkpoints/step-00000008.ckpt.tmp.x1" "$out/checkpoints/notes.tmp.1" "$out/other/step-00000008.ckpt.tmp.1"
  train_ok $A --out "$out" --resume 2> "$out.err"
  check "$method: the resume removed the dead write's temp file" "! ls $out/checkpoints/step-*.ckpt.tmp.[0-9]* > /dev/null 2>&1"
  check "$method: ... and said so" "grep -q 'removed 1 unfinished checkpoint file' $out.err"
  check "$method: ... and nothing else (look-alike names, other directories)" \
    "[ -f $out/checkpoints/step-00000008.ckpt.tmp.x1 ] && [ -f $out/checkpoints/notes.tmp.1 ] && [ -f $out/other/step-00000008.ckpt.tmp.1 ]"
  check "$method: killed twice and resumed = uninterrupted (files and metrics)" "same_run $TMP/$method-ref $out $method" || why_differ "$TMP/$method-ref" "$out" $method

  # item 14: killed before any checkpoint
  out="$TMP/$method-b"
  MEMTUNE_TEST_KILL_AFTER_STEP=2 "$MT" train $A --out "$out" 2> /dev/null
  check "$method: killed at step 2, before the first checkpoint (setup)" "[ ! -e $out/checkpoints/step-00000004.ckpt ]"
  train_ok $A --out "$out" --resume 2> "$out.err"; rc=$?
  check "$method: --resume without a checkpoint starts from step 0 and finishes" "[ $rc -eq 0 ]"
  check "$method: ... saying so" "grep -q 'starting from step 0' $out.err"
  check "$method: ... and ends as the uninterrupted run" "same_run $TMP/$method-ref $out $method" || why_differ "$TMP/$method-ref" "$out" $method
done

# torn checkpoints only: started over, the torn files removed (a higher step number would
# outrank the new run's checkpoints when they are pruned)
out="$TMP/torn"
A=$(args_for full "$TMP" 12 4)
MEMTUNE_TEST_KILL_AFTER_STEP=9 "$MT" train $A --out "$out" 2> /dev/null
for f in "$out"/checkpoints/step-*.ckpt; do printf 'torn' | dd of="$f" bs=1 seek=100 conv=notrunc 2> /dev/null; done
train_ok $A --out "$out" --resume 2> "$out.err"
check "only torn checkpoints: --resume starts over and ends as the uninterrupted run" "same_run $TMP/full-ref $out full"
check "... removing the torn ones and saying so" "grep -q 'removed 2 invalid' $out.err"

# old checkpoints (before the averaging window was saved) still resume
out="$TMP/old"
MEMTUNE_TEST_KILL_AFTER_STEP=4 "$MT" train $A --out "$out" 2> /dev/null
python3 - "$out/checkpoints/step-00000004.ckpt" <<'PY'
import json, struct, sys
p = sys.argv[1]; b = open(p, "rb").read()
jl, nb, pl = struct.unpack_from("<IIQ", b, 8)
st = json.loads(b[32:32 + jl]); st.pop("log_window_loss"); st.pop("log_window_steps")
js = json.dumps(st, separators=(",", ":")).encode(); payload = b[32 + jl:]
h = 0xcbf29ce484222325
for c in js + payload:
    h = ((h ^ c) * 0x100000001b3) & 0xffffffffffffffff
open(p, "wb").write(b"MTCKPT01" + struct.pack("<IIQQ", len(js), nb, pl, h) + js + payload)
PY
train_ok ${A/--quiet/} --out "$out" --resume 2> "$out.err"; rc=$?
check "a checkpoint without the averaging window (older memtune) still resumes" "[ $rc -eq 0 ] && grep -q 'resumed from' $out.err"
exit $fail
