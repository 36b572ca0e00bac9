//! The task record kept in Redis (`task:{id}` hash) and the `TaskResponse` clients see.
//!
//! Status machine: `in_queue` → `in_progress` → `completed` | `failed` | `cancelled`, and
//! `in_queue` → `cancelled`. Terminal states never change; the Lua scripts in
//! [`crate::store`] are the only writers and enforce it.

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
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [Self::InQueue, Self::InProgress, Self::Completed, Self::Failed, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InQueue => "in_queue",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
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
        }))
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
        }
    }
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
