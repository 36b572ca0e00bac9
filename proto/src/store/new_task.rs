//! A task about to be submitted (by the gateway, or adopted from an envelope another
//! producer published) and the record it starts as.

use chrono::{DateTime, Utc};

use crate::domain::TaskId;
use crate::task::{TaskRecord, TaskStatus};
use crate::time::rfc3339;

/// A task about to be submitted.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: TaskId,
    pub user_id: String,
    pub mandate: String,
    pub max_ticks: u32,
    pub created_at: DateTime<Utc>,
    /// The client's `Idempotency-Key` and a fingerprint of what it asked for.
    pub idempotency: Option<Idempotency>,
    /// Announce the end of the task here (checked by the address policy before submit).
    pub webhook_url: Option<String>,
    /// The MCP tools the owner chose (checked against the configured servers before submit).
    pub tools: Vec<String>,
    /// Tokens (prompt + completion) the task may spend; `None` = no budget.
    pub max_tokens: Option<u64>,
    /// Not started by then, the task fails "expired in queue".
    pub expires_at: Option<DateTime<Utc>>,
    /// W3C `traceparent` of the span that submitted it, when tracing is on: kept on the
    /// record and sent as the envelope's AMQP header, so every delivery and resume of the
    /// task continues the same trace.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    /// Equal for equal requests (hex SHA-256 of the normalised request).
    pub fingerprint: String,
}

impl NewTask {
    /// A task created now, with no idempotency key and no webhook.
    pub fn new(user_id: impl Into<String>, mandate: impl Into<String>, max_ticks: u32) -> Self {
        Self {
            id: TaskId::new(),
            user_id: user_id.into(),
            mandate: mandate.into(),
            max_ticks,
            created_at: Utc::now(),
            idempotency: None,
            webhook_url: None,
            tools: Vec::new(),
            max_tokens: None,
            expires_at: None,
            traceparent: None,
        }
    }

    /// The task of an envelope that arrived without a record (another producer published
    /// it). Without a user id it has no owner and is listed under nobody.
    pub fn from_envelope(env: &crate::TaskEnvelope) -> Self {
        Self {
            id: env.correlation_id,
            user_id: env.user_id.clone().unwrap_or_default(),
            mandate: env.mandate.clone(),
            max_ticks: env.max_ticks,
            created_at: env.submitted_at.unwrap_or_else(Utc::now),
            idempotency: None,
            webhook_url: None,
            tools: Vec::new(),
            max_tokens: None,
            expires_at: None,
            traceparent: None,
        }
    }

    /// The envelope published for this task (the inverse of [`Self::from_envelope`]).
    pub fn envelope(&self) -> crate::TaskEnvelope {
        crate::TaskEnvelope {
            correlation_id: self.id,
            mandate: self.mandate.clone(),
            max_ticks: self.max_ticks,
            user_id: Some(self.user_id.clone()),
            submitted_at: Some(self.created_at),
            v: Some(crate::envelope::ENVELOPE_VERSION),
            seq: 0,
        }
    }

    /// The task's first record, `in_queue` with nothing used: what submit and adopt write,
    /// and (as [`TaskRecord::to_response`]) the body of the `202`.
    pub fn record(&self, quota_key: Option<String>) -> TaskRecord {
        let now = rfc3339(self.created_at);
        TaskRecord {
            id: self.id,
            user_id: self.user_id.clone(),
            status: TaskStatus::InQueue,
            mandate: self.mandate.clone(),
            max_ticks: self.max_ticks,
            tick: None,
            ticks_used: 0,
            result: None,
            error: None,
            attempt: 0,
            created_at: now.clone(),
            updated_at: now,
            started_at: None,
            finished_at: None,
            worker_id: None,
            cancel_requested: false,
            quota_key,
            webhook_url: self.webhook_url.clone(),
            tools: self.tools.clone(),
            traceparent: self.traceparent.clone(),
            pending_action: None,
            pending_schema: None,
            decision: None,
            seq: 0,
            messages: 0,
            max_tokens: self.max_tokens,
            tokens_used: 0,
            incomplete_reason: None,
            history: Vec::new(),
            expires_at: self.expires_at.map(rfc3339),
            runs: 0,
        }
    }
}

/// The hash fields of a new record, as adopt.lua `HSET`s them.
pub(super) fn new_record_fields(args: &mut Vec<String>, task: &NewTask) {
    let rec = task.record(None);
    let max_ticks = rec.max_ticks.to_string();
    let fields = [
        ("user_id", rec.user_id.as_str()),
        ("status", rec.status.as_str()),
        ("mandate", rec.mandate.as_str()),
        ("max_ticks", max_ticks.as_str()),
        ("attempt", "0"),
        ("ticks_used", "0"),
        ("cancel_requested", "0"),
        ("created_at", rec.created_at.as_str()),
        ("updated_at", rec.updated_at.as_str()),
    ];
    for (k, v) in fields {
        args.extend([k.to_owned(), v.to_owned()]);
    }
    task.optional_record_fields(args);
}

impl NewTask {
    /// The fields of the new record that only some tasks have, name then value (submit.lua
    /// writes the others from its own arguments).
    pub(super) fn optional_record_fields(&self, args: &mut Vec<String>) {
        if let Some(url) = &self.webhook_url {
            args.extend(["webhook_url".to_owned(), url.clone()]);
        }
        if !self.tools.is_empty() {
            args.extend(["tools".to_owned(), serde_json::to_string(&self.tools).unwrap_or_default()]);
        }
        if let Some(n) = self.max_tokens {
            args.extend(["max_tokens".to_owned(), n.to_string()]);
        }
        if let Some(t) = self.expires_at {
            args.extend(["expires_at".to_owned(), rfc3339(t)]);
        }
        if let Some(tp) = &self.traceparent {
            args.extend(["traceparent".to_owned(), tp.clone()]);
        }
    }
}
