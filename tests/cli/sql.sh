#!/usr/bin/env bash
# Text-to-SQL from the command line on the NBA roster database: data generation (every SQL
# line runs, same seed = same file), --filter counts, eval --db with a report (verdict and
# error per example; a perfect "model" is faked by comparing the gold set with itself through
# --compare), and bad arguments fail with clear errors. The database is never modified.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
N="$A/text2sql/nba_roster"
M="$A/models/stories260K/stories260K.bin"
[ -f "$N/nba_roster.db" ] && [ -f "$M" ] || { echo "no nba_roster or stories260K in $A"; exit 77; }
TMP="$BUILD/tmp/cli_sql"; rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
before=$(sha256sum < "$N/nba_roster.db")

"$MT" data --db "$N/nba_roster.db" --out "$TMP/gen.jsonl" --seed 5 > "$TMP/gen.json"
check "data writes schema, row and SQL lines with no failed SQL" "python3 -c \"
import json; s = json.load(open('$TMP/gen.json'))
assert s['failed'] == 0 and s['schema_facts'] >= 10 and s['row_facts'] > 1000 and s['sql_pairs'] > 50, s
kinds = [json.loads(l)['kind'] for l in open('$TMP/gen.jsonl')]
assert kinds.count('sql') == s['sql_pairs'] and kinds.count('row') == s['row_facts'], s\""
check "the salary format and its missing marker are a schema fact" "grep -q 'SALARY is money as text.*--.* means unknown' $TMP/gen.jsonl"
"$MT" data --db "$N/nba_roster.db" --out "$TMP/gen2.jsonl" --seed 5 > /dev/null
check "same seed, same file" "cmp -s $TMP/gen.jsonl $TMP/gen2.jsonl"
check "every generated SQL answers what the file says (sqlite3 module)" "python3 -c \"
import json, sqlite3
db = sqlite3.connect('file:$N/nba_roster.db?mode=ro', uri=True)
n = 0
for l in open('$TMP/gen.jsonl'):
    o = json.loads(l)
    if 'sql' not in o: continue
    rows = db.execute(o['sql']).fetchall(); n += 1
    assert rows, o
    if len(rows) == 1 and len(rows[0]) == 1 and isinstance(rows[0][0], int): assert o['answer'] == str(rows[0][0]), o
assert n > 50\""

"$MT" data --filter "$N/data/training_data/generated_queries.jsonl" --db "$N/nba_roster.db" --out "$TMP/kept.jsonl" > "$TMP/filter.json"
check "filter counts add up and name reasons" "python3 -c \"
import json; s = json.load(open('$TMP/filter.json')); d = s['dropped']
assert s['read'] == 159 and s['kept'] + sum(d.values()) == s['read'] and s['kept'] == sum(1 for _ in open('$TMP/kept.jsonl')), s
assert d['duplicates'] > 0 and 'duplicate of an earlier line' in s['reasons'], s\""
printf '%s\n' '{"question":"q1","sql":"SELECT COUNT(*) FROM nba_roster"}' '{"question":"q2","sql":"DROP TABLE nba_roster"}' '{"question":"q3","sql":"SELECT 1; DELETE FROM nba_roster"}' '{"question":"q4","sql":"ATTACH DATABASE '"'"'/tmp/x.db'"'"' AS x"}' > "$TMP/evil.jsonl"
"$MT" data --filter "$TMP/evil.jsonl" --db "$N/nba_roster.db" --out "$TMP/evil_kept.jsonl" > "$TMP/evil.json"
check "filter refuses writes, several statements and ATTACH" "python3 -c \"
import json; s = json.load(open('$TMP/evil.json'))
assert s['kept'] == 1 and s['dropped']['sql_error'] == 3, s\""

head -4 "$N/data/gold-test-set.jsonl" > "$TMP/gold4.jsonl"
"$MT" eval --model "$M" --data "$TMP/gold4.jsonl" --db "$N/nba_roster.db" --report "$TMP/r.jsonl" --threads 1 --max-new-tokens 24 > "$TMP/eval.json"
check "eval --db prints execution accuracy with its counts" "python3 -c \"
import json; s = json.load(open('$TMP/eval.json'))
assert s['examples'] == 4 and s['sql_examples'] + s['sql_gold_errors'] == 4 and s['sql_match'] + s['sql_invalid'] <= s['sql_examples'], s
assert s['execution_accuracy'] == s['sql_match'] / s['sql_examples'] and s['normalize'] == 'trim', s\""
check "the report has prompt, expected, produced, verdict and error per example" "python3 -c \"
import json; L = [json.loads(l) for l in open('$TMP/r.jsonl')]
assert len(L) == 4
for o in L:
    assert set(['index','prompt','expected','produced','verdict','error','exact','nll']) <= set(o), o
    assert o['verdict'] in ('match','mismatch','invalid') and (o['error'] is None) == (o['verdict'] != 'invalid'), o\""
# the same report with every produced SQL replaced by the gold one: B fixes every example
python3 -c "
import json
for l in open('$TMP/r.jsonl'):
    o = json.loads(l); o['produced'] = o['expected']; o['verdict'] = 'match'; o['error'] = None; print(json.dumps(o))" > "$TMP/r_gold.jsonl"
"$MT" eval --compare "$TMP/r.jsonl" "$TMP/r_gold.jsonl" > "$TMP/cmp.json"
check "compare counts changed and fixed examples" "python3 -c \"
import json; c = json.load(open('$TMP/cmp.json')); a = json.load(open('$TMP/eval.json'))
assert c['common'] == 4 and c['b']['match'] == 4 and c['a']['match'] == a['sql_match'], c
assert c['changed'] == 4 - a['sql_match'] and c['fixed'] == c['changed'] and c['broken'] == 0, c
assert all(ch['b'] == 'match' and ch['a'] != 'match' for ch in c['changes']), c\""

"$MT" eval --model "$M" --data "$TMP/gold4.jsonl" --normalize fuzzy > /dev/null 2> "$TMP/bad.err"; rc=$?
check "unknown --normalize is a usage error" "[ $rc -eq 2 ] && grep -q 'none, trim, whitespace or lower' $TMP/bad.err"
"$MT" eval --model "$M" --data "$TMP/gold4.jsonl" --db "$TMP/missing.db" > /dev/null 2> "$TMP/bad.err"; rc=$?
check "a missing database is named" "[ $rc -eq 1 ] && grep -q 'missing.db: no such database file' $TMP/bad.err"
"$MT" eval --compare "$TMP/r.jsonl" > /dev/null 2>&1; rc=$?
check "--compare needs two files" "[ $rc -eq 2 ]"
"$MT" data --db "$TMP/gen.jsonl" --out "$TMP/x.jsonl" > /dev/null 2> "$TMP/bad.err"; rc=$?
check "data on a file that is not a database fails clearly" "[ $rc -eq 1 ] && grep -q 'not a readable SQLite database' $TMP/bad.err && [ ! -e $TMP/x.jsonl ]"
check "the database file is unchanged" "[ \"$(sha256sum < "$N/nba_roster.db")\" = \"$before\" ]"
exit $fail
