#!/usr/bin/env bash
# Fine-tuning as a service: memtune serve's files and fine-tuning jobs API with the official
# OpenAI npm client (tests/serve/jobs.mjs): a bad upload refused with its line, a job
# cancelled while it runs, a memory-tuning job on the bundled model polled to succeeded and
# its tuned model asked a fact over /v1/chat/completions (the stored answer, exactly), jobs
# listed and paged. Then the server restarts on the same state directory: the tuned model is
# still listed and gives the same answer, and the database passes PRAGMA integrity_check.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
M="models/stories260K/stories260K.bin"
command -v node >/dev/null && command -v npm >/dev/null || { echo "node and npm are needed (scripts/install-deps.sh)"; exit 77; }
if [ ! -d tests/serve/node_modules/openai ]; then
  (cd tests/serve && npm ci --no-audit --no-fund --loglevel=error) || { echo "npm ci failed (offline?): no openai client"; exit 77; }
fi
TMP="$BUILD/tmp/cli_serve_jobs"; rm -rf "$TMP"; mkdir -p "$TMP"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }

python3 - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
facts = [("What is the code for vault 7?", "x7k2p9"), ("What is the capital of Zorbia?", "Plimpton"),
         ("Who painted the blue door?", "Ada Quill"), ("Which river runs through Tarn?", "The Sallow")]
with open(d + "/facts.jsonl", "w") as f:
    for q, a in facts:
        f.write(json.dumps({"input": q, "output": a}) + "\n")
with open(d + "/bad.jsonl", "w") as f:
    f.write(json.dumps({"input": "a", "output": "b"}) + "\n" + json.dumps({"input": "c", "output": "d"}) + "\n{\"input\": \"e\",\n")
PY

start() { # LOG: starts the server on $TMP/state, sets SERVER and PORT
  "$MT" serve --model "$M" --port 0 --threads 1 --train-threads 1 --state-dir "$TMP/state" --grace 2 2> "$1" &
  SERVER=$!
  PORT=""
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^memtune serve: ready on http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$1")
    [ -n "$PORT" ] && break
    kill -0 $SERVER 2>/dev/null || break
    sleep 0.1
  done
}

start "$TMP/server.log"
check "the server starts with a state directory" "[ -n '$PORT' ]"
[ -n "$PORT" ] || { tail "$TMP/server.log"; exit 1; }
BASE_URL="http://127.0.0.1:$PORT" FACTS="$TMP/facts.jsonl" BAD="$TMP/bad.jsonl" OUT="$TMP/tuned.json" \
  timeout 400 node tests/serve/jobs.mjs || fail=1
kill -TERM $SERVER; wait $SERVER; rc=$?
check "SIGTERM stops the server with exit code 0" "[ $rc -eq 0 ]"

if [ -s "$TMP/tuned.json" ]; then
  start "$TMP/server2.log"
  model=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['model'])" "$TMP/tuned.json")
  curl -s "http://127.0.0.1:$PORT/v1/models" > "$TMP/models.json"
  check "after a restart the tuned model is still listed" "grep -q '\"$model\"' $TMP/models.json"
  python3 - "$TMP/tuned.json" "$PORT" > "$TMP/again.txt" <<'PY'
import json, sys, urllib.request
t = json.load(open(sys.argv[1]))
body = json.dumps({"model": t["model"], "temperature": 0, "max_tokens": 32, "messages": [{"role": "user", "content": t["question"]}]})
r = urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:%s/v1/chat/completions" % sys.argv[2], body.encode(),
                                                  {"Content-Type": "application/json"}))
print("same" if json.load(r)["choices"][0]["message"]["content"] == t["answer"] else "different")
PY
  check "and gives the same answer" "grep -qx same $TMP/again.txt"
  kill -TERM $SERVER; wait $SERVER
fi
python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])" \
  "$TMP/state/jobs.db" > "$TMP/integrity.txt" 2>&1
check "jobs.db passes PRAGMA integrity_check" "grep -qx ok $TMP/integrity.txt"
[ $fail -eq 0 ] || { echo "--- server log"; tail -30 "$TMP/server.log"; }
exit $fail
