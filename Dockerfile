# syntax=docker/dockerfile:1
#
# One image with the four Euglena service binaries (gateway, agent, metrics-sidecar,
# autoscaler); the container's command picks one:
#
#   docker build -t euglena:local .
#   docker run --rm euglena:local gateway --help
#
# Why one image and not one per service: the binaries share ~95% of their dependency graph,
# so one build compiles it once and one push/pull moves the shared layers once; one tag names
# one consistent release of every process (the deploy takes a single ImageTag); and
# `autoscaler local` needs the `agent` binary beside it. The Lambda (`bootstrap`) is not in the
# image: it ships as a zip built with cargo-lambda (docs/DEPLOY.md).
#
# Stages: cargo-chef computes a dependency-only "recipe" from the manifests, so the layer that
# compiles the dependencies is rebuilt only when Cargo.toml/Cargo.lock change, not on every
# source edit; then the workspace is built in release mode; the runtime stage is Debian slim
# with the binaries, CA certificates (rustls verifies against the system roots) and curl.
#
# Runtime base: debian:bookworm-slim rather than distroless/cc because the compose and ECS
# health checks must probe /health over HTTP from inside the container and the binaries have
# no probe subcommand: curl (plus a shell for CMD-SHELL checks) is the smallest way to do
# that. Same Debian release as the builder, so the glibc the binaries link against matches.

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
ARG RUST_VERSION
# Use the image's toolchain as is: rust-toolchain.toml would otherwise make rustup fetch
# the clippy/rustfmt components, which a release build does not need.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: cached until the manifests or the lockfile change.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json \
        --package gateway --package agent --package metrics-sidecar --package autoscaler
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked \
        --bin gateway --bin agent --bin metrics-sidecar --bin autoscaler \
 && mkdir -p /out \
 && cp target/release/gateway target/release/agent target/release/metrics-sidecar \
       target/release/autoscaler /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
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
# The process in a container answers /health on its contract port (gateway 8080, agent 8081,
# metrics-sidecar 8082). compose and ECS define their own per-service checks; this default
# covers `docker run`. `autoscaler local` has no listener and is checked by compose instead.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=4 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/health \
     || curl -fsS -o /dev/null http://127.0.0.1:8081/health \
     || curl -fsS -o /dev/null http://127.0.0.1:8082/health \
     || exit 1
# SIGTERM starts each binary's graceful shutdown (agents drain for AGENT_DRAIN_SECONDS).
STOPSIGNAL SIGTERM
CMD ["gateway", "--help"]
