//! The Euglena autoscaler (ARCHITECTURE §6): one pure policy, three ways to run it.
//!
//! # Layout
//! - [`policy`]: the decision from samples over the scale-in window, current and busy
//!   workers and bounds. Pure; table- and property-tested.
//! - [`config`]: settings from the environment for each mode.
//! - [`decision_log`]: the one structured log line per decision.
//! - Lambda (`bootstrap` binary): [`lambda`] with [`metrics_window`] (CloudWatch in) and
//!   [`ecs`] (the service's desired count out).
//! - [`local`] (`autoscaler local`): agent child processes driven by RabbitMQ and Redis.
//! - [`simulate`] (`autoscaler simulate`): a demand trace replayed into CSV and an SVG chart.

pub mod config;
pub mod decision_log;
pub mod ecs;
pub mod lambda;
pub mod local;
pub mod metrics_window;
pub mod policy;
pub mod simulate;
