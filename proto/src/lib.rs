//! Euglena's contracts, shared by every process.
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
//! - [`group_commit`]: concurrent callers' small writes batched into one script call.
//! - [`presence`]: agent heartbeats and the live/busy agent count.
//! - [`samples`]: the fleet's sampled history (`metrics:samples`) for the console.
//! - [`topology`]: queue, dead-letter exchange and dead-letter queue declaration.
//! - [`webhook_queue`]: the durable queue of task-end webhooks.
//! - [`stream_leases`]: per-user leases on open event streams, shared by every replica.
//! - [`connect`]: Redis and RabbitMQ connections with timeouts and backoff.
//! - [`tls`]: rustls for `rediss://` / `amqps://`: system roots plus a private CA file.
//! - [`config`]: typed environment parsing that names the variable on error.
//! - [`settings`]: the settings every process shares (Redis, RabbitMQ, prefix, queue).
//! - [`serve`]: the hardened HTTP accept loop of every listener.
//! - [`address_policy`]: public-internet-only outbound requests (visits, webhooks).
//! - [`lifecycle`]: the one owner of a process's background tasks, stopped in a declared
//!   order, each within a grace.
//! - [`telemetry`], [`shutdown`], [`backoff`], [`ops`]: runtime plumbing every service shares.

pub mod address_policy;
pub mod backoff;
pub mod config;
pub mod connect;
pub mod domain;
pub mod envelope;
pub mod group_commit;
pub mod keys;
pub mod lifecycle;
pub mod lua;
pub mod ops;
pub mod preload;
pub mod presence;
pub mod samples;
pub mod serve;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod stream_leases;
pub mod task;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod topology;
pub mod webhook_queue;

// The reconciler's writes keep the path they had before the store was split by phase.
pub use store::reconcile;

pub use domain::{Mandate, MaxTicks, TaskId};
pub use envelope::TaskEnvelope;
pub use keys::Keys;
pub use task::{TaskRecord, TaskResponse, TaskResult, TaskStatus, Usage};
