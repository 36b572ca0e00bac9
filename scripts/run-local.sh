#!/usr/bin/env bash
# Runs Euglena on this machine against the local Redis and RabbitMQ: the gateway on
# :8080 and $AGENTS agents (default 2), logs prefixed by process. Ctrl-C stops everything
# cleanly (agents drain their running tasks first).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
cargo build --bins --quiet
bin=${CARGO_TARGET_DIR:-target}/debug

export SUPABASE_JWT_SECRET=${SUPABASE_JWT_SECRET:-local-dev-secret-change-me-0123456789}
export LOG_FORMAT=${LOG_FORMAT:-pretty}
export NO_COLOR=1
export AGENT_DRAIN_SECONDS=${AGENT_DRAIN_SECONDS:-10}

pids=()
start() { # name, command...
  local name=$1; shift
  "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=("$!")
}
stop() {
  trap - INT TERM EXIT
  echo "[run-local] stopping ${#pids[@]} processes"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "[run-local] stopped"
}
trap stop INT TERM EXIT

start gateway "$bin/gateway"
for i in $(seq 1 "${AGENTS:-2}"); do
  AGENT_ID="local-agent-$i" AGENT_HEALTH_ADDR="127.0.0.1:$((8090 + i))" start "agent-$i" "$bin/agent"
done
echo "[run-local] gateway on http://127.0.0.1:8080 — mint a token with: $bin/gateway token --sub alice"
wait -n "${pids[@]}" || true
