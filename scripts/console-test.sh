#!/usr/bin/env bash
# Browser tests of the web console: a real gateway, two agents (the second joins a few
# seconds in, so the ops chart has a scale change to mark) and the metrics sidecar, on a key
# prefix, queue and port of their own, driven by headless Chromium (Debian's package, via
# playwright-core). Installs what it needs, idempotently. Screenshots: console-tests/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh >/dev/null
if ! command -v chromium >/dev/null; then
  echo "console-test: installing Debian's chromium"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d console-tests/node_modules/playwright-core ]; then
  echo "console-test: installing playwright-core (npm ci)"
  (cd console-tests && npm ci --no-audit --no-fund --silent)
fi
scripts/test-deps.sh >/dev/null
cargo build --bins --locked --quiet
bin=${CARGO_TARGET_DIR:-target}/debug

tag=console$RANDOM$RANDOM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
export REDIS_KEY_PREFIX="$tag:" AGENT_INPUT_QUEUE="$tag.mandates"
export SUPABASE_JWT_SECRET=console-secret-console-secret-console-0000 CONSOLE_DEV_TOKENS=true
export DAILY_TICK_LIMIT=0 SUBMIT_RATE_PER_MINUTE=0 MAX_ACTIVE_TASKS_PER_USER=0
export OFFLINE_THINK_TICKS=12 OFFLINE_TICK_DELAY_MS=300 AGENT_HEARTBEAT_SECONDS=1 AGENT_HEARTBEAT_TTL_SECONDS=3
export METRICS_INTERVAL_SECONDS=1 CLOUDWATCH_ENABLED=false LOG_FORMAT=pretty NO_COLOR=1 RUST_LOG=warn
logs=$(mktemp -d)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  redis-cli -h 127.0.0.1 eval "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end" 0 "$tag:*" >/dev/null
  for q in "$tag.mandates" "$tag.mandates.dlq"; do rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done
  rm -rf "$logs"
}
trap cleanup EXIT
# An MCP server (the Python SDK's, as in the tool tests) whose delete_record needs approval.
mcp_port=$(free_port)
.venv/bin/python testkit/mcp_server.py --port "$mcp_port" --log "$logs/mcp-calls.jsonl" >"$logs/mcp.log" 2>&1 & pids+=($!)
export MCP_SERVERS="{\"py\": {\"url\": \"http://127.0.0.1:$mcp_port/mcp\", \"approval\": {\"delete_record\": \"always\"}}}"
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$mcp_port) 2>/dev/null && break; sleep 0.2; done
GATEWAY_ADDR=127.0.0.1:$port "$bin/gateway" >"$logs/gateway.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
METRICS_SIDECAR_ADDR=127.0.0.1:$(free_port) "$bin/metrics-sidecar" >"$logs/sidecar.log" 2>&1 & pids+=($!)
AGENT_ID=$tag-1 AGENT_HEALTH_ADDR=127.0.0.1:$(free_port) "$bin/agent" >"$logs/agent1.log" 2>&1 & pids+=($!)
(sleep 4; exec env AGENT_ID=$tag-2 AGENT_HEALTH_ADDR=127.0.0.1:$(free_port) "$bin/agent") >"$logs/agent2.log" 2>&1 & pids+=($!)

status=0
(cd console-tests && BASE_URL="http://127.0.0.1:$port" npm test --silent) || status=$?
if [ "$status" -ne 0 ]; then
  for f in "$logs"/*.log; do echo "--- $f"; tail -n 30 "$f"; done
fi
exit "$status"
