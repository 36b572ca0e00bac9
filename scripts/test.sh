#!/usr/bin/env bash
# The one command that runs every test: starts what the tests need, then `cargo test`.
# Extra arguments go to cargo test (e.g. scripts/test.sh -p gateway). Ends with one
# summary line over every test binary: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
scripts/test-deps.sh
export PATH="$PWD/.venv/bin:$PATH"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
summary=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  END { printf "tests: %d passed, %d failed\n", p, f }' "$log")
echo "$summary"
if [ "$status" -eq 0 ] && [ "${summary#tests: 0 passed}" != "$summary" ]; then
  echo "scripts/test.sh: no test ran" >&2
  exit 1
fi
exit "$status"
