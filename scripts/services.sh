#!/usr/bin/env bash
# Makes sure the local Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672) answer,
# starting them if they do not. Idempotent. Fails loudly (exit 1) when one cannot be had:
# the tests never skip a missing service.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name, seconds, command...
  local name=$1 secs=$2; shift 2
  for _ in $(seq 1 "$secs"); do
    if "$@" >/dev/null 2>&1; then echo "services: $name is up"; return 0; fi
    sleep 1
  done
  echo "services: $name did not come up within ${secs}s" >&2
  return 1
}

redis_ok() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }
if ! redis_ok; then
  command -v redis-server >/dev/null || { echo "services: redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
  echo "services: starting redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for redis 30 redis_ok

rabbit_ok() { port_open 5672 && rabbitmq-diagnostics -q check_port_connectivity; }
if ! port_open 5672; then
  command -v rabbitmq-server >/dev/null || { echo "services: rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2; exit 1; }
  echo "services: starting rabbitmq"
  rabbitmq-server -detached
fi
wait_for rabbitmq 120 rabbit_ok
