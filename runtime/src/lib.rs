//! Euglena's runtime helpers: what every process does the same way but that is no
//! contract between processes. The contracts (wire types, keys, scripts, topology) are in
//! `proto`; this crate depends on it, never the other way round.
//!
//! # Layout
//! - [`config`]: typed environment parsing (`Env`) that names the variable on error.
//! - [`settings`]: the settings every process shares (Redis, RabbitMQ, prefix, queue).
//! - [`connect`]: Redis and RabbitMQ connections with timeouts and backoff.
//! - [`nodes`]: a cluster's nodes in one setting, tried in a shuffled order per connect.
//! - [`sentinel`]: following the Redis primary (Sentinel relay, demoted-primary check).
//! - [`amqp_link`]: one lazily (re)opened RabbitMQ connection and channel with the topology
//!   declared, closed channel first (the gateway's publisher and reconciler, the sidecar's probe).
//! - [`tls`]: rustls for `rediss://` / `amqps://`: system roots plus a private CA file.
//! - [`serve`]: the hardened HTTP accept loop of every listener.
//! - [`ops`]: `/health` and `/metrics` (Prometheus text) for the agent and the sidecar.
//! - [`healthcheck`]: `<binary> healthcheck`, the container probe of a binary's own `/health`.
//! - [`telemetry`]: JSON lines or pretty logs behind a `RUST_LOG` filter, and OpenTelemetry
//!   traces over OTLP/HTTP when an endpoint is configured (W3C `traceparent` in and out).
//! - [`shutdown`]: the one SIGTERM/SIGINT signal.
//! - [`lifecycle`]: the one owner of a process's background tasks, stopped in a declared
//!   order, each within a grace.
//! - [`backoff`]: capped, jittered exponential backoff, and `retry`, the one loop that waits
//!   it out between failed attempts (reconnects, store writes, the undo, `PutMetricData`).
//! - [`address_policy`]: public-internet-only outbound requests (visits, webhooks).
//! - [`group_commit`]: concurrent callers' small writes batched into one script call.
//! - [`mcp`]: the operator's MCP servers and calls to their tools.

pub mod address_policy;
pub mod amqp_link;
pub mod backoff;
pub mod config;
pub mod connect;
pub mod group_commit;
pub mod healthcheck;
pub mod lifecycle;
pub mod mcp;
pub mod nodes;
pub mod ops;
pub mod sentinel;
pub mod serve;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
