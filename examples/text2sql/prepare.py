#!/usr/bin/env python3
"""Assembles the text-to-SQL training and evaluation sets from what `memtune data` wrote.

usage: prepare.py GENERATED.jsonl FILTERED.jsonl GOLD.jsonl OUTDIR

- GENERATED: `memtune data` output (schema facts {"input","output"} and question -> SQL
  pairs {"question","sql","answer"}); every 10th SQL pair is held out as OUTDIR/heldout.jsonl
  (same distribution as training, never trained on).
- FILTERED: `memtune data --filter` output (existing question -> SQL lines that run).
- GOLD: the test set. Any training line whose question or SQL equals a gold one (ignoring
  case and spacing) is removed: the shipped query files contain the gold questions verbatim.
Writes OUTDIR/train.jsonl and OUTDIR/heldout.jsonl and prints the counts as JSON."""
import json, sys

def norm(s):
    return " ".join(s.lower().replace(";", " ").split())

gen_path, filt_path, gold_path, out = sys.argv[1:5]
gold = [json.loads(l) for l in open(gold_path) if l.strip()]
gold_q = {norm(g["question"]) for g in gold}
gold_sql = {norm(g["sql"]) for g in gold}
train, heldout, seen = [], [], set()
counts = {"schema_facts": 0, "generated_sql": 0, "heldout": 0, "filtered_sql": 0, "removed_gold_overlap": 0,
          "removed_duplicates": 0}

def add(line, kind):
    q = line.get("question") or line.get("input")
    if norm(q) in gold_q or ("sql" in line and norm(line["sql"]) in gold_sql):
        counts["removed_gold_overlap"] += 1
        return
    if norm(q) in seen:
        counts["removed_duplicates"] += 1
        return
    seen.add(norm(q))
    train.append(line)
    counts[kind] += 1

n_sql = 0
for l in open(gen_path):
    o = json.loads(l)
    if "sql" not in o:
        add({"input": o["input"], "output": o["output"]}, "schema_facts")
        continue
    n_sql += 1
    pair = {"question": o["question"], "sql": o["sql"]}
    if n_sql % 10 == 0:
        heldout.append(pair)
        seen.add(norm(o["question"]))
        counts["heldout"] += 1
    else:
        add(pair, "generated_sql")
for l in open(filt_path):
    o = json.loads(l)
    add({"question": o["question"], "sql": o["sql"]}, "filtered_sql")
with open(out + "/train.jsonl", "w") as f:
    f.writelines(json.dumps(x) + "\n" for x in train)
with open(out + "/heldout.jsonl", "w") as f:
    f.writelines(json.dumps(x) + "\n" for x in heldout)
counts["train_lines"] = len(train)
print(json.dumps(counts))
