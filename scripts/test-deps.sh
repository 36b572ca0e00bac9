#!/usr/bin/env bash
# Installs the test-only tools the integration tests start themselves, into .venv/
# (gitignored). Idempotent: does nothing when they are already there.
#   moto_server — a local AWS (CloudWatch, ECS) for the metrics-sidecar and autoscaler tests.
set -euo pipefail
cd "$(dirname "$0")/.."
MOTO_VERSION=5.2.5
if [ ! -x .venv/bin/moto_server ]; then
  echo "test-deps: installing moto[server]==$MOTO_VERSION into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
.venv/bin/moto_server --version >/dev/null 2>&1 || .venv/bin/python -c 'import moto' \
  || { echo "test-deps: moto is broken in .venv; delete .venv and rerun" >&2; exit 1; }

# MCP peers for the tool tests: the official Python SDK's server (testkit/mcp_server.py) and
# the reference server-everything (npm), both started by the tests on 127.0.0.1.
MCP_VERSION=2.3.0
if ! .venv/bin/python -c "import mcp.server.mcpserver" 2>/dev/null; then
  echo "test-deps: installing mcp==$MCP_VERSION into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "mcp==$MCP_VERSION"
fi
EVERYTHING_VERSION=2026.8.31
if [ ! -x .venv/node/node_modules/.bin/mcp-server-everything ]; then
  echo "test-deps: installing @modelcontextprotocol/server-everything@$EVERYTHING_VERSION into .venv/node"
  mkdir -p .venv/node
  (cd .venv/node && npm install --silent --no-audit --no-fund --prefix . "@modelcontextprotocol/server-everything@$EVERYTHING_VERSION" >/dev/null)
fi
