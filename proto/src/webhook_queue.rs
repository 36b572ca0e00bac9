//! The durable queue of task-end webhooks: `webhooks:due` (task id → when the next attempt
//! is due) plus the delivery state on the task record (`webhook_state`, `webhook_attempts`,
//! `webhook_last`). Entries are added by the finishing scripts in the same write that ends
//! the task, so no way of ending a task loses its webhook, and survive every restart.

use std::sync::LazyLock;
use std::time::Duration;

use crate::lua::Lua;
use redis::aio::ConnectionManager;

use crate::domain::TaskId;
use crate::keys::Keys;
use crate::store::StoreError;

pub(crate) static CLAIM: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/webhook_claim.lua")));

/// How a delivery attempt ended, as recorded on the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    /// The receiver answered `410 Gone`: stop.
    Gone,
    /// Retried for the whole retry period without success.
    GaveUp,
    /// The record (or its webhook URL) is gone: nothing to send.
    Orphaned,
}

impl Settled {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Gone => "gone",
            Self::GaveUp => "gave_up",
            Self::Orphaned => "orphaned",
        }
    }
}

/// One queued delivery: a task's end, or (member `{id}/action`) the announcement that it
/// waits on its owner's decision, each with its own attempts and state on the record
/// (`webhook_*`, `action_webhook_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    pub id: TaskId,
    /// `task.requires_action` rather than the end.
    pub action: bool,
}

impl Hook {
    pub fn end(id: TaskId) -> Self {
        Self { id, action: false }
    }

    fn member(&self) -> String {
        if self.action { format!("{}/action", self.id) } else { self.id.to_string() }
    }

    fn parse(member: &str) -> Option<Self> {
        match member.strip_suffix("/action") {
            Some(id) => Some(Self { id: id.parse().ok()?, action: true }),
            None => Some(Self { id: member.parse().ok()?, action: false }),
        }
    }

    fn field(&self, name: &str) -> String {
        if self.action { format!("action_{name}") } else { name.to_owned() }
    }
}

#[derive(Clone)]
pub struct WebhookQueue {
    conn: ConnectionManager,
    keys: Keys,
}

impl WebhookQueue {
    pub fn new(conn: ConnectionManager, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// Leases up to `max` due deliveries for `lease`.
    pub async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Hook>, StoreError> {
        let ids: Vec<String> = CLAIM
            .key(self.keys.webhooks_due())
            .arg(max)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(ids.iter().filter_map(|m| Hook::parse(m)).collect())
    }

    /// Counts a failed attempt on the record; returns the attempts so far.
    pub async fn record_failure(&self, hook: &Hook, last: &str) -> Result<u32, StoreError> {
        let id = hook.id;
        let (attempts,): (u32,) = redis::pipe()
            .atomic()
            .cmd("HINCRBY")
            .arg(self.keys.task(id))
            .arg(hook.field("webhook_attempts"))
            .arg(1)
            .cmd("HSET")
            .arg(self.keys.task(id))
            .arg(hook.field("webhook_state"))
            .arg("retrying")
            .arg(hook.field("webhook_last"))
            .arg(last)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(attempts)
    }

    /// Makes the delivery due `after` from now (only while it is still queued).
    pub async fn schedule(&self, hook: &Hook, after: Duration) -> Result<(), StoreError> {
        let due = chrono::Utc::now().timestamp_millis() + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2);
        let _: i64 = redis::cmd("ZADD")
            .arg(self.keys.webhooks_due())
            .arg("XX")
            .arg(due)
            .arg(hook.member())
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Ends the delivery: off the queue, the outcome on the record.
    pub async fn settle(&self, hook: &Hook, how: Settled, last: &str) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("ZREM").arg(self.keys.webhooks_due()).arg(hook.member()).ignore();
        if how != Settled::Orphaned {
            pipe.cmd("HSET")
                .arg(self.keys.task(hook.id))
                .arg(hook.field("webhook_state"))
                .arg(how.as_str())
                .arg(hook.field("webhook_last"))
                .arg(last)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Deliveries waiting (due now or later).
    pub async fn backlog(&self) -> Result<u64, StoreError> {
        Ok(redis::cmd("ZCARD").arg(self.keys.webhooks_due()).query_async(&mut self.conn.clone()).await?)
    }
}
