#!/usr/bin/env bash
# The one command that runs every test: starts what the tests need, then `cargo test`.
# Extra arguments go to cargo test (e.g. scripts/test.sh -p gateway).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
if [ -x scripts/test-deps.sh ]; then scripts/test-deps.sh; fi
if [ -d .venv/bin ]; then export PATH="$PWD/.venv/bin:$PATH"; fi
exec cargo test --workspace --all-targets "$@"
