#!/usr/bin/env bash
# Fine-tuning jobs survive kill -9 of the server. A memory-tuning job on the bundled
# stories260K runs once uninterrupted (the reference); then, in each of RUNS runs, a fresh
# server gets the same upload and job and is SIGKILLed at random moments of the job (1 or 2
# times, drawn from FAULT_SEED, printed) and restarted on the same state directory. Every
# run must end with the job succeeded, its adapter, facts.jsonl and metrics (timing aside)
# byte for byte the reference's, its upload and its one job still there, the trainer gone
# with each killed server (its run lock free), and jobs.db passing PRAGMA integrity_check.
# Then the trainer itself is killed: the job is retried from its checkpoint and still ends
# identical; with --job-retries 0 the same kill fails the job with the reason.
# RUNS: FAULT_KILLS, default 3 (10 for the full measurement).
source "$(dirname "$0")/common.sh"
command -v curl > /dev/null || { echo "curl is needed"; exit 77; }
TMP="$ROOT/$BUILD/tmp/fault_jobs_kill"; rm -rf "$TMP"; mkdir -p "$TMP"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
seed=${FAULT_SEED:-$(( $(date +%s) % 100000 ))}
echo "FAULT_SEED=$seed"
RANDOM=$seed
runs=${FAULT_KILLS:-3}
exec 3>&2 2> "$TMP/shell.err" # the shell's "Killed" job notices

python3 - "$TMP/facts.jsonl" <<'PY'
import json, random, sys
rng = random.Random(11)
with open(sys.argv[1], "w") as f:
    for i in range(4):
        f.write(json.dumps({"input": "What is the code of locker %d?" % i, "output": "".join(rng.choice("abcdefghij0123456789") for _ in range(6))}) + "\n")
PY
JOB='{"model":"base","training_file":"FILE","seed":5,"method":{"type":"memory","memory":{"hyperparameters":
  {"steps":100,"save_every":10,"experts":256,"expert_k":4,"expert_heads":2,"batch_size":2,"seq_len":32}}}}'

start() { # STATE LOG [options]: starts a server on STATE; sets SERVER and PORT
  local state=$1 log=$2; shift 2
  "$MT" serve --model "$M" --port 0 --threads 1 --train-threads 1 --state-dir "$state" --grace 1 "$@" 2>> "$log" &
  SERVER=$!
  PORT=""
  for _ in $(seq 200); do
    PORT=$(sed -n 's/^memtune serve: ready on http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$log" | tail -1)
    [ -n "$PORT" ] && kill -0 $SERVER 2> /dev/null && curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && return 0
    sleep 0.05
  done
  return 1
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin).get(sys.argv[1]))" "$1"; }
upload() { curl -s "http://127.0.0.1:$PORT/v1/files" -F purpose=fine-tune -F file=@"$TMP/facts.jsonl" | field id; }
create() { curl -s "http://127.0.0.1:$PORT/v1/fine_tuning/jobs" -H 'Content-Type: application/json' -d "${JOB/FILE/$1}" | field id; }
status() { curl -s "http://127.0.0.1:$PORT/v1/fine_tuning/jobs/$1" | field status; }
wait_end() { # JOB: waits (up to 5 minutes) until the job has ended; prints its status
  local s
  for _ in $(seq 1500); do
    s=$(status "$1")
    case $s in succeeded|failed|cancelled) echo "$s"; return ;; esac
    sleep 0.2
  done
  echo "$s (timed out)"
}
newest() { # RUN_DIR: the step of its newest checkpoint (0: none)
  local n
  n=$(ls "$1/checkpoints" 2> /dev/null | sed -n 's/^step-0*\([0-9][0-9]*\)\.ckpt$/\1/p' | sort -n | tail -1)
  echo "${n:-0}"
}
integrity() { python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])" "$1/jobs.db"; }

# the uninterrupted job
start "$TMP/ref" "$TMP/ref.log" || { echo "FAIL the server does not start"; exit 1; }
f=$(upload); t0=$(date +%s%N); ref=$(create "$f")
st=$(wait_end "$ref"); ref_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
kill -TERM $SERVER; wait $SERVER
check "the uninterrupted job succeeds (${ref_ms} ms)" "[ '$st' = succeeded ]"
[ "$st" = succeeded ] || { tail -5 "$TMP/ref.log"; exit 1; }
REF="$TMP/ref/jobs/$ref"

total_kills=0
for k in $(seq "$runs"); do
  state="$TMP/run$k"; log="$TMP/run$k.log"
  start "$state" "$log" || { echo "FAIL run $k: the server does not start"; fail=1; continue; }
  f=$(upload); job=$(create "$f")
  kills=$(( 1 + RANDOM % 2 )); what=""; trainer_gone=1; hit=0
  for _ in $(seq $kills); do
    # where: soon after the (re)start (queued, loading, before any step), or a random moment
    # after a random checkpoint later than the newest one (mid-interval, or mid-write)
    if [ $(( RANDOM % 4 )) = 0 ]; then
      ms=$(( 50 + RANDOM % 600 )); sleep "$(printf '0.%03d' $((ms % 1000)))"; where="${ms} ms after the start"
    else
      have=$(newest "$state/jobs/$job"); want=$(( (have / 10 + 1 + RANDOM % 3) * 10 ))
      [ $want -ge 100 ] && want=90
      for _ in $(seq 2400); do [ "$(newest "$state/jobs/$job")" -ge $want ] && break; sleep 0.025; done
      ms=$(( RANDOM % 400 )); sleep "$(printf '0.%03d' $ms)"; where="${ms} ms after checkpoint $want"
    fi
    was=$(status "$job")
    case $was in succeeded|failed|cancelled) break ;; esac # ended first: no kill
    kill -9 $SERVER; wait $SERVER 2> /dev/null
    hit=$((hit + 1)); total_kills=$((total_kills + 1))
    what="$what $where ($was);"
    # the trainer dies with the server: its lock on the run directory is free at once
    flock -w 3 "$state/jobs/$job/lock" true || trainer_gone=0
    start "$state" "$log" || break
  done
  st=$(wait_end "$job")
  files=$(curl -s "http://127.0.0.1:$PORT/v1/files" | python3 -c "import json,sys; print(len(json.load(sys.stdin)['data']))")
  jobs=$(curl -s "http://127.0.0.1:$PORT/v1/fine_tuning/jobs" | python3 -c "import json,sys; print(len(json.load(sys.stdin)['data']))")
  kill -TERM $SERVER; wait $SERVER
  if [ "$st" = succeeded ] && same_run "$REF" "$state/jobs/$job" memory && [ "$files" = 1 ] && [ "$jobs" = 1 ] &&
     [ $trainer_gone = 1 ] && [ "$(integrity "$state")" = ok ]; then
    echo "ok   run $k: server killed $hit time(s) (${what:- none: the job ended first}) and restarted: succeeded, identical to the uninterrupted job"
  else
    echo "FAIL run $k: killed at$what: $st, $files file(s), $jobs job(s), trainer gone $trainer_gone, integrity $(integrity "$state")"
    why_differ "$REF" "$state/jobs/$job" memory; tail -5 "$log"; fail=1
  fi
done

echo "     $total_kills kills of the server during a queued or running job in $runs runs"
check "kills landed during jobs" "[ $total_kills -gt 0 ]"

# the trainer dies (not the server): retried from its checkpoint, still identical
trainer_kill() { # STATE LOG [options]: starts a job, kills its trainer once it has a checkpoint; sets job
  start "$1" "$2" "${@:3}" || return 1
  local f pid
  f=$(upload); job=$(create "$f")
  for _ in $(seq 600); do compgen -G "$1/jobs/$job/checkpoints/step-*.ckpt" > /dev/null && break; sleep 0.05; done
  pid=$(sed -n "s/.*job $job started (trainer pid \([0-9]*\)).*/\1/p" "$2" | tail -1)
  [ -n "$pid" ] && kill -9 "$pid"
}
trainer_kill "$TMP/child" "$TMP/child.log"
st=$(wait_end "$job")
events=$(curl -s "http://127.0.0.1:$PORT/v1/fine_tuning/jobs/$job/events?limit=100")
kill -TERM $SERVER; wait $SERVER
check "a killed trainer is retried from its checkpoint: succeeded, identical" \
  "[ '$st' = succeeded ] && same_run '$REF' '$TMP/child/jobs/$job' memory && echo '$events' | grep -q 'signal 9.*retrying'"
trainer_kill "$TMP/noretry" "$TMP/noretry.log" --job-retries 0
st=$(wait_end "$job")
err=$(curl -s "http://127.0.0.1:$PORT/v1/fine_tuning/jobs/$job" | python3 -c "import json,sys; print((json.load(sys.stdin)['error'] or {}).get('message'))")
kill -TERM $SERVER; wait $SERVER
check "with --job-retries 0 it fails, saying why ($err)" "[ '$st' = failed ] && echo '$err' | grep -q 'signal 9'"
exec 2>&3
exit $fail
