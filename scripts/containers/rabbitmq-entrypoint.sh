#!/bin/sh
# As the official image: RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS name the user created
# on first start (a fresh data directory), and that user may connect from other containers.
set -e
{
  echo 'listeners.tcp.default = 5672'
  echo 'management.tcp.port = 15672'
  echo 'loopback_users = none'
  [ -n "${RABBITMQ_DEFAULT_USER:-}" ] && echo "default_user = ${RABBITMQ_DEFAULT_USER}"
  [ -n "${RABBITMQ_DEFAULT_PASS:-}" ] && echo "default_pass = ${RABBITMQ_DEFAULT_PASS}"
  true
} > /etc/rabbitmq/conf.d/10-defaults.conf
exec "$@"
