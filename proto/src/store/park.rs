//! Parking a task and resuming it from its checkpoint, the one mechanism behind every wait
//! for the owner: a run parks on a tool call that needs approval ([`TaskStore::park`]);
//! a decision, or the expiry, puts the task back on the queue with the next enqueue number
//! ([`TaskStore::decide`]); the caller publishes the envelope and clears the resuming mark
//! once the broker confirmed ([`TaskStore::resumed`]); the reconciler publishes again what
//! stays marked ([`TaskStore::republish`]). A copy of an earlier enqueue that lands late is
//! stale at the claim and acked unrun. The owner's messages to a task live here too.

use std::sync::LazyLock;

use chrono::Utc;
use redis::AsyncCommands;

use super::{StoreError, TaskStore, parse_status, with_prelude};
use crate::domain::TaskId;
use crate::lua::Lua;
use crate::task::{ActionDecision, RequiredAction, TaskRecord, TaskStatus};
use crate::time::rfc3339;

static PARK: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("../lua/park.lua")));
static DECIDE: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("../lua/decide.lua")));
static REPUBLISH: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("../lua/republish.lua")));
static MESSAGE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("../lua/message.lua")));

pub(super) fn scripts() -> [&'static Lua; 4] {
    [&PARK, &DECIDE, &REPUBLISH, &MESSAGE]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkOutcome {
    Parked,
    /// The owner asked to cancel: nothing written, the run ends cancelled.
    CancelRequested,
    Fenced,
    Missing,
}

/// A call the run parks on, with what the gateway and a cancel need while it waits.
#[derive(Debug, Clone)]
pub struct Parking<'a> {
    pub action: &'a RequiredAction,
    pub expires_ms: i64,
    pub schema: &'a serde_json::Value,
    /// What a cancel while parked returns (the deliverables so far).
    pub partial: &'a serde_json::Value,
    pub checkpoint: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideOutcome {
    Missing,
    Terminal(TaskStatus),
    /// That call was already answered.
    AlreadyDecided,
    /// The task waits on no call with that id.
    Unknown,
    /// Back in the queue: publish the envelope with this enqueue number.
    Resumed {
        seq: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    Missing,
    Terminal(TaskStatus),
    /// The task has had its maximum of messages.
    Full,
    Sent {
        count: u32,
    },
}

impl TaskStore {
    /// Parks the run's task on `parking.action`, fenced by `attempt`.
    pub async fn park(&self, rec: &TaskRecord, attempt: u32, parking: &Parking<'_>) -> Result<ParkOutcome, StoreError> {
        let mut inv = self.finishing_rec(&PARK, rec);
        inv.key(self.keys.parked())
            .arg(attempt)
            .arg(rfc3339(Utc::now()))
            .arg(parking.checkpoint)
            .arg(self.ttl())
            .arg(serde_json::to_string(parking.action).unwrap_or_default())
            .arg(parking.schema.to_string())
            .arg(parking.partial.to_string())
            .arg(parking.expires_ms)
            .arg(&parking.action.call_id);
        let reply: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(match reply {
            0 => ParkOutcome::Parked,
            1 => ParkOutcome::CancelRequested,
            -1 => ParkOutcome::Fenced,
            _ => ParkOutcome::Missing,
        })
    }

    /// Answers the parked call `decision.call_id` and puts the task back in the queue.
    pub async fn decide(&self, rec: &TaskRecord, decision: &ActionDecision) -> Result<DecideOutcome, StoreError> {
        let verdict = serde_json::to_value(decision.decision).unwrap_or_default();
        let now = Utc::now();
        let mut inv = self.finishing_rec(&DECIDE, rec);
        inv.key(self.keys.parked())
            .key(self.keys.resuming())
            .arg(&decision.call_id)
            .arg(serde_json::to_string(decision).unwrap_or_default())
            .arg(verdict.as_str().unwrap_or(""))
            .arg(rfc3339(now))
            .arg(now.timestamp_millis())
            .arg(self.ttl());
        let reply: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        match reply.as_slice() {
            [m] if m == "missing" => Ok(DecideOutcome::Missing),
            [d] if d == "decided" => Ok(DecideOutcome::AlreadyDecided),
            [u] if u == "unknown" => Ok(DecideOutcome::Unknown),
            [t, st] if t == "terminal" => Ok(DecideOutcome::Terminal(parse_status(st)?)),
            [r, seq] if r == "resumed" => {
                Ok(DecideOutcome::Resumed { seq: seq.parse().map_err(|_| StoreError::Reply(seq.clone()))? })
            }
            other => Err(StoreError::Reply(format!("{other:?}"))),
        }
    }

    /// The resume's publish was confirmed: the reconciler need not publish it again.
    pub async fn resumed(&self, id: TaskId) -> Result<(), StoreError> {
        let _: i64 = self.conn.clone().zrem(self.keys.resuming(), id.to_string()).await?;
        Ok(())
    }

    /// For a resume nobody confirmed: the enqueue number to publish again with (the mark
    /// renewed), or `None` when the task moved on (the mark dropped).
    pub async fn republish(&self, id: TaskId) -> Result<Option<u32>, StoreError> {
        let seq: u32 = REPUBLISH
            .key(self.keys.task(id))
            .key(self.keys.resuming())
            .arg(id.to_string())
            .arg(Utc::now().timestamp_millis())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((seq > 0).then_some(seq))
    }

    /// Up to `limit` ids from the sorted set `key` (parked, resuming, expiring) scored before
    /// `before_ms`.
    pub(super) async fn due(&self, key: String, before_ms: i64, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(key)
            .arg("-inf")
            .arg(before_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(ids.iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// Parked tasks whose pending call expired by `now_ms`.
    pub async fn expired_parked(&self, now_ms: i64, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        self.due(self.keys.parked(), now_ms, limit).await
    }

    /// Resumes marked before `before_ms` and still not confirmed.
    pub async fn stale_resumes(&self, before_ms: i64, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        self.due(self.keys.resuming(), before_ms, limit).await
    }

    /// Drops a parked or resuming mark whose record is gone.
    pub async fn forget_marks(&self, id: TaskId) -> Result<(), StoreError> {
        redis::pipe()
            .zrem(self.keys.parked(), id.to_string())
            .zrem(self.keys.resuming(), id.to_string())
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Sends the owner's `text` to task `id` (at most `max` per task).
    pub async fn send_message(&self, id: TaskId, text: &str, max: u32) -> Result<MessageOutcome, StoreError> {
        let reply: Vec<String> = MESSAGE
            .key(self.keys.task(id))
            .key(self.keys.messages(id))
            .key(self.keys.events(id))
            .arg(text)
            .arg(rfc3339(Utc::now()))
            .arg(self.ttl())
            .arg(max)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match reply.as_slice() {
            [m] if m == "missing" => Ok(MessageOutcome::Missing),
            [f] if f == "full" => Ok(MessageOutcome::Full),
            [t, st] if t == "terminal" => Ok(MessageOutcome::Terminal(parse_status(st)?)),
            [s, n] if s == "sent" => {
                Ok(MessageOutcome::Sent { count: n.parse().map_err(|_| StoreError::Reply(n.clone()))? })
            }
            other => Err(StoreError::Reply(format!("{other:?}"))),
        }
    }

    /// The owner's messages to task `id` from index `from` (0-based) on.
    pub async fn messages(&self, id: TaskId, from: u32) -> Result<Vec<String>, StoreError> {
        Ok(self.conn.clone().lrange(self.keys.messages(id), from as isize, -1).await?)
    }
}
