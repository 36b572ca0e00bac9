#!/usr/bin/env bash
# Side-by-side throughput, one run: the broker's raw publish-and-confirm rate (the physical
# limit of a submission; measured before and after the rest), the floor (HTTP plus one
# confirmed publish and nothing else), the guarantees' floor (the same plus the record written
# before the publish and marked confirmed after, group-committed), then POST /tasks and
# GET /tasks/{id} through a release gateway with every limit off, all at the same concurrency
# against a private Redis and the local RabbitMQ. Prints a table and the ratios, and as its
# last line the total CPU per operation of every process for POST /tasks over the floor's
# (`cpu POST/floor: R`); the raw tool output goes to bench/last-run.txt.
#   BENCH_ROUNDS (1: how many times the floors and POST run, in turn; the CPU ratios are then
#   given per round and as their mean, min and max, which the machine's drift moves far less
#   than one run), BENCH_CONCURRENCY (64), BENCH_SECONDS (10), BENCH_SERVER_THREADS (1: tokio worker threads of
#   the gateway and the floor server, as deployed: the default gateway task has 1 vCPU, where
#   tokio starts one worker; `0` leaves tokio's default, one per core of this machine)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh >/dev/null
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
c=${BENCH_CONCURRENCY:-64}
rounds=${BENCH_ROUNDS:-1}
secs=${BENCH_SECONDS:-10}
threads=${BENCH_SERVER_THREADS:-1}
server_env=()
[ "$threads" = 0 ] || server_env=(env TOKIO_WORKER_THREADS="$threads")
cargo build --release --locked --quiet -p gateway --bin gateway --bench raw_publish --bench http_floor
target=${CARGO_TARGET_DIR:-target}/release
bench_bin() { find "$target/deps" -maxdepth 1 -type f -perm -u+x -name "$1-*" -printf '%T@ %p\n' | sort -rn | head -n 1 | cut -d' ' -f2-; }
raw_bin=$(bench_bin raw_publish) floor_bin=$(bench_bin http_floor)
out=bench/last-run.txt
: > "$out"
blocks=$(mktemp -d) # each stage's output, per round: what the summary reads

tag=bench$RANDOM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
# A private redis-server, so the Redis CPU counted below is this run's alone (the shared one
# serves whatever else runs on the machine).
redis_dir=$(mktemp -d) redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" \
  --daemonize yes --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log"
for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis_pid=$(cat "$redis_dir/redis.pid")
export GATEWAY_ADDR=127.0.0.1:$port REDIS_URL=redis://127.0.0.1:$redis_port REDIS_KEY_PREFIX="$tag:" AGENT_INPUT_QUEUE="$tag.mandates"
export SUPABASE_JWT_SECRET=bench-secret-bench-secret-bench-secret-00
export DAILY_TICK_LIMIT=0 SUBMIT_RATE_PER_MINUTE=0 MAX_ACTIVE_TASKS_PER_USER=0 RUST_LOG=warn
"${server_env[@]}" "$target/gateway" >/dev/null 2>&1 &
gw=$!
cleanup() {
  kill "$gw" ${floor:-} 2>/dev/null || true; wait "$gw" ${floor:-} 2>/dev/null || true
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || kill "$redis_pid" 2>/dev/null || true
  rm -rf "$redis_dir" "$blocks"
  "$raw_bin" --delete-topology "$tag.mandates" >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
export TOKEN=$("$target/gateway" token --sub bench-user --ttl 3600)

# CPU seconds (user + system) each server process spends during a run, and the load
# generator's own (GNU time), so the table can say where each request's CPU goes.
rabbit_pid=$(pgrep -f beam.smp | head -1)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
user_ticks() { awk '{print $14}' "/proc/$1/stat" 2>/dev/null || echo 0; }
front=$gw # the HTTP server under load: the gateway, or the floor server while it runs
# The server's user time apart too: the rest of its CPU is the kernel's (syscalls, wake-ups).
snapshot() { echo "$(ticks "$front") $(ticks "$redis_pid") $(ticks "$rabbit_pid") $(user_ticks "$front")"; }
cpu_line() { # name, before-snapshot, load generator's CPU seconds, operations
  python3 - "$1" "$2" "$(snapshot)" "$3" "$4" "$(getconf CLK_TCK)" <<'PY' | tee -a "$out"
import sys
name, before, after, load, ops, hz = sys.argv[1:7]
d = [(int(a) - int(b)) / int(hz) for a, b in zip(after.split(), before.split())]
ops = max(int(ops), 1)
parts = dict(zip(["front", "redis", "rabbitmq"], d), load=float(load))
print(f"cpu {name}: " + ", ".join(f"{k} {v * 1e6 / ops:.1f} us/op" for k, v in parts.items())
      + f", total {sum(parts.values()) * 1e6 / ops:.1f} us/op, front_user {d[3] * 1e6 / ops:.1f} us/op")
PY
}

raw_run() { # label; appends the tool's line and the CPU line
  echo "== raw publish + confirm$1 (c=$c, ${secs}s)" | tee -a "$out"
  local before; before=$(snapshot)
  /usr/bin/time -f "%U %S" -o /tmp/$tag.time env BENCH_CONCURRENCY=$c BENCH_SECONDS=$secs "$raw_bin" --bench | tee -a "$out"
  local line; line=$(grep '^raw_publish:' "$out" | tail -n 1)
  cpu_line "raw$1" "$before" "$(awk '{print $1 + $2}' /tmp/$tag.time)" "$(sed -E 's/.* ([0-9]+) messages.*/\1/' <<<"$line")"
}
# The broker's rate drifts by tens of percent over minutes here, so it is measured before and
# after the HTTP runs and the ratio is taken against their mean; a warm-up comes first.
BENCH_CONCURRENCY=$c BENCH_SECONDS=2 "$raw_bin" --bench >/dev/null
raw_run ""
raw_line=$(grep '^raw_publish:' "$out" | tail -n 1)

rss_peak() { # samples the HTTP server's RSS while wrk runs; prints the peak in MB
  local peak=0 r
  while kill -0 "$1" 2>/dev/null; do
    r=$(ps -o rss= -p "$front" 2>/dev/null | tr -d ' '); [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.5
  done
  echo $((peak / 1024))
}
wrk_run() { # name, script, port, block file
  echo "== $1 (c=$c, ${secs}s)" | tee -a "$out" > "$4"
  local before; before=$(snapshot)
  /usr/bin/time -f "%U %S" -o /tmp/$tag.time wrk -t2 -c"$c" -d"${secs}s" --latency -s "$2" "http://127.0.0.1:$3" > /tmp/$tag.wrk &
  local w=$!
  local rss; rss=$(rss_peak $w)
  wait $w
  { cat /tmp/$tag.wrk; echo "server peak RSS: ${rss} MB"; } | tee -a "$out" >> "$4"
  cpu_line "$1" "$before" "$(awk '{print $1 + $2}' /tmp/$tag.time)" "$(awk '/requests in/{print $1}' /tmp/$tag.wrk)" | tee -a "$4"
  rm -f /tmp/$tag.wrk /tmp/$tag.time
}
floor_run() { # name, block file, environment for the floor server
  local floor_port; floor_port=$(free_port)
  env FLOOR_ADDR=127.0.0.1:$floor_port "${@:3}" "${server_env[@]}" "$floor_bin" --bench >/dev/null 2>&1 &
  floor=$!
  for _ in $(seq 1 50); do curl -fsS -o /dev/null -X POST "http://127.0.0.1:$floor_port/tasks" 2>/dev/null && break; sleep 0.2; done
  front=$floor
  wrk_run "$1" bench/post.lua "$floor_port" "$2"
  kill -TERM "$floor"; wait "$floor" 2>/dev/null || true
  floor='' front=$gw
}
# In each round: the floor, HTTP plus the confirmed publish and nothing else; the guarantees'
# floor, the same server writing the record before the publish and marking it confirmed after,
# group-committed on the private Redis in two script calls per batch as the gateway does, then
# in one (http_floor.rs); and POST /tasks.
for r in $(seq 1 "$rounds"); do
  floor_run "floor: HTTP + publish + confirm" "$blocks/floor.$r"
  floor_run "floor + the record: HTTP + record + publish + confirm + mark" "$blocks/record.$r" \
    FLOOR_RECORD=redis://127.0.0.1:$redis_port
  floor_run "floor + the record in one call per batch" "$blocks/record1.$r" \
    FLOOR_RECORD=redis://127.0.0.1:$redis_port FLOOR_RECORD_CALLS=1
  wrk_run "POST /tasks" bench/post.lua "$port" "$blocks/post.$r"
done
export TASK_ID=$(curl -fsS -X POST "http://127.0.0.1:$port/tasks" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d '{"mandate":"read me","max_ticks":1}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["correlation_id"])')
wrk_run "GET /tasks/{id}" bench/get.lua "$port" "$blocks/get"

raw_run ", again"
raw_again=$(grep '^raw_publish:' "$out" | tail -n 1)

python3 - "$raw_line" "$raw_again" "$blocks" "$rounds" <<'PY'
import re, statistics, sys
raw, again, blocks, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def block(name): return open(f"{blocks}/{name}").read()
def rate(b): return float(re.search(r"Requests/sec:\s+([\d.]+)", b).group(1))
def p99(b):
    v, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", b).groups()
    return float(v) * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]
def non2xx(b):
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", b); e = re.search(r"Socket errors: (.*)", b)
    return int(m.group(1)) if m else 0, (e.group(1) if e else "none")
def rss(b): return int(re.search(r"peak RSS: (\d+) MB", b).group(1))
def raw_of(line): return float(re.search(r"([\d.]+) msg/s", line).group(1)), float(re.search(r"p99 ([\d.]+) ms", line).group(1))
# CPU per operation of every process (server, Redis, RabbitMQ, load generator) from the same
# run: what a submission costs above its floor, independent of how the two cores were shared.
def cpu(b):
    line = re.search(r"^cpu .*$", b, re.M).group(0)
    return {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+) us/op", line)}
stages = {"floor": "floor: HTTP + publish + confirm", "record": "floor + the record, two calls per batch (as the gateway)",
          "record1": "floor + the record, one call per batch", "post": "`POST /tasks`"}
runs = {k: [block(f"{k}.{r}") for r in range(1, rounds + 1)] for k in stages}
(r1, p1), (r2, p2) = raw_of(raw), raw_of(again)
raw_rate, raw_p99 = (r1 + r2) / 2, (p1 + p2) / 2
mean = statistics.fmean
print()
print(f"| | throughput{' (mean of rounds)' if rounds > 1 else ''} | p99 (worst) | non-2xx | server RSS (peak) |")
print("|---|---|---|---|---|")
print(f"| raw publish + confirm (mean of before and after) | {raw_rate:,.0f} msg/s ({r1:,.0f} / {r2:,.0f}) | {raw_p99:.1f} ms | — | — |")
for k, label in stages.items():
    bs = runs[k]
    print(f"| {label} | {mean(rate(b) for b in bs):,.0f} req/s | {max(p99(b) for b in bs):.1f} ms | "
          f"{sum(non2xx(b)[0] for b in bs)} | {max(rss(b) for b in bs)} MB |")
get = block("get")
print(f"| `GET /tasks/{{id}}` | {rate(get):,.0f} req/s | {p99(get):.1f} ms | {non2xx(get)[0]} | {rss(get)} MB |")
pr, fr = mean(rate(b) for b in runs["post"]), mean(rate(b) for b in runs["floor"])
pp = max(p99(b) for b in runs["post"])
print(f"\nratio POST/raw: {pr / raw_rate:.2f}  (p99 {pp / raw_p99:.1f}x the raw p99; socket errors: "
      f"POST {non2xx(runs['post'][0])[1]}, GET {non2xx(get)[1]})")
print(f"ratio floor/raw: {fr / raw_rate:.2f}, POST/floor: {pr / fr:.2f}")
if abs(r1 - r2) > 0.2 * raw_rate:
    print(f"note: the broker's rate moved {abs(r1 - r2) / raw_rate:.0%} between before and after; this run is noisy")
cpus = {k: [cpu(b) for b in bs] for k, bs in runs.items()}
print(f"\n| CPU per op, µs{f' (mean of {rounds} rounds)' if rounds > 1 else ''} | server (of it user) | Redis | RabbitMQ | wrk | total |"
      + (" total per round |" if rounds > 1 else ""))
print("|---|---|---|---|---|---|" + ("---|" if rounds > 1 else ""))
for k, label in stages.items():
    cs = cpus[k]
    server = f"{mean(c['front'] for c in cs):.1f} ({mean(c['front_user'] for c in cs):.1f})"
    cells = server + " | " + " | ".join(f"{mean(c[p] for c in cs):.1f}" for p in ("redis", "rabbitmq", "load", "total"))
    per_round = " " + " / ".join(f"{c['total']:.1f}" for c in cs) + " |" if rounds > 1 else ""
    print(f"| {label} | {cells} |{per_round}")
print()
def ratio(a, b):
    xs = [x[a]["total"] / x[b]["total"] for x in ({k: v[r] for k, v in cpus.items()} for r in range(rounds))]
    spread = f" (min {min(xs):.2f}, max {max(xs):.2f} over {rounds} rounds)" if rounds > 1 else ""
    return f"{mean(xs):.2f}{spread}"
print(f"cpu +record/floor: {ratio('record', 'floor')} (what the guarantees cost, as the gateway writes them)")
print(f"cpu +record one call/floor: {ratio('record1', 'floor')} (the guarantees, written the cheapest known way)")
print(f"cpu POST/+record: {ratio('post', 'record')} (what the gateway's features cost)")
print(f"cpu POST/floor: {ratio('post', 'floor')}")
PY
