#!/usr/bin/env bash
# Ingest benchmark (BENCHMARKS.md, "Ingest"): wrk replaying a pre-signed corpus of unique Genesys
# events against
#   (a) switchboard serve: hub-signature-256 source, durable store (fsync per group commit),
#       one catch-all rule to a file target;
#   (b) bench-baseline: bare hyper answering 202 without work (the ceiling on this machine);
# then a dedup-hit run (the same corpus again: every request a duplicate) and an open-loop run
# with `switchboard simulate` at half of (a)'s rate. Server on CPU 0, load generator on CPU 1.
# Talks only to 127.0.0.1 and stops by itself. Usage: bench/ingest.sh [seconds] [connections]
# ROUNDS=N (default 1) runs (b) then (a) N times, alternating, each (a) on a fresh data
# directory, and reports each round's ratio and their median: on a host whose speed drifts
# between runs (this one's did by 2x within minutes) a ratio is only as good as the two runs
# it divides, so each round divides neighbours. The later runs use the last round's server.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
DUR=${1:-10}
CONNS=${2:-32}
ROUNDS=${ROUNDS:-1}
THREADS=1
PORT_SB=18080
PORT_BASE=18090
SECRET=bench-secret-0123456789
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get install -y wrk >/dev/null; }
cargo build --release -p switchboard -p bench-baseline 2>&1 | tail -1
SB=target/release/switchboard
BASE=target/release/bench-baseline

# A corpus larger than any run can use, so every request in (a) is a new event.
EVENTS=${EVENTS:-400000}
echo "generating $EVENTS signed events"
make_corpus "$SB" "$SECRET" "$EVENTS" "$WORK/corpus.tsv"

bench_config "$WORK/sb.toml" $PORT_SB "$WORK/data" "$SECRET"

rss_kb() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
hwm_kb() { awk '/VmHWM/ {print $2}' /proc/$1/status; }
# How busy each core was during a run: a server core under 100 % means something other than the
# server's CPU (the load generator, the disk) set the rate.
cpu_snap() { awk '/^cpu[01] / {busy = $2 + $3 + $4 + $7 + $8; print $1, busy, busy + $5 + $6 + $9}' /proc/stat; }
# The window starts when wrk's connections are up, not when it is launched: wrk first loads the
# whole corpus into Lua (about 2.8 s for 300,000 events), and counting that time would show the
# server's core as idle when it was only waiting for the load to start.
run_wrk() {
  local port=${1#http://127.0.0.1:}
  port=${port%%/*}
  CORPUS="${CORPUS_FILE:-$WORK/corpus.tsv}" WRK_THREADS=$THREADS taskset -c 1 wrk -t$THREADS -c$CONNS -d${DUR}s --latency -s bench/replay.lua "$1" > "$WORK/wrk.out" &
  local wrk_pid=$!
  until [ "$(ss -Htn state established "( dport = :$port )" | wc -l)" -gt 0 ] || ! kill -0 $wrk_pid 2>/dev/null; do sleep 0.01; done
  cpu_snap > "$WORK/cpu.before"
  wait $wrk_pid
  cpu_snap > "$WORK/cpu.after"
  cat "$WORK/wrk.out"
}
cpu_busy() { paste "$WORK/cpu.before" "$WORK/cpu.after" | awk '{printf "%s %.0f%% busy, ", $1, 100 * ($5 - $2) / ($6 - $3)} END {print "(server on cpu0, wrk on cpu1)"}'; }
accepted() { curl -s "http://127.0.0.1:$PORT_SB/metrics" | awk '/^switchboard_ingest_requests_total\{.*outcome="accepted"/ {n += $2} END {print n + 0}'; }
summary() { awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$NF} END {printf "%s req/s, p50 %s, p99 %s, non-2xx %s\n", rps, p50, p99, (bad==""?0:bad)}'; }

rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
RATIOS=()
SPID=
for ROUND in $(seq "$ROUNDS"); do
  [[ $ROUNDS == 1 ]] || echo "== round $ROUND of $ROUNDS"
  echo "== (b) baseline: bare hyper"
  taskset -c 0 "$BASE" 127.0.0.1:$PORT_BASE >/dev/null & BPID=$!
  wait_port $PORT_BASE
  run_wrk "http://127.0.0.1:$PORT_BASE/webhooks/genesys" | tee "$WORK/base.txt" | summary
  cpu_busy
  kill $BPID; wait $BPID 2>/dev/null || true

  echo "== (a) switchboard serve, durable, file target"
  if [[ -n $SPID ]]; then kill -TERM $SPID; wait $SPID || true; fi
  rm -rf "$WORK/data"
  taskset -c 0 "$SB" serve --config "$WORK/sb.toml" >"$WORK/serve.log" 2>&1 & SPID=$!
  wait_port $PORT_SB
  run_wrk "http://127.0.0.1:$PORT_SB/webhooks/genesys" | tee "$WORK/sb.txt" | summary
  cpu_busy
  echo "RSS after (a): $(rss_kb $SPID) kB, peak $(hwm_kb $SPID) kB"
  RATIOS+=("$(python3 -c "print('%.3f' % ($(rps "$WORK/sb.txt") / $(rps "$WORK/base.txt")))")")
  [[ $ROUNDS == 1 ]] || echo "round $ROUND ratio (a)/(b) = ${RATIOS[-1]}"
done

echo "== dedup hits: the events (a) stored, again (every answer 200 duplicate)"
# wrk sends the corpus in order from its second line (it builds one request it never sends, to
# check the script): lines 2 .. N+1 are events (a) stored.
STORED=$(awk '/requests in/ {print $1}' "$WORK/sb.txt")
sed -n "2,$((STORED + 1))p" "$WORK/corpus.tsv" > "$WORK/dups.tsv"
# Requests wrk left in flight at the end of (a) may still be counted: wait until it settles.
BEFORE=$(accepted); for _ in $(seq 50); do sleep 0.1; NOW=$(accepted); [[ $NOW == "$BEFORE" ]] && break; BEFORE=$NOW; done
CORPUS_FILE="$WORK/dups.tsv" run_wrk "http://127.0.0.1:$PORT_SB/webhooks/genesys" | tee "$WORK/dup.txt" | summary
cpu_busy
echo "new events accepted during the dedup-hit run: $(( $(accepted) - BEFORE )) (0: every request was a duplicate)"

RPS=$(awk '/Requests\/sec/ {print int($2)}' "$WORK/sb.txt")
HALF=$((RPS / 2))
N=$((HALF * DUR))
# The closed-loop runs above ingest faster than the file target delivers; measure the open loop
# at steady state, not while the delivery backlog they left is being burnt down on the same core.
t0=$(date +%s.%N)
for _ in $(seq 600); do
  depth=$(curl -s "http://127.0.0.1:$PORT_SB/admin/targets" | python3 -c 'import json,sys; print(sum(t["queue_depth"] for t in json.load(sys.stdin)["targets"]))')
  [[ $depth == 0 ]] && break
  sleep 0.1
done
echo "delivery backlog left by the closed-loop runs drained in $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"
echo "== open loop: simulate at $HALF events/s (half of (a)) for ${DUR}s"
metrics() { curl -s "http://127.0.0.1:$PORT_SB/metrics" > "$1"; }
metrics "$WORK/m0.txt"
# Bytes the server wrote to disk (WAL, checkpoints, the file target) and CPU it used, per event.
io_bytes() { awk '/^write_bytes/ {print $2}' /proc/$1/io; }
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
IO0=$(io_bytes $SPID); CPU0=$(cpu_ticks $SPID)
taskset -c 1 "$SB" simulate --url "http://127.0.0.1:$PORT_SB/webhooks/genesys" --secret="$SECRET" \
  --rate "$HALF" --events "$N" | tee "$WORK/open.json" || echo "(simulate exited non-zero: it saw errors, listed above)"
metrics "$WORK/m1.txt"
IO1=$(io_bytes $SPID); CPU1=$(cpu_ticks $SPID)
echo "open loop: $(( (IO1 - IO0) / N )) bytes written to disk and $(( (CPU1 - CPU0) * 10000 / N )) us of CPU per event"
# Where the open-loop latency goes, from the server's own histograms (difference over the run):
# time in the ingest handler, the part of it spent waiting for the store's answer (queued
# behind other commits, then its own), and time per store commit (one fsync each).
python3 - "$WORK/m0.txt" "$WORK/m1.txt" <<'PY'
import re, sys
def load(path):
    h = {}
    for line in open(path):
        m = re.match(r'(switchboard_(?:ingest_ack|store_ingest_wait|store_commit)_seconds)_bucket\{(?:.*,)?le="([^"]+)"\} (\S+)', line)
        if m:
            name, le, v = m.group(1), m.group(2), float(m.group(3))
            h.setdefault(name, {}).setdefault(le, 0.0)
            h[name][le] += v
    return h
a, b = load(sys.argv[1]), load(sys.argv[2])
for name in sorted(b):
    les = sorted(b[name], key=lambda x: float("inf") if x == "+Inf" else float(x))
    cum = [(le, b[name][le] - a.get(name, {}).get(le, 0.0)) for le in les]
    total = cum[-1][1]
    if total <= 0:
        continue
    def q(p):
        for le, c in cum:
            if c >= p * total:
                return le
    over = {le: total - c for le, c in cum if le in ("0.01", "0.05", "0.1")}
    print(f"{name}: n={int(total)} p50<={q(0.5)}s p99<={q(0.99)}s p99.9<={q(0.999)}s; over 10/50/100 ms: {int(over.get('0.01',0))}/{int(over.get('0.05',0))}/{int(over.get('0.1',0))}")
PY
# A client with more connections than the server serves (`server.max_connections`, 1,024) waits
# for a slot: that wait is in the client's latency and in no server histogram. `simulate` opens
# a connection per request in flight (up to 4,096) once a hiccup backs it up.
metric_of() { awk -v m="$1" '$1 == m {v = $2} END {print v + 0}' "$2"; }
echo "serving slots: $(( $(metric_of switchboard_connections_reclaimed_total "$WORK/m1.txt") - $(metric_of switchboard_connections_reclaimed_total "$WORK/m0.txt") )) handed over from idle connections to waiting ones, $(( $(metric_of switchboard_connections_shed_total "$WORK/m1.txt") - $(metric_of switchboard_connections_shed_total "$WORK/m0.txt") )) silent ones shed"
echo "RSS at steady load: $(rss_kb $SPID) kB, peak $(hwm_kb $SPID) kB"
# Commits over 100 ms are logged with their duration: in every run so far they explain the tail.
echo "slow commits / checkpoints logged (>= 100 ms, whole run): $(grep -c 'slow store commit' "$WORK/serve.log" || true) / $(grep -c 'slow store checkpoint' "$WORK/serve.log" || true)"
kill -TERM $SPID; wait $SPID || true

python3 - "${RATIOS[@]}" <<'PY'
import statistics, sys
r = [float(x) for x in sys.argv[1:]]
if len(r) == 1:
    print("ratio (a)/(b) = %.2f" % r[0])
else:
    print("ratio (a)/(b) per round: %s; median %.2f" % (", ".join("%.2f" % x for x in r), statistics.median(r)))
PY
