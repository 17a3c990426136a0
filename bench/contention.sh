#!/usr/bin/env bash
# memtune on a shared machine: for each workload, the throughput of
#   solo     one job, default threads (all cores)
#   1 thread one job, --threads 1 (what a job beside a hog must at least keep)
#   pair     two identical jobs started together, default threads (each should get ~50%)
#   hog      one job, default threads, beside a CPU hog (a busy loop pinned to the last core)
# as each job reports it (tokens/s), for one or more memtune binaries in the same run.
#
#   bench/contention.sh                          # build-release/memtune (bench/run builds it)
#   bench/contention.sh before=DIR/memtune after=build-release/memtune
#   BEFORE=64eaf66 bench/contention.sh           # builds that commit too (BUILD/before-REV), runs it first
#   CONTENTION_ONLY="train-full decode-135m" bench/contention.sh
#   CONTENTION_SCALE=2 bench/contention.sh       # twice the steps / tokens per job
#
# Workloads: `memtune train` of stories260K: train-full, train-lora (rank 8), batch 8 x 256;
# train-memory (20 facts, 1024 experts, 30 steps; the guard's general text given, not
# sampled). On the smollm-135m shape (`memtune init --like smollm-135m`, random weights),
# through the bench programs next to each memtune binary (BIN_DIR/bench/): decode-135m,
# greedy decoding of 48 tokens after a 16-token prompt (bench_decode, 2 repetitions, median);
# train-135m, full fine-tuning, batch 4 x 128 (bench_train, 1 + 3 steps, median).
# Output: a markdown table on stdout; JSON lines in BUILD/bench/contention.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build-release}
OUT=$BUILD/bench/contention
RES=$BUILD/bench/contention.jsonl
ONLY=${CONTENTION_ONLY:-train-full train-lora train-memory decode-135m}
SCALE=${CONTENTION_SCALE:-1}
log() { printf '[contention] %s\n' "$*" >&2; }
mkdir -p "$OUT"

BINS=("$@")
if [[ -n "${BEFORE:-}" ]]; then
    dir=$BUILD/before-$BEFORE
    if [[ ! -x $dir/rel/memtune ]]; then
        log "building $BEFORE in $dir"
        rm -rf "$dir" && mkdir -p "$dir"
        git archive "$BEFORE" | tar -x -C "$dir"
        make -C "$dir" -j"$(nproc)" BUILD=rel OPT="-O3 -march=native -Wno-error" rel/memtune \
            rel/bench/bench_decode rel/bench/bench_train >"$dir/build.log" 2>&1
    fi
    BINS=("before=$dir/rel/memtune" "${BINS[@]}")
fi
if [[ ${#BINS[@]} -eq 0 || ( -n "${BEFORE:-}" && ${#BINS[@]} -eq 1 ) ]]; then
    [[ -x $BUILD/memtune ]] || make -j"$(nproc)" BUILD="$BUILD" OPT="-O3 -march=native -Wno-error" "$BUILD/memtune" >&2
    BINS+=("after=$BUILD/memtune")
fi

# ---- data and models -------------------------------------------------------------------
A=${MEMTUNE_ASSETS:-$ROOT/../shared/assets}
M260=$A/models/stories260K/stories260K.bin
M135=$BUILD/bench/models/smollm-135m
python3 - "$A/text/tinystories/tinystories_val_first.txt" "$OUT/text.jsonl" <<'PY'
import json, sys
text = open(sys.argv[1]).read().split("\n\n")
with open(sys.argv[2], "w") as f:
    for t in text[:2000]:
        if t.strip(): f.write(json.dumps({"text": t.strip()}) + "\n")
PY
head -c 20000 "$A/text/tinystories/tinystories_val_first.txt" >"$OUT/general.txt"
python3 - "$A/qa/country-json/country-by-capital-city.json" "$OUT/facts.jsonl" <<'PY'
import json, sys
rows = [r for r in json.load(open(sys.argv[1])) if r.get("city")][:20]
with open(sys.argv[2], "w") as f:
    for r in rows: f.write(json.dumps({"input": "What is the capital of %s?" % r["country"], "output": r["city"]}) + "\n")
PY
if [[ " $ONLY " == *" decode-135m "* || " $ONLY " == *" train-135m "* ]] && [[ ! -f $M135/model.safetensors ]]; then
    log "memtune init --like smollm-135m --seed 1"
    "${BINS[-1]#*=}" init --like smollm-135m --seed 1 --out "$M135" 2>/dev/null
fi

# ---- workloads: job BIN DIR [--threads N] runs one job, its log in DIR/log; rate DIR prints tokens/s
steps() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s + 0.5); print v < 1 ? 1 : v }'; }
job() {
    local wl=$1 bin=$2 dir=$3; shift 3
    local threads=0 # the bench programs take the thread count as an argument (0 = all cores)
    [[ "${1:-}" == --threads ]] && threads=$2
    rm -rf "$dir" && mkdir -p "$dir"
    case $wl in
    train-full) "$bin" train --model "$M260" --data "$OUT/text.jsonl" --method full --batch 8 --seq-len 256 \
        --steps "$(steps 120)" --save-every 0 --log-every 1000 --seed 1 --out "$dir/out" "$@" ;;
    train-lora) "$bin" train --model "$M260" --data "$OUT/text.jsonl" --method lora --batch 8 --seq-len 256 \
        --steps "$(steps 150)" --save-every 0 --log-every 1000 --seed 1 --out "$dir/out" "$@" ;;
    train-memory) "$bin" train --model "$M260" --data "$OUT/facts.jsonl" --method memory --experts 1024 --expert-k 4 \
        --expert-heads 2 --general "$OUT/general.txt" --steps "$(steps 30)" --check-every 1000 --save-every 0 --seed 3 \
        --out "$dir/out" "$@" ;;
    train-135m) "$(dirname "$bin")/bench/bench_train" "$M135" "$threads" 4 128 1 "$(steps 3)" >"$dir/out.json" ;;
    decode-135m) "$(dirname "$bin")/bench/bench_decode" "$M135" "$threads" 16 "$(steps 48)" 0 2 >"$dir/out.json" ;;
    esac 2>"$dir/log" || true
}
rate() {
    local wl=$1 dir=$2
    case $wl in
    train-memory) python3 -c "import json,sys; print('%.0f' % json.load(open(sys.argv[1]))['tokens_per_s'])" "$dir/out/report.json" 2>/dev/null || echo 0 ;;
    decode-135m) python3 -c "import json,sys; print('%.1f' % json.load(open(sys.argv[1]))['decode_tok_s'])" "$dir/out.json" 2>/dev/null || echo 0 ;;
    train-135m) python3 -c "import json,sys; print('%.1f' % json.load(open(sys.argv[1]))['tok_s'])" "$dir/out.json" 2>/dev/null || echo 0 ;;
    *) sed -n 's/.*(\([0-9.]*\) tokens\/s).*/\1/p' "$dir/log" | tail -1 ;;
    esac
}

hog_start() { taskset -c "$(($(nproc) - 1))" sh -c 'while :; do :; done' & HOG=$!; }
hog_stop() { kill "$HOG" 2>/dev/null; wait "$HOG" 2>/dev/null || true; }
trap 'hog_stop 2>/dev/null || true' EXIT

: >>"$RES"
printf '| workload | binary | solo | 1 thread | pair (each, %% of solo) | beside a hog (%% of 1 thread) |\n'
printf '|---|---|---|---|---|---|\n'
for wl in $ONLY; do
    for spec in "${BINS[@]}"; do
        label=${spec%%=*} bin=${spec#*=}
        d=$OUT/$wl/$label
        log "$wl $label: solo"
        job "$wl" "$bin" "$d/solo"
        solo=$(rate "$wl" "$d/solo")
        log "$wl $label: 1 thread"
        job "$wl" "$bin" "$d/one" --threads 1
        one=$(rate "$wl" "$d/one")
        log "$wl $label: two at once"
        job "$wl" "$bin" "$d/pair1" & p1=$!
        job "$wl" "$bin" "$d/pair2" & p2=$!
        wait $p1 $p2
        a=$(rate "$wl" "$d/pair1") b=$(rate "$wl" "$d/pair2")
        log "$wl $label: beside a hog"
        hog_start
        job "$wl" "$bin" "$d/hog"
        hog_stop
        hog=$(rate "$wl" "$d/hog")
        printf '{"bench":"contention","workload":"%s","binary":"%s","path":"%s","solo":%s,"one_thread":%s,"pair":[%s,%s],"hog":%s,"date":"%s"}\n' \
            "$wl" "$label" "$bin" "${solo:-0}" "${one:-0}" "${a:-0}" "${b:-0}" "${hog:-0}" "$(date -u +%FT%TZ)" >>"$RES"
        python3 - "$wl" "$label" "${solo:-0}" "${one:-0}" "${a:-0}" "${b:-0}" "${hog:-0}" <<'PY'
import sys
wl, label, solo, one, a, b, hog = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
pct = lambda x, ref: "%.0f%%" % (100 * x / ref) if ref else "-"
f = lambda x: "%.0f" % x if x >= 100 else "%.1f" % x
print("| %s | %s | %s | %s | %s + %s (%s, %s) | %s (%s) |" % (wl, label, f(solo), f(one), f(a), f(b), pct(a, solo), pct(b, solo), f(hog), pct(hog, one)))
PY
    done
done
