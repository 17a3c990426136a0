#!/usr/bin/env bash
# The completion margin's measurement (README: Memory tuning, "Completion"): tunes a fact set
# with a check every few steps and MEMTUNE_MARGIN_LOG, which logs every fact's smallest answer
# margin (stored token's logit minus the runner-up's) at each check, then reports how far a
# margin fell between two consecutive checks while training went on (the perturbation a
# "recalled" fact must survive), and how many exact facts later lost their exact answer, by
# the margin they had.
#   bench/memory_margin.sh FACTS.jsonl [STEPS] [CHECK_EVERY] [-- extra train flags]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$1; STEPS=${2:-150}; EVERY=${3:-5}; shift 3 || shift $#; [ "${1:-}" = "--" ] && shift
OUT=build/bench/memory_margin; rm -rf "$OUT"; mkdir -p "$OUT"
make -j2 build/memtune >/dev/null
MEMTUNE_MARGIN_LOG=$OUT/margins.jsonl build/memtune train --data "$DATA" --out "$OUT/run" --steps "$STEPS" \
  --check-every "$EVERY" --quiet "$@" || true
python3 - "$OUT/margins.jsonl" <<'PY'
import json, sys
checks = [json.loads(l) for l in open(sys.argv[1])]
drops, flips = [], {}
for a, b in zip(checks, checks[1:]):
    for m0, m1 in zip(a['margin'], b['margin']):
        if m0 > 0:
            drops.append(m0 - m1)
            bucket = min(int(m0), 4)
            n, lost = flips.get(bucket, (0, 0))
            flips[bucket] = (n + 1, lost + (m1 <= 0))
drops.sort()
print('checks %d, exact fact-check pairs %d' % (len(checks), len(drops)))
if drops:
    print('margin drop to the next check: max %.3f, 99th percentile %.3f, median %.3f' %
          (drops[-1], drops[int(0.99 * (len(drops) - 1))], drops[len(drops) // 2]))
for b in sorted(flips):
    n, lost = flips[b]
    print('margin in [%d, %s): %d pairs, %d lost the exact answer at the next check' % (b, b + 1 if b < 4 else 'inf', n, lost))
PY
