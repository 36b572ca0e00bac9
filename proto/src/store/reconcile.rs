//! The writes behind "no task left behind": the reconciler's closes of records nobody else
//! will end (a submission never confirmed, a message the broker dead-lettered), plus its
//! lease. (The confirmed mark a gateway sets when the broker confirms is in `submit`.)
//!
//! Every close goes through the prelude's `finish()`, so it refunds what the task did not
//! use and releases whatever else a terminal transition releases.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::Utc;
use redis::AsyncCommands;

use super::{StoreError, TaskStore, with_prelude};
use crate::domain::TaskId;
use crate::lua::Lua;
use crate::time::rfc3339;

static CLOSE_UNCONFIRMED: LazyLock<Lua> =
    LazyLock::new(|| with_prelude(include_str!("../lua/reconcile_unconfirmed.lua")));
static CLOSE_DEAD_LETTER: LazyLock<Lua> =
    LazyLock::new(|| with_prelude(include_str!("../lua/reconcile_dead_letter.lua")));
/// Take the lease when free, or extend it when we hold it.
static LEASE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("../lua/reconciler_lease.lua")));
static RELEASE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("../lua/reconciler_release.lua")));

pub(super) fn scripts() -> [&'static Lua; 4] {
    [&CLOSE_UNCONFIRMED, &CLOSE_DEAD_LETTER, &LEASE, &RELEASE]
}

pub use super::NOT_ENQUEUED;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    /// Ended `failed` by this call.
    Closed,
    /// Nothing to do: confirmed, claimed or already terminal.
    Skipped,
    Missing,
}

impl CloseOutcome {
    fn parse(reply: &str) -> Result<Self, StoreError> {
        match reply {
            "closed" => Ok(Self::Closed),
            "skipped" | "terminal" => Ok(Self::Skipped),
            "missing" => Ok(Self::Missing),
            other => Err(StoreError::Reply(other.to_owned())),
        }
    }
}

impl TaskStore {
    /// Up to `limit` unconfirmed submissions created before `cutoff_ms`, oldest first.
    /// Members that are not task ids are dropped.
    pub async fn due_unconfirmed(&self, cutoff_ms: i64, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        let key = self.keys.unconfirmed();
        let mut conn = self.conn.clone();
        let raw: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(cutoff_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        let (ids, junk): (Vec<_>, Vec<_>) = raw.into_iter().partition(|m| m.parse::<TaskId>().is_ok());
        if !junk.is_empty() {
            let _: i64 = conn.zrem(&key, junk).await?;
        }
        Ok(ids.into_iter().filter_map(|m| m.parse().ok()).collect())
    }

    /// Ends a submission that is still `in_queue`, never claimed and never confirmed.
    pub async fn close_unconfirmed(&self, id: TaskId) -> Result<CloseOutcome, StoreError> {
        let Some(rec) = self.get(id).await? else {
            let _: i64 = self.conn.clone().zrem(self.keys.unconfirmed(), id.to_string()).await?;
            return Ok(CloseOutcome::Missing);
        };
        let mut inv = self.finishing_rec(&CLOSE_UNCONFIRMED, &rec);
        inv.key(self.keys.unconfirmed()).arg(NOT_ENQUEUED).arg(rfc3339(Utc::now())).arg(self.ttl()).arg(id.to_string());
        let reply: String = inv.invoke_async(&mut self.conn.clone()).await?;
        CloseOutcome::parse(&reply)
    }

    /// Ends the record of a dead-lettered message unless something already ended it.
    /// `deliveries`: how many the broker made, when known; else the record's claim count.
    pub async fn close_dead_lettered(&self, id: TaskId, deliveries: Option<u32>) -> Result<CloseOutcome, StoreError> {
        let Some(rec) = self.get(id).await? else {
            return Ok(CloseOutcome::Missing);
        };
        let mut inv = self.finishing_rec(&CLOSE_DEAD_LETTER, &rec);
        inv.arg(deliveries.map(|n| n.to_string()).unwrap_or_default()).arg(rfc3339(Utc::now())).arg(self.ttl());
        let reply: String = inv.invoke_async(&mut self.conn.clone()).await?;
        CloseOutcome::parse(&reply)
    }

    /// Takes or extends the reconciler lease for `holder`; true while `holder` has it.
    pub async fn hold_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut inv = LEASE.prepare_invoke();
        inv.key(self.keys.reconciler_lease()).arg(holder).arg(ttl.as_millis().max(1) as u64);
        let held: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(held == 1)
    }

    /// Gives the lease up (at shutdown), so another gateway takes over without waiting.
    pub async fn release_lease(&self, holder: &str) -> Result<(), StoreError> {
        let mut inv = RELEASE.prepare_invoke();
        inv.key(self.keys.reconciler_lease()).arg(holder);
        let _: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }
}
