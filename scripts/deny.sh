#!/usr/bin/env bash
# Dependency policy (deny.toml): licences, banned/duplicate crates and sources, with
# cargo-deny, installed from crates.io on first use. Advisories are not checked: their
# database cannot be fetched here (see deny.toml); --frozen: Cargo.lock as is, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q "$DENY_VERSION"; then
  echo "deny: installing cargo-deny $DENY_VERSION from crates.io"
  cargo install cargo-deny --version "$DENY_VERSION" --locked
fi
# cargo-deny reads the metadata of every target's dependencies (android, wasm, windows…),
# which a build on this machine never downloads: fetch them first (idempotent, from the lock).
cargo fetch --locked --quiet
exec cargo deny --frozen --log-level warn check --hide-inclusion-graph licenses bans sources
