#!/usr/bin/env bash
# Bad input from the command line (issue 26; the table is docs/bad-input.md): every numeric
# option out of range, NaN or inf exits 2 with one message naming the option, the value and
# the allowed range, before any model is loaded; a run with a non-finite learning rate saves
# nothing; a billion-token --seq-len is refused before anything is allocated; HF config
# fields say what is wrong; the SQL sandbox bounds one long printf() and names what a PRAGMA
# function is refused for; eval checks sizes up front; unwritable outputs give errno's reason.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
M="$A/models/stories260K/stories260K.bin"
[ -f "$M" ] || { echo "no stories260K in $A"; exit 77; }
TMP="$BUILD/tmp/cli_bad_input"; rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }

# a 4 GB address-space cap, so that a refusal that came after a large allocation fails here
# rather than swapping; not under ASan, whose shadow memory needs terabytes of address space
VMEM=4000000
ldd "$MT" 2>/dev/null | grep -q libasan && VMEM=
# expect_refused "expected stderr text" memtune-args...: exit 2 (or $RC), the text on stderr,
# nothing on stdout, within 10 s (a refused option must not load or allocate anything first)
expect_refused() {
  local want=$1; shift
  local start=$SECONDS
  ( [ -n "$VMEM" ] && ulimit -v "$VMEM"; timeout 60 "$MT" "$@" ) > "$TMP/out" 2> "$TMP/err"; local rc=$?
  if [ $rc -eq "${RC:-2}" ] && grep -qF -- "$want" "$TMP/err" && [ ! -s "$TMP/out" ] && [ $((SECONDS - start)) -le 10 ]; then
    echo "ok   $* -> $want"
  else
    echo "FAIL $* -> rc $rc, $((SECONDS - start)) s, stderr: $(head -c 300 "$TMP/err"), wanted: $want"; fail=1
  fi
}

printf '{"text": "Once upon a time there was a cat."}\n' > "$TMP/d.jsonl"
printf '{"input": "Who was Lily?", "output": "A girl."}\n' > "$TMP/facts.jsonl"

# every command's option table gives each numeric option a range (cli_parse refuses to run
# a command whose table does not, so a new option cannot forget it)
for c in generate tokenize info eval data convert train merge init; do
  check "$c: every numeric option has a range" "$MT $c --help > /dev/null 2> $TMP/e_help && [ ! -s $TMP/e_help ]"
done

# generate
expect_refused "--temperature inf: must be a finite number in [0, 1000]" generate -m "$M" -t inf
expect_refused "--temperature nan: must be a finite number in [0, 1000]" generate -m "$M" -t nan
expect_refused "--top-p nan: must be a finite number in [0, 1]" generate -m "$M" --top-p nan
expect_refused "--top-p 1.5: must be a finite number in [0, 1]" generate -m "$M" -p 1.5
expect_refused "-n -1: must be an integer in [1, 2147483647]" generate -m "$M" -n -1
expect_refused "--max-new-tokens -5: must be an integer in [0, 2147483647]" generate -m "$M" --max-new-tokens -5
expect_refused "--threads -1: must be an integer in [0, 1024]" generate -m "$M" --threads -1
expect_refused "--threads 10000: must be an integer in [0, 1024]" generate -m "$M" --threads 10000
expect_refused "-c -1: must be an integer in [0, 4194304]" generate -m "$M" -c -1
expect_refused "--top-k -1: must be an integer in [0, 2147483647]" generate -m "$M" -k -1
expect_refused "-s -1: must be an integer in [0, 18446744073709551615]" generate -m "$M" -s -1
expect_refused "-n abc: must be an integer in [1, 2147483647]" generate -m "$M" -n abc
# train (the library's mt_train_options_validate, called before the model is loaded)
T="train -m $M --data $TMP/d.jsonl --out $TMP/run --quiet --steps 1"
expect_refused "--lr inf: must be a finite number in [0, 10]" $T --lr inf
expect_refused "--weight-decay nan: must be a finite number in [0, 10]" $T --weight-decay nan
expect_refused "--clip nan: must be a finite number in [0, 1000000]" $T --clip nan
expect_refused "--save-every -1: must be an integer in [0, 2147483647]" $T --save-every -1
expect_refused "--batch 0: must be an integer in [1, 65536]" $T --batch 0
expect_refused "--threads 10000: must be an integer in [0, 1024]" $T --threads 10000
expect_refused "--rank 0: must be an integer in [1, 65536]" $T --method lora --rank 0
expect_refused "--dropout 1: must be a finite number in [0, 0.99]" $T --method lora --dropout 1
expect_refused "--experts -2: must be an integer in [-1, 67108864]" train -m "$M" --data "$TMP/facts.jsonl" --out "$TMP/mem" --quiet --experts -2
expect_refused "--tau nan" train -m "$M" --data "$TMP/facts.jsonl" --out "$TMP/mem" --quiet --tau nan
# a billion-token row: refused against the model's context before any buffer is sized (it
# used to ask for ~16 GB first; the 4 GB cap above turns that into a failure)
expect_refused "--seq-len 1000000000: must be an integer in [0, 4194304]" $T --seq-len 1000000000
# past the model's own context: refused once the model is loaded, still before allocating
RC=1 expect_refused "train: --seq-len 100000: must be an integer in [0, 512]" $T --seq-len 100000
check "a refused run leaves no model and no metrics" "[ ! -e $TMP/run/model ] && [ ! -e $TMP/run/metrics.jsonl ]"
# eval, info, data
expect_refused "--sql-timeout -1: must be a finite number in [0.001, 86400]" eval -m "$M" --data "$TMP/facts.jsonl" --sql-timeout -1
expect_refused "--sql-steps 0: must be an integer in [1000, 1000000000000000]" eval -m "$M" --data "$TMP/facts.jsonl" --sql-steps 0
expect_refused "--max-new-tokens -1: must be an integer in [1, 2147483647]" eval -m "$M" --data "$TMP/facts.jsonl" --max-new-tokens -1
expect_refused "--context -1: must be an integer in [0, 4194304]" info -m "$M" --context -1
expect_refused "--max-row-facts -1: must be an integer in [0, 2147483647]" data --db x.db --out "$TMP/x.jsonl" --max-row-facts -1
expect_refused "--sql-timeout nan: must be a finite number in [0.001, 86400]" data --db x.db --out "$TMP/x.jsonl" --sql-timeout nan
expect_refused "--adapter-scale nan: must be a finite number in [-1000, 1000]" generate -m "$M" --adapter x --adapter-scale nan

# HF config fields: the field, its value and the range
cfg() { printf '{"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 512, %s}\n' "$1" > "$TMP/config.json"; }
cfg '"max_position_embeddings": 1099511627776'
"$MT" init --config "$TMP/config.json" --out "$TMP/init" 2> "$TMP/e_cfg1"; rc=$?
check "config max_position_embeddings 2^40: names the range, not 'must be an integer'" \
  "[ $rc -ne 0 ] && grep -qF 'max_position_embeddings 1099511627776: must be an integer in [1, 4194304]' $TMP/e_cfg1"
cfg '"rms_norm_eps": -1'
"$MT" init --config "$TMP/config.json" --out "$TMP/init" 2> "$TMP/e_cfg2"; rc=$?
check "config rms_norm_eps -1 is refused (it silently became 1e-5)" \
  "[ $rc -ne 0 ] && grep -qF 'rms_norm_eps -1: must be a finite number in [1e-12, 1]' $TMP/e_cfg2"

# SQL: one long printf() within the time limit, and a PRAGMA function refused for what it is
if python3 -c "import sqlite3" 2>/dev/null; then
  python3 -c "
import sqlite3; db = sqlite3.connect('$TMP/t.db'); db.execute('CREATE TABLE t(x INTEGER)'); db.execute('INSERT INTO t VALUES (1)'); db.commit()"
  cat > "$TMP/q.jsonl" <<'EOF'
{"question": "long", "sql": "SELECT length(printf('%.*c', 2000000000, 'x'))"}
{"question": "columns", "sql": "SELECT name FROM pragma_table_info('t')"}
{"question": "fine", "sql": "SELECT printf('%d rows', count(*)) FROM t"}
EOF
  start=$SECONDS
  "$MT" data --filter "$TMP/q.jsonl" --db "$TMP/t.db" --out "$TMP/kept.jsonl" --sql-timeout 1 > "$TMP/filter.json"
  check "data --filter: printf('%.*c', 2e9) stops within the 1 s limit (took 14-62 s)" "[ $((SECONDS - start)) -le 5 ]"
  check "the reasons name printf's width and the PRAGMA function, not UPDATE" "python3 -c \"
import json; s = json.load(open('$TMP/filter.json')); r = json.dumps(s['reasons'])
assert s['kept'] == 1 and 'printf()' in r and 'pragma_table_info' in r and 'UPDATE' not in r, s\""
else
  echo "skip SQL cases: python3 sqlite3 module missing"
fi

# eval: sizes up front, errno reasons, the --compare error path
truncate -s 65M "$TMP/big.txt"
start=$SECONDS
"$MT" eval -m "$M" --text "$TMP/big.txt" > /dev/null 2> "$TMP/e_big"; rc=$?
check "eval --text on 65 MiB: refused at once with the limit" "[ $rc -ne 0 ] && grep -q 'file too large.*limit 67108864' $TMP/e_big && [ $((SECONDS - start)) -le 5 ]"
{ printf '{"input": "Who was Lily?", "output": "A girl."}\n{"input": "Tell it.", "output": "'
  for i in $(seq 300); do printf 'Once upon a time. '; done; printf '"}\n'; } > "$TMP/long.jsonl"
"$MT" eval -m "$M" --data "$TMP/long.jsonl" > "$TMP/o_long" 2> "$TMP/e_long"; rc=$?
check "eval --data: an example longer than the context is refused before any is evaluated" \
  "[ $rc -ne 0 ] && grep -q 'example 2 is [0-9]* tokens.*more than the model.s context of 512' $TMP/e_long && [ ! -s $TMP/o_long ]"
"$MT" eval -m "$M" --data "$TMP/facts.jsonl" --report /nonexistent-memtune-dir/r.jsonl > /dev/null 2> "$TMP/e_rep"; rc=$?
check "an unwritable --report names errno's reason" "[ $rc -ne 0 ] && grep -q 'cannot open for writing: No such file or directory' $TMP/e_rep"
printf '{"index": 1, "verdict": "match"}\n' > "$TMP/a.jsonl"; printf 'nonsense\n' > "$TMP/b.jsonl"
"$MT" eval --compare "$TMP/a.jsonl" "$TMP/b.jsonl" > /dev/null 2> "$TMP/e_cmp"; rc=$?
check "eval --compare with a bad report: error naming the line (no leak: valgrind.sh, ASan)" "[ $rc -eq 1 ] && grep -q 'b.jsonl:1: not a report line' $TMP/e_cmp"

exit $fail
