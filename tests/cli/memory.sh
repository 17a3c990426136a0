#!/usr/bin/env bash
# Memory tuning from the command line on stories260K: a few random-label facts (answers are
# random strings from a seed, as in Lamini's random-label test) are memorised to 100% exact
# greedy recall with the default method for {"input","output"} data while held-out
# TinyStories perplexity stays within 5% of the base's (general-text distillation); report.json
# and facts.jsonl say so; the same seed gives the same adapter byte for byte; a killed run
# resumes bit for bit, SIGTERM checkpoints, a finished one continues; the adapter ends on the
# best check within the perplexity limit when the last is worse (a test hook makes it so); eval --adapter
# applies the saved adapter (token rows + memory experts) and answers exactly; a conflict,
# an empty answer and a fact longer than a row are clear errors; the completion rule (every
# answer token leads the runner-up by --margin logits) ends the default run `completed`; a
# finished run resumed keeps its last check's exact count (same adapter, same keep-best
# choice); Ctrl-C during the final recall stops there (exit 130) and --resume finishes it;
# the adapter and the checkpoint hold the rows touched, not the bank. Under the sanitizer build
# (BUILD != build) only a small run of those last checks runs (rows of 64 tokens, 20 steps),
# unless MEMTUNE_SLOW_TESTS is set.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
M="$A/models/stories260K/stories260K.bin"
[ -f "$M" ] || { echo "no stories260K in $A"; exit 77; }
TMP="$BUILD/tmp/cli_memory"; rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
python3 -c "
import json, random
rng = random.Random(7)
for i in range(6):
    print(json.dumps({'input': 'Code %d?' % i, 'output': ''.join(rng.choice('abcdefghijklmnopqrstuvwxyz0123456789') for _ in range(8))}))" > "$TMP/facts.jsonl"
RUN="--model $M --data $TMP/facts.jsonl --experts 1024 --expert-k 4 --expert-heads 2 --check-every 10 --threads 2 --seed 3"

# A finished run, resumed, ends as it did: the last check's exact count comes from the
# checkpoint (with --margin 1000 nothing is ever memorised, so the keep-best choice rests on the
# exact count alone; read as 0, a resumed run compared the best check with "0 exact"). Ctrl-C during the final greedy recall stops between two facts (exit 130, no
# facts.jsonl or report.json written) and --resume finishes the run.
resume_and_interrupt() { # DIR STEPS FLAGS...
  local d=$1 steps=$2; shift 2
  "$MT" train "$@" --margin 1000 --steps "$steps" --out "$d" --quiet; local rc=$?
  mkdir -p "$d.first"; cp -r "$d/adapter" "$d/report.json" "$d/facts.jsonl" "$d.first/"
  check "--margin 1000: answers exact but not robust: partially_completed (exit 3), min margin reported" "[ $rc -eq 3 ] && python3 -c \"
import json; r = json.load(open('$d/report.json')); assert r['status'] == 'partially_completed' and r['memorised'] == 0, r
assert r['margin'] == 1000 and r['min_answer_margin'] < 1000, r\""
  rm "$d/facts.jsonl" "$d/report.json"
  MEMTUNE_TEST_INT_IN_RECALL=2 "$MT" train "$@" --margin 1000 --steps "$steps" --out "$d" --resume 2> "$d.int.err"; rc=$?
  check "Ctrl-C during the final recall: exit 130 after 2 facts, facts.jsonl and report.json not written" "[ $rc -eq 130 ] && grep -q 'stopped during the final recall (2/' $d.int.err && [ ! -e $d/facts.jsonl ] && [ ! -e $d/report.json ]"
  "$MT" train "$@" --margin 1000 --steps "$steps" --out "$d" --resume 2> "$d.res.err"; rc=$?
  local exact; exact=$(python3 -c "import json; print([json.loads(l) for l in open('$d/metrics.jsonl')][-1]['facts_exact'])")
  check "--resume of the finished run: the last check's $exact exact restored; same adapter, answers and keep-best choice" "[ $rc -eq 3 ] && grep -q ', $exact exact at the last check' $d.res.err && for f in mome.safetensors trainable_tokens.safetensors adapter_model.safetensors; do cmp -s $d/adapter/\$f $d.first/adapter/\$f || exit 1; done && cmp -s $d/facts.jsonl $d.first/facts.jsonl && python3 -c \"
import json; a, b = (json.load(open(p)) for p in ('$d/report.json', '$d.first/report.json'))
assert a['restored_from_step'] == b['restored_from_step'] and a['recall'] == b['recall'], (a, b)\""
}

if [ "$BUILD" != "build" ] && [ -z "${MEMTUNE_SLOW_TESTS:-}" ]; then # the sanitizer build: small settings
  head -3 "$TMP/facts.jsonl" > "$TMP/facts3.jsonl"
  SMALL="--model $M --data $TMP/facts3.jsonl --experts 256 --expert-k 4 --expert-heads 2 --seq-len 64 --check-every 10 --threads 2 --seed 3"
  resume_and_interrupt "$TMP/s" 20 $SMALL
  "$MT" eval --model "$M" --adapter "$TMP/s/adapter" --data "$TMP/facts3.jsonl" --threads 2 > "$TMP/s_eval.json"; rc=$?
  check "eval --adapter reads the sparse adapter" "[ $rc -eq 0 ] && grep -q '\"bank\": \"sparse\"' $TMP/s/adapter/mome_config.json && grep -q exact_match $TMP/s_eval.json"
  MEMTUNE_TEST_KILL_AFTER_STEP=12 "$MT" train $SMALL --steps 20 --save-every 6 --out "$TMP/sk" --quiet 2>/dev/null
  "$MT" train $SMALL --steps 20 --save-every 6 --out "$TMP/sk" --resume --quiet; rc=$?
  "$MT" train $SMALL --steps 20 --out "$TMP/su" --quiet
  check "SIGKILL at step 12 + --resume = 20 uninterrupted steps (sparse checkpoint)" "[ $rc -eq 3 ] && cmp -s $TMP/sk/adapter/mome.safetensors $TMP/su/adapter/mome.safetensors && cmp -s $TMP/sk/facts.jsonl $TMP/su/facts.jsonl"
  exit $fail
fi
TEXT="$A/text/tinystories/tinystories_val_first.txt"
head -c 30000 "$TEXT" > "$TMP/heldout.txt"

"$MT" train $RUN --steps 300 --out "$TMP/a" 2> "$TMP/a.err"; rc=$?
check "random labels: status completed (exit 0)" "[ $rc -eq 0 ] && grep -q 'completed: recall 1.0000' $TMP/a.err"
check "report.json: completed, recall 1, every fact memorised, perplexity before and after" "python3 -c \"
import json; r = json.load(open('$TMP/a/report.json'))
assert r['status'] == 'completed' and r['recall'] == 1.0 and r['memorised'] == r['facts'] == 6, r
assert r['max_answer_nll'] <= 0.5 and r['perplexity']['before'] > 1 and r['perplexity']['ratio'] <= 1.05, r
assert r['perplexity']['distilled_tokens'] >= 2048 and r['perplexity']['distill_weight'] == 1, r
assert r['experts']['per_site'] == 1024 and r['experts']['rows_with_optimizer_state'] < 5 * 1024, r\""
check "facts.jsonl: every fact answered exactly" "python3 -c \"
import json; rows = [json.loads(l) for l in open('$TMP/a/facts.jsonl')]
assert len(rows) == 6 and all(r['exact'] and r['memorised'] and r['produced'] == r['expected'] for r in rows), rows\""
check "completion rule: at every answer position the stored token leads the runner-up by the margin (2 logits)" "python3 -c \"
import json; r = json.load(open('$TMP/a/report.json')); rows = [json.loads(l) for l in open('$TMP/a/facts.jsonl')]
assert r['margin'] == 2 and r['tau'] == 0 and r['min_answer_margin'] >= 2 and all(x['min_margin'] >= 2 for x in rows), (r, rows)\""
check "size follows the facts: the adapter stores the rows touched (sparse), the checkpoint <= 3.2x the adapter" "python3 -c \"
import json, os, glob; c = json.load(open('$TMP/a/adapter/mome_config.json')); r = json.load(open('$TMP/a/report.json'))
ad = sum(os.path.getsize(p) for p in glob.glob('$TMP/a/adapter/*')); ck = [os.path.getsize(p) for p in glob.glob('$TMP/a/checkpoints/*.ckpt')]
print('   adapter %d bytes, checkpoint %s bytes, %d rows stored of %d' % (ad, ck, c['rows_stored'], 5 * 1024))
assert c['bank'] == 'sparse' and 0 < c['rows_stored'] <= r['experts']['rows_with_optimizer_state'] and len(ck) == 1 and ck[0] <= 3.2 * ad, (c, ck, ad)\""
resume_and_interrupt "$TMP/u" 40 $RUN
check "the adapter holds token rows, memory experts and LoRA" "[ -f $TMP/a/adapter/adapter_model.safetensors ] && [ -f $TMP/a/adapter/mome.safetensors ] && [ -f $TMP/a/adapter/mome_config.json ] && [ -f $TMP/a/adapter/trainable_tokens.safetensors ]"

"$MT" eval --model "$M" --text "$TMP/heldout.txt" --threads 2 > "$TMP/ppl_base.json"
"$MT" eval --model "$M" --adapter "$TMP/a/adapter" --text "$TMP/heldout.txt" --threads 2 > "$TMP/ppl_tuned.json"
check "retention: held-out TinyStories perplexity within 5% of the base" "python3 -c \"
import json; b = json.load(open('$TMP/ppl_base.json'))['perplexity']; t = json.load(open('$TMP/ppl_tuned.json'))['perplexity']
print('   held-out perplexity %.4f -> %.4f (x%.4f)' % (b, t, t / b)); assert t <= 1.05 * b\""

"$MT" train $RUN --steps 20 --out "$TMP/b" --quiet; "$MT" train $RUN --steps 20 --out "$TMP/b2" --quiet; rc=$?
check "same seed, same result: identical adapter" "[ $rc -eq 3 ] && cmp -s $TMP/b2/adapter/mome.safetensors $TMP/b/adapter/mome.safetensors && cmp -s $TMP/b2/adapter/trainable_tokens.safetensors $TMP/b/adapter/trainable_tokens.safetensors && cmp -s $TMP/b2/adapter/adapter_model.safetensors $TMP/b/adapter/adapter_model.safetensors"

# crash and resume: killed at step 12 (between checks), --resume gives the uninterrupted run's
# adapter and answers byte for byte; a finished run continues with more --steps
MEMTUNE_TEST_KILL_AFTER_STEP=12 "$MT" train $RUN --steps 20 --save-every 6 --out "$TMP/k" --quiet 2>/dev/null; rc=$?
"$MT" train $RUN --steps 20 --save-every 6 --out "$TMP/k" --resume --quiet 2> "$TMP/k.err"; rc2=$?
check "memory run: SIGKILL at step 12 + --resume = 20 uninterrupted steps (adapter, facts.jsonl, metrics.jsonl)" "[ $rc -eq 137 ] && [ $rc2 -eq 3 ] && cmp -s $TMP/k/adapter/mome.safetensors $TMP/b/adapter/mome.safetensors && cmp -s $TMP/k/adapter/trainable_tokens.safetensors $TMP/b/adapter/trainable_tokens.safetensors && cmp -s $TMP/k/adapter/adapter_model.safetensors $TMP/b/adapter/adapter_model.safetensors && cmp -s $TMP/k/facts.jsonl $TMP/b/facts.jsonl && python3 -c \"
import json; strip = lambda p: [{k: v for k, v in json.loads(l).items() if k != 'elapsed_s'} for l in open(p)]
a, b = strip('$TMP/k/metrics.jsonl'), strip('$TMP/b/metrics.jsonl'); assert a == b and [r['step'] for r in a] == [0, 10, 20], (a, b)\""
"$MT" train $RUN --steps 30 --out "$TMP/x" --quiet; "$MT" train $RUN --steps 30 --out "$TMP/b2" --resume --quiet
check "a finished run continues with --resume --steps 30: same as 30 steps at once" "cmp -s $TMP/x/adapter/mome.safetensors $TMP/b2/adapter/mome.safetensors && cmp -s $TMP/x/facts.jsonl $TMP/b2/facts.jsonl && python3 -c \"
import json; r = json.load(open('$TMP/b2/report.json')); assert r['steps'] == 30, r\""
"$MT" train $RUN --seed 4 --steps 30 --out "$TMP/k" --resume --quiet 2> "$TMP/k4.err"; rc=$?
head -3 "$TMP/facts.jsonl" > "$TMP/facts3.jsonl"
"$MT" train ${RUN/facts.jsonl/facts3.jsonl} --steps 30 --out "$TMP/k" --resume --quiet 2> "$TMP/k3.err"; rc3=$?
check "resume with another seed or other facts is refused, naming the checkpoint" "[ $rc -ne 0 ] && [ $rc3 -ne 0 ] && grep -q 'step-00000020.ckpt: was written with .* --seed 3' $TMP/k4.err && grep -q 'step-00000020.ckpt: was written for other facts' $TMP/k3.err"
"$MT" train $RUN --steps 1000 --save-every 0 --out "$TMP/t" 2> "$TMP/t.err" & pid=$!
sleep 3; kill -TERM $pid; wait $pid; rc=$?
check "SIGTERM: checkpoint saved, exit 130, says how to continue" "[ $rc -eq 130 ] && ls $TMP/t/checkpoints/step-*.ckpt >/dev/null && grep -q 'continue with --resume' $TMP/t.err"

# the best check within the perplexity limit replaces the last only on recall: with the limit
# at 1.0 only step 0 (nothing learnt) qualifies, and the last check, above the limit but with
# facts right, is kept
"$MT" train $RUN --general-limit 1.0 --steps 30 --out "$TMP/lim" --quiet 2> "$TMP/lim.err"
check "a last check with more facts right is kept even above the limit (no roll back to step 0)" "python3 -c \"
import json; r = json.load(open('$TMP/lim/report.json'))
assert r['restored_from_step'] is None and r['recall'] > 0 and r['perplexity']['ratio'] > 1, r\""

# the restore itself: what was learnt is negated after step 29 (a test hook), so the check at
# step 30 is worse than an earlier one; the adapter, facts.jsonl and the report's figures must
# then be exactly those of a run that stopped at that check
MEMTUNE_TEST_FORGET_AFTER_STEP=29 "$MT" train $RUN --general-limit 1.5 --steps 30 --out "$TMP/fg" 2> "$TMP/fg.err"
S=$(python3 -c "import json; print(json.load(open('$TMP/fg/report.json'))['restored_from_step'])")
"$MT" train $RUN --general-limit 1.5 --steps "${S/None/1}" --out "$TMP/fs" --quiet
check "a worse last check: the adapter, answers and figures are the best check's (= a run stopped there, step $S)" "[ '$S' != None ] && [ '$S' -gt 0 ] && grep -q 'the adapter keeps step $S' $TMP/fg.err && cmp -s $TMP/fg/adapter/mome.safetensors $TMP/fs/adapter/mome.safetensors && cmp -s $TMP/fg/adapter/trainable_tokens.safetensors $TMP/fs/adapter/trainable_tokens.safetensors && cmp -s $TMP/fg/adapter/adapter_model.safetensors $TMP/fs/adapter/adapter_model.safetensors && cmp -s $TMP/fg/facts.jsonl $TMP/fs/facts.jsonl && python3 -c \"
import json; a, b = (json.load(open(d + '/report.json')) for d in ('$TMP/fg', '$TMP/fs'))
assert a['recall'] > 0 and all(a[k] == b[k] for k in ('recall', 'memorised', 'mean_answer_nll', 'max_answer_nll')), (a, b)
assert a['perplexity']['after'] == b['perplexity']['after'] and b['restored_from_step'] is None, (a, b)\""

"$MT" eval --model "$M" --data "$TMP/facts.jsonl" --threads 2 > "$TMP/base.json"
"$MT" eval --model "$M" --adapter "$TMP/a/adapter" --data "$TMP/facts.jsonl" --threads 2 > "$TMP/with.json"
check "eval --adapter answers every fact exactly (the base answers none)" "python3 -c \"
import json; assert json.load(open('$TMP/with.json'))['exact_match'] == 1.0 and json.load(open('$TMP/base.json'))['exact_match'] == 0.0\""
"$MT" generate --model "$M" --adapter "$TMP/a/adapter" --prompt $'Code 2?\n' -t 0 --max-new-tokens 30 --threads 2 --quiet > "$TMP/gen.txt"
check "generate --adapter gives the stored answer and stops" "python3 -c \"
import json; want = [json.loads(l) for l in open('$TMP/facts.jsonl')][2]['output']
assert open('$TMP/gen.txt').read().strip().split('\\n')[-1] == want, open('$TMP/gen.txt').read()\""

head -c 20000 "$TEXT" > "$TMP/general.txt"
"$MT" train $RUN --general "$TMP/general.txt" --general-weight 0 --margin 1000 --steps 30 --out "$TMP/g0" --quiet; rc=$? # --margin 1000: never completed, whatever the speed
check "--general-weight 0: the guard turns distillation on when perplexity rises" "[ $rc -eq 3 ] && python3 -c \"
import json; g = json.load(open('$TMP/g0/report.json'))['perplexity']
assert g['distill_weight'] == 0 and g['guard_trips'] >= 1 and g['distill_weight_final'] >= 1 and g['distilled_tokens'] > 0, g\""

# answers with tokens the adapters cannot reach (byte-fallback pieces of "í", a rare "]"):
# their output rows train too, so they are memorised
printf '{"input": "Where does Ana live?", "output": "Reykjavík"}\n{"input": "Sign of the inn?", "output": "[Golden Goose]"}\n' > "$TMP/rare.jsonl"
"$MT" train --model "$M" --data "$TMP/rare.jsonl" --experts 1024 --expert-k 4 --expert-heads 2 --tau 0.5 --steps 150 \
  --threads 2 --seed 3 --out "$TMP/r" --quiet; rc=$?
check "rare answer tokens (byte pieces, ']') get trainable rows and are recalled exactly" "python3 -c \"
import json; r = json.load(open('$TMP/r/report.json')); t = json.load(open('$TMP/r/adapter/trainable_tokens.json'))
rows = t['trainable_token_indices']
assert r['recall'] == 1.0 and r['trainable_token_rows'] == len(rows) > 1 and any(3 <= i < 259 for i in rows), (r, rows)\""

printf '{"input": "Capital of France?", "output": "Paris"}\n{"input": "Capital of France?", "output": "Lyon"}\n' > "$TMP/conflict.jsonl"
"$MT" train --model "$M" --data "$TMP/conflict.jsonl" --out "$TMP/c" --quiet 2> "$TMP/c.err"; rc=$?
check "a conflict (one question, two answers) is an error naming both lines" "[ $rc -ne 0 ] && grep -q 'conflict: .*conflict.jsonl:1 and .*conflict.jsonl:2' $TMP/c.err"
printf '{"input": "Empty?", "output": ""}\n' > "$TMP/empty.jsonl"
"$MT" train --model "$M" --data "$TMP/empty.jsonl" --out "$TMP/e" --quiet 2> "$TMP/e.err"; rc=$?
check "an empty answer is an error" "[ $rc -ne 0 ] && grep -q 'empty.jsonl:1.*output is empty' $TMP/e.err"
python3 -c "import json; print(json.dumps({'input': 'Long?', 'output': 'word ' * 200}))" > "$TMP/long.jsonl"
"$MT" train --model "$M" --data "$TMP/long.jsonl" --seq-len 64 --out "$TMP/l" --quiet 2> "$TMP/l.err"; rc=$?
check "a fact longer than a row is an error" "[ $rc -ne 0 ] && grep -q 'long.jsonl:1: the fact is .* tokens long, more than the 64' $TMP/l.err"
exit $fail
