#!/usr/bin/env bash
# Redis's work per submission, counted rather than timed: a private redis-server runs under
# valgrind's callgrind, gateway/benches/redis_cost.rs sends it the admission and confirm
# scripts as the gateway batches them (12 submissions a call), and the instructions Redis
# executed during the measured batches are divided by the submissions. Repeatable whatever
# else runs on the machine. Prints one line: `redis_instructions_per_submission=N`.
#   BENCH_BATCHES (100, after as many for warm-up)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
batches=${BENCH_BATCHES:-100}
cargo build --release --locked --quiet --bench redis_cost
target=${CARGO_TARGET_DIR:-target}/release
bin=$(find "$target/deps" -maxdepth 1 -type f -perm -u+x -name "redis_cost-*" -printf '%T@ %p\n' | sort -rn | head -n 1 | cut -d' ' -f2-)
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" \
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null 2>&1 &
vg=$!
trap 'kill $vg 2>/dev/null || true; wait $vg 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.3; done
export REDIS_URL=redis://127.0.0.1:$port REDIS_KEY_PREFIX=cost: BENCH_BATCHES=$batches
"$bin" --bench >/dev/null           # warm-up: scripts loaded, indexes as large as they get
callgrind_control -z "$vg" >/dev/null 2>&1
"$bin" --bench
callgrind_control -d "$vg" >/dev/null 2>&1
total=$(callgrind_annotate "$(ls "$dir"/cg.*.1)" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "redis_instructions_per_submission=$((total / (batches * 12)))"
