//! A run's writes, fenced by its attempt: each tick's progress and the terminal status;
//! and a client's cancel, which ends a queued task at once and asks a running one to stop.

use std::sync::LazyLock;

use chrono::Utc;

use super::{StoreError, TaskStore, parse_status, with_prelude};
use crate::lua::Lua;
use crate::task::{TaskRecord, TaskStatus};
use crate::time::rfc3339;

static CANCEL: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("../lua/cancel.lua")));
static PROGRESS: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("../lua/progress.lua")));
static FINISH: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("../lua/finish.lua")));

pub(super) fn scripts() -> [&'static Lua; 3] {
    [&CANCEL, &PROGRESS, &FINISH]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Missing,
    Terminal(TaskStatus),
    /// Was queued: cancelled now, quota refunded.
    Cancelled,
    /// Is running: the agent stops at its next tick boundary. (A task waiting in the
    /// queue or parked on a decision is cancelled at once.)
    Requested,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressOutcome {
    /// Go on; the owner has sent this many messages so far.
    Continue {
        messages: u32,
    },
    CancelRequested,
    /// A newer delivery owns the task; this run must stop without writing.
    Fenced,
    /// The record is gone (a Redis that lost its data): not a fence, nobody else owns it.
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    Written,
    /// Already terminal, or fenced by a newer delivery.
    Refused,
    /// The record is gone.
    Missing,
}

/// A finished tick, as [`TaskStore::progress`] records it.
#[derive(Debug, Clone, Copy)]
pub struct Tick<'a> {
    /// Ticks finished so far (1-based).
    pub tick: u32,
    pub action: &'a str,
    pub checkpoint: &'a str,
    /// The MCP tool the tick called and what it returned, for the tick's event.
    pub tool: Option<(&'a str, &'a str)>,
    /// The task's tokens so far.
    pub tokens_used: u64,
}

/// How a run ended, as written by [`TaskStore::finish`]: a terminal status, or
/// `incomplete` with `error` naming the budget it reached (`max_tokens` | `max_ticks`).
#[derive(Debug, Clone)]
pub struct Finish {
    pub status: TaskStatus,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub ticks_used: Option<u32>,
    /// The task's tokens so far (all runs); `None` keeps what progress recorded.
    pub tokens_used: Option<u64>,
}

impl TaskStore {
    pub async fn cancel(&self, rec: &TaskRecord) -> Result<CancelOutcome, StoreError> {
        let mut inv = self.finishing_rec(&CANCEL, rec);
        inv.key(self.keys.parked()).arg(rfc3339(Utc::now())).arg(self.ttl());
        let reply: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        match reply.as_slice() {
            [m] if m == "missing" => Ok(CancelOutcome::Missing),
            [c] if c == "cancelled" => Ok(CancelOutcome::Cancelled),
            [r] if r == "requested" => Ok(CancelOutcome::Requested),
            [t, st] if t == "terminal" => Ok(CancelOutcome::Terminal(parse_status(st)?)),
            other => Err(StoreError::Reply(format!("{other:?}"))),
        }
    }

    /// Records a finished tick and the loop checkpoint, fenced by `attempt`.
    pub async fn progress(&self, rec: &TaskRecord, attempt: u32, t: &Tick<'_>) -> Result<ProgressOutcome, StoreError> {
        let Tick { tick, action, checkpoint, tool, tokens_used } = *t;
        let (tool, output) = tool.unwrap_or(("", ""));
        let mut inv = self.finishing_rec(&PROGRESS, rec);
        inv.arg(attempt)
            .arg(tick)
            .arg(tick)
            .arg(rfc3339(Utc::now()))
            .arg(action)
            .arg(checkpoint)
            .arg(self.ttl())
            .arg(tool)
            .arg(output)
            .arg(tokens_used);
        let (code, messages): (i64, u32) = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(match code {
            -2 => ProgressOutcome::Missing,
            -1 => ProgressOutcome::Fenced,
            1 => ProgressOutcome::CancelRequested,
            _ => ProgressOutcome::Continue { messages },
        })
    }

    /// Writes a terminal status, and in the same step forgets the task's memories as
    /// [`TaskStore::with_memory_cleanup`] says. `attempt: None` skips the fencing check (for
    /// envelopes that never ran). A refused write (fenced, or already terminal) touches
    /// nothing.
    pub async fn finish(
        &self,
        rec: &TaskRecord,
        attempt: Option<u32>,
        fin: &Finish,
    ) -> Result<FinishOutcome, StoreError> {
        debug_assert!(fin.status.ends_run());
        let result = fin.result.as_ref().map(|r| r.to_string()).unwrap_or_default();
        let mut inv = self.finishing_rec(&FINISH, rec);
        inv.key(self.keys.memory(rec.id))
            .arg(attempt.map_or_else(|| "*".to_owned(), |a| a.to_string()))
            .arg(fin.status.as_str())
            .arg(result)
            .arg(fin.error.clone().unwrap_or_default())
            .arg(fin.ticks_used.map(|t| t.to_string()).unwrap_or_default())
            .arg(rfc3339(Utc::now()))
            .arg(self.ttl())
            .arg(self.memory.arg())
            .arg(fin.tokens_used.map(|t| t.to_string()).unwrap_or_default());
        let written: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(match written {
            1 => FinishOutcome::Written,
            -1 => FinishOutcome::Missing,
            _ => FinishOutcome::Refused,
        })
    }
}
