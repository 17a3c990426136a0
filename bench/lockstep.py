#!/usr/bin/env python3
"""Runs several benchmark processes in lockstep so that they share the machine's noise.

On a shared 2-core machine, other people's jobs come and go within seconds; timing engine A
for a minute and then engine B for a minute compares two different machines. Here every
engine is started once (model loaded, state allocated), prints "ready", and then waits for
commands on stdin: the driver sends "warm" (an untimed unit of work) or "go" (a timed one)
to one engine at a time, in turns, rotating who goes first each round, and each engine
answers "ok SECONDS". At the end it sends "end" and collects each engine's JSON result line.

For each engine it also records, over its timed units only, the CPU time that OTHER
processes used while the unit ran (from /proc/stat minus the engine's own CPU time from
/proc/PID/stat), as others_cpu_pct of the machine: a noise gauge for the table.

usage: lockstep.py --out RESULTS.jsonl --warm W --timed N [--gap S] [--stderr LOG] \
                   TAG=COMMAND [TAG=COMMAND ...]
COMMAND is split with shlex; it may start with `env VAR=value ...`; --lockstep is appended.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

CLK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count()


def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal


def own_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])  # utime stime (all threads)
    except OSError:
        return 0


class Engine:
    def __init__(self, tag, cmd, err):
        self.tag = tag
        self.p = subprocess.Popen(shlex.split(cmd) + ["--lockstep"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        self.timed_s = 0.0
        self.others_s = 0.0
        self.units = 0

    def expect(self, prefix):
        line = self.p.stdout.readline()
        if not line.startswith(prefix):
            raise RuntimeError("%s: expected %r, got %r (exit %s)" % (self.tag, prefix, line, self.p.poll()))
        return line

    def unit(self, cmd):
        b0, o0, t0 = busy_ticks(), own_ticks(self.p.pid), time.perf_counter()
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        self.expect("ok")
        t1, b1, o1 = time.perf_counter(), busy_ticks(), own_ticks(self.p.pid)
        if cmd == "go":
            self.timed_s += t1 - t0
            self.others_s += max(0, (b1 - b0) - (o1 - o0)) / CLK
            self.units += 1

    def finish(self):
        self.p.stdin.write("end\n")
        self.p.stdin.flush()
        self.p.stdin.close()
        out = self.p.stdout.read().strip().splitlines()
        _, status, ru = os.wait4(self.p.pid, 0)
        self.p.returncode = os.waitstatus_to_exitcode(status)
        if self.p.returncode != 0 or not out:
            raise RuntimeError("%s: exited with %s" % (self.tag, self.p.returncode))
        d = json.loads(out[-1])
        d.update(tag=self.tag, lockstep=True, cpu_s=round(ru.ru_utime + ru.ru_stime, 2),
                 os_maxrss_mb=round(ru.ru_maxrss / 1024, 1), timed_wall_s=round(self.timed_s, 2),
                 others_cpu_pct=round(100 * self.others_s / (self.timed_s * NCPU), 1) if self.timed_s else None)
        return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--warm", type=int, default=1)
    ap.add_argument("--timed", type=int, default=3)
    ap.add_argument("--gap", type=float, default=0.15,
                    help="seconds between units, so the last engine's spinning threads settle")
    ap.add_argument("--stderr", default=None)
    ap.add_argument("engines", nargs="+")
    a = ap.parse_args()
    err = open(a.stderr, "a") if a.stderr else None
    engines = []
    try:
        for spec in a.engines:
            tag, cmd = spec.split("=", 1)
            engines.append(Engine(tag, cmd, err))
        for e in engines:
            e.expect("ready")
        n = len(engines)
        for r in range(a.warm + a.timed):
            cmd = "warm" if r < a.warm else "go"
            for i in range(n):
                e = engines[(r + i) % n]
                time.sleep(a.gap)
                e.unit(cmd)
            print("[lockstep] round %d/%d (%s) done" % (r + 1, a.warm + a.timed, cmd), file=sys.stderr)
        results = [e.finish() for e in engines]
    except Exception as ex:  # one failed engine must not hang the others
        for e in engines:
            if e.p.poll() is None:
                e.p.kill()
        print("lockstep: %s" % ex, file=sys.stderr)
        return 1
    with open(a.out, "a") as f:
        for d in results:
            f.write(json.dumps(d) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
