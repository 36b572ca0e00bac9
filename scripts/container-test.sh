#!/usr/bin/env bash
# The image and the compose stack, built and run as a user would, with Debian's podman and
# podman-compose (no Docker engine, no registry): issue 27. Run by .ci/run and by hand.
#
#   1. installs podman, buildah, runc, debootstrap (apt) and podman-compose (.venv/podman-compose);
#   2. makes the base images the Dockerfile and docker-compose.yml name when they are missing:
#      debian:bookworm-slim (debootstrap, plus the host's extra CA certificates: builds go
#      through an intercepting proxy), rust:<pinned>-bookworm (the host's pinned toolchain),
#      and stand-in redis / rabbitmq images from Debian's packages (scripts/containers/);
#   3. builds the project image (`--format docker`, so HEALTHCHECK is kept) and prints how long;
#   4. brings the stack up under a unique project name on non-default ports (the host's own
#      Redis 6379, RabbitMQ 5672 and 8080-8082 are never touched) and checks: /ready 200
#      through the published port, each container's `healthcheck` subcommand, a task
#      submitted with a token minted inside the gateway container completes, /agents/count,
#      scaling the agents to 3, `down` drains a running task back to the queue (checkpoint
#      kept, then finished by a new agent), no container ran as root;
#   5. removes its containers, volumes and network; images stay cached for the next run.
# Every wait is bounded; any failure exits non-zero naming the check.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1

PODMAN_COMPOSE_VERSION=1.6.0
APT_PACKAGES=(podman buildah runc uidmap slirp4netns fuse-overlayfs debootstrap curl jq)
RUST_VERSION=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
IMAGE=${EUGLENA_IMAGE:-euglena:local}
BASE_IMAGE=docker.io/library/debian:bookworm-slim
RUST_IMAGE=docker.io/library/rust:${RUST_VERSION}-bookworm
# The names docker-compose.yml uses (its REDIS_IMAGE / RABBITMQ_IMAGE defaults).
# A short name means Docker Hub's library, as the engines read it.
REDIS_IMAGE=docker.io/library/$(sed -n 's/.*\${REDIS_IMAGE:-\([^}]*\)}.*/\1/p' docker-compose.yml)
RABBITMQ_IMAGE=docker.io/library/$(sed -n 's/.*\${RABBITMQ_IMAGE:-\([^}]*\)}.*/\1/p' docker-compose.yml)
WORK=/var/tmp/euglena-containers
mkdir -p "$WORK"

t0=$(date +%s)
log() { printf 'container-test [%4ss]: %s\n' "$(($(date +%s) - t0))" "$*"; }
fail() { printf 'container-test: FAILED: %s\n' "$*" >&2; exit 1; }

# ---- 1. tools ----------------------------------------------------------------------------
install_tools() {
  local missing=()
  for c in podman buildah runc newuidmap slirp4netns fuse-overlayfs debootstrap curl jq; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || fail "missing ${missing[*]}: run as root, or apt-get install ${APT_PACKAGES[*]}"
    log "installing ${APT_PACKAGES[*]} (apt)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_PACKAGES[@]}") >/dev/null \
      || fail "apt-get could not install the container tools"
  fi
  # This VM forbids raising rlimits and has a hybrid cgroup layout that crun refuses: runc,
  # with limits it may set. Written only when missing, so a machine's own settings stay.
  local conf=/etc/containers/containers.conf
  if ! grep -qs '^runtime *= *"runc"' "$conf"; then
    [ -e "$conf" ] && cp "$conf" "$conf.before-euglena"
    log "writing $conf (runtime = runc, default_ulimits)"
    mkdir -p /etc/containers
    cat >"$conf" <<'CONF'
# Written by Euglena's scripts/container-test.sh: crun fails here on setrlimit and on the
# hybrid cgroup layout; runc works with limits the VM allows.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
CONF
  fi
  if [ "$(.venv/podman-compose/bin/podman-compose --version 2>/dev/null | sed -n 's/^podman-compose version //p')" != "$PODMAN_COMPOSE_VERSION" ]; then
    log "installing podman-compose==$PODMAN_COMPOSE_VERSION into .venv/podman-compose"
    [ -x .venv/podman-compose/bin/python ] || python3 -m venv .venv/podman-compose
    .venv/podman-compose/bin/pip install --quiet --disable-pip-version-check "podman-compose==$PODMAN_COMPOSE_VERSION"
  fi
}

# ---- 2. base images ----------------------------------------------------------------------
have_image() { podman image exists "$1"; }

# The CA certificates this host trusts beyond Debian's own: local additions
# (/usr/local/share/ca-certificates) and any other certificate in the host's bundle that no
# file of Debian's ca-certificates package holds. Written one PEM file each into $1.
host_extra_cas() {
  python3 - "$1" <<'PY'
import glob, os, re, sys
pem = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.S)
def certs(path):
    try:
        return ["".join(b.split()) for b in pem.findall(open(path, errors="replace").read())]
    except OSError:
        return []
debian = {c for f in glob.glob("/usr/share/ca-certificates/**/*.crt", recursive=True) for c in certs(f)}
extra = []
for f in sorted(glob.glob("/usr/local/share/ca-certificates/**/*.crt", recursive=True)) + ["/etc/ssl/certs/ca-certificates.crt"]:
    extra += [c for c in certs(f) if c not in debian and c not in extra]
for i, body in enumerate(extra, 1):
    lines = "\n".join(body[j:j + 64] for j in range(0, len(body), 64))
    with open(os.path.join(sys.argv[1], f"host-{i}.crt"), "w") as out:
        out.write(f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n")
print(len(extra))
PY
}

make_debian_base() {
  have_image "$BASE_IMAGE" && return 0
  log "making $BASE_IMAGE with debootstrap --variant=minbase bookworm"
  local dir=$WORK/rootfs
  rm -rf "$dir"
  timeout 1200 debootstrap --variant=minbase bookworm "$dir" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
  cat >"$dir/etc/apt/sources.list" <<'SRC'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
  # Only in this local base, never in the Dockerfile: update-ca-certificates (run when an
  # image installs ca-certificates) adds them to the trust store, so a build can reach
  # crates.io through this machine's intercepting proxy.
  mkdir -p "$dir/usr/local/share/ca-certificates/host"
  log "added $(host_extra_cas "$dir/usr/local/share/ca-certificates/host") host CA certificate(s) to the base image"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | podman import --change 'CMD ["bash"]' - "$BASE_IMAGE" >"$WORK/import.log" 2>&1 \
    || { tail -n 20 "$WORK/import.log" >&2; fail "podman import of the debootstrap tree"; }
  rm -rf "$dir"
}

make_rust_base() {
  have_image "$RUST_IMAGE" && return 0
  log "making $RUST_IMAGE from the host's $RUST_VERSION toolchain"
  local ctx=$WORK/rust-ctx home=${RUSTUP_HOME:-$HOME/.rustup}
  local tc=$home/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu
  [ -d "$tc" ] || fail "no $tc: rustup toolchain install $RUST_VERSION"
  rm -rf "$ctx"; mkdir -p "$ctx/toolchain"
  # -L: rustup may link the pinned name to another toolchain directory; docs are not needed.
  tar -C "$tc/" -ch --exclude=./share/doc . | tar -C "$ctx/toolchain" -x
  cp "$(command -v rustup)" "$ctx/rustup"
  printf 'version = "12"\ndefault_toolchain = "%s-x86_64-unknown-linux-gnu"\nprofile = "minimal"\nauto_self_update = "disable"\n' \
    "$RUST_VERSION" >"$ctx/settings.toml"
  cp scripts/containers/rust.Containerfile "$ctx/Containerfile"
  timeout 1800 podman build --network=host --build-arg RUST_VERSION="$RUST_VERSION" -t "$RUST_IMAGE" "$ctx" >"$WORK/rust-base.log" 2>&1 \
    || { tail -n 20 "$WORK/rust-base.log" >&2; fail "building $RUST_IMAGE"; }
  rm -rf "$ctx"
}

make_standin() { # image name, Containerfile
  have_image "$1" && return 0
  log "making stand-in $1 from $2"
  timeout 1200 podman build --network=host --format docker -f "$2" -t "$1" scripts/containers >"$WORK/standin.log" 2>&1 \
    || { tail -n 20 "$WORK/standin.log" >&2; fail "building $1"; }
}

# ---- 3. the project image -----------------------------------------------------------------
build_image() {
  log "building $IMAGE (podman build --network=host --format docker)"
  local start=$SECONDS
  # Bounded: a cold build took 33.5 min here with other builds on the same two cores.
  if ! timeout 2400 podman build --network=host --format docker -t "$IMAGE" . >"$WORK/build.log" 2>&1; then
    tail -n 30 "$WORK/build.log" >&2
    fail "podman build (log: $WORK/build.log)"
  fi
  local steps cached
  steps=$(grep -c 'STEP [0-9]' "$WORK/build.log" || true)
  cached=$(grep -c -- '--> Using cache' "$WORK/build.log" || true)
  local kind="cold (no step from cache)"
  [ "$cached" -gt 0 ] && kind="partly cached ($cached of $steps steps from cache)"
  grep -q 'Compiling ' "$WORK/build.log" || kind="cached ($cached of $steps steps from cache, nothing compiled)"
  log "image build took $((SECONDS - start)) s: $kind"
  [ -n "$(podman image inspect --format '{{.Config.Healthcheck}}' "$IMAGE")" ] \
    || fail "the image has no HEALTHCHECK (built without --format docker?)"
}

# ---- 4. the compose stack ------------------------------------------------------------------
PROJECT=euglena-ct-$$
# A clean environment: the caller's variables would override the env file's (as in compose).
# podman's own configuration (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, ...) passes through.
COMPOSE=(env -i "PATH=$PATH" "HOME=$HOME" $(env | grep -E '^CONTAINERS_[A-Z_]+=' || true)
  .venv/podman-compose/bin/podman-compose --env-file "$WORK/ct.env" -p "$PROJECT" -f docker-compose.yml)

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

compose() { # bounded, output to the log, shown on failure
  if ! timeout 600 "${COMPOSE[@]}" "$@" >>"$WORK/compose.log" 2>&1; then
    tail -n 30 "$WORK/compose.log" >&2
    fail "podman-compose $* (log: $WORK/compose.log)"
  fi
}

containers() { # [service]: ids of this project's containers (of one service)
  local filter=(--filter "label=io.podman.compose.project=$PROJECT")
  [ -n "${1:-}" ] && filter+=(--filter "label=com.docker.compose.service=$1")
  podman ps -q "${filter[@]}"
}

cleanup() {
  local rc=$?
  if [ -n "${KEEP:-}" ]; then
    log "KEEP set: leaving project $PROJECT up (${COMPOSE[*]} down -v)"
    return
  fi
  if [ "$rc" != 0 ] && [ -n "$(containers)" ]; then
    echo "---- last logs of project $PROJECT ----" >&2
    for c in $(containers); do
      echo "-- $(podman inspect --format '{{.Name}}' "$c")" >&2
      podman logs --tail 15 "$c" >&2 2>&1 || true
    done
  fi
  timeout 300 "${COMPOSE[@]}" down -v -t 30 >>"$WORK/compose.log" 2>&1 || true
  # Whatever podman-compose left (stopped replicas, the network, the volumes).
  podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman rm -f -v >/dev/null 2>&1 || true
  podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman volume rm -f >/dev/null 2>&1 || true
  podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
  rm -f "$WORK/ct.env"
}

wait_until() { # description, seconds, command...
  local what=$1 secs=$2 deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "$what: not within ${secs}s"
    sleep 1
  done
}

api() { curl -fsS --max-time 10 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$GATEWAY_PORT$1" "${@:2}"; }
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$GATEWAY_PORT/ready")" = 200 ]; }
agents_are() { [ "$(curl -fsS --max-time 5 "http://127.0.0.1:$GATEWAY_PORT/agents/count" | jq -r .count)" = "$1" ]; }
status_is() { [ "$(api "/tasks/$1" | jq -r .status)" = "$2" ]; }
ticking() { [ "$(api "/tasks/$1" | jq -r '.tick // 0')" -ge "$2" ]; }
submit() { # mandate, max_ticks -> id
  api /tasks -X POST -H 'Content-Type: application/json' \
    -d "$(jq -cn --arg m "$1" --argjson t "$2" '{mandate: $m, max_ticks: $t}')" | jq -r .correlation_id
}
queue_ready() { # messages ready in the agents' input queue, asked of the broker
  podman exec "$(containers rabbitmq)" rabbitmqctl -q list_queues name messages_ready \
    | awk '$1 == "agent.mandates" { print $2 }'
}
queue_has() { [ "$(queue_ready)" = "$1" ]; }

stack_test() {
  GATEWAY_PORT=$(free_port)
  local mgmt_port; mgmt_port=$(free_port)
  # Its own secrets and ports; nothing from a developer's .env. The offline demo model, slowed
  # so a task is still running when the stack goes down; a short drain so `down` is quick.
  umask 077
  cat >"$WORK/ct.env" <<ENV
SUPABASE_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
RABBITMQ_USER=euglena
RABBITMQ_PASSWORD=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
GATEWAY_PORT=$GATEWAY_PORT
RABBITMQ_MANAGEMENT_PORT=$mgmt_port
EUGLENA_IMAGE=$IMAGE
REDIS_IMAGE=$REDIS_IMAGE
RABBITMQ_IMAGE=$RABBITMQ_IMAGE
AGENT_REPLICAS=2
OFFLINE_THINK_TICKS=12
OFFLINE_TICK_DELAY_MS=700
AGENT_DRAIN_SECONDS=2
AGENT_HEARTBEAT_SECONDS=2
AGENT_HEARTBEAT_TTL_SECONDS=6
LOG_FORMAT=json
RUST_LOG=info
ENV
  umask 022
  : >"$WORK/compose.log"
  trap cleanup EXIT
  # A timeout (CI's bound) or Ctrl-C still cleans up: exit through the EXIT trap.
  trap 'exit 143' TERM
  trap 'exit 130' INT
  log "compose up: project $PROJECT, gateway on 127.0.0.1:$GATEWAY_PORT (podman-compose $PODMAN_COMPOSE_VERSION)"
  # Any start order: our services first, with no Redis or RabbitMQ at all (the worst order an
  # engine that ignores service_healthy could pick). They must wait and retry, not exit.
  compose up -d --no-build --no-deps gateway agent metrics-sidecar
  sleep 8
  local code; code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$GATEWAY_PORT/ready" || true)
  [ "$code" = 503 ] || fail "/ready without Redis and RabbitMQ answered ${code:-nothing}, not 503"
  compose up -d --no-build
  wait_until "/ready 200 on the published port" 180 ready
  local c restarts
  for c in $(containers); do
    restarts=$(podman inspect --format '{{.Name}} {{.State.Status}} {{.RestartCount}}' "$c")
    case $restarts in *" running 0") ;; *) fail "after starting before the brokers: $restarts (status, restarts)" ;; esac
  done
  log "started before Redis and RabbitMQ: /ready 503, then 200 once they came, no container restarted"
  log "/ready 200 through the published port $GATEWAY_PORT"

  # Each container's own health check, as compose configured it, and the image's default
  # (/proc/1/exe healthcheck), which must fit whichever binary the container runs.
  local name
  for c in $(containers); do
    name=$(podman inspect --format '{{.Name}}' "$c")
    wait_until "health check of $name" 90 podman healthcheck run "$c"
  done
  for svc in gateway agent metrics-sidecar; do
    c=$(containers "$svc" | sed -n 1p)  # sed, not head: no SIGPIPE under pipefail
    podman exec "$c" /proc/1/exe healthcheck || fail "the image's default health check in $svc"
  done
  log "health checks pass: every container's, and the image default in gateway, agent, metrics-sidecar"

  # A token minted by the containerised gateway (`gateway token`, signed with the secret the
  # container was given); /dev/token stays loopback-only.
  TOKEN=$(podman exec "$(containers gateway)" gateway token --sub container-test --ttl 900) \
    || fail "gateway token inside the gateway container"
  local id; id=$(submit "Say what Euglena is (container test)" 30)
  [ -n "$id" ] && [ "$id" != null ] || fail "submitting a task"
  wait_until "task $id completed" 120 status_is "$id" completed
  log "task $id completed: $(api "/tasks/$id" | jq -c '{status, tick, attempt}')"

  wait_until "GET /agents/count = 2" 60 agents_are 2
  log "GET /agents/count: $(curl -fsS "http://127.0.0.1:$GATEWAY_PORT/agents/count")"
  # AGENT_REPLICAS rather than `--scale agent=3`: podman-compose's `down` knows only the
  # replicas the file declares, and would leave a --scale'd one running.
  sed -i 's/^AGENT_REPLICAS=.*/AGENT_REPLICAS=3/' "$WORK/ct.env"
  compose up -d --no-build
  wait_until "GET /agents/count = 3 after scaling" 90 agents_are 3
  log "scaled to 3: GET /agents/count: $(curl -fsS "http://127.0.0.1:$GATEWAY_PORT/agents/count")"

  # Nobody is root: the configured user and the processes' real user, in every container.
  local user procs
  for c in $(containers); do
    name=$(podman inspect --format '{{.Name}}' "$c")
    user=$(podman inspect --format '{{.Config.User}}' "$c")
    procs=$(podman top "$c" user huser | tail -n +2 | tr -s ' ' | sort -u | paste -sd, -)
    case "$user" in "" | root | 0 | 0:*) fail "$name runs as ${user:-the image default, root}" ;; esac
    if echo " $procs " | grep -qw root; then fail "$name has root processes: $procs"; fi
    echo "    $name: configured user $user; processes (user, host user): $procs"
  done
  log "no container runs as root"

  # Drain: a task mid-run when the agents go down is checkpointed and requeued, not lost.
  # podman-compose 1.x stops every container of `down` at once (Docker Compose stops the
  # dependents first), so the agents go down first, while Redis and RabbitMQ still take the
  # checkpoint and the requeue; then the rest.
  local long; long=$(submit "A long one, interrupted by compose down" 40)
  wait_until "task $long running (tick >= 3)" 60 ticking "$long" 3
  log "task $long running ($(api "/tasks/$long" | jq -c '{status, tick, attempt}')); compose down agent"
  compose down -t 60 agent
  [ -z "$(containers agent)" ] || fail "agent containers still running after down"
  local rec; rec=$(api "/tasks/$long")
  case $(jq -r .status <<<"$rec") in in_queue | in_progress) ;; *) fail "task $long after the agents' down: $rec" ;; esac
  [ "$(jq -r '.tick // 0' <<<"$rec")" -ge 3 ] || fail "task $long lost its checkpoint: $rec"
  wait_until "task $long back in the queue" 30 queue_has 1
  log "agents drained: task $long is $(jq -c '{status, tick, attempt}' <<<"$rec"), 1 message ready in agent.mandates"
  compose down -t 60
  [ -z "$(containers)" ] || fail "containers still running after down"
  # Volumes survive `down`: everything back, and a new agent finishes the task.
  compose up -d --no-build
  wait_until "/ready after the restart" 180 ready
  wait_until "task $long completed after the restart" 120 status_is "$long" completed
  rec=$(api "/tasks/$long")
  [ "$(jq -r .attempt <<<"$rec")" -ge 2 ] || fail "task $long was not redelivered: $rec"
  log "after down and up: task $long completed on a new agent: $(jq -c '{status, tick, attempt}' <<<"$rec")"
}

main() {
  install_tools
  make_debian_base
  make_rust_base
  make_standin "$REDIS_IMAGE" scripts/containers/redis.Containerfile
  make_standin "$RABBITMQ_IMAGE" scripts/containers/rabbitmq.Containerfile
  [ "${1:-}" = --bases-only ] && { log "base images ready"; return 0; }
  build_image
  stack_test
  cleanup
  trap - EXIT
  log "passed in $(($(date +%s) - t0)) s"
}

# All of the script is read before any of it runs, so editing it mid-run is safe.
main "$@"; exit
