#!/usr/bin/env bash
# Contract checks against a live gateway: the generated /openapi.json validates as OpenAPI 3.1
# (openapi-spec-validator), then schemathesis fuzzes every operation with a valid token and
# fails on any 5xx or any response that does not match the document. Uses the local Redis and
# RabbitMQ under a key prefix and queue of its own, removed at the end.
# /mcp is not in the document, so not fuzzed here: it is one JSON-RPC endpoint whose contract is
# the MCP specification (gateway/tests/api/mcp.rs drives it with the official Python SDK client).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh >/dev/null
# Their own venv: their pins must not meet moto's and checkov's.
SCHEMATHESIS_VERSION=4.32.5
OPENAPI_VALIDATOR_VERSION=0.9.0
venv=.venv-contract
if [ ! -x $venv/bin/schemathesis ] || [ ! -x $venv/bin/openapi-spec-validator ]; then
  echo "contract: installing schemathesis==$SCHEMATHESIS_VERSION and openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION into $venv"
  python3 -m venv $venv
  $venv/bin/pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION"
fi
export PATH="$PWD/$venv/bin:$PATH"
cargo build --bin gateway --locked --quiet
bin=${CARGO_TARGET_DIR:-target}/debug/gateway

tag=contract$RANDOM$RANDOM
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export GATEWAY_ADDR=127.0.0.1:$port REDIS_KEY_PREFIX="$tag:" AGENT_INPUT_QUEUE="$tag.mandates"
export SUPABASE_JWT_SECRET=contract-secret-contract-secret-contract-0
# Limits off so the fuzzer explores the API rather than the 429 path; event streams end fast
# (no agent runs here, so a followed task would otherwise never finish).
export DAILY_TICK_LIMIT=0 SUBMIT_RATE_PER_MINUTE=0 MAX_ACTIVE_TASKS_PER_USER=0 SSE_MAX_SECONDS=2
# Bodies the fuzzer makes too long for a field (a mandate of 8001 astral characters, escaped)
# must meet the field's 422, not the body limit's 413 (tested in gateway/tests/api/edge.rs).
export MAX_BODY_BYTES=1048576
export LOG_FORMAT=pretty RUST_LOG=warn NO_COLOR=1
log=$(mktemp)
"$bin" >"$log" 2>&1 &
gw=$!
cleanup() {
  kill "$gw" 2>/dev/null || true
  wait "$gw" 2>/dev/null || true
  redis-cli -h 127.0.0.1 eval "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end" 0 "$tag:*" >/dev/null
  for q in "$tag.mandates" "$tag.mandates.dlq"; do rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done
  rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$tag.mandates.dlx\">>), false, <<\"contract\">>)." >/dev/null 2>&1 || true
  rm -f "$log" /tmp/$tag.json
}
trap cleanup EXIT
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
token=$("$bin" token --sub schemathesis-user --ttl 3600)

curl -fsS "http://127.0.0.1:$port/openapi.json" -o /tmp/$tag.json
openapi-spec-validator /tmp/$tag.json

# Every check but positive_data_acceptance: server errors, status codes, content types,
# headers and response schemas against the document, negative-data rejection, the stateful
# links. Schema-valid requests may still be refused on the server's state (a webhook_url
# with webhooks off or a name that does not resolve, a mandate of blanks), always with a
# documented 4xx.
schemathesis run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "${CONTRACT_MAX_EXAMPLES:-40}" --seed 1 --no-color \
  || { echo "--- gateway log"; tail -n 50 "$log"; exit 1; }
