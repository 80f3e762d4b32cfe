#!/usr/bin/env bash
# The host's own open-loop tail (BENCHMARKS.md, "2026-12-08 01:02–01:16"): `switchboard simulate`
# at RATE events/s for 10 s against `bench-baseline` (bare hyper, answers 202 without work) on
# CPU 0, the client on CPU 1, RUNS times. What the client sees here is the floor under the
# ingest benchmark's open-loop p99: pauses of the machine itself, which a server that does no
# work drains at once. Talks only to 127.0.0.1 and stops by itself.
# Usage: bench/open_loop_floor.sh [rate] [runs]   (builds release first)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
RATE=${1:-20000}
RUNS=${2:-4}
PORT=18091
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release -p switchboard -p bench-baseline 2>&1 | tail -1
for run in $(seq "$RUNS"); do
  taskset -c 0 target/release/bench-baseline 127.0.0.1:$PORT > /dev/null &
  bpid=$!
  wait_port $PORT
  taskset -c 1 target/release/switchboard simulate --url "http://127.0.0.1:$PORT/webhooks/genesys" \
    --secret=unused --rate "$RATE" --events $((RATE * 10)) > "$WORK/open.json" 2> /dev/null || true
  python3 - "$WORK/open.json" "$run" "$RATE" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
l = d["ack_latency_ms"]
print(f"run {sys.argv[2]} at {sys.argv[3]}/s: acked {d['acked']} of {d['sent']}, "
      f"p50 {l['p50']:.2f} ms, p99 {l['p99']:.2f} ms, p99.9 {l['p999']:.2f} ms, max {l['max']:.1f} ms")
PY
  kill $bpid
  wait $bpid 2> /dev/null || true
done
