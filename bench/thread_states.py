#!/usr/bin/env python3
"""Which threads of a process run (R) or wait for the device (D), sampled every 5 ms: tells a
tail caused by the disk (the ingest writer in D) from one caused by a blocked async worker (a
tokio worker in D). For samples of a thread whose name starts with STACKS (default
"tokio-rt-worker"; needs root), it also counts the kernel stacks it was blocked in.
BENCHMARKS.md ("Where the open-loop tail comes from") used it next to an open-loop run.

Usage: bench/thread_states.py PID [seconds=10] [stacks_prefix=tokio-rt-worker]"""
import collections
import os
import sys
import time

pid = sys.argv[1]
secs = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
prefix = sys.argv[3] if len(sys.argv) > 3 else "tokio-rt-worker"

states = collections.Counter()
stacks = collections.Counter()
samples = 0
end = time.time() + secs
while time.time() < end:
    samples += 1
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        break
    for tid in tids:
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        # The name is in parentheses and may itself contain spaces or parentheses.
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state = stat[stat.rindex(")") + 2]
        states[(name, tid, state)] += 1
        if state == "D" and name.startswith(prefix):
            try:
                stacks[open(f"/proc/{pid}/task/{tid}/stack").read()] += 1
            except OSError:
                pass
    time.sleep(0.005)

print(f"{samples} samples over {secs:.0f} s; per thread, samples running (R) or in device wait (D):")
for (name, tid, state), n in sorted(states.items()):
    if state in "RD":
        print(f"  {name:<16} {tid:>7} {state} {n}")
for stack, n in stacks.most_common(5):
    print(f"{n} samples of {prefix}* in D, kernel stack:\n{stack}")
