#!/usr/bin/env bash
# Quantized GGUF from the command line: convert --format gguf --type writes each type (the
# file shrinks as the type says), the file loads again and scores (eval) within a small
# margin of the F32 model, greedy generation runs from it, and --type outside GGUF is refused.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
M="$A/models/stories260K/stories260K.bin"
[ -f "$M" ] || { echo "no stories260K in $A"; exit 77; }
TMP="$BUILD/tmp/cli_quant"; rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
python3 -c "
import json
for i in range(6):
    print(json.dumps({'instruction': 'Who made item %d?' % i, 'output': 'Item %d was made by Lily.' % i}))" > "$TMP/d.jsonl"
nll() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['nll'])"; }
base=$("$MT" eval --model "$M" --data "$TMP/d.jsonl" --threads 2 | nll)
for t in f32 f16 q8_0 q6_k q4_k q4_0; do
  "$MT" convert --model "$M" --out "$TMP/m.$t.gguf" --format gguf --type $t 2> "$TMP/$t.err"
  check "convert --type $t writes a GGUF" "grep -q 'wrote .*$t' $TMP/$t.err && [ -s $TMP/m.$t.gguf ]"
  eval "nll_$t=\$(\"\$MT\" eval --model \"\$TMP/m.\$t.gguf\" --data \"\$TMP/d.jsonl\" --threads 2 | nll)"
done
check "F32 GGUF scores what the .bin scores ($nll_f32 vs $base)" "python3 -c 'assert abs($nll_f32 - $base) <= 1e-5 * abs($base)'"
check "f16 and q8_0 score within 1% ($nll_f16, $nll_q8_0 vs $base)" "python3 -c 'assert abs($nll_f16 - $base) < 0.01 * $base and abs($nll_q8_0 - $base) < 0.01 * $base'"
check "q6_k within 3%, q4_k and q4_0 within 15% ($nll_q6_k, $nll_q4_k, $nll_q4_0 vs $base)" "python3 -c 'assert abs($nll_q6_k - $base) < 0.03 * $base and abs($nll_q4_k - $base) < 0.15 * $base and abs($nll_q4_0 - $base) < 0.15 * $base'"
check "smaller types make smaller files" "[ \$(stat -c %s $TMP/m.q4_0.gguf) -lt \$(stat -c %s $TMP/m.q8_0.gguf) ] && [ \$(stat -c %s $TMP/m.q8_0.gguf) -lt \$(stat -c %s $TMP/m.f16.gguf) ] && [ \$(stat -c %s $TMP/m.f16.gguf) -lt \$(stat -c %s $TMP/m.f32.gguf) ]"
"$MT" generate --model "$TMP/m.q8_0.gguf" --prompt "Once upon a time" --max-new-tokens 16 --temperature 0 > "$TMP/gen.txt" 2> "$TMP/gen.err"
"$MT" generate --model "$TMP/m.f32.gguf" --prompt "Once upon a time" --max-new-tokens 16 --temperature 0 > "$TMP/gen32.txt" 2>/dev/null
check "greedy generation from the Q8_0 GGUF runs (same text as F32: $(cmp -s $TMP/gen.txt $TMP/gen32.txt && echo yes || echo no))" "[ -s $TMP/gen.txt ]"
"$MT" convert --model "$M" --out "$TMP/hf" --format hf --type q8_0 2> "$TMP/bad.err"; rc=$?
check "--type with --format hf is refused" "[ $rc -ne 0 ] && grep -q 'applies to a model written as --format gguf' $TMP/bad.err"
"$MT" convert --model "$M" --out "$TMP/x.gguf" --format gguf --type q3_k 2> "$TMP/bad2.err"; rc=$?
check "an unknown --type is refused naming it" "[ $rc -ne 0 ] && grep -q \"unknown GGUF tensor type 'q3_k'\" $TMP/bad2.err"
exit $fail
