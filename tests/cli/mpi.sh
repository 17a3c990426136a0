#!/usr/bin/env bash
# Data-parallel training on OpenMPI (issue 25), stories260K, a minute or so:
# - 2 ranks x --batch 2 equal 1 process x --batch 4: the loss of every step within 1e-6
#   relative and the weights after 20 steps within 1e-5 relative in L2 norm (mpi_compare.py
#   says why the norm) (full and LoRA; and with --grad-accum; without overlap bit-identical);
# - a rank killed mid-run ends the job within seconds; --resume completes it with the final
#   weights byte for byte those of an uninterrupted 2-rank run; resuming on 1 process (--batch 4)
#   also completes;
# - a rank with other options is refused with one message; --method memory is refused;
#   --dry-run reports the per-rank memory and the bytes exchanged per step.
# Skips (77) when the build has no MPI or mpirun is missing.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MT="$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
M=models/stories260K/stories260K.bin
TMP="$BUILD/tmp/cli_mpi"; rm -rf "$TMP"; mkdir -p "$TMP"
command -v mpirun >/dev/null || { echo "mpirun not installed"; exit 77; }
ldd "$MT" 2>/dev/null | grep -q libmpi || { echo "$MT built without MPI"; exit 77; }
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
MPIRUN="mpirun --oversubscribe -np 2"
[ "$(id -u)" -eq 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
# containers often forbid the cross-memory attach OpenMPI's shared-memory transport uses by
# default (errors "Read -1, expected ..."): copy through the shared segment instead
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
# OpenMPI's own allocations (freed or not at MPI_Finalize) are not ours to chase in the
# sanitizer build; an LSan run with OpenMPI's libraries suppressed found none of memtune's
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" OMP_WAIT_POLICY=PASSIVE MEMTUNE_TEST_EXACT_LOSS=1
python3 - "$A/instruct/llama-factory/identity.json" "$TMP/identity.jsonl" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    for r in rows:
        fill = lambda s: s.replace("{{name}}", "Memtune").replace("{{author}}", "the memtune team")
        f.write(json.dumps({"instruction": fill(r["instruction"]), "input": fill(r["input"]), "output": fill(r["output"])}) + "\n")
PY
C="--model $M --data $TMP/identity.jsonl --lr 1e-3 --seq-len 64 --seed 3 --log-every 1 --threads 1 --steps 20 --save-every 0"
cmpw() { python3 tests/cli/mpi_compare.py weights "$@"; }
cmpl() { python3 tests/cli/mpi_compare.py losses "$@"; }

# full fine-tuning
"$MT" train $C --batch 4 --out "$TMP/f1" 2> "$TMP/f1.err"
$MPIRUN "$MT" train $C --batch 2 --out "$TMP/f2" 2> "$TMP/f2.err"; rc=$?
check "full: 2 ranks x batch 2 ran" "[ $rc -eq 0 ] && [ -f $TMP/f2/model/model.safetensors ] && grep -q 'MPI: 2 ranks' $TMP/f2.err"
check "full: rank 0 alone prints (one summary line)" "[ \$(grep -c 'steps, .* tokens in' $TMP/f2.err) -eq 1 ]"
check "full: losses of 20 steps within 1e-6 relative of 1 process x batch 4" "cmpl $TMP/f2.err $TMP/f1.err 1e-6"
check "full: weights after 20 steps within 1e-5 relative (L2)" "cmpw $TMP/f2/model/model.safetensors $TMP/f1/model/model.safetensors 1e-5"

# the same without overlap (one exchange after the backward), with small buckets
$MPIRUN "$MT" train $C --batch 2 --dist-no-overlap --dist-bucket-kb 64 --out "$TMP/f3" 2> "$TMP/f3.err"
check "full, no overlap, 64 KiB buckets: the very same weights as with overlap" "cmp -s $TMP/f3/model/model.safetensors $TMP/f2/model/model.safetensors"
# gradient accumulation: 2 ranks x batch 1 x 2 micro-batches = 4 rows per step
$MPIRUN "$MT" train $C --batch 1 --grad-accum 2 --dist-bucket-kb 16 --out "$TMP/f4" 2> "$TMP/f4.err"
check "full, 2 ranks x batch 1 x grad-accum 2: losses within 1e-6, weights within 1e-5 of 1 x batch 4" \
  "cmpl $TMP/f4.err $TMP/f1.err 1e-6 && cmpw $TMP/f4/model/model.safetensors $TMP/f1/model/model.safetensors 1e-5"

# LoRA (adapter and token-row gradients)
L="$C --method lora"
"$MT" train $L --batch 4 --out "$TMP/l1" 2> "$TMP/l1.err"
$MPIRUN "$MT" train $L --batch 2 --dist-bucket-kb 8 --out "$TMP/l2" 2> "$TMP/l2.err"; rc=$?
check "lora: 2 ranks ran and wrote the adapter" "[ $rc -eq 0 ] && [ -f $TMP/l2/adapter/adapter_model.safetensors ]"
check "lora: losses within 1e-6 relative" "cmpl $TMP/l2.err $TMP/l1.err 1e-6"
check "lora: adapter (and token rows) within 1e-5 relative (L2)" "cmpw $TMP/l2/adapter/adapter_model.safetensors $TMP/l1/adapter/adapter_model.safetensors 1e-5"

# a rank killed mid-run: the job ends promptly; --resume completes it bit for bit
K="$C --batch 2 --save-every 5"
$MPIRUN "$MT" train $K --out "$TMP/k0" 2> "$TMP/k0.err"
MEMTUNE_TEST_KILL_AFTER_STEP=10 MEMTUNE_TEST_KILL_RANK=1 $MPIRUN "$MT" train $K --out "$TMP/k1" > "$TMP/k1.out" 2>&1; rc=$?
secs=$(python3 -c "import time, re; print('%.1f' % (time.time() - float(re.search(r'killing rank 1 at ([0-9.]+)', open('$TMP/k1.out').read()).group(1))))")
echo "     (rank 1 killed after step 10: the job ended with exit $rc, $secs s later)"
check "kill rank 1 after step 10: the job ends (non-zero) within 10 s, checkpoint 10 kept, no model" \
  "[ $rc -ne 0 ] && python3 -c 'import sys; sys.exit(not $secs < 10)' && [ -f $TMP/k1/checkpoints/step-00000010.ckpt ] && [ ! -e $TMP/k1/model ]"
cp -r "$TMP/k1" "$TMP/k2"
$MPIRUN "$MT" train $K --out "$TMP/k1" --resume 2> "$TMP/k1r.err"; rc=$?
check "--resume on 2 ranks completes from step 10" "[ $rc -eq 0 ] && grep -q 'resumed from .*step-00000010.ckpt' $TMP/k1r.err"
check "... and its weights equal the uninterrupted 2-rank run byte for byte" "cmp -s $TMP/k1/model/model.safetensors $TMP/k0/model/model.safetensors"
check "... and its metrics have each step once" "[ \$(grep -c '\"loss\"' $TMP/k1/metrics.jsonl) -eq 20 ]"
"$MT" train $C --batch 4 --save-every 5 --out "$TMP/k2" --resume 2> "$TMP/k2r.err"; rc=$?
check "--resume on 1 process x batch 4 (the same rows per step) completes, within 1e-5 of the 2-rank run" \
  "[ $rc -eq 0 ] && cmpw $TMP/k2/model/model.safetensors $TMP/k0/model/model.safetensors 1e-5"
"$MT" train $C --batch 2 --save-every 5 --out "$TMP/k0" --resume 2> "$TMP/k3.err"; rc=$?
check "--resume with other rows per step (1 x batch 2): refused, saying how many" "[ $rc -ne 0 ] && grep -q 'on 2 ranks; resume with the same settings (or as many rows per step: ranks x --batch x --grad-accum = 4)' $TMP/k3.err"

# a rank that disagrees, the memory method, the dry run
mpirun --oversubscribe $( [ "$(id -u)" -eq 0 ] && echo --allow-run-as-root ) -np 1 "$MT" train $C --batch 2 --out "$TMP/m" : \
  -np 1 "$MT" train $C --batch 2 --lr 2e-3 --out "$TMP/m" > "$TMP/m.out" 2>&1; rc=$?
check "a rank with other options: refused with one message naming it" \
  "[ $rc -ne 0 ] && [ \$(grep -c \"rank 1's training options\" $TMP/m.out) -eq 1 ] && [ ! -e $TMP/m/model ]"
printf '{"input": "The capital of Zorbia is", "output": " Quux."}\n' > "$TMP/facts.jsonl"
$MPIRUN "$MT" train --model $M --data "$TMP/facts.jsonl" --steps 2 --threads 1 --out "$TMP/mem" > "$TMP/mem.out" 2>&1; rc=$?
check "--method memory on 2 ranks: refused with one clear message" \
  "[ $rc -ne 0 ] && [ \$(grep -c 'memory does not run on several ranks' $TMP/mem.out) -eq 1 ]"
$MPIRUN "$MT" train $C --batch 2 --dry-run --out "$TMP/dry" > "$TMP/dry.json" 2> "$TMP/dry.err"
check "--dry-run: one JSON with per-rank memory and bytes exchanged per step" "python3 -c \"
import json; d = json.load(open('$TMP/dry.json'))['dist']
assert d['ranks'] == 2 and d['rows_per_step'] == 4 and d['memory_per_rank'] > 0, d
assert d['gradient_bytes_per_step'] == 4 * json.load(open('$TMP/dry.json'))['trainable_parameters'], d
assert d['sent_bytes_per_rank_per_step'] == d['gradient_bytes_per_step'], d\""
exit $fail
