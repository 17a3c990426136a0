#!/usr/bin/env python3
"""Decode speed of llama.cpp on a GGUF that memtune wrote, as one results.jsonl line for
bench/report.py.  usage: llamacpp.py LLAMA_BENCH GGUF TAG THREADS PROMPT NEW REPS [--after-prompt]

Runs `llama-bench -m GGUF -t THREADS -p PROMPT -n NEW -r REPS -o jsonl` (llama.cpp's own
benchmark: a warm-up run, then REPS repetitions of a PROMPT-token prefill and, separately,
NEW generated tokens from an empty context) and records the mean tokens/s of each, the
child's peak RSS, and the CPU other processes used meanwhile (a noise gauge, as in
bench/lockstep.py). With --after-prompt the NEW tokens follow the PROMPT (what memtune's
bench_decode measures): `-p PROMPT -n 0 -pg PROMPT,NEW`, and the decode rate is
NEW / (mean time of prompt+generation - mean time of the prompt alone), as llama-bench has no
option for generation at a depth in the build this was written against. llama.cpp is not
part of memtune: point LLAMA_BENCH at your own build."""

import json
import os
import resource
import subprocess
import sys
import time


def busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def main():
    exe, gguf, tag, threads, prompt, new, reps = sys.argv[1:8]
    after = "--after-prompt" in sys.argv[8:]
    cmd = [exe, "-m", gguf, "-t", threads, "-p", prompt, "-n", new, "-r", reps, "-o", "jsonl"]
    if after:
        cmd = [exe, "-m", gguf, "-t", threads, "-p", prompt, "-n", "0", "-pg", "%s,%s" % (prompt, new), "-r", reps,
               "-o", "jsonl"]
    b0, t0 = busy_s(), time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    b1, t1 = busy_s(), time.time()
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-2000:])
        sys.exit("llama-bench failed (exit %d): %s" % (out.returncode, " ".join(cmd)))
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = ru.ru_utime + ru.ru_stime
    rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    tg = [r for r in rows if r["n_gen"] > 0 and r["n_prompt"] == (int(prompt) if after else 0)]
    pp = [r for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0]
    if not tg or (after and not pp):
        sys.exit("llama-bench printed no generation result: " + out.stdout[-500:])
    if after:  # the generation part of prompt+generation
        gen_s = (tg[0]["avg_ns"] - pp[0]["avg_ns"]) * 1e-9
        if gen_s <= 0:
            sys.exit("llama-bench: prompt+generation took no longer than the prompt alone")
        tg[0] = dict(tg[0], avg_ts=int(new) / gen_s, stddev_ts=None)
    ncpu = os.cpu_count() or 1
    rec = {"tag": tag, "engine": "llama.cpp", "params": tg[0]["model_n_params"], "prompt": int(prompt),
           "new": int(new), "decode_tok_s": tg[0]["avg_ts"], "decode_tok_s_stddev": tg[0]["stddev_ts"],
           "prefill_tok_s": pp[0]["avg_ts"] if pp else None, "reps": int(reps), "after_prompt": after,
           "peak_rss_mb": ru.ru_maxrss / 1024, "build": "%s (%s)" % (tg[0].get("build_commit"), tg[0].get("build_number")),
           "others_cpu_pct": round(100 * max(0.0, (b1 - b0) - own) / ((t1 - t0) * ncpu), 1)}
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
