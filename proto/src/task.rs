//! The task record kept in Redis (`task:{id}` hash) and the `TaskResponse` clients see.
//!
//! Status machine: `in_queue` → `in_progress` → `completed` | `failed` | `cancelled`, and
//! `in_queue` → `cancelled`; a running task may park in `requires_action` (a tool call
//! waiting for its owner) and go back to `in_queue` on the decision, or stop `incomplete` at a
//! budget until an extend. A terminal state changes only by an explicit re-admission (retry,
//! redrive) that starts a new run; the Lua scripts in [`crate::store`] are the only writers
//! and enforce it.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::TaskId;

/// `in_queue` → `in_progress` → `completed` | `failed` | `cancelled`; terminal states never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    InQueue,
    InProgress,
    /// Parked: a tool call waits for its owner's decision; no worker or delivery holds it.
    RequiresAction,
    /// Stopped at its token or tick budget (`incomplete_reason`), its checkpoint kept:
    /// `POST /tasks/{id}/extend` resumes it. Holds no active-task slot.
    Incomplete,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 7] = [
        Self::InQueue,
        Self::InProgress,
        Self::RequiresAction,
        Self::Incomplete,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InQueue => "in_queue",
            Self::InProgress => "in_progress",
            Self::RequiresAction => "requires_action",
            Self::Incomplete => "incomplete",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Ended: nothing runs it again unless its owner (or an operator) retries it.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Its run is over for now: ended, or stopped at a budget (the end of a delivery that
    /// releases the active-task slot and is announced).
    pub fn ends_run(self) -> bool {
        self.is_terminal() || self == Self::Incomplete
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown status {s:?}"))
    }
}

/// What a finished task produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskResult {
    /// Whether the mandate was met.
    pub success: bool,
    /// What the task produced, one item each.
    pub deliverables: Vec<String>,
    /// How it went: caveats, what failed, which model produced it.
    pub notes: String,
    /// URLs the deliverables rest on.
    pub sources: Vec<String>,
    /// Token usage of the whole task (absent on results written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Token usage of a task, summed over every model and embedding call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Requests sent to the model API, retries and failures included: what the API saw.
    pub model_calls: u64,
    /// Of those, the ones that brought no usable reply (an error status, a timeout, a
    /// connection that failed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_calls: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.model_calls += other.model_calls;
        self.failed_calls += other.failed_calls;
    }
}

/// A task record as read from Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: TaskId,
    pub user_id: String,
    pub status: TaskStatus,
    pub mandate: String,
    pub max_ticks: u32,
    pub tick: Option<u32>,
    pub ticks_used: u32,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub attempt: u32,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub worker_id: Option<String>,
    pub cancel_requested: bool,
    /// The quota counter this task's reservation was taken from, for the refund.
    pub quota_key: Option<String>,
    /// Where the end of the task is announced (a signed POST), if anywhere.
    pub webhook_url: Option<String>,
    /// The MCP tools the owner chose (`<server>` or `<server>/<tool>`); empty = built-ins only.
    pub tools: Vec<String>,
    /// W3C `traceparent` the task's spans continue (see `NewTask::traceparent`).
    pub traceparent: Option<String>,
    /// The tool call waiting for the owner (status `requires_action`).
    pub pending_action: Option<RequiredAction>,
    /// The input schema of the pending call's tool, to check edited arguments against.
    pub pending_schema: Option<serde_json::Value>,
    /// The owner's answer to the last parked call, for the run that resumes.
    pub decision: Option<ActionDecision>,
    /// Which enqueue of the task is current (see [`crate::TaskEnvelope::seq`]).
    pub seq: u32,
    /// Messages the owner sent to the task so far.
    pub messages: u32,
    /// Tokens the task may spend (all runs); `None` = no budget.
    pub max_tokens: Option<u64>,
    /// Tokens spent so far (prompt + completion, every call), as of the last recorded tick.
    pub tokens_used: u64,
    /// Why an `incomplete` task stopped.
    pub incomplete_reason: Option<IncompleteReason>,
    /// How each earlier run ended, oldest first (a retry or an extend adds one).
    pub history: Vec<RunSummary>,
    /// RFC 3339: a task not started by then fails "expired in queue".
    pub expires_at: Option<String>,
    /// Times it was admitted again (extend, retry, redrive): 0 for a task's first run.
    pub runs: u32,
}

/// Which budget an `incomplete` task reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncompleteReason {
    MaxTokens,
    MaxTicks,
}

impl IncompleteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxTokens => "max_tokens",
            Self::MaxTicks => "max_ticks",
        }
    }
}

/// How one earlier run of a task ended (before a retry or an extend started the next).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunSummary {
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_reason: Option<IncompleteReason>,
    /// Ticks recorded when it ended.
    #[serde(default)]
    pub tick: u32,
    /// The last delivery of that run.
    #[serde(default)]
    pub attempt: u32,
    pub ended_at: String,
}

/// A tool call waiting for its owner's approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequiredAction {
    /// Answer at `POST /tasks/{id}/actions/{call_id}`.
    pub call_id: String,
    /// `<server>/<tool>`.
    pub tool: String,
    /// The arguments the model chose (already checked against the tool's schema).
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
    /// RFC 3339; without a decision by then the call is denied as expired.
    pub expires_at: String,
}

/// What the owner (or the expiry) decided about a parked call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Deny,
    /// Nobody decided within `APPROVAL_TIMEOUT_SECONDS`: treated as a denial.
    Expired,
}

/// The decision the resumed run reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionDecision {
    pub call_id: String,
    pub decision: Verdict,
    /// Arguments the owner edited, when approving (checked against the tool's schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt task record field {field}: {reason}")]
pub struct RecordError {
    pub field: &'static str,
    pub reason: String,
}

impl TaskRecord {
    /// Parses a `HGETALL` reply; `None` when the hash is empty (absent or expired).
    pub fn from_hash(id: TaskId, mut h: HashMap<String, String>) -> Result<Option<Self>, RecordError> {
        if h.is_empty() {
            return Ok(None);
        }
        let mut take = |f: &str| h.remove(f).filter(|v| !v.is_empty());
        let need = |f: &'static str, v: Option<String>| v.ok_or(RecordError { field: f, reason: "missing".into() });
        let num = |f: &'static str, v: Option<String>| -> Result<Option<u32>, RecordError> {
            v.map(|s| s.parse().map_err(|e| RecordError { field: f, reason: format!("{e}") })).transpose()
        };
        let status =
            need("status", take("status"))?.parse().map_err(|reason| RecordError { field: "status", reason })?;
        let result = take("result")
            .map(|s| serde_json::from_str(&s).map_err(|e| RecordError { field: "result", reason: e.to_string() }))
            .transpose()?;
        let tools: Vec<String> = json_field("tools", take("tools"))?.unwrap_or_default();
        let pending_action = json_field("pending_action", take("pending_action"))?;
        let pending_schema = json_field("pending_schema", take("pending_schema"))?;
        let decision = json_field("decision", take("decision"))?;
        let incomplete_reason = take("incomplete_reason")
            .map(|s| {
                serde_json::from_value(serde_json::Value::String(s))
                    .map_err(|e| RecordError { field: "incomplete_reason", reason: e.to_string() })
            })
            .transpose()?;
        let history: Vec<RunSummary> = json_field("history", take("history"))?.unwrap_or_default();
        let num64 = |f: &'static str, v: Option<String>| -> Result<Option<u64>, RecordError> {
            v.map(|s| s.parse().map_err(|e| RecordError { field: f, reason: format!("{e}") })).transpose()
        };
        Ok(Some(Self {
            id,
            user_id: take("user_id").unwrap_or_default(),
            status,
            mandate: need("mandate", take("mandate"))?,
            max_ticks: num("max_ticks", take("max_ticks"))?
                .ok_or(RecordError { field: "max_ticks", reason: "missing".into() })?,
            tick: num("tick", take("tick"))?,
            ticks_used: num("ticks_used", take("ticks_used"))?.unwrap_or(0),
            result,
            error: take("error"),
            attempt: num("attempt", take("attempt"))?.unwrap_or(0),
            created_at: need("created_at", take("created_at"))?,
            updated_at: need("updated_at", take("updated_at"))?,
            started_at: take("started_at"),
            finished_at: take("finished_at"),
            worker_id: take("worker_id"),
            cancel_requested: take("cancel_requested").as_deref() == Some("1"),
            quota_key: take("quota_key"),
            webhook_url: take("webhook_url"),
            tools,
            traceparent: take("traceparent"),
            pending_action,
            pending_schema,
            decision,
            seq: num("seq", take("seq"))?.unwrap_or(0),
            messages: num("messages", take("messages"))?.unwrap_or(0),
            max_tokens: num64("max_tokens", take("max_tokens"))?.filter(|n| *n > 0),
            tokens_used: num64("tokens_used", take("tokens_used"))?.unwrap_or(0),
            incomplete_reason,
            history,
            expires_at: take("expires_at"),
            runs: num("runs", take("runs"))?.unwrap_or(0),
        }))
    }

    /// The envelope of enqueue `seq` of this task (as the gateway publishes it: the owner,
    /// and the submission time its quota reservation was taken by).
    pub fn envelope(&self, seq: u32) -> crate::TaskEnvelope {
        crate::TaskEnvelope {
            correlation_id: self.id,
            mandate: self.mandate.clone(),
            max_ticks: self.max_ticks,
            user_id: Some(self.user_id.clone()),
            submitted_at: chrono::DateTime::parse_from_rfc3339(&self.created_at).ok().map(|t| t.to_utc()),
            v: Some(crate::envelope::ENVELOPE_VERSION),
            seq,
        }
    }

    pub fn to_response(&self) -> TaskResponse {
        TaskResponse {
            correlation_id: self.id,
            status: self.status,
            mandate: self.mandate.clone(),
            max_ticks: self.max_ticks,
            tick: self.tick,
            result: self.result.clone(),
            error: self.error.clone(),
            attempt: self.attempt,
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            webhook_url: self.webhook_url.clone(),
            tools: (!self.tools.is_empty()).then(|| self.tools.clone()),
            required_action: self.pending_action.clone().filter(|_| self.status == TaskStatus::RequiresAction),
            max_tokens: self.max_tokens,
            tokens_used: self.tokens_used,
            incomplete_reason: self.incomplete_reason.filter(|_| self.status == TaskStatus::Incomplete),
            history: self.history.clone(),
            expires_at: self.expires_at.clone(),
            trace_id: self.traceparent.as_deref().and_then(trace_id_of),
        }
    }
}

/// The trace id (32 lowercase hex digits) of a W3C `traceparent` (`00-{trace}-{span}-{flags}`).
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    let valid = trace.len() == 32
        && trace.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && trace.bytes().any(|b| b != b'0');
    valid.then(|| trace.to_owned())
}

fn json_field<T: serde::de::DeserializeOwned>(
    field: &'static str,
    v: Option<String>,
) -> Result<Option<T>, RecordError> {
    v.map(|s| serde_json::from_str(&s).map_err(|e| RecordError { field, reason: e.to_string() })).transpose()
}

/// The task as clients see it; field names are those of the Python Euglena.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskResponse {
    #[schema(value_type = uuid::Uuid)]
    pub correlation_id: TaskId,
    pub status: TaskStatus,
    pub mandate: String,
    pub max_ticks: u32,
    /// Ticks finished so far; null before the first.
    pub tick: Option<u32>,
    /// Set when the task ends (for `failed` and `cancelled` too, with what was gathered).
    #[schema(value_type = Option<TaskResult>)]
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    /// Deliveries so far (a redelivered task resumes from its checkpoint).
    pub attempt: u32,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub webhook_url: Option<String>,
    /// The MCP tools chosen for the task (absent: the built-in tools only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tools: Option<Vec<String>>,
    /// While `requires_action`: the tool call waiting for the owner's decision.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub required_action: Option<RequiredAction>,
    /// The task's token budget (prompt + completion, every call); absent = none.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_tokens: Option<u64>,
    /// Tokens spent so far, as of the last recorded tick (the result's `usage` is exact).
    #[serde(default)]
    pub tokens_used: u64,
    /// While `incomplete`: which budget it reached.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub incomplete_reason: Option<IncompleteReason>,
    /// How each earlier run ended (retries, extends), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub history: Vec<RunSummary>,
    /// RFC 3339: not started by then, the task fails "expired in queue".
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_at: Option<String>,
    /// The OpenTelemetry trace the task's spans belong to (absent when tracing is off): the
    /// client's own when it sent a `traceparent`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trace_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strings_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().expect("parse"), s);
            assert_eq!(serde_json::to_value(s).expect("json"), serde_json::json!(s.as_str()));
        }
        assert!(!TaskStatus::InProgress.is_terminal());
        assert!(TaskStatus::Cancelled.is_terminal());
    }

    #[test]
    fn record_from_hash() {
        let id = TaskId::new();
        assert!(TaskRecord::from_hash(id, HashMap::new()).expect("empty").is_none());
        let h: HashMap<String, String> = [
            ("user_id", "u"),
            ("status", "in_progress"),
            ("mandate", "m"),
            ("max_ticks", "5"),
            ("tick", "2"),
            ("attempt", "1"),
            ("created_at", "2026-01-01T00:00:00.000Z"),
            ("updated_at", "2026-01-01T00:00:00.000Z"),
            ("result", ""),
            ("cancel_requested", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let r = TaskRecord::from_hash(id, h).expect("ok").expect("present");
        assert_eq!(r.tick, Some(2));
        assert_eq!(r.result, None);
        assert!(r.cancel_requested);
        let json = serde_json::to_value(r.to_response()).expect("json");
        assert_eq!(json["status"], "in_progress");
        assert!(json.get("started_at").is_none());
        assert_eq!(json["result"], serde_json::Value::Null);
    }
}
