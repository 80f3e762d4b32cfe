#!/usr/bin/env bash
# Open-loop A/B of two switchboard binaries (BENCHMARKS.md, "descriptor table"): for each of
# PAIRS pairs, a fresh `serve` of A then of B (durable store, file target, pinned to CPU 0) takes
# `simulate` at RATE events/s for 10 s (on CPU 1). Prints the client's ack percentiles, the
# server's count of acks over 10 and 25 ms, and the descriptor table size (FDSize) before and
# after. Talks only to 127.0.0.1 and stops by itself.
# Usage: bench/open_loop_ab.sh A_BINARY B_BINARY [rate] [pairs]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
A=${1:?usage: bench/open_loop_ab.sh A_BINARY B_BINARY [rate] [pairs]}
B=${2:?usage: bench/open_loop_ab.sh A_BINARY B_BINARY [rate] [pairs]}
RATE=${3:-10500}
PAIRS=${4:-6}
PORT=18080
SECRET=bench-secret-0123456789
SIM=$A # the load generator is the same binary in every run
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

bench_config "$WORK/sb.toml" $PORT "$WORK/data" "$SECRET"

fdsize() { awk '/FDSize/ {print $2}' "/proc/$1/status"; }

one() {
  local bin=$1 label=$2
  rm -rf "$WORK/data"
  taskset -c 0 "$bin" serve --config "$WORK/sb.toml" > "$WORK/serve.log" 2>&1 &
  local pid=$!
  wait_port $PORT || { echo "server did not start:"; cat "$WORK/serve.log"; exit 1; }
  local f0 f1 client server
  f0=$(fdsize $pid)
  client=$(taskset -c 1 "$SIM" simulate --url "http://127.0.0.1:$PORT/webhooks/genesys" --secret="$SECRET" \
    --rate "$RATE" --events $((RATE * 10)) 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin); l = d["ack_latency_ms"]
print("errors %d, p50 %.2f, p99 %.2f, p99.9 %.2f, max %.1f ms" % (d["errors"], l["p50"], l["p99"], l["p999"], l["max"]))') || true
  f1=$(fdsize $pid)
  server=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '
    /^switchboard_ingest_ack_seconds_bucket/ && /le="0.01"/ {a = $2}
    /^switchboard_ingest_ack_seconds_bucket/ && /le="0.025"/ {b = $2}
    /^switchboard_ingest_ack_seconds_count/ {n = $2}
    END {printf "acks over 10 ms %d, over 25 ms %d", n - a, n - b}')
  echo "$label: $client | $server | FDSize $f0 -> $f1"
  kill $pid; wait $pid 2>/dev/null || true
}

for i in $(seq "$PAIRS"); do
  echo "== pair $i"
  one "$A" A
  one "$B" B
done
