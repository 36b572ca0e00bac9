#!/usr/bin/env bash
# Agent throughput next to the broker's raw consume-and-ack rate, one run, like
# scripts/bench.sh for the gateway: for each agent concurrency (prefetch), the raw baseline
# (agent/benches/raw_consume.rs: a pre-filled quorum queue declared as the agents declare
# it, one consumer with the same prefetch, manual acks), then the agent path
# (agent/benches/agent_throughput.rs: tasks pre-filled as the gateway submits them, K
# release agent processes, offline model at zero delay and zero thinking ticks, timed until
# every record is terminal) for each K. Then the Redis round trips per task, from MONITOR on
# two small runs (1 tick per task, and 5 ticks per task for the per-tick share).
#
# Redis is a private redis-server on a free port (no persistence, as scripts/services.sh
# starts the shared one), so its CPU and command counts belong to this run alone; RabbitMQ
# is the shared node (its CPU includes whatever else runs on it).
# Prints markdown tables; the raw tool output goes to bench/agent-last-run.txt.
#   BENCH_TASKS (5000), BENCH_MESSAGES (20000, raw), BENCH_AGENTS ("1 2"),
#   BENCH_CONCURRENCY ("1 16"), BENCH_PROFILE_TASKS (20)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh >/dev/null
tasks=${BENCH_TASKS:-5000}
messages=${BENCH_MESSAGES:-20000}
agents_list=${BENCH_AGENTS:-1 2}
conc_list=${BENCH_CONCURRENCY:-1 16}
profile=${BENCH_PROFILE_TASKS:-20}
cargo build --release --locked --quiet --bin agent --bench raw_consume --bench agent_throughput
target=${CARGO_TARGET_DIR:-target}/release
newest() { find "$target/deps" -maxdepth 1 -type f -perm -u+x -name "$1-*" -printf '%T@ %p\n' | sort -rn | head -n 1 | cut -d' ' -f2-; }
raw_bin=$(newest raw_consume)
drv_bin=$(newest agent_throughput)
out=bench/agent-last-run.txt
: > "$out"

dir=$(mktemp -d /tmp/euglena-bench-agent.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
monitor=
cleanup() {
  [ -n "$monitor" ] && kill "$monitor" 2>/dev/null || true
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log"
for _ in $(seq 1 50); do [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
redis_pid=$(cat "$dir/redis.pid")
rabbit_pid=$(ss -ltnpH 'sport = :5672' | sed -nE 's/.*pid=([0-9]+).*/\1/p' | head -1)
[ -n "$rabbit_pid" ] || rabbit_pid=$(pgrep -f beam.smp | head -1)
export REDIS_URL=redis://127.0.0.1:$port AGENT_BIN=$target/agent
export BENCH_CPU_PIDS="redis=$redis_pid,rabbitmq=$rabbit_pid"
{
  echo "# $(date -u +%FT%TZ) on $(hostname), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# private redis-server $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/') on :$port (pid $redis_pid); shared RabbitMQ (pid $rabbit_pid)"
} | tee -a "$out"

for c in $conc_list; do
  echo "== raw consume + ack (prefetch $c, $messages messages)" | tee -a "$out"
  BENCH_MESSAGES=$messages BENCH_CONCURRENCY=$c BENCH_CPU_PIDS="rabbitmq=$rabbit_pid" "$raw_bin" --bench | tee -a "$out"
  for k in $agents_list; do
    echo "== agents $k (concurrency $c, $tasks tasks)" | tee -a "$out"
    BENCH_TASKS=$tasks BENCH_AGENTS=$k BENCH_CONCURRENCY=$c BENCH_THINK_TICKS=0 "$drv_bin" --bench | tee -a "$out"
  done
done

# Round trips per task: every command the agent sends (MONITOR), on small runs of one agent
# at concurrency 1, with 0 and with 4 thinking ticks (1 and 5 ticks per task).
for think in 0 4; do
  echo "== MONITOR run: 1 agent, concurrency 1, $profile tasks, think_ticks $think" | tee -a "$out"
  redis-cli -p "$port" monitor > "$dir/monitor-$think.txt" &
  monitor=$!
  sleep 0.3
  BENCH_TASKS=$profile BENCH_AGENTS=1 BENCH_CONCURRENCY=1 BENCH_THINK_TICKS=$think "$drv_bin" --bench \
    | tee "$dir/profile-$think.txt" | tee -a "$out"
  sleep 0.3
  kill "$monitor"; wait "$monitor" 2>/dev/null || true; monitor=
done

python3 - "$out" "$dir" "$profile" proto/src/lua <<'PY'
import hashlib, os, re, sys
from collections import Counter
out, d, profile, lua_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
text = open(out).read()

# 1. Throughput and CPU.
rows, raw_rate = [], {}
for block in re.split(r"^== ", text, flags=re.M)[1:]:
    head = block.splitlines()[0]
    cpu = dict((k, float(v)) for k, v in re.findall(r"(\w+) ([\d.]+) us/op", block))
    if head.startswith("raw consume"):
        c = re.search(r"prefetch (\d+)", head).group(1)
        rate = float(re.search(r"raw_consume: ([\d.]+) msg/s", block).group(1))
        raw_rate[c] = rate
        rows.append((c, "raw consume + ack", f"{rate:,.0f} msg/s", "—", cpu.get("consumer"), cpu.get("rabbitmq"), None, cpu.get("total")))
    elif head.startswith("agents"):
        c = re.search(r"concurrency (\d+)", head).group(1)
        k = re.search(r"agents (\d+)", head).group(1)
        m = re.search(r"agent_throughput: ([\d.]+) tasks/s steady.*?([\d.]+) tasks/s whole run", block)
        rate, whole = float(m.group(1)), float(m.group(2))
        rows.append((c, f"agent × {k}", f"{rate:,.0f} tasks/s ({whole:,.0f} whole run)", f"{rate / raw_rate[c]:.2f}",
                     cpu.get("agent"), cpu.get("rabbitmq"), cpu.get("redis"), cpu.get("total")))
f = lambda v: "—" if v is None else f"{v:,.0f}"
print()
print("| prefetch / AGENT_CONCURRENCY | | throughput | of raw | CPU µs/msg: consumer or agents | rabbitmq | redis | total |")
print("|---|---|---|---|---|---|---|---|")
for c, name, rate, ratio, a, r, rd, t in rows:
    print(f"| {c} | {name} | {rate} | {ratio} | {f(a)} | {f(r)} | {f(rd)} | {f(t)} |")

# 2. Round trips per task from MONITOR, named by script.
shas = {}
prelude = open(os.path.join(lua_dir, "prelude.lua")).read()
for name in sorted(os.listdir(lua_dir)):
    body = open(os.path.join(lua_dir, name)).read()
    for code in (body, f"{prelude}\n{body}"):
        shas[hashlib.sha1(code.encode()).hexdigest()] = name[:-4]
line_re = re.compile(r'^[\d.]+ \[\d+ ([^\]]+)\] (.*)$')
arg_re = re.compile(r'"((?:[^"\\]|\\.)*)"')

def profile_counts(think):
    driver = re.search(r"driver_addr: (\S+)", open(f"{d}/profile-{think}.txt").read()).group(1)
    trips, inner, current, multi, on = Counter(), Counter(), None, {}, False
    for line in open(f"{d}/monitor-{think}.txt", errors="replace"):
        m = line_re.match(line.strip())
        if not m:
            continue
        who, args = m.group(1), arg_re.findall(m.group(2))
        if not args:
            continue
        if who == driver:
            # Only what happens between the agents' start and their exit.
            if args[0].upper() == "ECHO" and len(args) > 1:
                on = {"abench:agents-start": True, "abench:agents-stopped": False}.get(args[1], on)
            continue
        if not on:
            continue
        cmd = args[0].upper()
        if who == "lua":
            if current:
                inner[current] += 1
            continue
        if cmd == "MULTI":
            multi[who] = []
            continue
        if cmd == "EXEC":
            trips["MULTI " + " ".join(multi.pop(who, [])) + " EXEC"] += 1
            continue
        if who in multi:
            multi[who].append(cmd)
            continue
        if cmd in ("EVALSHA", "EVAL"):
            sha = args[1] if cmd == "EVALSHA" else hashlib.sha1(args[1].encode()).hexdigest()
            current = f"{cmd} {shas.get(sha, sha[:8])}"
            trips[current] += 1
        else:
            current = None
            trips[cmd + (" " + args[1].upper() if cmd in ("SCRIPT", "CLIENT") and len(args) > 1 else "")] += 1
    return trips, inner

t1, i1 = profile_counts(0)
t5, i5 = profile_counts(4)
label = {
    "EVALSHA claim": "claim: attempt += 1 (the fencing token), returns the record and the checkpoint",
    "EVALSHA progress": "record a tick + checkpoint, fenced (tick.rs record_tick)",
    "EVALSHA finish": "terminal status, refund, webhook, memories forgotten, fenced",
    "HGETALL": "load the record (before: delivery.rs load_or_adopt)",
    "GET": "read the checkpoint (before: delivery.rs run_claimed)",
    "DEL": "forget the task's memories (before: memory/redis.rs)",
    "MULTI ZADD HMSET EXPIRE EXEC": "heartbeat on every start/finish (presence.rs)",
    "MULTI ZREM DEL EXEC": "deregister at shutdown (per process)",
    "SCRIPT LOAD": "preload scripts at connect (per process)",
    "PING": "wait_for_redis at start (per process)",
}
print()
print(f"Redis round trips per task (MONITOR, 1 agent, concurrency 1, {profile} tasks of 1 tick, and of 5 ticks for the per-tick column; every agent command from start to exit):")
print()
print("| round trip | per task (1 tick) | per extra tick | Redis commands inside | what |")
print("|---|---|---|---|---|")
total1 = totaltick = 0.0
order = list(label)
for key in sorted(set(t1) | set(t5), key=lambda k: (order.index(k) if k in order else len(order), -t1.get(k, 0))):
    a, b = t1.get(key, 0) / profile, t5.get(key, 0) / profile
    per_tick = (b - a) / 4
    inside = f"{i1[key] / t1[key]:.1f}" if t1.get(key) and i1.get(key) else ("—" if not key.startswith("MULTI") else f"{len(key.split()) - 2}")
    total1 += a; totaltick += per_tick
    print(f"| `{key}` | {a:.2f} | {per_tick:+.2f} | {inside} | {label.get(key, '')} |")
print(f"| **total** | **{total1:.2f}** | **{totaltick:+.2f}** | | per-process rows are spread over {profile} tasks |")
PY
