#!/usr/bin/env bash
# The whole test suite from a fresh clone: formatting, lints, every crate's tests.
# Installs nothing outside the repository; needs the machine's Rust toolchain (cargo, rustfmt,
# clippy) and python3 (for moto, the AWS emulator, installed into .venv-moto at pinned versions
# and run on a free loopback port for the AWS tests). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo check without the aws feature (the SDK stays optional)"
cargo check -p switchboard --no-default-features --locked

step "moto server (AWS emulator) on loopback"
MOTO_ENV=$(scripts/moto.sh start)   # set -e stops here if moto does not come up
eval "$MOTO_ENV"
export SWITCHBOARD_MOTO_URL
trap 'scripts/moto.sh stop' EXIT
echo "moto at $SWITCHBOARD_MOTO_URL"

step "cargo test"
# Benches are not run here (they are `cargo bench`); their code is still compiled by clippy above.
cargo test --workspace --locked

step "store tests and crash drill again, journal on buffered I/O (the path of filesystems without O_DIRECT)"
# The test binaries cargo just built, run again with the switch: `cargo test -p` alone would
# resolve other features and rebuild half the dependency tree.
BINS=$(cargo test --workspace --locked --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    store = m["manifest_path"].endswith("/switchboard-store/Cargo.toml")
    if (store and t["kind"] in (["lib"], ["test"])) or (t["name"] == "crash" and t["kind"] == ["test"]):
        print(m["manifest_path"].rsplit("/", 1)[0], m["executable"])
')
# The store's unit tests, its integration tests and the crash drill: fewer means the lookup broke.
[[ $(wc -l <<<"$BINS") -ge 3 ]] || { echo "expected at least 3 test binaries, found: $BINS"; exit 1; }
while read -r dir exe; do
  (cd "$dir" && SWITCHBOARD_JOURNAL_BUFFERED=1 "$exe" -q)
done <<<"$BINS"
