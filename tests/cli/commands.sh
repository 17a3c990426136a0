#!/usr/bin/env bash
# The commands end to end: generate prints exactly llama2.c's published text on stdout (and
# nothing else), tokenize/info/eval print JSON, convert and init write loadable models, and
# bad input exits non-zero with a message naming the file.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
M="$A/models/stories260K"
TMP="$BUILD/tmp/cli"; rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
ref_text() { /usr/bin/env python3 -c "import json,sys; sys.stdout.write(json.load(open('$M/reference_outputs.json'))['cases'][$1]['text'] + '\n')"; }

"$MT" generate --model "$M/stories260K.bin" --temperature 0 -n 200 > "$TMP/g1.txt" 2> "$TMP/g1.err"
ref_text 0 > "$TMP/r1.txt"
check "generate greedy -n 200 = reference case 1" "cmp -s $TMP/g1.txt $TMP/r1.txt"
check "generate reports tokens/s on stderr" "grep -q 'tokens/s' $TMP/g1.err"
"$MT" generate --model "$M/stories260K.bin" --prompt "Once upon a time" --temperature 0 -n 64 > "$TMP/g3.txt" 2>/dev/null
ref_text 2 > "$TMP/r3.txt"
check "generate with prompt -n 64 = reference case 3" "cmp -s $TMP/g3.txt $TMP/r3.txt"
"$MT" generate --model "$M/stories260K.gguf" --prompt "Once upon a time" --temperature 0 -n 64 > "$TMP/g3g.txt" 2>/dev/null
check "same from the GGUF" "cmp -s $TMP/g3g.txt $TMP/r3.txt"
"$MT" generate --model "$M/stories260K.gguf" -c 512 --temperature 0 -n 200 > "$TMP/g1g.txt" 2>/dev/null
check "GGUF greedy -n 200 (context raised past the file's 128) = case 1" "cmp -s $TMP/g1g.txt $TMP/r1.txt"
MEMTUNE_MODEL="$M/stories260K.bin" "$MT" generate -t 0 -n 200 -q > "$TMP/g1e.txt"
check "MEMTUNE_MODEL selects the model" "cmp -s $TMP/g1e.txt $TMP/r1.txt"
"$MT" generate -t 0 -n 200 -q > "$TMP/g1d.txt"
check "bundled default model" "cmp -s $TMP/g1d.txt $TMP/r1.txt"
"$MT" generate -t 1.0 -p 0.9 -s 133742 -n 256 -q > "$TMP/g4.txt"
ref_text 3 > "$TMP/r4.txt"
check "seeded top-p sample = reference case 4" "cmp -s $TMP/g4.txt $TMP/r4.txt"
"$MT" generate -t 0.8 -k 5 -s 7 -n 30 -q > "$TMP/k1.txt"; "$MT" generate -t 0.8 -k 5 -s 7 -n 30 -q > "$TMP/k2.txt"
check "top-k sampling is reproducible with a seed" "cmp -s $TMP/k1.txt $TMP/k2.txt"

check "tokenize prints ids" "[ \"\$($MT tokenize --model $M/stories260K.bin --text 'Once upon a time')\" = '[1, 403, 407, 261, 378]' ]"
check "info prints the config" "$MT info --model $M/stories260K.bin | grep -q '\"parameters\": 260032'"
python3 -c "import json; print(json.load(open('$M/reference_loss_first_paragraph.json'))['text'], end='')" > "$TMP/para.txt"
"$MT" eval --model "$M/stories260K.bin" --text "$TMP/para.txt" > "$TMP/eval.json"
check "eval --text matches the reference nll" "python3 -c \"import json; r=json.load(open('$TMP/eval.json')); ref=json.load(open('$M/reference_loss_first_paragraph.json')); assert r['tokens']==84 and abs(r['nll']-ref['mean_nll'])<1e-4, r\""

"$MT" convert --model "$M/stories260K.bin" --out "$TMP/hf" --format hf 2>/dev/null
check "convert to hf writes config and safetensors" "[ -f $TMP/hf/config.json ] && [ -f $TMP/hf/model.safetensors ] && [ -f $TMP/hf/tokenizer.json ]"
"$MT" convert --model "$TMP/hf" --out "$TMP/m.gguf" --format gguf 2>/dev/null
"$MT" generate --model "$TMP/m.gguf" -t 0 -n 200 -q > "$TMP/gc.txt"
check "converted model generates the same text" "cmp -s $TMP/gc.txt $TMP/r1.txt"
"$MT" init --like stories260k --seed 3 --out "$TMP/init" 2>/dev/null
check "init writes a loadable model" "$MT info --model $TMP/init | grep -q '\"parameters\": 260032'"

for c in generate tokenize info eval convert init; do
  check "$c --help" "$MT $c --help | grep -q usage"
done
"$MT" generate --model "$TMP/nonexistent.bin" > /dev/null 2> "$TMP/e1"; rc=$?
check "missing model: non-zero exit and the path in the message" "[ $rc -ne 0 ] && grep -q nonexistent.bin $TMP/e1"
head -c 1000 "$M/stories260K.bin" > "$TMP/trunc.bin"; cp "$M/tok512.bin" "$TMP/tok512.bin"
"$MT" generate --model "$TMP/trunc.bin" > /dev/null 2> "$TMP/e2"; rc=$?
check "truncated model: clear error" "[ $rc -ne 0 ] && grep -q trunc.bin $TMP/e2 && grep -qi trunc $TMP/e2"
"$MT" generate --model "$M/stories260K.bin" --prompt "$(printf 'bad \xff byte')" > /dev/null 2> "$TMP/e3"; rc=$?
check "invalid UTF-8 prompt: clear error" "[ $rc -ne 0 ] && grep -qi utf-8 $TMP/e3"
"$MT" generate --bogus > /dev/null 2>&1; rc=$?
check "unknown option exits 2" "[ $rc -eq 2 ]"
exit $fail
