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
