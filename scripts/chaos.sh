#!/usr/bin/env bash
# The chaos suite: builds the gateway and agent (release by default) and runs the fault
# scenarios against them on a private Redis (plain and AOF) and a private RabbitMQ node
# (euglena-chaos-*@localhost on free loopback ports), never the shared services. Prints a
# pass/fail table; exits 1 when any scenario lost, duplicated or stranded a task.
#   scripts/chaos.sh                 every scenario, release binaries (~6 min after the build)
#   scripts/chaos.sh --fast          the subset .ci/run runs
#   scripts/chaos.sh --only a,b      named scenarios; --debug uses debug binaries
#   scripts/chaos.sh --out FILE      also write the table to FILE
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/euglena-target}
command -v redis-server >/dev/null || { echo "chaos: redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || { echo "chaos: rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2; exit 1; }
profile=release
args=()
for a in "$@"; do
  case $a in
    --debug) profile=debug ;;
    *) args+=("$a") ;;
  esac
done
if [ "$profile" = release ]; then
  cargo build --release --locked -p gateway -p agent
else
  cargo build --locked -p gateway -p agent
fi
cargo build --locked -q -p testkit --bin chaos
exec "$CARGO_TARGET_DIR/debug/chaos" --bin-dir "$CARGO_TARGET_DIR/$profile" "${args[@]}"
