#!/usr/bin/env python3
"""WAL bytes per event for the store's real schema (read from schema.rs), by variant.

Replays the writer's statements for one ingest command (dedup probe, INSERT OR IGNORE event,
dedup upsert, one delivery with the envelope as payload) in commits of N events, each followed
by a commit that deletes the delivered rows (what a file target does), on top of 50,000 events
of history. Prints WAL frames per commit pair and WAL KiB per event. Variants:
  base       the schema as it is, time-ordered (v7) event ids
  v4         random (v4) event ids, as before 2026-11-23
  nopayload  deliveries without their own copy of the envelope
  nodeliv    no deliveries at all (events + dedup only)
Usage: bench/wal_amplification.py [events_per_commit=4] [page_size=4096]"""
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
src = open(os.path.join(HERE, "..", "crates", "switchboard-store", "src", "schema.rs")).read()
DDL = re.search(r'DDL_V1: &str = "(.*?)";', src, re.S).group(1)
N = int(sys.argv[1]) if len(sys.argv) > 1 else 4
PAGE = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
ENVELOPE = "x" * 1200  # a typical normalized Genesys event
COMMITS = 2000


def v7():
    return str(uuid.UUID(int=(int(time.time() * 1000) << 80) | random.getrandbits(80)))


def run(variant):
    new_id = (lambda: str(uuid.uuid4())) if variant == "v4" else v7
    with tempfile.TemporaryDirectory() as d:
        db = os.path.join(d, "wal.db")
        c = sqlite3.connect(db, isolation_level=None)
        c.execute(f"PRAGMA page_size={PAGE}")
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA wal_autocheckpoint=0")
        c.executescript(DDL)
        c.execute("BEGIN")
        for i in range(50_000):
            eid = new_id()
            c.execute("INSERT INTO events VALUES (?, 's', ?, ?)", (eid, i, ENVELOPE))
            c.execute("INSERT INTO dedup VALUES (?, ?, ?)", (uuid.uuid4().hex, eid, i + 86_400_000))
        c.execute("COMMIT")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        t = 50_000
        for _ in range(COMMITS):
            seqs = []
            c.execute("BEGIN IMMEDIATE")
            for _ in range(N):
                t += 1
                eid, key = new_id(), uuid.uuid4().hex
                c.execute("SAVEPOINT cmd")
                c.execute("SELECT event_id, expires_at_ms FROM dedup WHERE key = ?", (key,)).fetchall()
                c.execute("INSERT OR IGNORE INTO events VALUES (?, 's', ?, ?)", (eid, t, ENVELOPE))
                c.execute(
                    "INSERT INTO dedup VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "event_id = excluded.event_id, expires_at_ms = excluded.expires_at_ms",
                    (key, eid, t + 86_400_000),
                )
                if variant != "nodeliv":
                    payload = "" if variant == "nopayload" else ENVELOPE
                    cur = c.execute(
                        "INSERT INTO deliveries(event_id, target, rule, payload, attempts, "
                        "enqueued_at_ms, next_attempt_at_ms) VALUES (?, 'file', 'all', ?, 0, ?, ?)",
                        (eid, payload, t, t),
                    )
                    seqs.append(cur.lastrowid)
                c.execute("RELEASE cmd")
            c.execute("COMMIT")
            if seqs:
                c.execute("BEGIN IMMEDIATE")
                c.executemany("DELETE FROM deliveries WHERE seq = ?", [(s,) for s in seqs])
                c.execute("COMMIT")
        wal = os.path.getsize(db + "-wal")
        c.close()
    return wal / COMMITS / (PAGE + 24), wal / (COMMITS * N) / 1024


print(f"{N} events per commit, page size {PAGE}:")
for variant in ("base", "v4", "nopayload", "nodeliv"):
    frames, kib = run(variant)
    print(f"  {variant:10} {frames:6.1f} WAL frames per commit pair, {kib:5.1f} KiB of WAL per event")
