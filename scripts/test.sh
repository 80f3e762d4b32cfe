#!/usr/bin/env bash
# The whole test suite from a fresh clone: formatting, lints, every crate's tests.
# Installs nothing outside the repository; needs the machine's Rust toolchain (cargo, rustfmt,
# clippy). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
# Benches are not run here (they are `cargo bench`); their code is still compiled by clippy above.
cargo test --workspace --locked
