//! The writes behind "no task left behind": the reconciler's closes of records nobody else
//! will end (a submission never confirmed, a message the broker dead-lettered, a task that
//! expired in the queue), the index of dead letters the operators read, plus its lease. (The confirmed mark a gateway sets when the broker confirms is in `submit`.)
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
use serde::{Deserialize, Serialize};

static CLOSE_UNCONFIRMED: LazyLock<Lua> =
    LazyLock::new(|| with_prelude(include_str!("../lua/reconcile_unconfirmed.lua")));
static CLOSE_DEAD_LETTER: LazyLock<Lua> =
    LazyLock::new(|| with_prelude(include_str!("../lua/reconcile_dead_letter.lua")));
static EXPIRE: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("../lua/expire.lua")));
/// Take the lease when free, or extend it when we hold it.
static LEASE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("../lua/reconciler_lease.lua")));
static RELEASE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("../lua/reconciler_release.lua")));

pub(super) fn scripts() -> [&'static Lua; 5] {
    [&CLOSE_UNCONFIRMED, &CLOSE_DEAD_LETTER, &EXPIRE, &LEASE, &RELEASE]
}

/// What a dead letter's headers said, kept in the operators' index (`dead_letter:{id}`)
/// when the reconciler takes its copy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// `x-first-death-reason`: `rejected` (an agent gave up, or an invalid envelope),
    /// `delivery_limit`, `expired`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Deliveries before it died, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// RFC 3339: when the broker first dead-lettered it (`x-first-death` headers), else when
    /// the reconciler saw it.
    pub first_death_at: String,
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
    /// Indexes the dead letter for the operators in the same step.
    pub async fn close_dead_lettered(&self, id: TaskId, letter: &DeadLetter) -> Result<CloseOutcome, StoreError> {
        let Some(rec) = self.get(id).await? else {
            return Ok(CloseOutcome::Missing);
        };
        let now = Utc::now();
        let mut inv = self.finishing_rec(&CLOSE_DEAD_LETTER, &rec);
        inv.key(self.keys.dead_letters())
            .key(self.keys.dead_letter(id))
            .arg(letter.count.map(|n| n.to_string()).unwrap_or_default())
            .arg(rfc3339(now))
            .arg(self.ttl())
            .arg(serde_json::to_string(letter).unwrap_or_default())
            .arg(now.timestamp_millis());
        let reply: String = inv.invoke_async(&mut self.conn.clone()).await?;
        CloseOutcome::parse(&reply)
    }

    /// Up to `limit` tasks whose `expires_after_seconds` passed by `now_ms`.
    pub async fn due_expiring(&self, now_ms: i64, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        self.due(self.keys.expiring(), now_ms, limit).await
    }

    /// Fails task `id` "expired in queue" (whole reservation refunded) if it has still not
    /// started; drops it from the expiring set either way.
    pub async fn expire_queued(&self, id: TaskId) -> Result<CloseOutcome, StoreError> {
        let Some(rec) = self.get(id).await? else {
            let _: i64 = self.conn.clone().zrem(self.keys.expiring(), id.to_string()).await?;
            return Ok(CloseOutcome::Missing);
        };
        let mut inv = self.finishing_rec(&EXPIRE, &rec);
        inv.key(self.keys.expiring()).arg(rfc3339(Utc::now())).arg(self.ttl());
        let reply: String = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(if reply == "expired" { CloseOutcome::Closed } else { CloseOutcome::Skipped })
    }

    /// A page of the dead-letter index, newest first: `(id, letter)`, and the cursor to go on
    /// from (`{ms}:{id}`, as the task lists').
    pub async fn dead_letters(
        &self,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<(TaskId, DeadLetter)>, Option<String>), StoreError> {
        let mut conn = self.conn.clone();
        let after = cursor.and_then(super::parse_cursor);
        let (ids, more) = super::read::ids_after(&mut conn, &self.keys.dead_letters(), limit, after.as_ref()).await?;
        let next = if more { ids.last().map(|(_, id, ms)| format!("{ms}:{id}")) } else { None };
        let infos: Vec<Option<String>> = if ids.is_empty() {
            Vec::new()
        } else {
            redis::cmd("MGET")
                .arg(ids.iter().map(|(id, _, _)| self.keys.dead_letter(*id)).collect::<Vec<_>>())
                .query_async(&mut conn)
                .await?
        };
        let rows = ids
            .into_iter()
            .zip(infos)
            .map(|((id, _, _), info)| (id, info.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default()))
            .collect();
        Ok((rows, next))
    }

    /// One entry of the dead-letter index.
    pub async fn dead_letter(&self, id: TaskId) -> Result<Option<DeadLetter>, StoreError> {
        let raw: Option<String> = self.conn.clone().get(self.keys.dead_letter(id)).await?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Drops task `id` from the dead-letter index (its dead letter was redriven).
    pub async fn forget_dead_letter(&self, id: TaskId) -> Result<(), StoreError> {
        redis::pipe()
            .zrem(self.keys.dead_letters(), id.to_string())
            .del(self.keys.dead_letter(id))
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
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
