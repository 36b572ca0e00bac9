//! TLS to Redis and RabbitMQ against real TLS listeners on this machine: a private
//! `redis-server` with only a TLS port and a private RabbitMQ node with only a TLS
//! listener, both with a CA and a `localhost` certificate made at test time.
//!
//! - gateway and agent complete a task over `rediss://` and `amqps://`;
//! - without the CA file (system roots only), or with an unrelated CA, every process
//!   (gateway, agent, metrics-sidecar, autoscaler local loop) refuses the server, with an
//!   error naming TLS and the host;
//! - the right CA but the wrong host name is refused.
//! - Redis behind a TLS Sentinel: the Sentinel asked over TLS, the primary reached over TLS
//!   by the relay (`REDIS_SENTINELS`).
//!
//! The service binaries are the workspace's own (`testkit::binaries`): `cargo test
//! --workspace` (scripts/test.sh) builds them first. Running only this suite, build them
//! first too (`cargo build --workspace --bins`), or it would run stale ones.

mod connect;
mod processes;

use std::time::Duration;

/// Generous bounds for "eventually": correctness limits, not speed targets.
pub const SOON: Duration = Duration::from_secs(60);
