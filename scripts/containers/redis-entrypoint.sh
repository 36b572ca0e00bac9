#!/bin/sh
# As the official image: a bare `redis-server` (no config file) listens on every interface,
# and protected mode is off because the container network is the boundary.
set -e
if [ "${1:-}" = redis-server ]; then
  shift
  exec redis-server --bind '* -::*' --protected-mode no --dir /data "$@"
fi
exec "$@"
