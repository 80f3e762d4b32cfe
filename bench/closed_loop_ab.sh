#!/usr/bin/env bash
# Closed-loop A/B of two switchboard binaries (BENCHMARKS.md, "2026-12-07 21:42–22:35"): for each
# of PAIRS pairs, a fresh `serve` of A then of B (the (a) setup of bench/ingest.sh: durable
# store, file target, pinned to CPU 0) takes `wrk` at CONNS connections for SECS seconds (on
# CPU 1). Prints requests/s, the server's CPU per request, how CPU 0 spent the run (busy, idle,
# iowait: a task of ours waiting for the disk with nothing else to run) and the journal's
# commits from /metrics. ENV_A / ENV_B are extra environment for A's and B's server
# ("NAME=value ..."), for builds with an experiment behind a switch. Talks only to 127.0.0.1 and
# stops by itself.
# Usage: bench/closed_loop_ab.sh A_BINARY B_BINARY [pairs] [conns] [secs]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
A=${1:?usage: bench/closed_loop_ab.sh A_BINARY B_BINARY [pairs] [conns] [secs]}
B=${2:?usage: bench/closed_loop_ab.sh A_BINARY B_BINARY [pairs] [conns] [secs]}
PAIRS=${3:-3}
CONNS=${4:-128}
SECS=${5:-8}
PORT=18080
SECRET=bench-secret-0123456789
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get install -y wrk >/dev/null; }
# Enough unique events that no run repeats one (wrk replays the corpus from its second line).
make_corpus "$A" "$SECRET" $((60000 * SECS)) "$WORK/corpus.tsv"
bench_config "$WORK/sb.toml" $PORT "$WORK/data" "$SECRET"

# CPU 0's busy, idle and iowait ticks, and the server's CPU ticks.
snap() {
  awk '/^cpu0 / {print $2 + $3 + $4 + $7 + $8, $5, $6}' /proc/stat
  awk '{print $14 + $15}' "/proc/$1/stat"
}

one() {
  local bin=$1 label=$2 extra=$3
  rm -rf "$WORK/data"
  # shellcheck disable=SC2086 # $extra is a list of NAME=value words
  taskset -c 0 env $extra "$bin" serve --config "$WORK/sb.toml" > "$WORK/serve.log" 2>&1 &
  local pid=$!
  wait_port $PORT || { echo "server did not start:"; cat "$WORK/serve.log"; exit 1; }
  CORPUS="$WORK/corpus.tsv" WRK_THREADS=1 taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency \
    -s bench/replay.lua "http://127.0.0.1:$PORT/webhooks/genesys" > "$WORK/wrk.out" &
  local wrk_pid=$!
  # From the first connection on: wrk loads the corpus into Lua first.
  until [ "$(ss -Htn state established "( dport = :$PORT )" | wc -l)" -gt 0 ] || ! kill -0 $wrk_pid 2>/dev/null; do sleep 0.01; done
  local before after
  before=$(snap $pid)
  wait $wrk_pid
  after=$(snap $pid)
  curl -s "http://127.0.0.1:$PORT/metrics" > "$WORK/metrics.txt"
  kill $pid; wait $pid 2>/dev/null || true
  local requests
  requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")
  local cpu
  cpu=$(echo $before $after $requests | awk '{
    busy = $5 - $1; idle = $6 - $2; iow = $7 - $3; all = busy + idle + iow
    printf "CPU %.1f us/request, CPU 0 busy %.0f %% idle %.0f %% iowait %.0f %%",
      ($8 - $4) * 10000 / $9, 100 * busy / all, 100 * idle / all, 100 * iow / all }')
  local commits
  commits=$(awk '
    /^switchboard_store_commit_commands_sum/ {c = $2}
    /^switchboard_store_commit_commands_count/ {n = $2}
    /^switchboard_store_commit_seconds_sum/ {s = $2}
    END {if (n > 0) printf "%d commits, %.1f commands each, %.2f ms each", n, c / n, 1000 * s / n}' "$WORK/metrics.txt")
  echo "$label: $(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out") req/s | $cpu | $commits"
}

for i in $(seq "$PAIRS"); do
  echo "== pair $i"
  one "$A" A "${ENV_A:-}"
  one "$B" B "${ENV_B:-}"
done
