#!/usr/bin/env bash
# Stall drill (BENCHMARKS.md, "Where the open-loop tail comes from"): `switchboard simulate` sends
# open-loop at RATE events/s for SECS seconds to `switchboard serve` (durable store, one rule to a
# file target); 3 s in, the whole server is stopped with SIGSTOP for STALL seconds, as a disk or
# host stall would stop it. Reports the client's view (acked, errors by kind, latency
# percentiles), the server's slot hand-overs and shed connections, and the kernel's listen
# overflows during the run. Server on CPU 0, simulate on CPU 1; talks only to 127.0.0.1 and stops
# by itself.
# Usage: bench/stall.sh [rate=8900] [secs=10] [stall_secs=1] [binary=target/release/switchboard]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
RATE=${1:-8900}
SECS=${2:-10}
STALL=${3:-1}
SB=${4:-target/release/switchboard}
PORT=18080
SECRET=bench-secret-0123456789
WORK=$(mktemp -d)
trap 'kill -CONT $SPID 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

if [[ $# -lt 4 ]]; then cargo build --release -p switchboard 2>&1 | tail -1; fi

bench_config "$WORK/sb.toml" $PORT "$WORK/data" "$SECRET"

overflows() { awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) n[i] = $i; h = 1 } else for (i = 1; i <= NF; i++) if (n[i] == "ListenOverflows") print $i }' /proc/net/netstat; }
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2; f = 1} END {if (!f) print 0}'; }

taskset -c 0 "$SB" serve --config "$WORK/sb.toml" >"$WORK/serve.log" 2>&1 & SPID=$!
wait_port $PORT
O0=$(overflows)
( sleep 3; kill -STOP $SPID; sleep "$STALL"; kill -CONT $SPID ) & STOPPER=$!
taskset -c 1 "$SB" simulate --url "http://127.0.0.1:$PORT/webhooks/genesys" --secret="$SECRET" \
  --rate "$RATE" --events $((RATE * SECS)) > "$WORK/open.json" 2>/dev/null || true
wait $STOPPER
O1=$(overflows)
python3 - "$WORK/open.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
l = d["ack_latency_ms"]
print(f"sent {d['sent']}, acked {d['acked']}, errors {d['errors']} "
      f"(refused by simulate's in-flight cap: {d['backlog_skipped']}), took {d['elapsed_s']:.1f} s")
print(f"client latency: p50 {l['p50']:.2f} ms, p99 {l['p99']:.1f} ms, p99.9 {l['p999']:.1f} ms, max {l['max']:.1f} ms")
print(f"transport errors: {d['transport_errors'] or 'none'}")
PY
echo "slot hand-overs: $(metric switchboard_connections_reclaimed_total), silent connections shed: $(metric switchboard_connections_shed_total)"
echo "listen overflows during the run (whole machine): $((O1 - O0))"
echo "slow commits logged (>= 100 ms): $(grep -c 'slow store commit' "$WORK/serve.log" || true)"
kill -TERM $SPID; wait $SPID 2>/dev/null || true
