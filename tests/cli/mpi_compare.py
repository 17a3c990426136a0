#!/usr/bin/env python3
"""Compares what two training runs produced (tests/cli/mpi.sh), without numpy.

  mpi_compare.py losses A.err B.err REL        every "exact_loss STEP LOSS" line of A and B
                                               (the same steps) within REL relative
  mpi_compare.py weights A.safetensors B.safetensors REL
                                               the same F32 tensors (names, shapes), and over
                                               all of them ||a - b||_2 <= REL * ||b||_2
Prints the relative difference found (and, for information, the largest per-tensor
max|a - b| / max|b|); exits 1 when over REL.

Why the L2 norm: 2 ranks x --batch 2 sum the same per-row gradients as 1 process x --batch 4
in another order, and AdamW turns a last-bit difference of a near-zero gradient element into
a visible one (it divides by sqrt(v)): one process with --batch 2 --grad-accum 2 differs from
--batch 4 element-wise just as much (bench/RESULTS.md, data-parallel training)."""
import json
import math
import struct
import sys


def losses(path):
    out = {}
    for line in open(path):
        if line.startswith("exact_loss "):
            _, step, loss = line.split()
            out[int(step)] = float(loss)
    return out


def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", (name, t["dtype"])
        a, b = t["data_offsets"]
        out[name] = (t["shape"], struct.unpack("<%df" % ((b - a) // 4), data[a:b]))
    return out


def main():
    kind, a, b, rel = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    worst = 0.0
    if kind == "losses":
        la, lb = losses(a), losses(b)
        if not la or sorted(la) != sorted(lb):
            print("steps differ: %s vs %s" % (sorted(la), sorted(lb)))
            return 1
        for s in la:
            worst = max(worst, abs(la[s] - lb[s]) / max(abs(lb[s]), 1e-30))
        what = "%d losses" % len(la)
    else:
        ta, tb = tensors(a), tensors(b)
        if sorted(ta) != sorted(tb):
            print("tensor names differ")
            return 1
        d2 = n2 = elem = 0.0
        for name in ta:
            (sa, va), (sb, vb) = ta[name], tb[name]
            if sa != sb:
                print("shapes differ: %s %s %s" % (name, sa, sb))
                return 1
            d2 += sum((x - y) ** 2 for x, y in zip(va, vb))
            n2 += sum(y * y for y in vb)
            scale = max(abs(x) for x in vb) or 1.0
            elem = max(elem, max(abs(x - y) for x, y in zip(va, vb)) / scale)
        worst = math.sqrt(d2 / n2) if n2 > 0 else math.sqrt(d2)
        what = "%d tensors (largest per-tensor max|a-b|/max|b| %.3g), L2 norm" % (len(ta), elem)
    print("%s: relative difference %.3g (limit %g)" % (what, worst, rel))
    return 0 if worst <= rel else 1


sys.exit(main())
