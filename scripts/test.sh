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
