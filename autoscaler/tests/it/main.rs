//! Integration tests: the Lambda handler against a private `moto_server` (CloudWatch + ECS),
//! and the local loop against the local Redis and RabbitMQ with real agent processes.
//! Per-test queue names, key prefixes and moto servers, so tests run in parallel.

#[path = "../../../metrics-sidecar/tests/support/moto.rs"]
mod moto;

mod aws;
mod lambda;
mod local;

use std::time::Duration;

/// Generous bounds for "eventually": correctness limits, not speed targets.
pub const SOON: Duration = Duration::from_secs(60);

pub use testkit::eventually;
