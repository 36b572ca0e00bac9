#!/usr/bin/env bash
# The instructions a server process executes in user space per POST /tasks, counted by
# callgrind: a figure that does not move with whatever else the machine runs (the same to
# within 0.3 % between runs here), so a change to the gateway's own code can be measured
# when CPU time cannot tell it from noise. The kernel's share (syscalls, wake-ups) is not in it.
#   scripts/bench-instructions.sh [gateway|floor|floor1]   (floor: the guarantees' floor,
#   http_floor.rs with FLOOR_RECORD; floor1: the same in one script call per batch)
#   BENCH_SECONDS (30): the measured window, after a 5 s warm-up; wrk at c=64 on one thread.
# Prints `instructions per request: N` and the server's costliest functions (inclusive);
# the callgrind file is kept in bench/instructions-<server>.out.
set -euo pipefail
cd "$(dirname "$0")/.."
server=${1:-gateway}
secs=${BENCH_SECONDS:-30}
scripts/services.sh >/dev/null
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
cargo build --release --locked --quiet -p gateway --bin gateway --bench raw_publish --bench http_floor
target=${CARGO_TARGET_DIR:-target}/release
bench_bin() { find "$target/deps" -maxdepth 1 -type f -perm -u+x -name "$1-*" -printf '%T@ %p\n' | sort -rn | head -n 1 | cut -d' ' -f2-; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
tag=instr$RANDOM port=$(free_port) redis_port=$(free_port) redis_dir=$(mktemp -d)
out=bench/instructions-$server.out
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" \
  --daemonize yes --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log"
for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
export GATEWAY_ADDR=127.0.0.1:$port REDIS_URL=redis://127.0.0.1:$redis_port REDIS_KEY_PREFIX="$tag:" AGENT_INPUT_QUEUE="$tag.mandates"
export SUPABASE_JWT_SECRET=bench-secret-bench-secret-bench-secret-00
export DAILY_TICK_LIMIT=0 SUBMIT_RATE_PER_MINUTE=0 MAX_ACTIVE_TASKS_PER_USER=0 RUST_LOG=warn TOKIO_WORKER_THREADS=1
TOKEN=$("$target/gateway" token --sub bench-user --ttl 3600)
export TOKEN
floor=(FLOOR_ADDR="$GATEWAY_ADDR" FLOOR_RECORD="$REDIS_URL")
case "$server" in
  gateway) server_env=() cmd=("$target/gateway") ;;
  floor) server_env=("${floor[@]}") cmd=("$(bench_bin http_floor)" --bench) ;;
  floor1) server_env=("${floor[@]}" FLOOR_RECORD_CALLS=1) cmd=("$(bench_bin http_floor)" --bench) ;;
  *) echo "usage: $0 [gateway|floor|floor1]" >&2; exit 2 ;;
esac
env "${server_env[@]}" valgrind --tool=callgrind --callgrind-out-file="$redis_dir/cg.out" "${cmd[@]}" \
  > "$redis_dir/server.log" 2>&1 &
vg=$!
cleanup() {
  kill -INT "$vg" 2>/dev/null || true; wait "$vg" 2>/dev/null || true
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$redis_dir"
  "$(bench_bin raw_publish)" --delete-topology "$tag.mandates" >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 1 120); do
  curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"mandate":"warm","max_ticks":5}' "http://$GATEWAY_ADDR/tasks" 2>/dev/null && break
  sleep 1
done
wrk -t1 -c64 -d5s -s bench/post.lua "http://$GATEWAY_ADDR" >/dev/null
callgrind_control -z "$vg" >/dev/null
wrk -t1 -c64 -d"${secs}s" -s bench/post.lua "http://$GATEWAY_ADDR" > "$redis_dir/wrk.txt"
callgrind_control -d "$vg" >/dev/null
requests=$(awk '/requests in/{print $1}' "$redis_dir/wrk.txt")
grep -q "Non-2xx" "$redis_dir/wrk.txt" && { echo "non-2xx answers under callgrind:" >&2; cat "$redis_dir/wrk.txt" >&2; exit 1; }
cp "$redis_dir/cg.out.1" "$out"
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1}')
echo "$server: $requests requests under callgrind"
callgrind_annotate --inclusive=yes --threshold=100 "$out" 2>/dev/null \
  | grep -E "(gateway|proto|runtime|http_floor)::|memcpy|mi_malloc_aligned|fmt::write" | grep -v "tokio::" \
  | awk -v n="$requests" 'NR <= 25 {gsub(",", "", $1); printf "%9.0f  %s\n", $1 / n, $(NF - 1)}'
echo "instructions per request: $((total / requests))"
