# Shared by the bench scripts (sourced, not run): the gateway setup they all measure and a wait
# for a port. Talks only to 127.0.0.1.

# The measured gateway: one hub-signature-256 webhook source, the durable store in DATA_DIR, and
# one catch-all rule to a file target. Usage: bench_config FILE PORT DATA_DIR SECRET
bench_config() {
  cat > "$1" <<TOML
[server]
listen = "127.0.0.1:$2"
data_dir = "$3"
[log]
level = "warn"
[[sources]]
name = "genesys"
path = "/webhooks/genesys"
auth = { scheme = "hub-signature-256", secrets = ["$4"] }
[[targets]]
name = "file"
type = "file"
path = "events.jsonl"
[[rules]]
name = "all"
[[rules.targets]]
id = "file"
arn = "file"
TOML
}

# Waits up to 10 s for something to listen on 127.0.0.1:PORT. Usage: wait_port PORT
wait_port() {
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

# A corpus of EVENTS unique signed Genesys events for bench/replay.lua: one line per request,
# the x-hub-signature-256 header, a tab, the body. Usage: make_corpus BINARY SECRET EVENTS OUT
make_corpus() {
  "$1" simulate --secret="$2" --events "$3" --out "$4.jsonl" 2>/dev/null
  python3 - "$4.jsonl" "$4" <<'PY'
import json, sys
with open(sys.argv[1]) as src, open(sys.argv[2], "w") as dst:
    for line in src:
        r = json.loads(line)
        dst.write(r["headers"]["x-hub-signature-256"] + "\t" + r["body"] + "\n")
PY
  rm -f "$4.jsonl"
}
