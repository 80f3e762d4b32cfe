#!/usr/bin/env python3
"""CPU per thread of a running process in short windows, to see whether work comes in bursts.

Usage: bench/thread_cpu.py PID SECONDS [WINDOW_MS]

Every window (50 ms by default) it reads utime + stime of each thread from /proc/PID/task and
prints the windows where a thread other than a tokio worker used at least two clock ticks; at the
end, each thread name's total and a histogram of the whole process's CPU per window. Clock ticks
are 10 ms, so windows shorter than 50 ms mostly show rounding. Reads /proc only; stops by itself.
"""
import collections
import os
import sys
import time


def snap(pid):
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue  # the thread ended between listdir and open
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        threads[tid] = (name, int(fields[11]) + int(fields[12]))
    return threads


def main():
    pid, secs = sys.argv[1], float(sys.argv[2])
    window = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.05
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    prev, start = snap(pid), time.monotonic()
    totals, hist = collections.Counter(), collections.Counter()
    while time.monotonic() - start < secs:
        time.sleep(window)
        try:
            cur = snap(pid)
        except FileNotFoundError:
            break  # the process exited
        busy, notable = 0, []
        for tid, (name, ticks) in cur.items():
            d = ticks - prev.get(tid, (name, ticks))[1]
            busy += d
            totals[name] += d
            if d >= 2 and not name.startswith("tokio"):
                notable.append(f"{name}:{d * tick_ms:.0f}ms")
        hist[round(busy * tick_ms)] += 1
        if notable:
            print(f"{time.monotonic() - start:6.2f}s process {busy * tick_ms:.0f} ms  " + " ".join(notable))
        prev = cur
    print("CPU per thread name (ms):", {k: round(v * tick_ms) for k, v in totals.most_common()})
    print(f"windows by process CPU (ms per {window * 1000:.0f} ms window):", sorted(hist.items()))


if __name__ == "__main__":
    main()
