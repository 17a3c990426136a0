#!/usr/bin/env python3
"""Formats bench/run's results.jsonl as a Markdown table: memtune vs torch, ratios, MFU,
share of the memory-bandwidth bound, peak RSS.  usage: report.py results.jsonl"""

import json
import sys


def load(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    by_tag = {r["tag"]: r for r in rows if "tag" in r}
    other = [r for r in rows if "tag" not in r]
    return by_tag, other


def fmt(x, nd=1):
    if x is None:
        return "n/a"
    if x >= 100:
        return "%.0f" % x
    return ("%%.%df" % nd) % x


def main():
    by_tag, other = load(sys.argv[1])
    # bench/run measures the ceilings before and after the benchmarks; noise only lowers
    # them, so the best of the two runs is used
    peaks = [r["gflops"] for r in other if r.get("bench") == "sgemm_peak"]
    peak = max(peaks) if peaks else None
    sgemm = {}
    for r in other:
        if r.get("bench") == "sgemm" and r["gflops"] > sgemm.get(r["n"], {"gflops": 0})["gflops"]:
            sgemm[r["n"]] = r
    sgemm = [sgemm[n] for n in sorted(sgemm)]
    bws = [r for r in other if r.get("bench") == "bandwidth"]
    bw = dict(bws[0], read_gbs=max(r["read_gbs"] for r in bws),
              copy_gbs=max(r["copy_gbs"] for r in bws)) if bws else None
    mach = [r for r in other if r.get("bench") == "machine"]
    out = []
    if mach:
        m0 = mach[0]
        out.append("Machine: %s, %d cores, %d threads; %s; memtune %s" % (
            m0["cpu"], m0["cores"], m0["threads"], m0["date"], m0["git"]))
        out.append("Load average (1/5/15 min) at start: %s; at end: %s" % (
            m0.get("uptime_start", "?"), mach[-1].get("uptime_end", "?")))
    if peak:
        out.append("sgemm (OpenBLAS, %d threads): %s GFLOP/s; peak used for MFU: %.1f GFLOP/s" % (
            sgemm[0]["threads"] if sgemm else 0,
            ", ".join("n=%d %.1f" % (r["n"], r["gflops"]) for r in sgemm), peak))
    if bw:
        out.append("Memory bandwidth: read %.1f GB/s, copy %.1f GB/s (read used for the decode bound)"
                   % (bw["read_gbs"], bw["copy_gbs"]))
    out.append("")

    out.append("| benchmark | model | params | engine | tokens/s | memtune / torch | MFU or % of BW bound | peak RSS (MB) | others' CPU | notes |")
    out.append("|---|---|---:|---|---:|---:|---:|---:|---:|---|")
    groups = []
    for tag in by_tag:
        g = tag.rsplit("/", 1)[0]
        if g not in groups:
            groups.append(g)
    lora_groups = [g for g in groups if g.startswith("lora/")]
    groups = [g for g in groups if not g.startswith("lora/")]
    for g in groups:
        kind, model = g.split("/")
        torch = by_tag.get(g + "/torch")
        llama = by_tag.get(g + "/llama.cpp")
        for eng in ("memtune", "memtune-passive", "torch", "llama.cpp"):
            r = by_tag.get(g + "/" + eng)
            if not r:
                continue
            params = r["params"]
            if kind == "decode":
                tps = r["decode_tok_s"]
                bound = bw["read_gbs"] * 1e9 / (params * 4) if bw else None
                if params * 4 < 32 << 20:   # weights fit in the last-level cache: no DRAM bound
                    eff = "in cache"
                else:
                    eff = "%.0f%% of %s tok/s" % (100 * tps / bound, fmt(bound)) if bound else "n/a"
                label = "decode %d new (prompt %d)" % (r["new"], r["prompt"])
                check = "best %s tok/s; " % fmt(r["best_decode_tok_s"]) if "best_decode_tok_s" in r else ""
                if eng == "llama.cpp":
                    if r.get("after_prompt"):
                        check += "llama-bench pg%d,%d minus pp%d (the %d tokens after the prompt), pp%d %s tok/s; %d reps, not in lockstep; build %s" % (
                            r["prompt"], r["new"], r["prompt"], r["new"], r["prompt"], fmt(r["prefill_tok_s"]), r["reps"], r["build"])
                    else:
                        check += "llama-bench tg%d (from an empty context) ± %s, pp%d %s tok/s; %d reps, not in lockstep; build %s" % (
                            r["new"], fmt(r["decode_tok_s_stddev"]), r["prompt"], fmt(r["prefill_tok_s"]), r["reps"], r["build"])
                elif torch and eng != "torch":
                    agree = sum(a == b for a, b in zip(r["ids"], torch["ids"]))
                    check += "greedy ids = torch: %d/%d" % (agree, len(r["ids"]))
                elif eng == "torch":
                    check += "prefill %s tok/s; RSS after import %s" % (fmt(r["prefill_tok_s"]), fmt(r["rss_after_import_mb"]))
                if eng.startswith("memtune"):
                    check += "; prefill %s tok/s" % fmt(r["prefill_tok_s"])
                    if llama:
                        check += "; **%.2f× llama.cpp**" % (tps / llama["decode_tok_s"])
            else:
                tps = r["tok_s"]
                eff = "%.1f%%" % (100 * 6 * params * tps / (peak * 1e9)) if peak else "n/a"
                label = "train full %dx%d AdamW" % (r["B"], r["T"])
                check = "best %s tok/s; loss %.3f; %d+%d steps, median %.2f s" % (
                    fmt(r["B"] * r["T"] / r["best_step_s"]), r["first_loss"], r["warmup"], r["steps"], r["step_s"])
                if eng == "torch":
                    check += "; RSS after import %s" % fmt(r["rss_after_import_mb"])
            ratio = "%.2f" % (tps / (torch["decode_tok_s"] if kind == "decode" else torch["tok_s"])) \
                if torch and eng != "torch" else ""
            others = "%.0f%%" % r["others_cpu_pct"] if "others_cpu_pct" in r else "?"
            out.append("| %s | %s | %.1fM | %s | %s | %s | %s | %s | %s | %s |" % (
                label, model, params / 1e6, eng, fmt(tps), ratio, eff, fmt(r["peak_rss_mb"]), others, check))
    for g in lora_groups:
        out += lora_table(g, by_tag, peak)
    print("\n".join(out))


LORA_ENGINES = ("memtune-full", "memtune-lora", "memtune-lora-bf16", "memtune-lora-q8_0", "torch-full", "torch-lora")


def lora_table(g, by_tag, peak):
    """LoRA vs full fine-tuning: step time, tokens/s, peak RSS; ratios against the same
    engine's full fine-tuning and (memtune) against torch's LoRA. MFU counts 6N FLOPs per
    token for full fine-tuning and 4N for LoRA (no weight gradients of the base)."""
    model = g.split("/")[1]
    full_mt, full_t, lora_t = (by_tag.get(g + "/" + e) for e in ("memtune-full", "torch-full", "torch-lora"))
    out = ["", "LoRA vs full fine-tuning, %s, batch %s x %s, AdamW (memtune with OMP_WAIT_POLICY=PASSIVE):" % (
        model, *(lambda r: (r["B"], r["T"]))(full_mt or full_t or {"B": "?", "T": "?"})), "",
           "| engine | method | base | trainable | step (s) | tokens/s | time vs own full | peak RSS (MB) | RSS vs own full | RSS at end (MB) | weights (MB) | memtune / torch LoRA | MFU | others' CPU |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in LORA_ENGINES:
        r = by_tag.get(g + "/" + e)
        if not r:
            continue
        own = full_mt if e.startswith("memtune") else full_t
        flops = (4 if r.get("method") == "lora" else 6) * r["params"] * r["tok_s"]
        vs_t = "%.2f" % (r["tok_s"] / lora_t["tok_s"]) if lora_t and e.startswith("memtune-lora") else ""
        out.append("| %s | %s | %s | %s | %.2f | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            e.split("-")[0], r.get("method", "full"), r.get("base_dtype", "f32"), "{:,}".format(r.get("trainable", r["params"])),
            r["step_s"], fmt(r["tok_s"]), "%.2f" % (r["step_s"] / own["step_s"]) if own else "",
            fmt(r["peak_rss_mb"]), "%.2f" % (r["peak_rss_mb"] / own["peak_rss_mb"]) if own else "",
            fmt(r.get("rss_end_mb")), fmt(r.get("weights_mb")), vs_t,
            "%.1f%%" % (100 * flops / (peak * 1e9)) if peak else "n/a",
            "%.0f%%" % r["others_cpu_pct"] if "others_cpu_pct" in r else "?"))
    return out


if __name__ == "__main__":
    main()
