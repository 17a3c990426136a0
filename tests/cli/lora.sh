#!/usr/bin/env bash
# LoRA from the command line: train an adapter on a frozen stories260K (PEFT files, trainable
# count, the untrained-EOS warning), SIGKILL + resume == uninterrupted (bit for bit),
# generate/eval --adapter apply it unmerged, merge (hf and gguf) scores exactly what the
# unmerged adapter scores, and bad settings fail with clear errors.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
M="$A/models/stories260K/stories260K.bin"
[ -f "$M" ] || { echo "no stories260K in $A"; exit 77; }
TMP="$BUILD/tmp/cli_lora"; rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
python3 -c "
import json
for i in range(12):
    print(json.dumps({'instruction': 'Who made item %d?' % i, 'output': 'Item %d was made by the memtune team.' % i}))" > "$TMP/d.jsonl"
COMMON="--model $M --data $TMP/d.jsonl --method lora --rank 4 --alpha 8 --lr 5e-3 --batch 2 --seq-len 64 --seed 3 --log-every 1 --threads 2"

"$MT" train $COMMON --steps 8 --save-every 4 --out "$TMP/a" 2> "$TMP/a.err"
check "a LoRA run writes a PEFT adapter and no full model" "[ -f $TMP/a/adapter/adapter_model.safetensors ] && [ -f $TMP/a/adapter/adapter_config.json ] && [ ! -e $TMP/a/model ]"
check "adapter_config.json is PEFT's" "python3 -c \"import json; c=json.load(open('$TMP/a/adapter/adapter_config.json')); assert c['peft_type']=='LORA' and c['task_type']=='CAUSAL_LM' and c['r']==4 and c['lora_alpha']==8 and c['bias']=='none' and c['fan_in_fan_out'] is False and c['use_rslora'] is False and sorted(c['target_modules'])==sorted(['q_proj','k_proj','v_proj','o_proj','gate_proj','up_proj','down_proj']), c\""
check "tensor names and shapes are PEFT's" "python3 -c \"
import json, struct
f = open('$TMP/a/adapter/adapter_model.safetensors', 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n))
assert h['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight']['shape'] == [4, 64], h
assert h['base_model.model.model.layers.4.mlp.down_proj.lora_B.weight']['shape'] == [64, 4]
assert h['base_model.model.model.layers.2.self_attn.k_proj.lora_B.weight']['shape'] == [32, 4]
assert len([k for k in h if 'lora_' in k]) == 5 * 7 * 2
assert h['base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta']['shape'] == [1, 64], h
assert 'base_model.model.lm_head.token_adapter.trainable_tokens_delta' not in h  # tied head: PEFT stores none
assert len(h) == 5 * 7 * 2 + 2\""
check "prints the trainable parameter count and fraction" "grep -q 'trainable parameters (.*% of 260032)' $TMP/a.err"
check "trains the stop token's embedding row (stories260K's EOS, id 2) by default" "grep -q 'trainable token rows: 2 ' $TMP/a.err && python3 -c \"import json; c = json.load(open('$TMP/a/adapter/adapter_config.json')); assert c['trainable_token_indices'] == [2], c\""
"$MT" train $COMMON --trainable-tokens none --steps 4 --out "$TMP/norows" 2> "$TMP/norows.err"
check "without token rows it warns that stories260K's EOS was never trained" "grep -q 'stop token (id 2) was never trained' $TMP/norows.err && [ ! -e $TMP/norows/adapter/trainable_tokens.json ] && ! grep -q trainable_token_indices $TMP/norows/adapter/adapter_config.json"
check "losses fall" "python3 -c \"import json; l=[json.loads(x)['loss'] for x in open('$TMP/a/metrics.jsonl') if '\\\"loss\\\"' in x]; assert len(l)==8 and l[-1] < l[0], l\""

MEMTUNE_TEST_KILL_AFTER_STEP=4 "$MT" train $COMMON --steps 8 --save-every 4 --out "$TMP/b" --quiet 2>/dev/null; rc=$?
check "the crash hook killed the run" "[ $rc -eq 137 ] && [ -f $TMP/b/checkpoints/step-00000004.ckpt ] && [ ! -e $TMP/b/adapter ]"
"$MT" train $COMMON --steps 8 --save-every 4 --out "$TMP/b" --resume --quiet
check "4 steps + SIGKILL + resume = 8 steps: identical adapter and token rows" "cmp -s $TMP/a/adapter/adapter_model.safetensors $TMP/b/adapter/adapter_model.safetensors && cmp -s $TMP/a/adapter/adapter_config.json $TMP/b/adapter/adapter_config.json"
check "checkpoints hold the adapter, not the base" "[ \$(stat -c %s $TMP/b/checkpoints/step-00000008.ckpt) -lt 400000 ]"

nll() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['nll'])"; }
base=$("$MT" eval --model "$M" --data "$TMP/d.jsonl" --threads 2 | nll)
with=$("$MT" eval --model "$M" --adapter "$TMP/a/adapter" --data "$TMP/d.jsonl" --threads 2 | nll)
check "eval --adapter applies it (answer NLL $base -> $with)" "python3 -c 'assert $with < $base - 0.1'"
"$MT" generate --model "$M" --adapter "$TMP/a/adapter" --prompt "Who made item 3?" -n 20 -t 0 --threads 2 --quiet > "$TMP/gen.txt"
check "generate --adapter runs" "[ -s $TMP/gen.txt ]"

"$MT" merge --model "$M" --adapter "$TMP/a/adapter" --out "$TMP/merged" --quiet
"$MT" merge --model "$M" --adapter "$TMP/a/adapter" --out "$TMP/merged.gguf" --format gguf --quiet
mh=$("$MT" eval --model "$TMP/merged" --data "$TMP/d.jsonl" --threads 2 | nll)
mg=$("$MT" eval --model "$TMP/merged.gguf" --data "$TMP/d.jsonl" --threads 2 | nll)
check "merged (hf) scores what the unmerged adapter scores ($mh vs $with)" "python3 -c 'assert abs($mh - $with) <= 1e-5 * abs($with)'"
check "merged (gguf) scores what the unmerged adapter scores ($mg vs $with)" "python3 -c 'assert abs($mg - $with) <= 1e-5 * abs($with)'"

# llama.cpp's LoRA GGUF (LoRA only: token rows have no place in it, convert says so):
# export, apply unmerged on the GGUF base, merge it, convert back to PEFT exactly
wn=$("$MT" eval --model "$M" --adapter "$TMP/norows/adapter" --data "$TMP/d.jsonl" --threads 2 | nll)
"$MT" convert --model "$M" --adapter "$TMP/norows/adapter" --out "$TMP/g.gguf" --format gguf 2>/dev/null
"$MT" convert --model "$M" --adapter "$TMP/a/adapter" --out "$TMP/a.gguf" --format gguf 2> "$TMP/conv.err"
check "converting an adapter with token rows to GGUF says they are left out" "grep -q 'token rows' $TMP/conv.err"
"$MT" convert --model "$M" --out "$TMP/base.gguf" --format gguf 2>/dev/null
gg=$("$MT" eval --model "$TMP/base.gguf" --adapter "$TMP/g.gguf" --data "$TMP/d.jsonl" --threads 2 | nll)
"$MT" merge --model "$TMP/base.gguf" --adapter "$TMP/g.gguf" --out "$TMP/merged-g.gguf" --format gguf --quiet
mgg=$("$MT" eval --model "$TMP/merged-g.gguf" --data "$TMP/d.jsonl" --threads 2 | nll)
check "GGUF base + GGUF adapter scores what the PEFT adapter scores ($gg vs $wn)" "python3 -c 'assert abs($gg - $wn) <= 1e-5 * abs($wn) and abs($wn - $base) > 1e-3'"
check "GGUF adapter merged into the GGUF base scores the same ($mgg vs $gg)" "python3 -c 'assert abs($mgg - $gg) <= 1e-5 * abs($gg)'"
"$MT" convert --model "$M" --adapter "$TMP/g.gguf" --out "$TMP/back" --format peft 2>/dev/null
check "GGUF -> PEFT gives back the same tensors" "cmp -s $TMP/norows/adapter/adapter_model.safetensors $TMP/back/adapter_model.safetensors"
"$MT" convert --model tests/fixtures/train_llama3_tied --adapter tests/fixtures/lora_peft_all --out "$TMP/other.gguf" --format gguf 2>/dev/null
"$MT" eval --model "$M" --adapter "$TMP/other.gguf" --data "$TMP/d.jsonl" 2> "$TMP/bad.err"; rc=$?
check "a GGUF adapter for another model is refused" "[ $rc -ne 0 ] && grep -q 'other.gguf: blk.0.*this model needs' $TMP/bad.err"
"$MT" eval --model "$M" --adapter "$TMP/base.gguf" --data "$TMP/d.jsonl" 2> "$TMP/bad.err"; rc=$?
check "a model GGUF given as an adapter is refused" "[ $rc -ne 0 ] && grep -q 'general.type' $TMP/bad.err"

# several adapters: the same adapter twice at weight 0.5 each is the adapter at weight 1;
# two different adapters merged one after the other score what they score unmerged
half=$("$MT" eval --model "$M" --adapter "$TMP/norows/adapter" --adapter-scale 0.5 --adapter "$TMP/g.gguf" --adapter-scale 0.5 --data "$TMP/d.jsonl" --threads 2 | nll)
check "the same adapter twice at weight 0.5 == once at weight 1 ($half vs $wn)" "python3 -c 'assert abs($half - $wn) <= 1e-5 * abs($wn)'"
"$MT" eval --model "$M" --adapter "$TMP/a/adapter" --adapter "$TMP/b/adapter" --data "$TMP/d.jsonl" 2> "$TMP/bad.err"; rc=$?
check "token rows from two adapters are refused" "[ $rc -ne 0 ] && grep -q 'token rows from a second adapter' $TMP/bad.err"
"$MT" train $COMMON --steps 3 --targets q,v --seed 5 --trainable-tokens none --out "$TMP/c" --quiet
two=$("$MT" eval --model "$M" --adapter "$TMP/a/adapter" --adapter "$TMP/c/adapter" --adapter-scale 1 --adapter-scale -2 --data "$TMP/d.jsonl" --threads 2 | nll)
"$MT" merge --model "$M" --adapter "$TMP/a/adapter" --adapter "$TMP/c/adapter" --adapter-scale 1 --adapter-scale -2 --out "$TMP/merged2" --quiet
m2=$("$MT" eval --model "$TMP/merged2" --data "$TMP/d.jsonl" --threads 2 | nll)
check "two adapters (weights 1, -2) differ from one ($two vs $with)" "python3 -c 'assert abs($two - $with) > 1e-4'"
check "merging two adapters scores what they score unmerged ($m2 vs $two)" "python3 -c 'assert abs($m2 - $two) <= 1e-5 * abs($two)'"
"$MT" eval --model "$M" --adapter "$TMP/a/adapter" --adapter-scale 1 --adapter-scale 2 --data "$TMP/d.jsonl" 2> "$TMP/bad.err"; rc=$?
check "more --adapter-scale than --adapter is refused" "[ $rc -eq 2 ] && grep -q 'adapter-scale' $TMP/bad.err"

# some layers only, with dropout: PEFT's layers_to_transform and lora_dropout; dropout is seeded
"$MT" train $COMMON --steps 3 --targets q,v --layers 1-2 --dropout 0.2 --out "$TMP/d" --quiet
"$MT" train $COMMON --steps 3 --targets q,v --layers 1-2 --dropout 0.2 --out "$TMP/d2" --quiet
"$MT" train $COMMON --steps 3 --targets q,v --layers 1-2 --out "$TMP/d0" --quiet
check "--layers 1-2 --dropout 0.2: layers_to_transform [1, 2], lora_dropout 0.2, tensors of layers 1 and 2 only" "python3 -c \"
import json, struct
c = json.load(open('$TMP/d/adapter/adapter_config.json')); assert c['layers_to_transform'] == [1, 2] and abs(c['lora_dropout'] - 0.2) < 1e-6, c
f = open('$TMP/d/adapter/adapter_model.safetensors', 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n))
assert sorted({k.split('.')[4] for k in h if 'lora_' in k}) == ['1', '2'] and len([k for k in h if 'lora_' in k]) == 2 * 2 * 2, h.keys()\""
check "dropout runs repeat exactly and differ from no dropout" "cmp -s $TMP/d/adapter/adapter_model.safetensors $TMP/d2/adapter/adapter_model.safetensors && ! cmp -s $TMP/d/adapter/adapter_model.safetensors $TMP/d0/adapter/adapter_model.safetensors"
"$MT" train $COMMON --layers 3-9 --steps 1 --out "$TMP/bad" --quiet 2> "$TMP/bad.err"; rc=$?
check "layers outside the model are refused" "[ $rc -ne 0 ] && grep -q \"layer 9 is outside the model's 5 layers\" $TMP/bad.err"
"$MT" train $COMMON --dropout 1 --steps 1 --out "$TMP/bad" --quiet 2> "$TMP/bad.err"; rc=$?
check "dropout 1 is refused" "[ $rc -ne 0 ] && grep -qF -- '--dropout 1: must be a finite number in [0, 0.99]' $TMP/bad.err"

# a Q8_0 frozen base: trains, merges in f32 and re-quantises with the largest change reported
"$MT" train $COMMON --steps 3 --base-dtype q8_0 --out "$TMP/q8" 2> "$TMP/q8.err"
check "--base-dtype q8_0 trains and says what the weights take" "[ -f $TMP/q8/adapter/adapter_model.safetensors ] && grep -q 'held as q8_0: weights take' $TMP/q8.err"
"$MT" merge --model "$M" --adapter "$TMP/a/adapter" --base-dtype q8_0 --out "$TMP/mq8" 2> "$TMP/mq8.err"
mq=$("$MT" eval --model "$TMP/mq8" --data "$TMP/d.jsonl" --threads 2 | nll)
check "merge --base-dtype q8_0 reports the largest change and stays close ($mq vs $with)" "grep -q 're-quantised to q8_0: largest change of a weight' $TMP/mq8.err && python3 -c 'assert abs($mq - $with) < 0.05 * abs($with)'"
"$MT" train --model "$M" --data "$TMP/d.jsonl" --base-dtype bf16 --steps 1 --out "$TMP/bad" --quiet 2> "$TMP/bad.err"; rc=$?
check "--base-dtype with full fine-tuning is refused" "[ $rc -ne 0 ] && grep -q 'needs --method lora' $TMP/bad.err"

"$MT" train $COMMON --rank 0 --steps 1 --out "$TMP/bad" --quiet 2> "$TMP/bad.err"; rc=$?
check "rank 0 is refused" "[ $rc -ne 0 ] && grep -q 'rank 0' $TMP/bad.err"
"$MT" train $COMMON --targets q,lm_head --steps 1 --out "$TMP/bad" --quiet 2> "$TMP/bad.err"; rc=$?
check "unknown targets are refused" "[ $rc -ne 0 ] && grep -q \"unknown LoRA target 'lm_head'\" $TMP/bad.err"
"$MT" eval --model "$M" --adapter "$TMP/nope" --data "$TMP/d.jsonl" 2> "$TMP/bad.err"; rc=$?
check "a missing adapter is an error naming it" "[ $rc -ne 0 ] && grep -q 'nope' $TMP/bad.err"
exit $fail
