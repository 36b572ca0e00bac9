//! Every write to task records, quota counters and task events, as atomic Lua scripts, and
//! the reads of them.
//!
//! Guarantees: a terminal status is never overwritten; status and checkpoint writes from
//! an older delivery (a smaller `attempt`) are refused; quota is reserved together with
//! the record and refunded exactly once, when the task ends or is never enqueued.
//!
//! # Layout
//! By the phase of a task; each state transition is one script in `lua/` plus the one
//! function here that builds its keys and arguments and parses its reply.
//! - [`new_task`]: a task about to be submitted, and the record it starts as.
//! - [`submit`]: admit (with idempotency, rate, active cap and quota), abort, confirm.
//! - [`take_over`]: a delivery takes its task over.
//! - [`run`]: progress, finish, and a client's cancel.
//! - [`park`]: a run parks on its owner's decision; the decision resumes it from its
//!   checkpoint; the owner's messages to a task.
//! - [`readmit`]: a stopped task admitted again (extend, retry, redrive), resuming from its
//!   checkpoint.
//! - [`read`]: get, list, the list cursor.
//! - [`reconcile`]: the reconciler's closes of records nobody else will end, and its lease.
//!
//! This file holds what they share: the store, its error, the prelude every finishing
//! script starts with and the keys it expects ([`TaskStore::finishing`]).

mod new_task;
mod park;
mod read;
mod readmit;
pub mod reconcile;
mod run;
mod submit;
mod take_over;

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;

use crate::domain::TaskId;
use crate::keys::Keys;
use crate::lua::{Invocation, Lua};
use crate::task::{RecordError, TaskRecord, TaskStatus};
use crate::time::utc_day;

pub use new_task::{Idempotency, NewTask};
pub use park::{DecideOutcome, MessageOutcome, ParkOutcome, Parking};
pub use read::{Filter, Page, SCAN_LIMIT, parse_cursor};
pub use readmit::{Readmission, ReadmitOutcome};
pub use reconcile::DeadLetter;
pub use run::{CancelOutcome, Finish, FinishOutcome, ProgressOutcome, Tick};
pub use submit::{Claim, Confirmation, Limits, NOT_ENQUEUED, SubmitOutcome};
pub use take_over::{Claimed, Takeover};

const PRELUDE: &str = include_str!("../lua/prelude.lua");
/// The admission checks submit.lua and readmit.lua share (rate, active cap, quotas).
const ADMISSION: &str = include_str!("../lua/admission.lua");

pub(crate) fn with_prelude(body: &str) -> Lua {
    Lua::new(&format!("{PRELUDE}\n{body}"))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Corrupt(#[from] RecordError),
    #[error("unexpected script reply: {0}")]
    Reply(String),
}

impl StoreError {
    /// One copy per caller of a failed group commit (a Redis error keeps its kind).
    pub fn duplicate(&self) -> Self {
        match self {
            Self::Redis(e) => Self::Redis(e.clone()),
            other => Self::Reply(other.to_string()),
        }
    }
}

/// What the agent's terminal writes (claim's and finish's) do with the task's Redis
/// memories (`memory:{id}`), in the same step as the terminal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryCleanup {
    /// Not ours to touch: no Redis memory store (Qdrant), or not the agent.
    #[default]
    Leave,
    Delete,
    /// Keep them this long after the end (`MEMORY_RETENTION_SECONDS`).
    Retain(Duration),
}

impl MemoryCleanup {
    fn arg(self) -> String {
        match self {
            Self::Leave => String::new(),
            Self::Delete => "0".to_owned(),
            Self::Retain(d) => d.as_secs().max(1).to_string(),
        }
    }
}

#[derive(Clone)]
pub struct TaskStore {
    conn: ConnectionManager,
    keys: Keys,
    record_ttl: Duration,
    memory: MemoryCleanup,
}

impl TaskStore {
    pub fn new(conn: ConnectionManager, keys: Keys, record_ttl: Duration) -> Self {
        Self { conn, keys, record_ttl, memory: MemoryCleanup::Leave }
    }

    /// The store the agent writes with when task memories live in Redis: its claim and
    /// finish forget them in the same step as the terminal status.
    #[must_use]
    pub fn with_memory_cleanup(mut self, memory: MemoryCleanup) -> Self {
        self.memory = memory;
        self
    }

    pub fn memory_cleanup(&self) -> MemoryCleanup {
        self.memory
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn ttl(&self) -> u64 {
        self.record_ttl.as_secs().max(1)
    }

    /// The quota counter a submission made at `at` reserves from.
    pub fn quota_key(&self, user_id: &str, at: DateTime<Utc>) -> String {
        self.keys.quota(user_id, &utc_day(at))
    }

    /// A call of `script`, which may end task `id` of `user_id`, with the seven keys the
    /// prelude names at its top (the reservation, if any, was taken from `quota_key`); the
    /// caller adds the script's own keys after them.
    pub(crate) fn finishing<'s>(
        &self,
        script: &'s Lua,
        id: TaskId,
        user_id: &str,
        quota_key: Option<&str>,
    ) -> Invocation<'s> {
        let quota = quota_key.map_or_else(|| self.keys.quota(user_id, "unknown"), str::to_owned);
        let mut inv = script.prepare_invoke();
        inv.key(self.keys.task(id))
            .key(quota)
            .key(self.keys.events(id))
            .key(self.keys.checkpoint(id))
            .key(self.keys.user_tasks(user_id))
            .key(self.keys.active(user_id))
            .key(self.keys.webhooks_due());
        inv
    }

    pub(crate) fn finishing_rec<'s>(&self, script: &'s Lua, rec: &TaskRecord) -> Invocation<'s> {
        self.finishing(script, rec.id, &rec.user_id, rec.quota_key.as_deref())
    }
}

/// Every script of the store, for [`crate::preload`].
pub(crate) fn scripts() -> Vec<&'static Lua> {
    let mut all = Vec::with_capacity(16);
    all.extend(submit::scripts());
    all.extend(take_over::scripts());
    all.extend(run::scripts());
    all.extend(park::scripts());
    all.extend(readmit::scripts());
    all.extend(reconcile::scripts());
    all
}

fn parse_status(s: &str) -> Result<TaskStatus, StoreError> {
    s.parse().map_err(StoreError::Reply)
}
