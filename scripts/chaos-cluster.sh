#!/usr/bin/env bash
# The cluster chaos suite: a three-node RabbitMQ cluster, a Redis primary with a replica and
# three Sentinels, two gateways behind HAProxy and three agents, all private (own node names,
# ports, distribution ports and data under one run directory; never the shared services),
# and five scenarios that kill nodes while clients submit with Idempotency-Keys and retry.
# Prints the table; exits 1 when any scenario lost, duplicated or stranded a task.
#   scripts/chaos-cluster.sh                  release binaries
#   scripts/chaos-cluster.sh --debug          debug binaries (what .ci/run uses)
#   scripts/chaos-cluster.sh --only a,b       named scenarios; --out FILE also writes the table
# Every private process is stopped on exit, also when the driver fails or is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/euglena-target}
command -v redis-server >/dev/null || { echo "chaos-cluster: redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "chaos-cluster: redis-cli is not installed (apt-get install redis-tools)" >&2; exit 1; }
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || { echo "chaos-cluster: rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2; exit 1; }
if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  echo "chaos-cluster: installing haproxy"
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >/dev/null
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >/dev/null
  fi
fi
export PATH="$PATH:/usr/sbin"
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
cargo build --locked -q -p testkit --bin chaos_cluster

run_dir=$(mktemp -d /tmp/euglena-cluster-XXXXXX)
driver=
cleanup() {
  # The driver stops everything it started; this is for when it could not (killed, crashed).
  # Its process group (gateways, agents, HAProxy) may outlive it when it was killed.
  if [ -n "$driver" ] && kill -0 -- "-$driver" 2>/dev/null; then
    kill -TERM -- "-$driver" 2>/dev/null || true
    sleep 2
    kill -KILL -- "-$driver" 2>/dev/null || true
  fi
  # Daemons (RabbitMQ nodes, Redis, Sentinels) left their pids here. A pid is ours only if
  # the process still names the run directory (command line or working directory), so a
  # recycled pid of someone else's process is never signalled.
  for f in "$run_dir"/pids/*; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    [ -d "/proc/$pid" ] || continue
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$run_dir" \
      || readlink "/proc/$pid/cwd" 2>/dev/null | grep -qF "$run_dir"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$run_dir"
}
trap cleanup EXIT INT TERM
# Its own process group, so the trap can stop its gateways, agents and HAProxy too; bounded.
setsid timeout 600 "$CARGO_TARGET_DIR/debug/chaos_cluster" --bin-dir "$CARGO_TARGET_DIR/$profile" --run-dir "$run_dir" "${args[@]}" &
driver=$!
wait "$driver"
