#!/usr/bin/env bash
# memtune serve with a client nobody here wrote: the official OpenAI npm package
# (tests/serve/client.mjs) lists models, completes, chats, streams, calls a LoRA adapter
# trained here by name, gets OpenAI error objects for bad requests and a wrong key, and the
# server's greedy text equals `memtune generate` byte for byte at 1 and 8 concurrent
# requests, base and adapter. SIGTERM then stops the server with exit code 0.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
M="$A/models/stories260K/stories260K.bin"
[ -f "$M" ] || { echo "no stories260K in $A"; exit 77; }
command -v node >/dev/null && command -v npm >/dev/null || { echo "node and npm are needed (scripts/install-deps.sh)"; exit 77; }
if [ ! -d tests/serve/node_modules/openai ]; then
  (cd tests/serve && npm ci --no-audit --no-fund --loglevel=error) || { echo "npm ci failed (offline?): no openai client"; exit 77; }
fi
TMP="$BUILD/tmp/cli_serve"; rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }

# a tiny LoRA adapter (with the stop token's row), trained here in a second
python3 -c "
import json
for i in range(8):
    print(json.dumps({'instruction': 'Who made item %d?' % i, 'output': 'Item %d was made by the memtune team.' % i}))" > "$TMP/d.jsonl"
"$MT" train --model "$M" --data "$TMP/d.jsonl" --method lora --rank 4 --alpha 8 --lr 1e-2 --batch 4 --seq-len 64 \
  --seed 3 --steps 30 --threads 2 --out "$TMP/run" --quiet || { echo "FAIL training the adapter"; exit 1; }
AD="$TMP/run/adapter"

# what the CLI says, to compare the server with
N=40
gen() { "$MT" generate --model "$M" --threads 2 --max-new-tokens $N -t 0 --no-echo -q "$@"; }
python3 - "$TMP/expect.json" "$MT" "$M" "$AD" $N <<'PY'
import json, subprocess, sys
out, mt, model, ad, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def gen(prompt, *extra):
    r = subprocess.run([mt, "generate", "--model", model, "--threads", "2", "--max-new-tokens", str(n), "-t", "0",
                        "--no-echo", "-q", "-i", prompt, *extra], capture_output=True, check=True)
    t = r.stdout.decode()
    assert t.endswith("\n")
    return t[:-1]
prompts = ["Once upon a time", "Lily and Tom went", "The cat sat", "One day, a little", "Sam had a big",
           "The sun was", "There was a dog", "Mom said"]
schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
json.dump(schema, open(out + ".schema.json", "w"))
e = {"max_tokens": n, "prompts": prompts, "base": [gen(p) for p in prompts],
     "schema": schema, "schema_text": gen("Lily has a cat.", "--json-schema", out + ".schema.json"),
     "chat_user": "Lily had a red ball.", "chat_text": gen("Lily had a red ball.\n"),
     "adapter": {"dir": ad, "prompt": "Who made item 3?\n", "text": gen("Who made item 3?\n", "--adapter", ad),
                 "base_text": gen("Who made item 3?\n")}}
json.dump(e, open(out, "w"), indent=1)
PY
[ -s "$TMP/expect.json" ] || { echo "FAIL computing the CLI's outputs"; exit 1; }

KEY="test-key-$$"
"$MT" serve --model "$M" --port 0 --no-jobs --threads 2 --parallel 8 --context 4096 --api-key "$KEY" \
  --adapter tiny="$AD" --adapter tiny2="$AD" --max-adapters 2 --grace 2 2> "$TMP/server.log" &
SERVER=$!
PORT=""
for _ in $(seq 100); do
  PORT=$(sed -n 's/^memtune serve: ready on http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$TMP/server.log")
  [ -n "$PORT" ] && break
  kill -0 $SERVER 2>/dev/null || break
  sleep 0.1
done
check "the server starts and says where it listens" "[ -n '$PORT' ]"
if [ -n "$PORT" ]; then
  BASE_URL="http://127.0.0.1:$PORT" API_KEY="$KEY" EXPECT="$TMP/expect.json" timeout 1200 node tests/serve/client.mjs || fail=1
fi
kill -TERM $SERVER 2>/dev/null
wait $SERVER; rc=$?
check "SIGTERM stops the server with exit code 0" "[ $rc -eq 0 ] && grep -q 'SIGTERM: stopping' $TMP/server.log"

# a full server answers 503 with Retry-After; SIGTERM cuts a running stream cleanly
"$MT" serve --model "$M" --port 0 --no-jobs --threads 1 --parallel 1 --queue 0 --context 4096 --grace 0.2 2> "$TMP/small.log" &
SMALL=$!
PORT=""
for _ in $(seq 100); do
  PORT=$(sed -n 's/^memtune serve: ready on http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$TMP/small.log"); [ -n "$PORT" ] && break; sleep 0.1
done
if [ -n "$PORT" ]; then
  for i in 1 2 3 4 5 6; do
    curl -s -D "$TMP/h$i" -o "$TMP/b$i" "http://127.0.0.1:$PORT/v1/completions" \
      -d '{"prompt":"Once","max_tokens":400,"ignore_eos":true,"temperature":0}' &
  done
  wait $(jobs -p | grep -v "^$SMALL$") 2>/dev/null
  check "past --parallel + --queue the server answers 503 with Retry-After" "grep -l '^HTTP/1.1 503' $TMP/h? | head -1 | xargs grep -qi '^Retry-After: 1'"
  check "and serves the rest (200)" "grep -q '^HTTP/1.1 200' $TMP/h?"
  curl -sN "http://127.0.0.1:$PORT/v1/completions" -d '{"prompt":"Once","max_tokens":4000,"ignore_eos":true,"stream":true}' > "$TMP/cut.txt" &
  CURL=$!
  for _ in $(seq 100); do [ -s "$TMP/cut.txt" ] && break; sleep 0.05; done
  kill -TERM $SMALL; wait $SMALL; rc=$?; wait $CURL
  check "SIGTERM mid-stream: the stream ends with [DONE] and the server exits 0" "[ $rc -eq 0 ] && tail -c 20 $TMP/cut.txt | grep -q 'data: \[DONE\]'"
else
  check "the small server starts" false
fi
[ $fail -eq 0 ] || { echo "--- server log"; tail -30 "$TMP/server.log"; }
exit $fail
