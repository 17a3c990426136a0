#!/usr/bin/env bash
# Inference while a fine-tuning job trains: memtune serve on the bundled stories260K answers
# N chat requests one after another (greedy, max_tokens 32) with nothing else running, then
# the same N while a memory-tuning job trains in its child process; prints requests answered
# and latency (p50, p95, max, ms) of each phase, and the job's steps/s with and without the
# requests. Usage: bench/jobs_latency.sh [N=500] [--threads T] [--train-threads T2]
# (defaults 1 and 1: on a 2-core machine, one core each). Run it on a quiet machine.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
M="models/stories260K/stories260K.bin"
N=${1:-500}
THREADS=${THREADS:-1}
TRAIN_THREADS=${TRAIN_THREADS:-1}
TMP="$BUILD/bench/jobs_latency"; rm -rf "$TMP"; mkdir -p "$TMP"
python3 - "$TMP/facts.jsonl" <<'PY'
import json, random, sys
rng = random.Random(5)
with open(sys.argv[1], "w") as f:
    for i in range(32):
        f.write(json.dumps({"input": "What is the code of locker %d?" % i, "output": "".join(rng.choice("abcdefghij0123456789") for _ in range(8))}) + "\n")
PY
"$MT" serve --model "$M" --port 0 --threads "$THREADS" --train-threads "$TRAIN_THREADS" --state-dir "$TMP/state" --quiet 2> "$TMP/server.log" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
PORT=""
for _ in $(seq 100); do
  PORT=$(sed -n 's/^memtune serve: ready on http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$TMP/server.log"); [ -n "$PORT" ] && break; sleep 0.1
done
[ -n "$PORT" ] || { echo "the server did not start"; exit 1; }
echo "memtune serve --threads $THREADS --train-threads $TRAIN_THREADS on $(nproc) cores; $N requests per phase"
python3 - "$PORT" "$N" "$TMP/facts.jsonl" <<'PY'
import json, sys, time, urllib.request
port, n, facts = sys.argv[1], int(sys.argv[2]), sys.argv[3]
base = "http://127.0.0.1:%s" % port
def call(path, body=None, method=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data, {"Content-Type": "application/json"}, method=method)
    return json.load(urllib.request.urlopen(req, timeout=120))
def ask(i):
    t = time.perf_counter()
    r = call("/v1/chat/completions", {"model": "base", "temperature": 0, "max_tokens": 32,
                                      "messages": [{"role": "user", "content": "Tell me about the dog number %d." % i}]})
    return (time.perf_counter() - t) * 1000, r["usage"]["completion_tokens"]
def phase(name):
    lat, toks, ok = [], 0, 0
    t0 = time.perf_counter()
    for i in range(n):
        try:
            ms, c = ask(i)
            lat.append(ms); toks += c; ok += 1
        except Exception as e:
            print("request failed:", e)
    wall = time.perf_counter() - t0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print("%-28s answered %d/%d, latency p50 %.1f ms, p95 %.1f ms, max %.1f ms, %.0f tokens/s" %
          (name, ok, n, q(0.5), q(0.95), lat[-1], toks / wall))
    return wall
def steps_of(job):
    ev = call("/v1/fine_tuning/jobs/%s/events?limit=100" % job)["data"]
    return max([e["data"]["step"] for e in ev if e.get("data") and "step" in e["data"]] + [0])
# upload and the job: long enough to outlast the requests
boundary = "----memtune"
body = ("--%s\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
        "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"facts.jsonl\"\r\n\r\n%s\r\n--%s--\r\n" %
        (boundary, boundary, open(facts).read(), boundary)).encode()
f = json.load(urllib.request.urlopen(urllib.request.Request(base + "/v1/files", body,
                                     {"Content-Type": "multipart/form-data; boundary=" + boundary})))
phase("idle (no job):")
job = call("/v1/fine_tuning/jobs", {"model": "base", "training_file": f["id"], "method": {"type": "memory", "memory": {
    "hyperparameters": {"steps": 100000, "check_every": 20, "save_every": 1000, "experts": 1024, "batch_size": 4, "seq_len": 48}}}})["id"]
while call("/v1/fine_tuning/jobs/" + job)["status"] != "running":
    time.sleep(0.1)
time.sleep(3)  # past the trainer's setup (loading, sampling general text)
s0, t0 = steps_of(job), time.perf_counter()
time.sleep(10)
s1, t1 = steps_of(job), time.perf_counter()
print("job alone:                   %.1f steps/s (from its events: step %d -> %d in %.0f s)" % ((s1 - s0) / (t1 - t0), s0, s1, t1 - t0))
s0, t0 = steps_of(job), time.perf_counter()
phase("while the job trains:")
s1, t1 = steps_of(job), time.perf_counter()
print("job during the requests:     %.1f steps/s (step %d -> %d in %.0f s)" % ((s1 - s0) / (t1 - t0), s0, s1, t1 - t0))
print("job status after:", call("/v1/fine_tuning/jobs/" + job)["status"])
call("/v1/fine_tuning/jobs/%s/cancel" % job, {}, "POST")
PY
