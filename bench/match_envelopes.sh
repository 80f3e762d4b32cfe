#!/usr/bin/env bash
# Pattern matching on the gateway's own envelopes (BENCHMARKS.md, "2026-12-07 23:50 – 2026-12-08 00:17"):
# `switchboard serve` (the bench/ingest.sh setup: one catch-all rule to a file target) takes
# EVENTS simulated Genesys events, and the envelopes its file target writes are then streamed
# through `switchboard match` by each given binary, ROUNDS times in turns (A, B, A, B…), with two
# rule sets:
#   one:   a single rule on `detail-type` (nothing under `detail` is needed);
#   seven: seven rules, five of them reaching into `detail.eventBody`.
# The match counts must agree between binaries. Talks only to 127.0.0.1 and stops by itself.
# Usage: bench/match_envelopes.sh BINARY [BINARY...]   (env EVENTS, default 20000; COPIES,
# default 20: the envelope file is that many copies of what the server wrote; ROUNDS, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
[[ $# -ge 1 ]] || { echo "usage: bench/match_envelopes.sh BINARY [BINARY...]" >&2; exit 2; }
EVENTS=${EVENTS:-20000}
COPIES=${COPIES:-20}
ROUNDS=${ROUNDS:-3}
PORT=18085
SECRET=bench-secret-0123456789
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

bench_config "$WORK/sb.toml" $PORT "$WORK/data" "$SECRET"
"$1" serve --config "$WORK/sb.toml" > "$WORK/serve.log" 2>&1 &
SPID=$!
wait_port $PORT
"$1" simulate --url "http://127.0.0.1:$PORT/webhooks/genesys" --secret="$SECRET" \
  --rate 5000 --events "$EVENTS" > /dev/null
written() { if [[ -f $WORK/data/events.jsonl ]]; then wc -l < "$WORK/data/events.jsonl"; else echo 0; fi; }
for _ in $(seq 600); do [[ $(written) -ge $EVENTS ]] && break; sleep 0.1; done
kill -TERM $SPID; wait $SPID || true
[[ $(written) -ge $EVENTS ]] || { echo "the file target wrote $(written) of $EVENTS envelopes" >&2; exit 1; }
# Only whole lines: a line is complete once its newline is written.
head -n "$EVENTS" "$WORK/data/events.jsonl" > "$WORK/one.jsonl"
for _ in $(seq "$COPIES"); do cat "$WORK/one.jsonl"; done > "$WORK/envelopes.jsonl"
echo "$(wc -l < "$WORK/envelopes.jsonl") envelopes, $(( $(wc -c < "$WORK/envelopes.jsonl") / $(wc -l < "$WORK/envelopes.jsonl") )) bytes average"

cat > "$WORK/one.rules.json" <<'JSON'
{"conversation": {"detail-type": [{"prefix": "v2.detail.events.conversation."}]}}
JSON
cat > "$WORK/seven.rules.json" <<'JSON'
{"conversation": {"detail-type": [{"prefix": "v2.detail.events.conversation."}]},
 "voice_in": {"detail": {"eventBody": {"mediaType": ["VOICE"], "direction": ["INBOUND"]}}},
 "on_queue": {"detail-type": [{"wildcard": "v2.users.*.presence"}],
              "detail": {"eventBody": {"presenceDefinition": {"systemPresence": ["On Queue"]}}}},
 "agent": {"detail": {"eventBody": {"participants": {"purpose": ["agent"]}}}},
 "source": {"source": [{"prefix": "genesys."}]},
 "with_id": {"detail": {"eventBody": {"id": [{"exists": true}]}}},
 "queue": {"detail": {"eventBody": {"queueId": [{"exists": true}]}}}}
JSON

for set in one seven; do
  echo "== $set"
  for round in $(seq "$ROUNDS"); do
    for bin in "$@"; do
      rate=$("$bin" match --rules "$WORK/$set.rules.json" --events "$WORK/envelopes.jsonl" \
        2> "$WORK/err" > "$WORK/counts.$set.$round.$(basename "$bin")" && grep -o '[0-9]* events/s' "$WORK/err")
      echo "round $round $bin: $rate"
    done
  done
  first=$(ls "$WORK"/counts.$set.1.* | head -1)
  for f in "$WORK"/counts.$set.*; do
    cmp -s "$first" "$f" || { echo "match counts differ: $first vs $f" >&2; exit 1; }
  done
  echo "counts (all binaries, all rounds): $(tr -d ' \n' < "$first")"
done
