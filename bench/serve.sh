#!/usr/bin/env bash
# memtune serve under load: aggregate tokens/s and time to first token for 1, 4 and 16
# concurrent streams (128 new tokens each), batched (one forward per step for all streams)
# against --no-batch (one forward per stream per step), plus the server's CPU seconds
# (user + sys from /proc) per generated token, which a loaded machine disturbs less than
# wall time. Model: a stories15m-shaped random model (dim 288, 6 layers, 6 heads, hidden 768)
# with stories260K's 512-token vocabulary, or --model PATH.
#   bench/serve.sh [--model PATH] [--threads N]
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
MODEL="" THREADS=2
while [ $# -gt 0 ]; do case "$1" in --model) MODEL=$2; shift 2;; --threads) THREADS=$2; shift 2;; *) echo "unknown $1"; exit 2;; esac; done
TMP="$BUILD/tmp/bench_serve"; mkdir -p "$TMP"
TOK=()
if [ -z "$MODEL" ]; then
  printf '{"architectures":["LlamaForCausalLM"],"hidden_size":288,"intermediate_size":768,"num_hidden_layers":6,"num_attention_heads":6,"num_key_value_heads":6,"vocab_size":512,"max_position_embeddings":1024,"rms_norm_eps":1e-5,"tie_word_embeddings":true}\n' > "$TMP/config.json"
  "$MT" init --config "$TMP/config.json" --seed 1 --out "$TMP/s15" --format llama2c >/dev/null || exit 1
  MODEL="$TMP/s15"; [ -f "$TMP/s15" ] || MODEL=$(ls "$TMP"/s15* | head -1)
  TOK=(--tokenizer "$A/models/stories260K/tok512.bin")
fi
echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), model $MODEL, threads $THREADS"
for mode in batched sequential; do
  extra=(); [ $mode = sequential ] && extra=(--no-batch)
  "$MT" serve --model "$MODEL" "${TOK[@]}" --port 0 --no-jobs --threads "$THREADS" --parallel 16 --quiet "${extra[@]}" 2> "$TMP/server.log" &
  PID=$!
  PORT=""
  for _ in $(seq 100); do PORT=$(sed -n 's/^memtune serve: ready on http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$TMP/server.log"); [ -n "$PORT" ] && break; sleep 0.1; done
  [ -n "$PORT" ] || { cat "$TMP/server.log"; exit 1; }
  BASE_URL="http://127.0.0.1:$PORT" node bench/serve_load.mjs 2 8 > /dev/null # warm up
  for n in 1 4 16; do
    cpu0=$(awk '{print $14 + $15}' /proc/$PID/stat)
    line=$(BASE_URL="http://127.0.0.1:$PORT" node bench/serve_load.mjs $n 128)
    cpu1=$(awk '{print $14 + $15}' /proc/$PID/stat)
    tok=$(echo "$line" | sed 's/.*"tokens":\([0-9]*\).*/\1/')
    cpu_ms=$(awk -v a=$cpu0 -v b=$cpu1 -v t=$tok -v hz=$(getconf CLK_TCK) 'BEGIN {printf "%.3f", (b - a) * 1000 / hz / t}')
    echo "{\"mode\":\"$mode\",$(echo "$line" | sed 's/^{//; s/}$//'),\"server_cpu_ms_per_token\":$cpu_ms}"
  done
  kill -TERM $PID; wait $PID
done
