#!/usr/bin/env python3
"""How this disk's fsync behaves on its own: write + fdatasync in a loop, report the latency
distribution. Run it next to bench/ingest.sh to tell the store's stalls from the disk's.

Usage: bench/fsync_probe.py [seconds=10] [bytes_per_write=8192] [dir=.]"""
import os
import sys
import tempfile
import time

secs = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
size = int(sys.argv[2]) if len(sys.argv) > 2 else 8192
directory = sys.argv[3] if len(sys.argv) > 3 else "."
fd, path = tempfile.mkstemp(prefix="fsync-probe-", dir=directory)
buf = os.urandom(size)
lat = []
off = 0
end = time.time() + secs
try:
    while time.time() < end:
        os.pwrite(fd, buf, off)
        # A 64 MiB ring, like a WAL that is reset after each checkpoint.
        off = 0 if off > (64 << 20) else off + size
        t = time.perf_counter()
        os.fdatasync(fd)
        lat.append(time.perf_counter() - t)
finally:
    os.close(fd)
    os.unlink(path)
lat.sort()
n = len(lat)
pct = lambda p: lat[min(n - 1, int(n * p))] * 1e3
print(
    f"fdatasync of {size} B, {n} calls in {secs:.0f} s: p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, "
    f"p99.9 {pct(0.999):.2f} ms, max {lat[-1] * 1e3:.1f} ms; "
    f"over 10 ms: {sum(x > 0.01 for x in lat)}, over 100 ms: {sum(x > 0.1 for x in lat)}"
)
