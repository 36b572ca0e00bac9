//! Integration tests: the sidecar against the local Redis and RabbitMQ and a private
//! `moto_server` standing in for CloudWatch. Per-test queue names and key prefixes.

#[path = "../support/moto.rs"]
mod moto;
mod publish;

use std::time::Duration;

/// Generous bounds for "eventually": correctness limits, not speed targets.
pub const SOON: Duration = Duration::from_secs(30);

pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    testkit::eventually(what, SOON, check).await;
}
