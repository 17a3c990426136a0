#!/usr/bin/env bash
# The bounded abuse run (not part of `make test`: about a minute on 2 cores): memtune serve on
# loopback gets 1,000 malformed or oversized requests and 100 clients that hang up
# mid-stream (tests/serve/abuse.mjs); it must not crash, must answer every well-formed
# request in the run correctly, and its RSS afterwards must be within 10% of before.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
A=${MEMTUNE_ASSETS:-../shared/assets}
M="$A/models/stories260K/stories260K.bin"
[ -d tests/serve/node_modules/openai ] || (cd tests/serve && npm ci --no-audit --no-fund --loglevel=error) || exit 77
LOG="$BUILD/tmp/serve_abuse.log"; mkdir -p "$(dirname "$LOG")"
"$BUILD/memtune" serve --model "$M" --port 0 --no-jobs --threads 2 --parallel 8 --api-key abuse --quiet 2> "$LOG" &
SERVER=$!
PORT=""
for _ in $(seq 100); do
  PORT=$(sed -n 's/^memtune serve: ready on http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$LOG"); [ -n "$PORT" ] && break; sleep 0.1
done
[ -n "$PORT" ] || { echo "FAIL: the server did not start"; cat "$LOG"; exit 1; }
rss() { awk '/^VmRSS/ {print $2}' /proc/$SERVER/status; }
# warm up first (the first requests allocate the contexts' scratch), then measure
curl -s -H 'Authorization: Bearer abuse' "http://127.0.0.1:$PORT/v1/completions" -d '{"prompt":"Once","max_tokens":8}' > /dev/null
BASE_URL="http://127.0.0.1:$PORT" API_KEY=abuse node tests/serve/abuse.mjs > /dev/null 2>&1 # one round to settle
before=$(rss)
BASE_URL="http://127.0.0.1:$PORT" API_KEY=abuse timeout 600 node tests/serve/abuse.mjs; rc=$?
sleep 1
after=$(rss)
alive=0; kill -0 $SERVER 2>/dev/null && alive=1
kill -TERM $SERVER; wait $SERVER; code=$?
echo "RSS before ${before} kB, after ${after} kB; server alive: $alive; exit code after SIGTERM: $code"
ok=$(( rc == 0 && alive == 1 && code == 0 && after * 10 <= before * 11 ))
[ $ok -eq 1 ] && echo "abuse run: PASS" || { echo "abuse run: FAIL"; exit 1; }
