# syntax=docker/dockerfile:1
#
# One image with the four Euglena service binaries (gateway, agent, metrics-sidecar,
# autoscaler); the container's command picks one:
#
#   docker build -t euglena:local .
#   podman build --format docker -t euglena:local .     # --format docker keeps HEALTHCHECK
#   docker run --rm euglena:local gateway --help
#
# Why one image and not one per service: the binaries share ~95% of their dependency graph,
# so one build compiles it once and one push/pull moves the shared layers once; one tag names
# one consistent release of every process (the deploy takes a single ImageTag); and
# `autoscaler local` needs the `agent` binary beside it. The Lambda (`bootstrap`) is not in the
# image: it ships as a zip built with cargo-lambda (docs/DEPLOY.md).
#
# Builds with Docker BuildKit and with Debian 12's podman/buildah 1.28 (scripts/container-test.sh
# runs it in CI). Two rules keep it working on that buildah: at most one `sharing=locked`
# cache mount per RUN (two deadlock on an empty cache: buildah issue #4342), and no mount
# that nothing uses (Cargo.lock has no git dependencies, so no /usr/local/cargo/git).
#
# Layers, without cargo-chef: the manifests and stub sources first, so the layer that
# compiles every dependency (about 12 minutes cold on two cores) is rebuilt only when a
# Cargo.toml or Cargo.lock changes; then the real sources and the workspace (a few minutes).
#
# Runtime base: Debian slim, without curl or any probe tool: each binary has a `healthcheck`
# subcommand (docs/ARCHITECTURE.md §9 says why not distroless).

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
ARG RUST_VERSION
# Use the image's toolchain as is: rust-toolchain.toml would otherwise make rustup fetch
# the clippy/rustfmt components, which a release build does not need.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
WORKDIR /src

# 1. Dependencies: the manifests, and a stub for every target they name or imply (lib.rs,
# main.rs, [[bin]]/[[bench]] paths), removed again after the build so none can shadow a
# real file. A new workspace member needs a line here.
COPY Cargo.toml Cargo.lock ./
COPY proto/Cargo.toml proto/
COPY runtime/Cargo.toml runtime/
COPY gateway/Cargo.toml gateway/
COPY agent/Cargo.toml agent/
COPY metrics-sidecar/Cargo.toml metrics-sidecar/
COPY autoscaler/Cargo.toml autoscaler/
COPY testkit/Cargo.toml testkit/
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    set -eu; \
    for m in */Cargo.toml; do \
      d=${m%/Cargo.toml}; \
      awk -v d="$d" ' \
        function out() { if (kind != "") print d "/" (path != "" ? path : kind "/" name ".rs"); kind = ""; name = ""; path = "" } \
        /^\[/ { out() } \
        /^\[\[bin\]\]/ { kind = "src/bin" } /^\[\[bench\]\]/ { kind = "benches" } \
        /^\[\[test\]\]/ { kind = "tests" } /^\[\[example\]\]/ { kind = "examples" } \
        kind != "" && /^name *=/ { split($0, a, "\""); name = a[2] } \
        kind != "" && /^path *=/ { split($0, a, "\""); path = a[2] } \
        END { out() }' "$m"; \
      echo "$d/src/lib.rs"; echo "$d/src/main.rs"; \
    done | sort -u > /tmp/stubs; \
    while read -r f; do mkdir -p "$(dirname "$f")"; echo 'fn main() {}' > "$f"; done < /tmp/stubs; \
    cargo build --release --locked \
        --bin gateway --bin agent --bin metrics-sidecar --bin autoscaler; \
    xargs rm -f < /tmp/stubs

# 2. The workspace. Touch the sources: COPY keeps their (older) mtimes, and cargo would take
# the stub builds of the workspace crates as up to date.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    find proto runtime gateway agent metrics-sidecar autoscaler testkit -name '*.rs' -exec touch {} + \
 && cargo build --release --locked \
        --bin gateway --bin agent --bin metrics-sidecar --bin autoscaler \
 && mkdir -p /out \
 && cp target/release/gateway target/release/agent target/release/metrics-sidecar \
       target/release/autoscaler /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: rustls verifies Redis/RabbitMQ/OpenAI/webhook TLS against the system roots.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 euglena \
 && useradd --system --uid 10001 --gid euglena --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin euglena
COPY --from=builder /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /
# Documentation only; each binary's listen address is its *_ADDR variable (ARCHITECTURE §1).
EXPOSE 8080 8081 8082
ENV LOG_FORMAT=json RUST_LOG=info
# `<binary> healthcheck` GETs /health on the address the binary is configured to listen on
# (GATEWAY_ADDR, AGENT_HEALTH_ADDR, METRICS_SIDECAR_ADDR; loopback if bound to 0.0.0.0/::),
# so a moved port stays healthy. /proc/1/exe is the container's main process, so this one
# default fits whichever binary the command runs. compose and ECS name the binary
# themselves; `autoscaler local` has no listener and compose checks it another way.
# podman keeps HEALTHCHECK only with `podman build --format docker` (OCI images have no
# such field), and runs it only when asked (`podman healthcheck run`) or under systemd.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=4 \
    CMD ["/proc/1/exe", "healthcheck"]
# SIGTERM starts each binary's graceful shutdown (agents drain for AGENT_DRAIN_SECONDS).
STOPSIGNAL SIGTERM
CMD ["gateway", "--help"]
