#!/usr/bin/env bash
# Item 8: a disk that fills during the final save. Each method (full: DIR/model; LoRA and
# memory tuning: DIR/adapter) trains into a small tmpfs whose free space is set so the last
# checkpoint fits and the model/adapter does not: the run fails naming the write and the
# reason, DIR/model (or DIR/adapter) is absent rather than half-written, no staging directory
# is left behind, and once space is freed the same command with --resume writes the result
# byte for byte equal to an uninterrupted run's. Mounting needs root or an unprivileged user
# namespace; where neither is allowed the test reports SKIP (exit 77).
source "$(dirname "$0")/common.sh"
TMP="$ROOT/$BUILD/tmp/fault_full_disk"
if [ -z "${FAULT_IN_NAMESPACE:-}" ]; then
  rm -rf "$TMP"; mkdir -p "$TMP/mnt"
  # a private mount namespace, so the tmpfs is gone when the test ends, whatever happens
  for how in "-m" "-r -m"; do
    if unshare $how true 2> /dev/null; then
      FAULT_IN_NAMESPACE=1 exec unshare $how --propagation private bash "$ROOT/tests/fault/full_disk.sh"
    fi
  done
  echo "SKIP: cannot make a mount namespace here (needs root or unprivileged user namespaces) to mount a small tmpfs"
  exit 77
fi
MNT="$TMP/mnt"
if ! mount -t tmpfs -o size=24m tmpfs "$MNT" 2> "$TMP/mount.err"; then
  echo "SKIP: mounting a tmpfs is not permitted here: $(cat "$TMP/mount.err")"
  exit 77
fi
make_data "$TMP"

for method in full lora memory; do
  steps=6; [ $method = memory ] && steps=10
  A=$(args_for $method "$TMP" $steps 0)
  r=$(result_dir $method)
  train_ok $A --out "$TMP/$method-ref" 2> "$TMP/$method-ref.err" || echo "reference run failed: $(tail -2 "$TMP/$method-ref.err")"
  ckpt=$(stat -c %s "$TMP/$method-ref"/checkpoints/step-*.ckpt | head -1)
  result=$(du -sb "$TMP/$method-ref/$r" | cut -f1)
  # leave room for the last checkpoint, the small logs and half the result
  out="$MNT/$method"
  rm -rf "$MNT"/*
  avail=$(( $(df -B1 --output=avail "$MNT" | tail -1) ))
  fill=$(( avail - ckpt - result / 2 - 65536 ))
  head -c "$fill" /dev/zero > "$MNT/filler"
  train_ok $A --out "$out" 2> "$TMP/$method-full.err"; rc=$?
  check "$method: the run on a full disk fails" "[ $rc -ne 0 ]"
  check "$method: ... naming the reason" "grep -q 'No space left on device' $TMP/$method-full.err" || cat "$TMP/$method-full.err"
  check "$method: ... and the final checkpoint was written (the setup of this test)" "ls $out/checkpoints/step-*.ckpt > /dev/null 2>&1"
  check "$method: DIR/$r is absent, not half-written" "[ ! -e $out/$r ]"
  check "$method: no staging directory is left" "! ls -d $out/$r.* > /dev/null 2>&1"
  rm -f "$MNT/filler"
  train_ok $A --out "$out" --resume 2> "$TMP/$method-resume.err"; rc=$?
  check "$method: with space again, --resume writes DIR/$r equal to the uninterrupted run's" \
    "[ $rc -eq 0 ] && diff -r $TMP/$method-ref/$r $out/$r > /dev/null" || tail -3 "$TMP/$method-resume.err"
done
umount "$MNT"
exit $fail
