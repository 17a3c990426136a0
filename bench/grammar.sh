#!/usr/bin/env bash
# Constrained decoding cost on the smollm-135m shape (random weights, SmolLM's byte-level
# BPE tokenizer, 49k tokens): CPU time per token of the forward and of sampling with the
# grammar mask, unconstrained vs a JSON Schema vs the nba_roster SQL grammar (one thread,
# thread CPU clock: valid on a loaded machine). Random weights make the model pick almost
# uniformly among the allowed tokens, the worst case for the mask (long strings, every
# token allowed). usage: bench/grammar.sh [tokens=128] [model=smollm-135m preset]
set -eu
cd "$(dirname "$0")/.."
N=${1:-128}
A=${MEMTUNE_ASSETS:-../shared/assets}
OUT=${BENCH_OUT:-build/bench-grammar}
mkdir -p "$OUT"
make -s build/memtune build/bench/bench_grammar
MODEL=${2:-$OUT/smollm-135m}
if [ ! -e "$MODEL" ]; then # the preset's shape with the tokenizer.json's 49153 tokens
  build/memtune init --like smollm-135m --out "$OUT/preset" 2> /dev/null
  sed 's/"vocab_size": *49152/"vocab_size": 49153/' "$OUT/preset/config.json" > "$OUT/config.json"
  rm -rf "$OUT/preset"
  build/memtune init --config "$OUT/config.json" --out "$MODEL" 2> /dev/null
fi
build/memtune data --grammar --db "$A/text2sql/nba_roster/nba_roster.db" --out "$OUT/nba.gbnf"
build/bench/bench_grammar "$MODEL" "$A/tokenizers/smollm/tokenizer.json" "$N" \
  json-nested=tests/fixtures/schemas/nested.json json-strings=tests/fixtures/schemas/strings.json sql-nba="$OUT/nba.gbnf"
