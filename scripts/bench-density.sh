#!/usr/bin/env bash
# Agent density: one release agent process against a model stand-in that answers every call
# after a fixed delay (agent/benches/agent_density.rs), at AGENT_CONCURRENCY 256 first (its
# line printed alone), then at 1, 16, 64 and 256 in a table. Redis and RabbitMQ are the local
# ones (scripts/services.sh); the raw tool output goes to bench/density-last-run.txt.
#   --model-delay-ms N (2000), --ticks N (5 ticks per task), --seconds N (20, window per run),
#   --concurrency "1 16 64 256" (the table's rows)
set -euo pipefail
cd "$(dirname "$0")/.."
delay=2000 ticks=5 secs=20 list="1 16 64 256"
while [ $# -gt 0 ]; do
  case "$1" in
    --model-delay-ms) delay=$2; shift 2 ;;
    --ticks) ticks=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --concurrency) list=$2; shift 2 ;;
    *) echo "usage: $0 [--model-delay-ms N] [--ticks N] [--seconds N] [--concurrency \"1 16 64 256\"]" >&2; exit 2 ;;
  esac
done
scripts/services.sh >/dev/null
cargo build --release --locked --quiet --bin agent --bench agent_density
target=${CARGO_TARGET_DIR:-target}/release
drv_bin=$(find "$target/deps" -maxdepth 1 -type f -perm -u+x -name "agent_density-*" -printf '%T@ %p\n' | sort -rn | head -n 1 | cut -d' ' -f2-)
export AGENT_BIN=$target/agent BENCH_MODEL_DELAY_MS=$delay BENCH_TICKS=$ticks BENCH_SECONDS=$secs
out=bench/density-last-run.txt
echo "# $(date -u +%FT%TZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out"
run() { BENCH_CONCURRENCY=$1 "$drv_bin" --bench | tee -a "$out" | grep '^density:' | tail -n 1; }

line=$(run 256)
echo "${line#density: }" | cut -d' ' -f1-5
lines=$(for c in $list; do if [ "$c" = 256 ]; then echo "$line"; else run "$c"; fi; done)
python3 - "$lines" <<'PY' | tee -a "$out"
import re, sys
rows = [dict(re.findall(r"(\w+)=([\d.]+)", l)) for l in sys.argv[1].splitlines() if l.startswith("density:")]
cols = ["concurrency", "in_flight_peak", "ticks_per_s", "agent_cpu_us_per_tick", "rss_mb", "rss_kb_per_task"]
print()
print("| AGENT_CONCURRENCY | in_flight_peak | ticks/s | agent CPU µs/tick | RSS MB | RSS kB/task |")
print("|---|---|---|---|---|---|")
for r in sorted(rows, key=lambda r: int(r["concurrency"])):
    print("| " + " | ".join(r[c] for c in cols) + " |")
PY
