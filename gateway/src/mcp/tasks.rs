//! MCP Tasks (SEP-2663, the `io.modelcontextprotocol/tasks` extension, in `rmcp` 3.11): a host
//! that declares the extension gets `run_mandate` task-augmented, a task handle at once (the
//! Euglena task itself, `taskId` = `correlation_id`), then polls `tasks/get` for the status and,
//! once it ended, the tool's result; `tasks/cancel` is `cancel_task`. Hosts without the
//! extension get the TaskResponse as before.
//!
//! Statuses map one to one (ARCHITECTURE §2): `in_queue`, `in_progress` → `working`;
//! `requires_action` → `input_required`; `completed`, `failed`, `cancelled` → the same word.
//! An `input_required` task waits on its owner's decision through the REST API (the status
//! message names the route); there is no in-band input request to answer with `tasks/update`.

use std::time::Duration;

use proto::task::{TaskRecord, TaskResponse, TaskStatus};
use rmcp::model::{DetailedTask, InputRequests, JsonObject, Task, TaskPayload, TaskStatus as McpStatus};
use serde_json::{Value, json};

/// How often a host is asked to poll `tasks/get`.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub fn status(s: TaskStatus) -> McpStatus {
    match s {
        TaskStatus::InQueue | TaskStatus::InProgress => McpStatus::Working,
        // Both wait for their owner: a decision, or an extend.
        TaskStatus::RequiresAction | TaskStatus::Incomplete => McpStatus::InputRequired,
        TaskStatus::Completed => McpStatus::Completed,
        TaskStatus::Failed => McpStatus::Failed,
        TaskStatus::Cancelled => McpStatus::Cancelled,
    }
}

/// The handle of a task: its id, mapped status, times, and how long it can be polled (the
/// record's lifetime, `TASK_RECORD_TTL_SECONDS`).
pub fn handle(t: &TaskResponse, ttl: Duration) -> Task {
    let mut task = Task::new(t.correlation_id.to_string(), status(t.status), &t.created_at, &t.updated_at)
        .with_poll_interval_ms(u64::try_from(POLL_INTERVAL.as_millis()).unwrap_or(1000))
        .with_ttl_ms(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    let message = match (t.status, &t.required_action) {
        (TaskStatus::RequiresAction, Some(a)) => Some(format!(
            "the tool call {} waits for your decision: POST /tasks/{}/actions/{}",
            a.tool, t.correlation_id, a.call_id
        )),
        (TaskStatus::Incomplete, _) => Some(format!(
            "stopped at its {} budget: POST /tasks/{}/extend to go on",
            t.incomplete_reason.map_or("tick", |r| if r == proto::task::IncompleteReason::MaxTokens {
                "token"
            } else {
                "tick"
            }),
            t.correlation_id
        )),
        (TaskStatus::InProgress, _) => t.tick.map(|n| format!("tick {n} of {}", t.max_ticks)),
        (TaskStatus::Failed, _) => t.error.clone(),
        _ => None,
    };
    if let Some(m) = message {
        task = task.with_status_message(m);
    }
    task
}

/// `tasks/get`'s answer: the handle plus, once the task ended, the tool's result (the
/// TaskResponse, as `run_mandate` answers without the extension) or the failure.
pub fn detailed(rec: &TaskRecord, ttl: Duration, result: impl FnOnce(Value) -> Value) -> DetailedTask {
    let t = rec.to_response();
    let payload = match rec.status {
        TaskStatus::InQueue | TaskStatus::InProgress => TaskPayload::Working,
        TaskStatus::RequiresAction | TaskStatus::Incomplete => {
            TaskPayload::InputRequired { input_requests: InputRequests::new() }
        }
        TaskStatus::Completed => TaskPayload::Completed { result: object(result(json!(t))) },
        TaskStatus::Failed => TaskPayload::Failed {
            error: object(json!({"code": -32000, "message": rec.error.as_deref().unwrap_or("the task failed")})),
        },
        TaskStatus::Cancelled => TaskPayload::Cancelled,
    };
    DetailedTask::new(handle(&t, ttl), payload)
}

fn object(v: Value) -> JsonObject {
    match v {
        Value::Object(m) => m,
        _ => JsonObject::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_maps_to_its_mcp_status() {
        let pairs = [
            (TaskStatus::InQueue, McpStatus::Working),
            (TaskStatus::InProgress, McpStatus::Working),
            (TaskStatus::RequiresAction, McpStatus::InputRequired),
            (TaskStatus::Incomplete, McpStatus::InputRequired),
            (TaskStatus::Completed, McpStatus::Completed),
            (TaskStatus::Failed, McpStatus::Failed),
            (TaskStatus::Cancelled, McpStatus::Cancelled),
        ];
        assert_eq!(pairs.len(), TaskStatus::ALL.len());
        for (ours, theirs) in pairs {
            assert_eq!(status(ours), theirs, "{ours}");
            assert_eq!(ours.is_terminal(), theirs.is_terminal(), "{ours}");
        }
    }
}
