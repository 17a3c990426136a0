#!/usr/bin/env bash
# The kill -9 campaign: for each method (full, LoRA, memory tuning) on the bundled
# stories260K, runs killed by SIGKILL at random points are resumed (the same command with
# --resume, as a supervisor would) and must end byte for byte equal to an uninterrupted run:
# every result file (DIR/model or DIR/adapter), metrics.jsonl (its wall-clock fields aside)
# and, for memory tuning, facts.jsonl; no checkpoint temp file may be left behind. Kill points,
# drawn from FAULT_SEED (printed; set it to replay a run):
#   step  - right after a random step (the test hook MEMTUNE_TEST_KILL_AFTER_STEP);
#   write - in the middle of a random checkpoint's write (MEMTUNE_TEST_CKPT_DELAY_MS holds
#           the write open after its header; the test kills it there);
#   time  - at a random moment of the run's wall time (anywhere: setup, a step, a write,
#           the final save).
# KILLS per method: 5 for full and LoRA, 3 for memory tuning (fewer under the sanitizer
# build, which is ~3x slower); FAULT_KILLS overrides.
source "$(dirname "$0")/common.sh"
TMP="$ROOT/$BUILD/tmp/fault_kill9"; rm -rf "$TMP"; mkdir -p "$TMP"
make_data "$TMP"
seed=${FAULT_SEED:-$(( $(date +%s) % 100000 ))}
echo "FAULT_SEED=$seed"
RANDOM=$seed
exec 3>&2 2> "$TMP/shell.err" # the shell's "Killed" job notices

wait_for_file() { # PATTERN PID: true once a file matching PATTERN exists while PID runs
  for _ in $(seq 1200); do
    compgen -G "$1" > /dev/null && return 0
    kill -0 "$2" 2> /dev/null || return 1
    sleep 0.025
  done
  return 1
}

for method in full lora memory; do
  steps=24; save=5; kills=5
  [ $method = memory ] && steps=20 && save=4 && kills=3
  [ "$BUILD" != build ] && kills=$(( kills > 3 ? 2 : 1 ))
  kills=${FAULT_KILLS:-$kills}
  A=$(args_for $method "$TMP" $steps $save)
  ref="$TMP/$method-ref"
  t0=$(date +%s%N)
  train_ok $A --out "$ref" 2> "$ref.err" || { echo "FAIL $method: the uninterrupted run failed: $(tail -2 "$ref.err")"; fail=1; continue; }
  ref_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  for k in $(seq "$kills"); do
    out="$TMP/$method-$k"
    case $(( RANDOM % 3 )) in
      0) at=$(( 1 + RANDOM % (steps - 1) )); what="after step $at"
         MEMTUNE_TEST_KILL_AFTER_STEP=$at "$MT" train $A --out "$out" 2> /dev/null ;;
      1) ck=$(( save * (1 + RANDOM % (steps / save)) )); what="while writing the step-$ck checkpoint"
         MEMTUNE_TEST_CKPT_DELAY_MS=300 "$MT" train $A --out "$out" 2> /dev/null & pid=$!
         if wait_for_file "$out/checkpoints/step-$(printf %08d $ck).ckpt.tmp.*" $pid; then
           kill -9 $pid
         else
           what="$what (the run ended first)"
         fi
         wait $pid ;;
      2) ms=$(( RANDOM % (ref_ms + 1) )); what="at ${ms} ms of ~${ref_ms} ms"
         "$MT" train $A --out "$out" 2> /dev/null & pid=$!
         sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"; kill -9 $pid 2> /dev/null; wait $pid ;;
    esac
    train_ok $A --out "$out" --resume 2> "$out.err"; rc=$?
    if [ $rc -eq 0 ] && same_run "$ref" "$out" $method && ! compgen -G "$out/checkpoints/*.tmp.*" > /dev/null; then
      echo "ok   $method: killed $what, resumed = uninterrupted"
    else
      echo "FAIL $method: killed $what, resumed (exit $rc) differs from the uninterrupted run:"
      tail -3 "$out.err"; why_differ "$ref" "$out" $method; ls "$out/checkpoints"; fail=1
    fi
  done
done
exec 2>&3
exit $fail
