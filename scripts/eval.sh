#!/usr/bin/env bash
# Runs the evaluation (testkit/src/bin/eval.rs): five small research tasks, each answered by a
# page served on 127.0.0.1, graded by exact facts; prints a line per task and
# "eval: solved k of n". With OPENAI_BASE_URL or OPENAI_API_KEY set it evaluates that model
# (LLM_MODEL, LLM_* and EMBEDDING_MODEL are passed on); otherwise the small local model
# (installed by scripts/llm-deps.sh). Extra arguments go to eval (e.g. --max-ticks 6).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
args=()
if [ -z "${OPENAI_BASE_URL:-}" ] && [ -z "${OPENAI_API_KEY:-}" ]; then
  args+=(--python "$(scripts/llm-deps.sh | tail -n 1)")
fi
cargo build -q -p agent --bin agent -p testkit --bin eval
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
"$target/debug/eval" --agent-bin "$target/debug/agent" "${args[@]}" "$@"
