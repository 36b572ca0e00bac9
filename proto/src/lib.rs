//! Euglena's contracts, shared by every process: the shapes on the wire and in Redis.
//!
//! # Layout
//! - [`domain`]: parse-don't-validate newtypes (`Mandate`, `MaxTicks`, `TaskId`).
//! - [`task`]: the task record, its status machine and the client-facing `TaskResponse`.
//! - [`envelope`]: the `TaskEnvelope` published to RabbitMQ.
//! - [`keys`]: the one definition of every Redis key.
//! - [`store`]: every atomic Redis write (Lua scripts) on task records, quota and events,
//!   and the reads of them, a file per phase: submit (admit, abort, confirm), take over, run
//!   (progress, finish, cancel), read (get, list, cursor), [`reconcile`] (the reconciler's
//!   closes and lease); [`lua`] runs the scripts by hash with a one-round-trip NOSCRIPT
//!   fallback, [`preload`] loads them all at start.
//! - [`presence`]: agent heartbeats and the live/busy agent count.
//! - [`samples`]: the fleet's sampled history (`metrics:samples`) for the console.
//! - [`topology`]: queue, dead-letter exchange and dead-letter queue declaration.
//! - [`webhook_queue`]: the durable queue of task-end webhooks.
//! - [`stream_leases`]: per-user leases on open event streams, shared by every replica.
//! - [`metric_names`]: the CloudWatch namespace, metric names and dimension the sidecar
//!   publishes and the autoscaler reads.
//! - [`time`]: RFC 3339 timestamps on the wire, millisecond precision, and the quota day.
//!
//! What is shared at run time but is no contract (connections, TLS, the serve loop,
//! telemetry, settings, lifecycle, backoff, the address policy, group commit) lives in
//! the `runtime` crate, which depends on this one and never the other way round.

pub mod domain;
pub mod envelope;
pub mod keys;
pub mod lua;
pub mod metric_names;
pub mod preload;
pub mod presence;
pub mod samples;
pub mod store;
pub mod stream_leases;
pub mod task;
pub mod time;
pub mod topology;
pub mod webhook_queue;

// The reconciler's writes keep the path they had before the store was split by phase.
pub use store::reconcile;

pub use domain::{Mandate, MaxTicks, TaskId};
pub use envelope::TaskEnvelope;
pub use keys::Keys;
pub use task::{TaskRecord, TaskResponse, TaskResult, TaskStatus, Usage};
