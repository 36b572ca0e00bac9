#!/usr/bin/env bash
# Prints a development token for user $1 (HS256 with SUPABASE_JWT_SECRET, default the one
# scripts/run-local.sh uses), whatever CARGO_TARGET_DIR is: cargo finds the binary it built.
# Extra arguments go to `gateway token` (e.g. --ttl 600).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: scripts/token.sh <user id> [--ttl <seconds>] [--operator]" >&2
  exit 2
fi
sub=$1; shift
export SUPABASE_JWT_SECRET=${SUPABASE_JWT_SECRET:-local-dev-secret-change-me-0123456789}
exec cargo run -q --bin gateway -- token --sub "$sub" "$@"
